//! Who may call a service with `auth: true`: members of its project, as the dstack server
//! says (`POST {server}/api/projects/{project}/get` with the caller's Bearer token; 403, 401
//! or 404 (no such project) mean no). Answers are cached for 60 s per project and token, as
//! dstack's gateway does; failures to ask (500 to the caller) are not cached. dstack's gateway
//! denies on a 404 as well, with a 500.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode, header};
use dstack_proxy::ProxyError;

const CACHE_TTL: Duration = Duration::from_secs(60);
const MAX_CACHED: usize = 10_000;

pub(crate) struct Auth {
    /// From `--server-url`, replaced by `POST /api/config`'s `server_url`.
    server_url: Mutex<Option<String>>,
    client: reqwest::Client,
    cache: Mutex<HashMap<(String, String), (bool, Instant)>>,
}

impl Auth {
    pub(crate) fn new(server_url: Option<String>) -> Auth {
        let builder = || reqwest::Client::builder().timeout(Duration::from_secs(30));
        // A host without CA certificates (a minimal image) still runs the gateway: plain HTTP to
        // the server works, and HTTPS fails per request, saying why, instead of a panic here.
        let client = builder()
            .build()
            .or_else(|e| {
                tracing::warn!(error = %e, "no CA certificates: an https server URL cannot be verified");
                builder().tls_certs_only(Vec::new()).build()
            })
            .unwrap_or_default();
        Auth {
            server_url: Mutex::new(server_url.map(|u| u.trim_end_matches('/').to_owned())),
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Asks `url` from now on; the cached answers are dropped.
    pub(crate) fn set_server_url(&self, url: &str) {
        let url = url.trim_end_matches('/').to_owned();
        let mut current = self.server_url.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.as_deref() != Some(url.as_str()) {
            *current = Some(url);
            self.lock().clear();
        }
    }

    /// Ok if the request's token belongs to a member of `project`; else dstack's 403, or a
    /// 500 when the server could not be asked.
    pub(crate) async fn check(&self, project: &str, headers: &HeaderMap) -> Result<(), ProxyError> {
        let denied = || {
            ProxyError::new(
                StatusCode::FORBIDDEN,
                format!("Unauthenticated or unauthorized to access project {project}"),
            )
        };
        let token = bearer(headers).ok_or_else(denied)?;
        if self.is_member(project, token).await? { Ok(()) } else { Err(denied()) }
    }

    async fn is_member(&self, project: &str, token: &str) -> Result<bool, ProxyError> {
        let key = (project.to_owned(), token.to_owned());
        if let Some((member, at)) = self.lock().get(&key)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(*member);
        }
        let failed = |what: String| {
            tracing::warn!(project, error = %what, "cannot check access with the server");
            ProxyError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Failed requesting dstack-server to check access: {what}"),
            )
        };
        let server = self.server_url.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let Some(server) = server else {
            return Err(failed("the gateway has no server URL".to_owned()));
        };
        let resp = self
            .client
            .post(format!("{server}/api/projects/{project}/get"))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| failed(format!("{}", e.without_url())))?;
        let member = match resp.status() {
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED | StatusCode::NOT_FOUND => false,
            s if s.is_success() => true,
            s => return Err(failed(format!("the server answered {s}"))),
        };
        let mut cache = self.lock();
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
        }
        cache.insert(key, (member, Instant::now()));
        Ok(member)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), (bool, Instant)>> {
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
