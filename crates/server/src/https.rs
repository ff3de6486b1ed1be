//! One HTTPS connection, bounded: a client that sends nothing, a partial request line or
//! partial headers, or a body that never arrives is dropped after a timeout, and a node holds
//! at most `max_connections` HTTPS connections at once (more are closed at accept).
//!
//! - headers: hyper's `header_read_timeout` (HTTP/1; from the first byte of a request to the end
//!   of its headers);
//! - body: the request body is wrapped so that no frame may take longer than `body_timeout`
//!   (`tower_http::timeout::TimeoutBody`; the handler's read fails and the answer is an error);
//! - idle: a watchdog closes a connection that has no request in flight and has moved no byte
//!   for `idle_timeout` (a request being handled, or a response being written, is not idle; a
//!   client that stops reading its response stops the writes, and so is);
//! - cap: a semaphore of `max_connections` permits, one held by each connection from accept
//!   (before the TLS handshake) to its end, or to its upgrade to a WebSocket (MQTT over
//!   WebSocket sessions are device sessions, bounded like MQTT ones by the keep-alive).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tower::ServiceExt as _;
use tower_http::timeout::TimeoutBody;

/// The limits of HTTPS connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpsLimits {
    /// A connection with no request in flight that moves no byte for this long is closed.
    pub idle_timeout: Duration,
    /// The most time from the first byte of a request to the end of its headers.
    pub header_timeout: Duration,
    /// The most time the server waits for the next part of a request body.
    pub body_timeout: Duration,
    /// The most HTTPS connections open at once.
    pub max_connections: usize,
}

impl Default for HttpsLimits {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(120),
            header_timeout: Duration::from_secs(15),
            body_timeout: Duration::from_secs(30),
            max_connections: 2048,
        }
    }
}

/// The connection cap of one listener.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionCap {
    permits: Arc<Semaphore>,
    max: usize,
    /// Whether the cap was hit since the last admitted connection (logged once per episode).
    refusing: Arc<AtomicBool>,
}

impl ConnectionCap {
    pub(crate) fn new(max_connections: usize) -> Self {
        let max = max_connections.clamp(1, Semaphore::MAX_PERMITS);
        Self { permits: Arc::new(Semaphore::new(max)), max, refusing: Arc::new(AtomicBool::new(false)) }
    }

    /// A permit for one more connection, or `None` at the cap (logged once until a connection
    /// is admitted again).
    pub(crate) fn try_admit(&self, peer: std::net::SocketAddr) -> Option<OwnedSemaphorePermit> {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                self.refusing.store(false, Ordering::Relaxed);
                Some(permit)
            }
            Err(_) => {
                if !self.refusing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(%peer, max = self.max,
                        "HTTPS connection cap reached: closing new connections until some end (https_max_connections)");
                }
                None
            }
        }
    }
}

/// When a connection last moved a byte, and how many requests it has in flight.
#[derive(Debug)]
struct Activity {
    start: Instant,
    /// Milliseconds after `start`.
    last: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Self { start: Instant::now(), last: AtomicU64::new(0), in_flight: AtomicUsize::new(0) }
    }

    fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }

    /// Returns when the connection has been idle for `timeout`.
    async fn idle(&self, timeout: Duration) {
        loop {
            let idle = self.idle_for();
            if self.in_flight.load(Ordering::Relaxed) == 0 && idle >= timeout {
                return;
            }
            tokio::time::sleep(timeout.saturating_sub(idle).max(Duration::from_millis(10))).await;
        }
    }
}

/// Counts a request in flight while it lives.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// A stream that records its activity.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Serves HTTP/1.1 and HTTP/2 (with upgrades, for WebSocket) on an established TLS stream
/// within `limits`, until the client leaves, a timeout drops it, or the connection is upgraded.
pub(crate) async fn serve_connection<S>(stream: S, peer: std::net::SocketAddr, app: Router, limits: HttpsLimits)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched { inner: stream, activity: activity.clone() });
    let app = app.layer(axum::Extension(axum::extract::ConnectInfo(peer)));
    let requests = activity.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let in_flight = InFlight::new(&requests);
        let request = request.map(|body| axum::body::Body::new(TimeoutBody::new(limits.body_timeout, body)));
        let app = app.clone();
        async move {
            let response = app.oneshot(request).await;
            drop(in_flight);
            response
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    builder.http2().timer(TokioTimer::new());
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::select! {
        served = connection => {
            if let Err(error) = served {
                tracing::debug!(%peer, %error, "HTTPS connection ended with an error");
            }
        }
        () = activity.idle(limits.idle_timeout) => {
            tracing::debug!(%peer, "closed an idle HTTPS connection");
        }
    }
}
