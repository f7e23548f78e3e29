//! Server plumbing every binary shares: the accept loop, HTTP/1.1 with a
//! deadline on request heads, health and readiness answers.
//!
//! hyper directly rather than `axum::serve`, which sets no timer, so a
//! client dribbling its request head would hold a connection for ever:
//! here the head must arrive within `HEAD_TIMEOUT`.

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use axum::{Json, Router};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::problem::ApiError;

/// Time a client has to send a request head, the first one or the next
/// on a kept-alive connection.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
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

/// Serves `app` on one connection over HTTP/1.1, with the head deadline;
/// at `shutdown` the request in flight finishes and the connection closes.
/// `keep_alive` false: one request, then close. Each request carries the
/// client's address as `ConnectInfo<SocketAddr>` when `peer` is known.
pub async fn http1<I>(
    io: I,
    app: Router,
    peer: Option<SocketAddr>,
    keep_alive: bool,
    shutdown: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
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

/// Serves `app` until `shutdown` fires; then lets the requests in flight
/// finish (for `DRAIN_TIMEOUT` at most) and returns.
pub async fn serve(listener: TcpListener, app: Router, shutdown: CancellationToken) {
    let connections = TaskTracker::new();
    accept_loop(&listener, &connections, &shutdown, |socket| {
        let peer = socket.peer_addr().ok();
        http1(socket, app.clone(), peer, true, shutdown.clone())
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
            tracing::warn!(service = name, %failure, "not ready");
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
