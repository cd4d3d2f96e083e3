//! The HTTP endpoints: `/metrics` (Prometheus text format), `/healthz` and the JSON API
//! (`/api/devices`, `/api/devices/{mac}/destinations`).
//!
//! Handlers only render the snapshot the poller published last (see `snapshot`): no lock on
//! the state and no syscall on the scrape path.
//!
//! Connections are served by our own loop around hyper, so that no client can hold the agent:
//! a request's headers must arrive within [`HEADER_READ_TIMEOUT`], at most [`MAX_CONNECTIONS`]
//! are open at once (the next waits in the listen backlog), and a stop closes every connection
//! after [`SHUTDOWN_GRACE`] whatever the clients do.
//!
//! With a web configuration file (`--web.config.file`, see `web_config`), each connection is
//! TLS when the file has a TLS section (the handshake within [`HEADER_READ_TIMEOUT`] too), and
//! each request, whatever its path, passes the rate limit and basic authentication first.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, SystemTime},
};

use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{sync::Semaphore, task::JoinSet};

use axum::{
    Router,
    extract::{Path, Request, State},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::{
    http::{
        metrics::SharedMetrics,
        web_config::{Live, auth::Verdict},
    },
    snapshot::Published,
};

#[derive(Clone)]
struct AppState {
    metrics: SharedMetrics,
    published: Published,
    /// A poll older than this makes `/healthz` fail.
    stale_after: Duration,
}

/// How long a client may take to send a request's headers (also the idle time allowed on a
/// kept-alive connection before its next request).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; Prometheus needs one.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a stop lets requests in flight finish before it closes their connections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Serves until `shutdown` completes, then lets requests in flight finish for at most
/// [`SHUTDOWN_GRACE`]. `web` is the web configuration in force, if the agent has one.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: SharedMetrics,
    published: Published,
    poll_interval: Duration,
    web: Option<Live>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = AppState {
        metrics,
        published,
        stale_after: poll_interval * 3 + Duration::from_secs(5),
    };
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/api/devices", get(api_devices))
        .route("/api/devices/{mac}/destinations", get(api_destinations))
        .route("/", get(index))
        .with_state(state);
    let app = match &web {
        Some(live) => app.layer(axum::middleware::from_fn_with_state(live.clone(), guard)),
        None => app,
    };
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(app.clone());
        let closing = closing_rx.clone();
        let tls = web.as_ref().and_then(|live| live.current().tls.clone());
        connections.spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_connection(stream, service, closing).await,
                Some(config) => {
                    let accept = tokio_rustls::TlsAcceptor::from(config).accept(stream);
                    // A client that never finishes its handshake is dropped like one that
                    // never sends its headers; plain HTTP fails it at once, with no answer.
                    match tokio::time::timeout(HEADER_READ_TIMEOUT, accept).await {
                        Ok(Ok(stream)) => serve_connection(stream, service, closing).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
            }
        });
        while connections.try_join_next().is_some() {}
    }
    let _ = closing_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::info!(
            open = connections.len(),
            "closing connections whose clients did not finish within the grace period"
        );
        connections.abort_all();
    }
    Ok(())
}

/// Serves one connection's requests until it ends, or until `closing` says to stop.
async fn serve_connection<I, S>(io: I, service: S, mut closing: tokio::sync::watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = Response,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = closing.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// In front of every route when there is a web configuration, in the toolkit's order: the
/// rate limit (429, before any bcrypt), the configured headers, then basic authentication
/// (401 with `WWW-Authenticate: Basic`; 429 when too many checks are already queued).
async fn guard(State(live): State<Live>, request: Request, next: Next) -> Response {
    let config = live.current();
    if !live.limiter.allow(&config.rate_limit) {
        return (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests\n").into_response();
    }
    let mut response = if config.users.is_empty() {
        next.run(request).await
    } else {
        let credentials = request
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        match live.checker.check(&config.users, credentials).await {
            Verdict::Allowed => next.run(request).await,
            Verdict::Denied => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic")],
                "Unauthorized\n",
            )
                .into_response(),
            Verdict::Busy => (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, "1")],
                "Too Many Requests\n",
            )
                .into_response(),
        }
    };
    for (name, value) in &config.headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}

async fn metrics_handler(State(state): State<AppState>) -> impl IntoResponse {
    // Rendering 100k series takes tens of milliseconds of CPU: keep it off the async workers.
    let metrics = state.metrics.clone();
    match tokio::task::spawn_blocking(move || metrics.render_chunks()).await {
        Ok(chunks) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            axum::body::Body::new(Chunks::new(chunks)),
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            axum::body::Body::from(format!("rendering failed: {e}\n")),
        ),
    }
}

/// A body sent as the pieces it was rendered in, with its exact length.
struct Chunks {
    pieces: std::collections::VecDeque<bytes::Bytes>,
    left: u64,
}

impl Chunks {
    fn new(pieces: Vec<bytes::Bytes>) -> Self {
        let left = pieces.iter().map(|p| p.len() as u64).sum();
        Self {
            pieces: pieces.into_iter().filter(|p| !p.is_empty()).collect(),
            left,
        }
    }
}

impl http_body::Body for Chunks {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let piece = self.pieces.pop_front();
        if let Some(p) = &piece {
            self.left -= p.len() as u64;
        }
        std::task::Poll::Ready(piece.map(|p| Ok(http_body::Frame::data(p))))
    }

    fn is_end_stream(&self) -> bool {
        self.pieces.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left)
    }
}

/// 200 when the last poll is recent, 503 otherwise (the kernel maps cannot be read, or the
/// poller is stuck): a liveness check for systemd, procd or a load balancer.
async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let last = state.published.latest().polled_at;
    let age = last.and_then(|t| SystemTime::now().duration_since(t).ok());
    match age {
        Some(age) if age <= state.stale_after => (StatusCode::OK, "ok\n".to_owned()),
        Some(age) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("stale: last poll {:.1}s ago\n", age.as_secs_f64()),
        ),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no poll yet\n".to_owned()),
    }
}

async fn index() -> &'static str {
    "egress-monitor: see /metrics, /healthz, /api/devices and /api/devices/{mac}/destinations\n"
}

fn json_response(status: StatusCode, body: serde_json::Value) -> impl IntoResponse {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string() + "\n",
    )
}

async fn api_devices(State(state): State<AppState>) -> impl IntoResponse {
    // Thousands of devices make a large document: built off the async workers.
    let snapshot = state.published.latest();
    match tokio::task::spawn_blocking(move || crate::http::api::devices(&snapshot)).await {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(e) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({ "error": format!("rendering failed: {e}") }),
        ),
    }
}

async fn api_destinations(
    State(state): State<AppState>,
    Path(mac): Path<String>,
) -> impl IntoResponse {
    let result = crate::http::api::destinations(&state.published.latest(), &mac);
    match result {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(e) => json_response(
            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
            e.body(),
        ),
    }
}
