//! The agent's HTTP API, served on a Unix socket. Handlers translate:
//! query → spec → domain call (on a blocking thread) → response.

pub mod error;
mod lttng;

use std::collections::HashMap;
use std::future::Future;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::sync::Semaphore;

pub use error::ApiError;

use crate::procfs::Procfs;
use crate::profile::{self, Format, PlanError};
use crate::{capabilities, process, sys};

/// Captures that may run at once; more get 429.
pub const MAX_CONCURRENT_CAPTURES: usize = 4;
/// Uprobes that may be attached at once; more get 429.
pub const MAX_CONCURRENT_PROBES: usize = 8;

/// Shared state of the handlers.
#[derive(Debug, Clone)]
pub struct AgentState {
    procfs: Procfs,
    captures: Arc<Semaphore>,
    probes: Arc<Semaphore>,
    lttng: Option<Arc<crate::lttng::Lttng>>,
}

impl Default for AgentState {
    fn default() -> Self {
        Self::new(Procfs::default())
    }
}

impl AgentState {
    /// State over a `/proc`.
    pub fn new(procfs: Procfs) -> Self {
        Self {
            procfs,
            captures: Arc::new(Semaphore::new(MAX_CONCURRENT_CAPTURES)),
            probes: Arc::new(Semaphore::new(MAX_CONCURRENT_PROBES)),
            lttng: None,
        }
    }

    /// Serves `/v1/lttng/*` with this LTTng side.
    pub fn with_lttng(mut self, lttng: Arc<crate::lttng::Lttng>) -> Self {
        self.lttng = Some(lttng);
        self
    }
}

/// The API routes.
pub fn router(state: AgentState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/capabilities", get(capabilities))
        .route("/v1/processes", get(processes))
        .route("/v1/profile", get(profile))
        .route("/v1/profile/trigger", get(trigger))
        .route("/debug/pprof/profile", get(go_pprof))
        .route("/v1/symbols", get(symbols))
        .route("/v1/uprobe", get(uprobe))
        .route("/v1/lttng/events", get(lttng::events))
        .route("/v1/lttng/record", get(lttng::record))
        .route("/v1/lttng/live", get(lttng::live))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such endpoint",
                "endpoints: /healthz, /v1/capabilities, /v1/processes, /v1/profile, /v1/profile/trigger, /v1/symbols, /v1/uprobe, /v1/lttng/events, /v1/lttng/record, /v1/lttng/live, /debug/pprof/profile",
            )
        })
        .with_state(state)
}

/// Creates the socket's directory, replaces a stale socket, binds, and
/// restricts the socket to its owner (0600).
pub fn bind_socket(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => tracing::info!(socket = %path.display(), "removed stale socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves `router` on `listener` (the Unix socket, or TCP with `--listen`)
/// until `shutdown` resolves, then finishes open requests.
pub async fn serve<L>(
    listener: L,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("worker failed: {e}"), "see the agent's log"))
}

async fn capabilities(State(state): State<AgentState>) -> Result<Response, ApiError> {
    let report = blocking(move || {
        let sessiond = state.lttng.as_ref().map(|l| l.sessiond().status());
        capabilities::report(&state.procfs, sessiond)
    })
    .await?;
    Ok(Json(report).into_response())
}

async fn processes(State(state): State<AgentState>) -> Result<Response, ApiError> {
    let list = blocking(move || process::list(&state.procfs, Duration::from_millis(200))).await?;
    let list = list
        .map_err(|e| ApiError::internal(format!("cannot read /proc: {e}"), "is /proc mounted?"))?;
    Ok(Json(list).into_response())
}

/// Sets the flag when dropped: the handler future is dropped when the
/// client disconnects, which stops the capture.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

async fn profile(
    State(state): State<AgentState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let spec =
        profile::spec::parse(&query).map_err(|e| ApiError::bad_request(e.message, e.hint))?;
    run_profile(state, spec).await
}

