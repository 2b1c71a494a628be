//! `/v1/lttng/events`, `/v1/lttng/record` and `/v1/lttng/live`.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::stream::ready_then_stream;
use super::{AgentState, ApiError, blocking};
use crate::params::Query as Params;
use tracecar_api::lttng::Tracepoints;

use crate::lttng::{Lttng, RecordError, RecordFormat, output, spec};

/// What usually keeps applications from registering.
const NOT_REGISTERED_HINT: &str = "no application has registered with the LTTng session daemon. \
Usually /var/run/lttng is not shared with the app container (the tracecar.dev/inject annotation shares it), \
or the app does not load liblttng-ust (link it with -llttng-ust, or LD_PRELOAD a liblttng-ust-*-wrapper library); \
for .NET set DOTNET_LTTng=1, and see `incompatible`: the runtime's LTTng provider needs liblttng-ust.so.0, which the sidecar's 2.13 daemon refuses. Apps register when they start, or when the daemon comes up if they started first.";

fn lttng_of(state: &AgentState) -> Result<Arc<Lttng>, ApiError> {
    if let tracecar_api::capabilities::Mode::Attached { .. } = state.mode {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            crate::capabilities::ATTACHED_LTTNG,
            crate::capabilities::ATTACHED_LTTNG_HINT,
        ));
    }
    state.lttng.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "LTTng tracing is off in this agent",
            "start the agent without --no-lttng",
        )
    })
}

/// Refuses PIDs this sidecar cannot see.
fn check_visible(state: &AgentState, pids: Option<&[u32]>) -> Result<(), ApiError> {
    Ok(state.procfs.check_visible(pids.unwrap_or_default())?)
}

pub(super) async fn events(
    State(state): State<AgentState>,
    Query(query): Query<Params>,
) -> Result<Response, ApiError> {
    let pids = spec::parse_events(&query)?;
    check_visible(&state, pids.as_deref())?;
    let lttng = lttng_of(&state)?;
    let procfs = state.procfs();
    let (found, incompatible) = blocking(move || {
        let found = lttng.tracepoints(pids.as_deref());
        (
            found,
            crate::process::ust_mismatches(&procfs, pids.as_deref()),
        )
    })
    .await?;
    let found = found?;
    let registered: BTreeSet<u32> = found.iter().map(|t| t.pid).collect();
    let body = Tracepoints {
        hint: registered
            .is_empty()
            .then(|| NOT_REGISTERED_HINT.to_owned()),
        registered_pids: registered.into_iter().collect(),
        events: found,
        incompatible,
    };
    Ok(Json(body).into_response())
}

pub(super) async fn live(
    State(state): State<AgentState>,
    Query(query): Query<Params>,
) -> Result<Response, ApiError> {
    let spec = spec::parse_live(&query)?;
    check_visible(&state, spec.pids.as_deref())?;
    let lttng = lttng_of(&state)?;
    let permit = state.capture_slot()?;
    let ((), body) = ready_then_stream(1024, permit, move |ready, chunks, cancel| {
        lttng.live(
            &spec,
            &cancel,
            |opened| ready.send(opened),
            |chunk| chunks.send(chunk),
        );
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

pub(super) async fn record(
    State(state): State<AgentState>,
    Query(query): Query<Params>,
) -> Result<Response, ApiError> {
    let spec = spec::parse_record(&query)?;
    check_visible(&state, spec.pids.as_deref())?;
    let lttng = lttng_of(&state)?;
    let permit = state.capture_slot()?;
    let format = spec.format;
    // Ready once the session is recorded (the headers carry its summary),
    // then the output streams; the trace directory goes with `recording`.
    let (summary, body) = ready_then_stream(16, permit, move |ready, chunks, cancel| {
        let mut recording = match lttng.record(&spec, &cancel) {
            Ok(recording) => recording,
            Err(e) => return ready.send(Err::<_, RecordError>(e)),
        };
        let summary = recording.summary.clone();
        tracing::info!(session = %summary.session, discarded = summary.discarded.discarded_events, "recorded");
        ready.send(Ok(summary));
        let send = |chunk: Vec<u8>| chunks.send(chunk);
        let written = match format {
            RecordFormat::Json => output::write_json(&mut recording, send),
            RecordFormat::Text => output::write_text(&recording, send),
            RecordFormat::Ctf => output::write_ctf(&recording, send),
        };
        if let Err(e) = written {
            tracing::warn!(session = %recording.summary.session, error = %e, "output stopped");
        }
    })
    .await?;
    let mut response = ([(header::CONTENT_TYPE, format.content_type())], body).into_response();
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
