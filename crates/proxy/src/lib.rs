//! The HTTP proxy in front of service replicas, shared by the server's in-server proxy
//! (`/proxy/services/…`) and, later, the gateway.
//!
//! [`Proxy::forward`] sends one downstream request to one of the given upstreams (the ready
//! replicas, which the caller looks up):
//!
//! - bodies stream both ways (SSE and chunked LLM output arrive as the replica writes them);
//! - upgrades (WebSockets) are passed through: the 101 goes back to the client and the two
//!   upgraded connections are spliced;
//! - replicas are taken round-robin; a replica that cannot be connected to is skipped and the
//!   request goes to the next one (nothing was sent yet, so the retry is safe);
//! - HTTP/1.1 connections to replicas are pooled per address and reused once a response has
//!   been read to its end (or dropped with nothing left to read); a pooled connection that
//!   turns out closed gives the request back and a fresh connection is opened; a thread that
//!   runs its own runtime can keep a pool of its own ([`use_own_pool`]);
//! - hop-by-hop headers are dropped in both directions, as RFC 9110 §7.6.1 asks;
//! - per-replica counters ([`ReplicaStats`]: requests, failures, in flight);
//! - per-service load over the autoscaling windows ([`load::LoadTracker`]).
//!
//! Errors leave in dstack's proxy shape, `{"detail": "…"}` with 502 (the replica failed),
//! 504 (no response headers in time) or what the caller chose.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Request, Response, StatusCode, Uri, Version};
use axum::response::IntoResponse;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

pub mod load;
pub mod workers;

/// One replica the proxy may send to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Stable for the replica's life (the job id): the key of its [`ReplicaStats`].
    pub id: String,
    pub addr: SocketAddr,
}

/// Timeouts of a [`Proxy`].
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// To open a TCP connection to a replica; past it the next replica is tried.
    pub connect_timeout: Duration,
    /// From sending the request to the response headers (dstack's
    /// `DSTACK_SERVICE_CLIENT_TIMEOUT`, 300 s); past it the client gets a 504.
    pub response_timeout: Duration,
    /// Idle pooled connections kept per replica.
    pub max_idle_per_upstream: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(300),
            max_idle_per_upstream: 64,
        }
    }
}

/// Counters of one replica, kept while the proxy runs.
#[derive(Debug, Default)]
pub struct ReplicaStats {
    requests: AtomicU64,
    failures: AtomicU64,
    in_flight: AtomicI64,
}

/// A copy of [`ReplicaStats`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    /// Requests sent to the replica (each try counts once).
    pub requests: u64,
    /// Tries that failed: no connection, or no response.
    pub failures: u64,
    /// Requests whose response has not been read to its end yet (WebSockets: open sockets).
    pub in_flight: i64,
}

impl ReplicaStats {
    fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
        }
    }
}

/// An error answered to the client: `{"detail": …}` with `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyError {
    pub status: StatusCode,
    pub detail: String,
}