async fn go_pprof(
    State(state): State<AgentState>,
    Query(mut query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    // net/http/pprof: 30 s by default, always gzipped pprof.
    query
        .entry("seconds".to_owned())
        .or_insert_with(|| "30".to_owned());
    query.insert("format".to_owned(), "pprof".to_owned());
    let spec =
        profile::spec::parse(&query).map_err(|e| ApiError::bad_request(e.message, e.hint))?;
    run_profile(state, spec).await
}

async fn symbols(
    State(state): State<AgentState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    use crate::uprobe::symbols::{self, SymbolsError};
    const KNOWN: [&str; 4] = ["pid", "match", "module", "limit"];
    profile::spec::reject_unknown(&query, &KNOWN)
        .map_err(|e| ApiError::bad_request(e.message, e.hint))?;
    let pid = match query.get("pid").map(|p| profile::spec::parse_pids(p)) {
        Some(Ok(pids)) if pids.len() == 1 => pids[0],
        _ => {
            return Err(ApiError::bad_request(
                "pid=P is required (one process)",
                "list the pod's processes with /v1/processes",
            ));
        }
    };
    let pattern =
        regex::Regex::new(query.get("match").map_or(".", String::as_str)).map_err(|e| {
            ApiError::bad_request(
                format!("match is not a valid regular expression: {e}"),
                "e.g. match=^calc$ or match=Parse",
            )
        })?;
    let limit = profile::spec::number(&query, "limit", 1000, 1..=100_000)
        .map_err(|e| ApiError::bad_request(e.message, e.hint))?;
    let module = query.get("module").cloned();
    let procfs = state.procfs.clone();
    let (list, total) =
        blocking(move || symbols::list(&procfs, pid, &pattern, module.as_deref(), limit as usize))
            .await?
            .map_err(|e| match e {
                SymbolsError::PidNotVisible(_) => plan_error(PlanError::PidNotVisible(pid)),
                SymbolsError::ModuleNotMapped { ref mapped, .. } => ApiError::new(
                    StatusCode::NOT_FOUND,
                    e.to_string(),
                    format!("modules it maps: {}", mapped.join(", ")),
                ),
            })?;
    Ok(Json(serde_json::json!({
        "pid": pid,
        "total": total,
        "truncated": total > list.len(),
        "symbols": list,
    }))
    .into_response())
}

async fn uprobe(
    State(state): State<AgentState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    use crate::uprobe::run::{self, ResolveError};
    let spec =
        crate::uprobe::spec::parse(&query).map_err(|e| ApiError::bad_request(e.message, e.hint))?;
    let procfs = state.procfs.clone();
    let resolve_spec = spec.clone();
    let target = blocking(move || run::resolve(&resolve_spec, &procfs)).await?.map_err(|e| match e {
        ResolveError::PidNotVisible(pid) => plan_error(PlanError::PidNotVisible(pid)),
        ResolveError::UnknownSymbol { ref closest, .. } => ApiError::new(
            StatusCode::NOT_FOUND,
            e.to_string(),
            format!("closest names: {}; list them with /v1/symbols", closest.join(", ")),
        ),
        ResolveError::Module(ref inner) => match inner {
            crate::uprobe::symbols::SymbolsError::ModuleNotMapped { mapped, .. } => ApiError::new(
                StatusCode::NOT_FOUND,
                e.to_string(),
                format!("modules it maps: {}", mapped.join(", ")),
            ),
            crate::uprobe::symbols::SymbolsError::PidNotVisible(pid) => plan_error(PlanError::PidNotVisible(*pid)),
        },
        ResolveError::Binary { .. } => ApiError::new(
            StatusCode::NOT_FOUND,
            e.to_string(),
            "paths are as the process sees them (inside its container) when pid= is given",
        ),
        ResolveError::GoReturnProbe(_) => {
            ApiError::bad_request(e.to_string(), "drop ret= and trace entries only, or pass force=true at your own risk")
        }
        ResolveError::Anonymous(_) => ApiError::bad_request(
            e.to_string(),
            "only file-backed code (including ReadyToRun/AOT images) can be probed; use /v1/profile for JIT code",
        ),
        _ => ApiError::bad_request(e.to_string(), "check /v1/symbols for probeable functions and their offsets"),
    })?;
    let permit = state.probes.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("{MAX_CONCURRENT_PROBES} probes are already attached"),
            "retry when one of them has finished",
        )
    })?;
    let cancel = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (line_tx, line_rx) = tokio::sync::mpsc::channel::<String>(1024);
    let worker_cancel = cancel.clone();
    tokio::task::spawn_blocking(move || {
        run::stream(
            &spec,
            &target,
            &worker_cancel,
            |result| {
                let _ = ready_tx.send(result);
            },
            |line| line_tx.blocking_send(line).is_ok(),
        );
        drop(permit);
    });
    match ready_rx.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Err(ApiError::internal(
                e.to_string(),
                "the sidecar needs CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN (Linux requires it for uprobes since 2025) and seccompProfile Unconfined; check /v1/capabilities",
            ));
        }
        Err(_) => {
            return Err(ApiError::internal(
                "the probe worker stopped",
                "see the agent's log",
            ));
        }
    }
    // The body ends when the worker stops; dropping it (client gone) makes
    // the worker's next send fail, which detaches at once.
    let guard = CancelOnDrop(cancel);
    let body = futures_util::stream::unfold((line_rx, guard), |(mut rx, guard)| async move {
        rx.recv()
            .await
            .map(|line| (Ok::<_, std::convert::Infallible>(line), (rx, guard)))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

fn plan_error(e: PlanError) -> ApiError {
    match e {
        PlanError::PidNotVisible(pid) => ApiError::new(
            StatusCode::NOT_FOUND,
            e.to_string(),
            format!(
                "pid {pid} is not visible: is shareProcessNamespace enabled? List the pod's processes with /v1/processes"
            ),
        ),
    }
}

fn acquire_capture(state: &AgentState) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    state.captures.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("{MAX_CONCURRENT_CAPTURES} captures are already running"),
            "retry when one of them has finished",
        )
    })
}

