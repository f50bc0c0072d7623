//! The public listeners (HTTP and HTTPS): requests are routed by `Host` to a service's replicas
//! or to a project's model entrypoint, in the order of the phases of the nginx server block
//! dstack's gateway writes for each service (spec agents.md §4.8):
//!
//! 1. HTTP to an `https` service ⇒ 301 to `https://<host><uri>`;
//! 2. the location: the longest rate-limit prefix matching the path (router services: only
//!    `/v1/…`, `/generate`, `/chat/completions`, else 403); a `Content-Length` over
//!    `client_max_body_size` ⇒ 413 (a chunked body is cut there: 502);
//! 3. CORS preflight (`OPTIONS`, openai-format models) ⇒ 204, before auth;
//! 4. the location's rate limit ⇒ 429;
//! 5. `auth: true` ⇒ the server must say the token is a project member, else 403;
//! 6. the request counts in the service's stats from here on (nginx's `$dstack_replica_hit`),
//!    503 without replicas, else it goes to a replica (round-robin, streaming, upgrades).
//!
//! An unknown host gets 404 (nginx would answer with its default server).
//!
//! dstack's nginx exempts 127.0.0.1 from the redirect and from auth, because its model API
//! calls services back through nginx; ours calls the proxy in-process, so no caller is exempt.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::{HeaderMap, Method, Request, Response, StatusCode};
use axum::response::IntoResponse;
use dstack_agent_proto::gateway::RateLimitKey;
use dstack_proxy::ProxyError;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::Shared;
use crate::ratelimit::Limiter;
use crate::registry::Route;

/// The scheme a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    Http,
    Https,
}

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections on `listener` until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, tls: Option<TlsAcceptor>, shared: Arc<Shared>) {
    let scheme = if tls.is_some() { Scheme::Https } else { Scheme::Http };
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // The client's address as `X-Real-IP`, made once per connection, not per request.
        let remote =
            Arc::new(Peer { real_ip: HeaderValue::from_str(&remote.ip().to_string()).ok(), addr: remote });
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let peer = remote.clone();
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let shared = shared.clone();
                let remote = peer.clone();
                async move { Ok::<_, Infallible>(handle(&shared, scheme, &remote, req.map(Body::new)).await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            // Slow clients get 30 s for their headers (hyper's default, which needs a timer).
            builder.timer(hyper_util::rt::TokioTimer::new());
            let result = match tls {
                None => builder.serve_connection(TokioIo::new(stream), service).with_upgrades().await,
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            builder.serve_connection(TokioIo::new(stream), service).with_upgrades().await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(remote = %remote.addr, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(remote = %remote.addr, error = %e, "connection ended");
            }
        });
    }
}

/// The client end of a connection.
struct Peer {
    addr: SocketAddr,
    /// `addr`'s IP as the `X-Real-IP` header.
    real_ip: Option<HeaderValue>,
}

/// The host a request is for: `Host` without the port, lower-cased.
fn host_of(req: &Request<Body>) -> Option<String> {
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).or_else(|| req.uri().host())?;
    let host = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    Some(host.trim_end_matches('.').to_ascii_lowercase())
}

async fn handle(shared: &Arc<Shared>, scheme: Scheme, remote: &Peer, req: Request<Body>) -> Response<Body> {
    let Some(host) = host_of(&req) else {
        return ProxyError::new(StatusCode::BAD_REQUEST, "No Host header").into_response();
    };
    let routes = shared.registry.routes();
    if let Some(route) = routes.services.get(&host).cloned() {
        if route.https && scheme == Scheme::Http {
            return redirect(&host, &req);
        }
        return handle_service(shared, route, remote, req).await;
    }
    if let Some(entrypoint) = routes.entrypoints.get(&host).cloned() {
        if entrypoint.https && scheme == Scheme::Http {
            return redirect(&host, &req);
        }
        let path = req.uri().path().to_owned();
        return crate::models::handle(shared, &entrypoint.project_name, path.trim_start_matches('/'), req)
            .await;
    }
    ProxyError::new(StatusCode::NOT_FOUND, format!("No service at {host}")).into_response()
}

fn redirect(host: &str, req: &Request<Body>) -> Response<Body> {
    let uri = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = format!("https://{host}{uri}");
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
    if let Ok(value) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, value);
    }
    resp
}