impl ProxyError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> ProxyError {
        ProxyError { status, detail: detail.into() }
    }
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> axum::response::Response {
        let body = format!("{{\"detail\":{}}}", json_string(&self.detail));
        (self.status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

thread_local! {
    /// The pool shard of this thread's replica connections (see [`use_own_pool`]).
    static POOL_SHARD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Connections that requests on this thread open go back to pool shard `shard`, and only
/// this shard's connections are taken: for a thread that runs its own single-thread runtime
/// (the gateway's workers), whose connection tasks would otherwise be polled by another
/// thread's runtime, waking it for every request. Threads that never call this share shard 0.
pub fn use_own_pool(shard: usize) {
    POOL_SHARD.with(|s| s.set(shard));
}

fn pool_shard() -> usize {
    POOL_SHARD.with(std::cell::Cell::get)
}

/// Idle connections by replica address and pool shard.
type IdlePool = FastMap<(SocketAddr, usize), Vec<SendRequest<Body>>>;

/// The proxy: connection pools and stats of every replica it has sent to.
pub struct Proxy {
    options: Options,
    idle: Mutex<IdlePool>,
    stats: Mutex<FastMap<String, Arc<ReplicaStats>>>,
    next: AtomicUsize,
}

impl Proxy {
    pub fn new(options: Options) -> Arc<Proxy> {
        Arc::new(Proxy {
            options,
            idle: Mutex::new(FastMap::default()),
            stats: Mutex::new(FastMap::default()),
            next: AtomicUsize::new(0),
        })
    }

    /// The counters of replica `id`, if the proxy has sent to it.
    pub fn stats(&self, id: &str) -> Option<StatsSnapshot> {
        lock(&self.stats).get(id).map(|s| s.snapshot())
    }

    /// Forgets the counters and idle connections of replicas not in `live` (ids), e.g. after
    /// a scale-down.
    pub fn retain(&self, live: &[Upstream]) {
        lock(&self.stats).retain(|id, _| live.iter().any(|u| &u.id == id));
        lock(&self.idle).retain(|(addr, _), _| live.iter().any(|u| &u.addr == addr));
    }

    fn stats_of(&self, id: &str) -> Arc<ReplicaStats> {
        let mut stats = lock(&self.stats);
        match stats.get(id) {
            Some(s) => s.clone(),
            None => stats.entry(id.to_owned()).or_default().clone(),
        }
    }

    /// Sends `req` to one of `upstreams` as `path_and_query` (origin form, starting with
    /// `/`), without the headers in `drop_headers` (e.g. the dstack token the proxy checked),
    /// and streams the response back. Never fails: errors become [`ProxyError`] responses.
    pub async fn forward(
        self: &Arc<Self>,
        req: Request<Body>,
        upstreams: &[Upstream],
        path_and_query: &str,
        drop_headers: &[HeaderName],
    ) -> Response<Body> {
        self.forward_with_timeout(req, upstreams, path_and_query, drop_headers, self.options.response_timeout)
            .await
    }

    /// [`Proxy::forward`] with its own [`Options::response_timeout`] (the gateway's
    /// per-service `read_timeout`).
    pub async fn forward_with_timeout(
        self: &Arc<Self>,
        req: Request<Body>,
        upstreams: &[Upstream],
        path_and_query: &str,
        drop_headers: &[HeaderName],
        response_timeout: Duration,
    ) -> Response<Body> {
        match self.try_forward(req, upstreams, path_and_query, drop_headers, response_timeout).await {
            Ok(resp) => resp,
            Err(e) => e.into_response(),
        }
    }

    async fn try_forward(
        self: &Arc<Self>,
        req: Request<Body>,
        upstreams: &[Upstream],
        path_and_query: &str,
        drop_headers: &[HeaderName],
        response_timeout: Duration,
    ) -> Result<Response<Body>, ProxyError> {
        if upstreams.is_empty() {
            return Err(ProxyError::new(StatusCode::SERVICE_UNAVAILABLE, "No ready replicas"));
        }
        let uri: Uri = path_and_query.parse().map_err(|_| {
            ProxyError::new(StatusCode::BAD_REQUEST, format!("Bad request path {path_and_query:?}"))
        })?;
        let (mut parts, body) = req.into_parts();
        let upgrade = is_upgrade(&parts.headers);
        let downstream_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
        strip_hop_by_hop(&mut parts.headers, upgrade);
        for name in drop_headers {
            parts.headers.remove(name);
        }
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        let mut req = Request::from_parts(parts, body);
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..upstreams.len() {
            let upstream = &upstreams[(start + i) % upstreams.len()];
            let stats = self.stats_of(&upstream.id);
            // Connecting and upgrades are boxed: a request on a pooled connection takes
            // neither, and their futures would make every request's future larger (it is
            // copied when the request starts).
            if upgrade {
                let Some(sender) = Box::pin(self.connect(upstream, &stats, true)).await else { continue };
                stats.requests.fetch_add(1, Ordering::Relaxed);
                let on_upgrade = downstream_upgrade.ok_or_else(|| {
                    ProxyError::new(StatusCode::BAD_REQUEST, "This connection cannot be upgraded")
                })?;
                return Box::pin(self.forward_upgrade(req, sender, on_upgrade, stats, response_timeout))
                    .await;
            }
            // A pooled connection first; one found closed hands the request back.
            while let Some(mut sender) = self.checkout(upstream.addr) {
                if sender.ready().await.is_err() {
                    continue;
                }
                match self.send(&mut sender, req, &stats, response_timeout).await? {
                    Sent::Response(resp, in_flight) => {
                        return Ok(self.respond(resp, sender, upstream.addr, in_flight));
                    }
                    Sent::NotSent(back) => req = back,
                }
            }
            let Some(mut sender) = Box::pin(self.connect(upstream, &stats, false)).await else { continue };
            match self.send(&mut sender, req, &stats, response_timeout).await? {
                Sent::Response(resp, in_flight) => {
                    return Ok(self.respond(resp, sender, upstream.addr, in_flight));
                }
                Sent::NotSent(back) => {
                    stats.failures.fetch_add(1, Ordering::Relaxed);
                    req = back;
                }
            }
        }
        Err(ProxyError::new(StatusCode::BAD_GATEWAY, "Error requesting upstream"))
    }

    /// Sends on `sender`: the response, or the request back if it never left. The request
    /// counts in flight from the moment it is sent (a replica that takes long to answer is
    /// busy with it, which a drain must wait for), not only once the headers arrive.
    async fn send(
        &self,
        sender: &mut SendRequest<Body>,
        req: Request<Body>,
        stats: &Arc<ReplicaStats>,
        response_timeout: Duration,
    ) -> Result<Sent, ProxyError> {
        stats.requests.fetch_add(1, Ordering::Relaxed);
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        let in_flight = InFlight(stats.clone());
        match tokio::time::timeout(response_timeout, sender.try_send_request(req)).await {
            Ok(Ok(resp)) => Ok(Sent::Response(resp, in_flight)),
            Ok(Err(mut e)) => match e.take_message() {
                Some(req) => Ok(Sent::NotSent(req)),
                None => {
                    stats.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e.error(), "upstream failed after the request was sent");
                    Err(ProxyError::new(StatusCode::BAD_GATEWAY, "Error requesting upstream"))
                }
            },
            Err(_) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                Err(ProxyError::new(StatusCode::GATEWAY_TIMEOUT, "Timed out requesting upstream"))
            }
        }
    }

    fn checkout(&self, addr: SocketAddr) -> Option<SendRequest<Body>> {
        let mut idle = lock(&self.idle);
        let senders = idle.get_mut(&(addr, pool_shard()))?;
        while let Some(sender) = senders.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    fn checkin(&self, addr: SocketAddr, sender: SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = lock(&self.idle);
        let senders = idle.entry((addr, pool_shard())).or_default();
        if senders.len() < self.options.max_idle_per_upstream {
            senders.push(sender);
        }
    }

    /// A new HTTP/1.1 connection to `upstream`, or `None` (counted as a failure) if it cannot
    /// be opened in time.
    async fn connect(
        &self,
        upstream: &Upstream,
        stats: &ReplicaStats,
        upgrades: bool,
    ) -> Option<SendRequest<Body>> {
        let stream = match tokio::time::timeout(
            self.options.connect_timeout,
            tokio::net::TcpStream::connect(upstream.addr),
        )
        .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(replica = %upstream.id, addr = %upstream.addr, error = %e, "cannot connect to replica");
                return None;
            }
            Err(_) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(replica = %upstream.id, addr = %upstream.addr, "connecting to replica timed out");
                return None;
            }
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = match http1::handshake(TokioIo::new(stream)).await {
            Ok(pair) => pair,
            Err(e) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(replica = %upstream.id, error = %e, "HTTP handshake with replica failed");
                return None;
            }
        };
        if upgrades {
            tokio::spawn(async move {
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!(error = %e, "upstream connection ended");
                }
            });
        } else {
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream connection ended");
                }
            });
        }
        Some(sender)
    }

    /// The client's response: the replica's, hop-by-hop headers dropped, its body streamed;
    /// the connection goes back to the pool once the body has been read to its end.
    fn respond(
        self: &Arc<Self>,
        resp: Response<Incoming>,
        sender: SendRequest<Body>,
        addr: SocketAddr,
        in_flight: InFlight,
    ) -> Response<Body> {
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers, false);
        let body = PooledBody {
            inner: body,
            finish: Some(Finish { proxy: self.clone(), sender, addr }),
            stats: in_flight,
        };
        Response::from_parts(parts, Body::new(body))
    }

    async fn forward_upgrade(
        &self,
        req: Request<Body>,
        mut sender: SendRequest<Body>,
        downstream: hyper::upgrade::OnUpgrade,
        stats: Arc<ReplicaStats>,
        response_timeout: Duration,
    ) -> Result<Response<Body>, ProxyError> {
        let mut resp = match tokio::time::timeout(response_timeout, sender.send_request(req)).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "upgrade request failed");
                return Err(ProxyError::new(StatusCode::BAD_GATEWAY, "Error requesting upstream"));
            }
            Err(_) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                return Err(ProxyError::new(StatusCode::GATEWAY_TIMEOUT, "Timed out requesting upstream"));
            }
        };
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            // Refused: an ordinary response, on a connection that is not reused.
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers, false);
            return Ok(Response::from_parts(parts, Body::new(body)));
        }
        let upstream = hyper::upgrade::on(&mut resp);
        let in_flight = InFlight(stats);
        in_flight.0.in_flight.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let _in_flight = in_flight;
            match tokio::try_join!(downstream, upstream) {
                Ok((down, up)) => {
                    let mut down = TokioIo::new(down);
                    let mut up = TokioIo::new(up);
                    if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
                        tracing::debug!(error = %e, "upgraded connection ended");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "upgrade failed"),
            }
        });
        let (mut parts, _) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers, true);
        Ok(Response::from_parts(parts, Body::empty()))
    }
}

