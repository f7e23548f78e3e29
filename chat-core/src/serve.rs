//! Server plumbing every binary shares: the accept loop, HTTP/1.1 with a
//! deadline on request heads, health and readiness answers.
//!
//! hyper directly rather than `axum::serve`, which sets no timer, so a
//! client dribbling its request head would hold a connection for ever:
//! here the head must arrive within `HEAD_TIMEOUT`, fit in `HEAD_LIMIT`
//! bytes, an answer the client stops reading is cut after the write
//! timeout, and a server holds at most its connection cap.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::{Json, Router};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::problem::ApiError;

/// Time a client has to send a request head, the first one or the next
/// on a kept-alive connection.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head (request line and headers) taken; a larger one
/// is answered 431. It is also the size of hyper's read buffer, the
/// least hyper allows.
pub const HEAD_LIMIT: usize = 8 * 1024;
/// Time requests in flight get to finish after shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid Kafka settings: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("invalid Redis settings: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("invalid authentication settings: {0}")]
    Auth(#[from] crate::auth::AuthSetupError),
    #[error("invalid CORS origin {0:?}")]
    Origin(String),
}

/// Listens on `addr` (port 0 picks a free port).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// A server binary's life after parsing its configuration: logs set up,
/// the server bound, run until SIGINT or SIGTERM; a failure to start is
/// logged and exits non-zero.
pub async fn main<S, B, R, F>(name: &str, bind: B, run: R) -> ExitCode
where
    B: Future<Output = Result<S, StartError>>,
    R: FnOnce(S, CancellationToken) -> F,
    F: Future<Output = ()>,
{
    crate::telemetry::init();
    let shutdown = crate::shutdown::on_signal();
    match bind.await {
        Ok(server) => {
            run(server, shutdown).await;
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%error, "{name} failed to start");
            ExitCode::FAILURE
        }
    }
}

/// Accepts connections until `shutdown` fires, each served by `serve` in a
/// task of `connections`, so that shutdown can wait for them.
pub async fn accept_loop<F, Fut>(
    listener: &TcpListener,
    connections: &TaskTracker,
    shutdown: &CancellationToken,
    mut serve: F,
) where
    F: FnMut(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((socket, _)) => {
                let _ = socket.set_nodelay(true);
                connections.spawn(serve(socket));
            }
            Err(error) => {
                // Out of file descriptors, most likely: wait for some to close.
                warn!(%error, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// How many connections a server holds and how long it waits for a client
/// to take its answer.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections held at once; one more is answered 503 and closed.
    pub max_connections: usize,
    /// Time a client may take no bytes of an answer before the connection
    /// is closed.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// A connection's transport, closed with an error when a write makes no
/// progress for `timeout`: a client that stops reading cannot hold the
/// connection's task and buffers for ever.
#[derive(Debug)]
pub struct WriteDeadline<I> {
    inner: I,
    timeout: Duration,
    /// Set while a write waits for the client to take bytes.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<I> WriteDeadline<I> {
    pub fn new(inner: I, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// `progress` as the write's outcome: done clears the deadline; pending
    /// starts it, or fails once it has passed.
    fn watch<T>(
        &mut self,
        progress: Poll<std::io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<T>> {
        if progress.is_ready() {
            self.stalled = None;
            return progress;
        }
        let timeout = self.timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if stalled.as_mut().poll(cx).is_ready() {
            metrics::counter!("http_write_timeouts_total").increment(1);
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client took no bytes of the answer within the write timeout",
            )));
        }
        Poll::Pending
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for WriteDeadline<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let progress = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(progress, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let progress = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(progress, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let progress = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(progress, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let progress = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(progress, cx)
    }
}

/// One of a server's open connections, given back when dropped.
struct Open(Arc<AtomicUsize>);

impl Open {
    /// A place among `max`, or `None` when all are taken.
    fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        let now = open.fetch_add(1, Ordering::AcqRel) + 1;
        let place = Self(Arc::clone(open));
        if now > max {
            return None;
        }
        metrics::gauge!(crate::metrics::name::HTTP_OPEN_CONNECTIONS).set(now as f64);
        Some(place)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let now = self.0.fetch_sub(1, Ordering::AcqRel) - 1;
        metrics::gauge!(crate::metrics::name::HTTP_OPEN_CONNECTIONS).set(now as f64);
    }
}

/// Answers 503 on a connection over the cap, and closes it.
async fn refuse(mut socket: TcpStream, max: usize) {
    metrics::counter!("http_connections_refused_total").increment(1);
    let error = ApiError::unavailable(format!(
        "this server holds {max} connections, its limit; retry shortly"
    ));
    let response = error.to_http1(&[]);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        socket.write_all(&response).await?;
        socket.shutdown().await
    })
    .await;
}

/// Serves `app` on one connection over HTTP/1.1, with the head deadline
/// and size limit; at `shutdown` the request in flight finishes and the
/// connection closes. `keep_alive` false: one request, then close. Each
/// request carries the client's address as `ConnectInfo<SocketAddr>` when
/// `peer` is known.
pub async fn http1<I>(
    io: I,
    app: Router,
    peer: Option<SocketAddr>,
    keep_alive: bool,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let tower = hyper_util::service::TowerToHyperService::new(app);
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            if let Some(peer) = peer {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
            }
            hyper::service::Service::call(&tower, request)
        });
    let served = hyper::server::conn::http1::Builder::new()
        .keep_alive(keep_alive)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(HEAD_LIMIT)
        .serve_connection(hyper_util::rt::TokioIo::new(io), service);
    tokio::pin!(served);
    tokio::select! {
        _ = served.as_mut() => {}
        () = shutdown.cancelled() => {
            served.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, served).await;
        }
    }
}