fn capture_error(e: profile::capture::CaptureError) -> ApiError {
    ApiError::internal(
        e.to_string(),
        "the sidecar needs CAP_PERFMON and seccompProfile Unconfined; check /v1/capabilities",
    )
}

async fn trigger(
    State(state): State<AgentState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let spec =
        profile::trigger::parse(&query).map_err(|e| ApiError::bad_request(e.message, e.hint))?;
    let (mut plan, _) = profile::plan(
        &spec.profile,
        &state.procfs,
        sys::online_cpus(),
        capabilities::kallsyms_readable(),
    )
    .map_err(plan_error)?;
    plan.duration = Duration::from_secs(u64::from(spec.seconds));
    let permit = acquire_capture(&state)?;
    let cancel = Arc::new(AtomicBool::new(false));
    let _guard = CancelOnDrop(cancel.clone());
    let procfs = state.procfs.clone();
    let report = blocking(move || {
        let result = profile::trigger::run(&spec, &plan, &procfs, &cancel);
        drop(permit);
        result
    })
    .await?
    .map_err(capture_error)?;
    Ok(Json(report).into_response())
}

async fn run_profile(state: AgentState, spec: profile::ProfileSpec) -> Result<Response, ApiError> {
    let received = std::time::Instant::now();
    let (plan, meta) = profile::plan(
        &spec,
        &state.procfs,
        sys::online_cpus(),
        capabilities::kallsyms_readable(),
    )
    .map_err(plan_error)?;
    let permit = acquire_capture(&state)?;
    let cancel = Arc::new(AtomicBool::new(false));
    let _guard = CancelOnDrop(cancel.clone());
    let procfs = state.procfs.clone();
    let captured = blocking(move || {
        let result = profile::capture::run(&plan, &procfs, &cancel);
        drop(permit);
        result
    })
    .await?
    .map_err(capture_error)?;
    tracing::info!(
        samples = captured.samples,
        lost = captured.lost,
        processes = captured.processes.len(),
        "profile captured"
    );
    let format = spec.format;
    let capture_ms = captured.duration.as_secs_f64() * 1000.0;
    let (started, ended) = captured.sampling;
    let setup_ms = started.duration_since(received).as_secs_f64() * 1000.0;
    let body = blocking(move || profile::render::render(&captured, format, &meta))
        .await?
        .map_err(|e| ApiError::internal(e.to_string(), "try format=folded"))?;
    // Opening the events, sampling, and everything after it (final
    // symbolization, aggregation, rendering).
    let timing = format!(
        "setup;dur={setup_ms:.1}, capture;dur={capture_ms:.1}, result;dur={:.1}",
        ended.elapsed().as_secs_f64() * 1000.0
    );
    let mut response = ([(header::CONTENT_TYPE, format.content_type())], body).into_response();
    if let Ok(value) = timing.parse() {
        response.headers_mut().insert("server-timing", value);
    }
    if format == Format::Pprof
        && let Ok(value) = "attachment; filename=\"profile.pb.gz\"".parse()
    {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}
