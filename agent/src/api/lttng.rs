//! `/v1/lttng/events`, `/v1/lttng/record` and `/v1/lttng/live`.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;

use super::answer::Answer;
use super::extract::Params;
use super::stream::ready_then_stream;
use super::{AgentState, ApiError, blocking};
use tracecar_api::lttng::Tracepoints;
use tracecar_api::request::{LttngEventsRequest, LttngLiveRequest, LttngRecordRequest};

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
    Params(request): Params<LttngEventsRequest>,
) -> Result<Answer, ApiError> {
    let pids = spec::parse_events(&request)?;
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
    Answer::json(&body)
}

pub(super) async fn live(
    State(state): State<AgentState>,
    Params(request): Params<LttngLiveRequest>,
) -> Result<Answer, ApiError> {
    let spec = spec::parse_live(&request)?;
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
    Ok(Answer::stream("application/x-ndjson", body))
}

pub(super) async fn record(
    State(state): State<AgentState>,
    Params(request): Params<LttngRecordRequest>,
) -> Result<Answer, ApiError> {
    let spec = spec::parse_record(&request)?;
    check_visible(&state, spec.pids.as_deref())?;
    let lttng = lttng_of(&state)?;
    let permit = state.capture_slot()?;
    let format = spec.format;
    let (summary, body) = ready_then_stream(16, permit, move |ready, chunks, cancel| {
        let mut recording = match lttng.record(&spec, &cancel) {
            Ok(recording) => recording,
            Err(e) => return ready.send(Err::<_, RecordError>(e)),
        };
        let summary = recording.summary.clone();
        tracing::info!(session = %summary.session, discarded = summary.discarded.discarded_events, "recorded");
        ready.send(Ok(summary));
        if let Err(e) = output::write(&mut recording, format, |chunk| chunks.send(chunk)) {
            tracing::warn!(session = %recording.summary.session, error = %e, "output stopped");
        }
    })
    .await?;
    let timing = format!(
        "setup;dur={:.1}, teardown;dur={:.1}",
        summary.setup_ms, summary.teardown_ms
    );
    let answer = Answer::stream(format.content_type(), body)
        .header("server-timing", timing)
        .header(
            "x-tracecar-discarded-events",
            summary.discarded.discarded_events,
        )
        .header("x-tracecar-lost-packets", summary.discarded.lost_packets);
    Ok(match format {
        RecordFormat::Ctf => answer.file_name(format!("{}.tar.gz", summary.session)),
        RecordFormat::Json | RecordFormat::Text => answer,
    })
}