/// Serves `app` within `limits` until `shutdown` fires; then lets the
/// requests in flight finish (for `DRAIN_TIMEOUT` at most) and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let connections = TaskTracker::new();
    let open = Arc::new(AtomicUsize::new(0));
    accept_loop(&listener, &connections, &shutdown, |socket| {
        let peer = socket.peer_addr().ok();
        let place = Open::take(&open, limits.max_connections);
        let (app, shutdown) = (app.clone(), shutdown.clone());
        async move {
            let Some(_place) = place else {
                return refuse(socket, limits.max_connections).await;
            };
            let io = WriteDeadline::new(socket, limits.write_timeout);
            http1(io, app, peer, true, shutdown).await;
        }
    })
    .await;
    drop(listener);
    drain(connections).await;
}

/// Waits (for `DRAIN_TIMEOUT` at most) for the connections' tasks to end.
pub async fn drain(connections: TaskTracker) {
    connections.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, connections.wait())
        .await
        .is_err()
    {
        warn!("requests still in flight at shutdown were cut off");
    }
}

/// `GET /healthz`: the process answers.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Whether a "not ready" may be logged as a warning now: at most once every
/// 10 s, however often the probe asks.
fn warn_now() -> bool {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST.load(Ordering::Relaxed);
    now >= last + 10
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

/// `GET /readyz` from the checks of the services a server needs, each
/// named (`kafka`, `redis`) with what failed, if anything: 200 with each
/// `ok`, or 503 naming what is not ready. What failed is logged, not
/// answered: an error of a client library tells a caller about the inside
/// of the system.
pub fn ready(checks: &[(&str, Option<String>)]) -> Result<Json<serde_json::Value>, ApiError> {
    let failures: Vec<String> = checks
        .iter()
        .filter_map(|(name, failure)| {
            let failure = failure.as_ref()?;
            if warn_now() {
                tracing::warn!(service = name, %failure, "not ready");
            } else {
                tracing::debug!(service = name, %failure, "not ready");
            }
            let mut label = name.to_string();
            if let Some(first) = label.get_mut(..1) {
                first.make_ascii_uppercase();
            }
            Some(format!("{label} is not ready"))
        })
        .collect();
    if !failures.is_empty() {
        return Err(ApiError::unavailable(format!(
            "not ready: {}",
            failures.join("; ")
        )));
    }
    let mut body = serde_json::json!({"status": "ready"});
    for (name, _) in checks {
        body[*name] = "ok".into();
    }
    Ok(Json(body))
}
