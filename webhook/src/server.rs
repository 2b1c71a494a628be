//! HTTPS server: `/mutate`, `/healthz`, `/readyz`, `/metrics`.
//!
//! [`serve`] takes an already-bound listener and a shutdown future, so tests
//! bind `127.0.0.1:0` and stop the server when they are done.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::admission::{self, Reviewer};
use crate::config::InjectConfig;
use crate::inject::{InjectError, Injector};
use crate::metrics::Metrics;
use crate::tls::{self, ReloadingCert, TlsError};

/// The API server caps admission bodies at 3 MiB; larger ones are refused.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a client may take, so that slow or silent clients (slowloris,
/// connections opened and never used) cannot hold the server's
/// connections and memory. The API server sends a review in one write, in
/// milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// The TLS handshake, from the TCP accept.
    pub handshake: Duration,
    /// The request headers (HTTP/1), which is also how long a kept-alive
    /// connection may stay idle between requests.
    pub headers: Duration,
    /// The request body, once the headers are in.
    pub body: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            handshake: Duration::from_secs(10),
            headers: Duration::from_secs(10),
            body: Duration::from_secs(10),
        }
    }
}

/// Admission reviews parsed and decided at once, at most; the others wait
/// for a turn once their bodies are in (a body is at most
/// [`MAX_BODY_BYTES`]; parsing the pod out of it takes a few times that,
/// which is what this bounds). Waiting starts after the body is read, so
/// that slow clients, which the body timeout cuts off, cannot hold the
/// turns. A review takes about a millisecond, so the wait is short.
pub const MAX_CONCURRENT_REVIEWS: usize = 4;

/// Shared state of the handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The reviewer, built once from the configuration.
    pub reviewer: Arc<Reviewer>,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// notAfter of the serving certificate (Unix seconds); `/readyz` fails
    /// once it has passed.
    pub cert_not_after: Arc<AtomicI64>,
    /// Turns for reviews ([`MAX_CONCURRENT_REVIEWS`]).
    pub reviews: Arc<tokio::sync::Semaphore>,
}

/// The router, without TLS.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/mutate/podsecurity/{level}", post(mutate_pod_security))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

/// `/mutate/podsecurity/LEVEL`: the webhook entry for namespaces that
/// enforce PodSecurity `baseline` or `restricted` (its `namespaceSelector`
/// matches `pod-security.kubernetes.io/enforce`): opted-in pods there are
/// left without the sidecar, which the level would reject, and told why.
async fn mutate_pod_security(
    State(state): State<AppState>,
    axum::extract::Path(level): axum::extract::Path<String>,
    body: Bytes,
) -> Response {
    match crate::inject::PodSecurityLevel::parse(&level) {
        Some(level) => review(state, body, Some(level)).await,
        None => (
            StatusCode::NOT_FOUND,
            Json(ErrorBody {
                error: format!(
                    "no PodSecurity level {:?}: /mutate/podsecurity/baseline or /mutate/podsecurity/restricted",
                    level.chars().take(32).collect::<String>()
                ),
            }),
        )
            .into_response(),
    }
}

async fn mutate(State(state): State<AppState>, body: Bytes) -> Response {
    review(state, body, None).await
}

/// Reviews one AdmissionReview body.
async fn review(
    state: AppState,
    body: Bytes,
    pod_security: Option<crate::inject::PodSecurityLevel>,
) -> Response {
    let Ok(_turn) = state.reviews.clone().acquire_owned().await else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let started = Instant::now();
    let request = match admission::parse(&body) {
        Ok(request) => request,
        Err(error) => {
            state.metrics.observe_malformed();
            tracing::warn!(%error, "rejected malformed admission request");
            return (
                StatusCode::BAD_REQUEST,
                Json(ErrorBody {
                    error: error.to_string(),
                }),
            )
                .into_response();
        }
    };
    let (response, outcome) = state.reviewer.review_in(&request, pod_security);
    state.metrics.observe(&outcome, started.elapsed());
    tracing::debug!(
        uid = %request.uid,
        namespace = request.namespace.as_deref().unwrap_or_default(),
        name = %request.name,
        ?outcome,
        "reviewed"
    );
    if outcome == admission::Outcome::Error {
        tracing::error!(uid = %request.uid, warnings = ?response.response.warnings, "injection failed; pod allowed unchanged");
    }
    // Serialize into a buffer sized for the base64 patch instead of
    // letting it regrow from a small default.
    let capacity = response
        .response
        .patch
        .as_ref()
        .map_or(0, |p| p.get().len())
        + 512;
    let mut body = Vec::with_capacity(capacity);
    match serde_json::to_writer(&mut body, &response) {
        Ok(()) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot serialize AdmissionReview response");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if state.cert_not_after.load(Ordering::Relaxed) > now {
        "ok".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "serving certificate has expired: rotate the TLS Secret",
        )
            .into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// Serves HTTPS on `listener` until `shutdown` resolves, then drains open
/// connections for up to 15 s.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    timeouts: Timeouts,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let app = app.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        timeouts.body,
    ));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.headers);
    builder.http2().timer(TokioTimer::new());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(app.clone());
        let watcher = graceful.watcher();
        let builder = builder.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(timeouts.handshake, acceptor.accept(tcp)).await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(error) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    tracing::info!("shutting down: draining connections");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain timeout");
    }
}

/// Everything [`run`] needs besides the listener.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Injector configuration.
    pub config: InjectConfig,
    /// PEM certificate chain file.
    pub tls_cert: PathBuf,
    /// PEM private key file.
    pub tls_key: PathBuf,
    /// How often the certificate files are checked for changes.
    pub cert_reload: Duration,
    /// How many rendered decisions to cache (0 disables the cache).
    pub plan_cache: usize,
    /// How long clients may take.
    pub timeouts: Timeouts,
}

/// Why [`run`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The certificate pair is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The configuration cannot be rendered into a sidecar.
    #[error("invalid injector configuration: {0}")]
    Injector(#[from] InjectError),
}

/// Loads the certificate, starts its reload loop and serves until
/// `shutdown` resolves. Fails only if it cannot start.
pub async fn run(
    listener: TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let reviewer = Arc::new(Reviewer::new(
        Injector::new(settings.config)?,
        settings.plan_cache,
    ));
    let cert = Arc::new(ReloadingCert::load(&settings.tls_cert, &settings.tls_key)?);
    let tls_config = Arc::new(tls::server_config(cert.clone())?);
    let metrics = Arc::new(Metrics::new());
    metrics.set_cert_not_after(cert.not_after());
    let cert_not_after = Arc::new(AtomicI64::new(cert.not_after()));

    let reload_metrics = metrics.clone();
    let reload_expiry = cert_not_after.clone();
    let watcher = tokio::spawn(cert.watch(settings.cert_reload, move |not_after| {
        reload_metrics.set_cert_not_after(not_after);
        reload_expiry.store(not_after, Ordering::Relaxed);
    }));
    let app = router(AppState {
        reviewer,
        metrics,
        cert_not_after,
        reviews: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_REVIEWS)),
    });
    serve(listener, tls_config, app, settings.timeouts, shutdown).await;
    watcher.abort();
    Ok(())
}