enum Sent {
    /// The response, with the request still counted in flight until its body ends.
    Response(Response<Incoming>, InFlight),
    NotSent(Request<Body>),
}

/// The proxy's maps, looked up on every request: foldhash, several times cheaper than SipHash
/// for these short keys (addresses, ids) in a callgrind profile; its seed is random per
/// process, and the keys are the server's (replicas, services), not the client's.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `Connection: upgrade` with an `Upgrade` header.
fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Drops the hop-by-hop headers and those `Connection` names; an upgrade keeps
/// `Connection: upgrade` and `Upgrade`.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Most messages have none of them (names in `Connection` need a `Connection` header):
    // one pass over the names instead of a removal (a hash and a probe) for each.
    let any = headers.keys().any(|n| *n == header::UPGRADE || HOP_BY_HOP.contains(n));
    if any {
        strip_hop_by_hop_slow(headers, upgrade);
    } else if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

fn strip_hop_by_hop_slow(headers: &mut HeaderMap, upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !(upgrade && n == header::UPGRADE))
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// Decrements the replica's in-flight count when dropped.
struct InFlight(Arc<ReplicaStats>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What to do with a connection whose response was read to its end.
struct Finish {
    proxy: Arc<Proxy>,
    sender: SendRequest<Body>,
    addr: SocketAddr,
}

/// A replica's response body; at its end the connection returns to the pool. Dropped before
/// the end (the client went away), the connection is closed instead. A body that is over
/// before it is read (empty, 204, an answer to HEAD) is never polled by a server that sees
/// `is_end_stream`: it goes back to the pool when it is dropped.
struct PooledBody {
    inner: Incoming,
    finish: Option<Finish>,
    stats: InFlight,
}

impl hyper::body::Body for PooledBody {
    type Data = hyper::body::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        // The end: no more frames, or (a body of known length) the last one; the server
        // writing the client's response may not poll again after that.
        let ended = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => self.inner.is_end_stream(),
            _ => false,
        };
        if ended && let Some(finish) = self.finish.take() {
            finish.proxy.checkin(finish.addr, finish.sender);
        }
        if let Poll::Ready(Some(Err(_))) = polled {
            self.finish = None;
            self.stats.0.failures.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if hyper::body::Body::is_end_stream(&self.inner)
            && let Some(finish) = self.finish.take()
        {
            finish.proxy.checkin(finish.addr, finish.sender);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_dropped_and_upgrades_kept() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret-hop"));
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut h, false);
        let names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["content-type"]);

        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get(header::UPGRADE).map(|v| v.as_bytes()), Some(&b"websocket"[..]));
        assert_eq!(h.get(header::CONNECTION).map(|v| v.as_bytes()), Some(&b"upgrade"[..]));
        h.remove(header::CONNECTION);
        assert!(!is_upgrade(&h), "Upgrade without Connection: upgrade is no upgrade");
    }

    #[test]
    fn errors_have_dstacks_shape() {
        let e = ProxyError::new(StatusCode::BAD_GATEWAY, "bad \"upstream\"\n");
        assert_eq!(
            format!("{{\"detail\":{}}}", json_string(&e.detail)),
            r#"{"detail":"bad \"upstream\"\u000a"}"#
        );
    }
}