/// The paths a router service serves; dstack's `ROUTER_WHITELISTED_PATHS` as nginx locations.
fn router_location(path: &str) -> Option<&'static str> {
    match path {
        "/generate" => Some("/generate"),
        "/chat/completions" => Some("/chat/completions"),
        p if p.starts_with("/v1/") => Some("/v1/"),
        _ => None,
    }
}

/// The rate limit of the location `path` falls in: the longest matching prefix wins. For a
/// router location, the longest limit prefix that the location itself starts with.
fn limit_for<'a>(
    route: &'a Route,
    path: &str,
) -> Option<&'a (dstack_agent_proto::gateway::RateLimit, Arc<Limiter>)> {
    route
        .limits
        .iter()
        .filter(|(l, _)| path.starts_with(l.prefix.as_str()))
        .max_by_key(|(l, _)| l.prefix.len())
}

async fn handle_service(
    shared: &Arc<Shared>,
    route: Arc<Route>,
    remote: &Peer,
    mut req: Request<Body>,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let location: &str = if route.has_router_replica {
        match router_location(&path) {
            Some(location) => location,
            None => {
                return ProxyError::new(StatusCode::FORBIDDEN, "Path is not allowed for this service")
                    .into_response();
            }
        }
    } else {
        &path
    };
    let length = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let max = route.client_max_body_size;
    if max > 0 && length.is_some_and(|n| n > max) {
        return ProxyError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large").into_response();
    }
    if max > 0 && length.is_none() && !hyper::body::Body::is_end_stream(req.body()) {
        // A chunked body is cut at the limit: the request to the replica fails (502), as the
        // body streams through instead of being buffered first as nginx does (413).
        let limit = usize::try_from(max).unwrap_or(usize::MAX);
        req = req.map(|body| Body::new(http_body_util::Limited::new(body, limit)));
    }
    if route.cors && req.method() == Method::OPTIONS {
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        add_cors(resp.headers_mut());
        resp.headers_mut().insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        return resp;
    }
    if let Some((limit, limiter)) = limit_for(&route, location) {
        let key: Option<Vec<u8>> = match &limit.key {
            RateLimitKey::IpAddress => Some(remote.addr.ip().to_string().into_bytes()),
            RateLimitKey::Header { header } => {
                req.headers().get(header.as_str()).map(|v| v.as_bytes().to_vec()).filter(|v| !v.is_empty())
            }
        };
        if let Some(key) = key
            && !limiter.allow(&key)
        {
            return ProxyError::new(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests").into_response();
        }
    }
    if route.auth
        && let Err(e) = shared.auth.check(&route.project, req.headers()).await
    {
        return e.into_response();
    }
    let guard = shared.load.begin(route.stats_key());
    // nginx's `proxy_set_header Host $host`: the name without the port.
    if let Some(host) = &route.host_header {
        req.headers_mut().insert(header::HOST, host.clone());
    }
    if let Some(ip) = &remote.real_ip {
        req.headers_mut().insert(HeaderName::from_static("x-real-ip"), ip.clone());
    }
    let path_and_query = req.uri().path_and_query().map_or("/", |pq| pq.as_str()).to_owned();
    let mut resp = shared
        .proxy
        .forward_with_timeout(req, &route.upstreams, &path_and_query, &[], route.read_timeout)
        .await;
    if route.cors {
        let headers = resp.headers_mut();
        headers.remove(header::ACCESS_CONTROL_ALLOW_CREDENTIALS);
        add_cors(headers);
    }
    dstack_proxy::load::guard_response(resp, guard)
}

/// dstack's CORS headers for openai-format services.
fn add_cors(headers: &mut HeaderMap) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, PUT, DELETE, PATCH, OPTIONS, HEAD"),
    );
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("*"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lose_their_port_and_case() {
        let req = |h: &str| Request::builder().header(header::HOST, h).body(Body::empty()).expect("request");
        assert_eq!(host_of(&req("Svc.Example.com:8443")).as_deref(), Some("svc.example.com"));
        assert_eq!(host_of(&req("svc.example.com.")).as_deref(), Some("svc.example.com"));
        assert_eq!(host_of(&req("[::1]:80")).as_deref(), Some("::1"));
    }

    #[test]
    fn router_services_serve_three_locations() {
        assert_eq!(router_location("/v1/chat/completions"), Some("/v1/"));
        assert_eq!(router_location("/generate"), Some("/generate"));
        assert_eq!(router_location("/generate/x"), None);
        assert_eq!(router_location("/"), None);
    }
}
