//! `/v1/lttng/events`, `/v1/lttng/record` and `/v1/lttng/live`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{AgentState, ApiError, CancelOnDrop, acquire_capture, blocking, plan_error};
use crate::lttng::{Lttng, RecordError, RecordFormat, record, spec};
use crate::profile::PlanError;

/// What usually keeps applications from registering.
const NOT_REGISTERED_HINT: &str = "no application has registered with the LTTng session daemon. \
Usually /var/run/lttng is not shared with the app container (the tracecar.dev/inject annotation shares it), \
or the app does not load liblttng-ust (link it with -llttng-ust, or LD_PRELOAD a liblttng-ust-*-wrapper library); \
for .NET set DOTNET_LTTng=1. Apps register when they start, or when the daemon comes up if they started first.";

fn lttng_of(state: &AgentState) -> Result<Arc<Lttng>, ApiError> {
    state.lttng.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "LTTng tracing is off in this agent",
            "start the agent without --no-lttng",
        )
    })
}

fn record_error(e: RecordError) -> ApiError {
    match e {
        RecordError::NoDaemon => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            e.to_string(),
            "the agent restarts lttng-sessiond on its own; see lttng_sessiond in /v1/capabilities",
        ),
        RecordError::Rejected(_) => ApiError::bad_request(
            e.to_string(),
            "check the events patterns and the filter expression, e.g. filter=seq > 10 && msg == \"x*\"",
        ),
        RecordError::Cancelled => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            e.to_string(),
            "the client went away",
        ),
        RecordError::Lttng(_)
        | RecordError::TraceDir { .. }
        | RecordError::Relay(_)
        | RecordError::Babeltrace(_) => {
            ApiError::internal(e.to_string(), "see the agent's log and /v1/capabilities")
        }
    }
}

/// Refuses PIDs this sidecar cannot see.
fn check_visible(state: &AgentState, pids: Option<&[u32]>) -> Result<(), ApiError> {
    match state.procfs.first_missing(pids.unwrap_or_default()) {
        Some(pid) => Err(plan_error(PlanError::PidNotVisible(pid))),
        None => Ok(()),
    }
}

pub(super) async fn events(
    State(state): State<AgentState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let pids = spec::parse_events(&query).map_err(|e| ApiError::bad_request(e.message, e.hint))?;
    check_visible(&state, pids.as_deref())?;
    let lttng = lttng_of(&state)?;
    let found = blocking(move || lttng.tracepoints(pids.as_deref()))
        .await?
        .map_err(record_error)?;
    let registered: BTreeSet<u32> = found.iter().map(|t| t.pid).collect();
    let mut body = serde_json::json!({
        "registered_pids": registered,
        "events": found,
    });
    if registered.is_empty() {
        body["hint"] = NOT_REGISTERED_HINT.into();
    }
    Ok(Json(body).into_response())
}

pub(super) async fn live(
    State(state): State<AgentState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let spec = spec::parse_live(&query).map_err(|e| ApiError::bad_request(e.message, e.hint))?;
    check_visible(&state, spec.pids.as_deref())?;
    let lttng = lttng_of(&state)?;
    let permit = acquire_capture(&state)?;
    let cancel = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (chunk_tx, chunk_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1024);
    let worker_cancel = cancel.clone();
    tokio::task::spawn_blocking(move || {
        lttng.live(
            &spec,
            &worker_cancel,
            |result| {
                let _ = ready_tx.send(result);
            },
            |chunk| chunk_tx.blocking_send(chunk).is_ok(),
        );
        drop(permit);
    });
    // Until the session is set up the handler waits; a client leaving then
    // drops this future, and the guard stops the worker.
    let guard = CancelOnDrop(cancel);
    match ready_rx.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(record_error(e)),
        Err(_) => {
            return Err(ApiError::internal(
                "the live worker stopped",
                "see the agent's log",
            ));
        }
    }
    let body = futures_util::stream::unfold((chunk_rx, guard), |(mut rx, guard)| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::convert::Infallible>(chunk), (rx, guard)))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

pub(super) async fn record(
    State(state): State<AgentState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let spec = spec::parse_record(&query).map_err(|e| ApiError::bad_request(e.message, e.hint))?;
    check_visible(&state, spec.pids.as_deref())?;
    let lttng = lttng_of(&state)?;
    let permit = acquire_capture(&state)?;
    let cancel = Arc::new(AtomicBool::new(false));
    let guard = CancelOnDrop(cancel.clone());
    let format = spec.format;
    let recording = blocking(move || lttng.record(&spec, &cancel))
        .await?
        .map_err(record_error)?;
    let summary = recording.summary.clone();
    tracing::info!(session = %summary.session, discarded = summary.discarded.discarded_events, "recorded");

    let (chunk_tx, chunk_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    tokio::task::spawn_blocking(move || {
        let mut recording = recording;
        let send = |chunk: Vec<u8>| chunk_tx.blocking_send(chunk).is_ok();
        let written = match format {
            RecordFormat::Json => record::write_json(&mut recording, send),
            RecordFormat::Text => record::write_text(&recording, send),
            RecordFormat::Ctf => record::write_ctf(&recording, send),
        };
        if let Err(e) = written {
            tracing::warn!(session = %recording.summary.session, error = %e, "output stopped");
        }
        // The trace directory goes with `recording`; then the slot frees.
        drop(recording);
        drop(permit);
    });
    let body = futures_util::stream::unfold((chunk_rx, guard), |(mut rx, guard)| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::convert::Infallible>(chunk), (rx, guard)))
    });
    let mut response = (
        [(header::CONTENT_TYPE, format.content_type())],
        axum::body::Body::from_stream(body),
    )
        .into_response();
    let headers = response.headers_mut();
    let timing = format!(
        "setup;dur={:.1}, teardown;dur={:.1}",
        summary.setup_ms, summary.teardown_ms
    );
    for (name, value) in [
        ("server-timing", timing),
        (
            "x-tracecar-discarded-events",
            summary.discarded.discarded_events.to_string(),
        ),
        (
            "x-tracecar-lost-packets",
            summary.discarded.lost_packets.to_string(),
        ),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    if format == RecordFormat::Ctf
        && let Ok(value) = HeaderValue::from_str(&format!(
            "attachment; filename=\"{}.tar.gz\"",
            summary.session
        ))
    {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}
