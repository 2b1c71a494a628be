//! `/v1/capabilities` and `/v1/processes`.

use std::time::Duration;

use axum::extract::State;

use super::answer::Answer;
use super::{AgentState, ApiError, blocking};
use crate::{capabilities, process};

pub(super) async fn capabilities(State(state): State<AgentState>) -> Result<Answer, ApiError> {
    let report = blocking(move || {
        let sessiond = state.lttng.as_ref().map(|l| l.sessiond().status());
        let mut report = capabilities::report(
            &state.procfs,
            sessiond,
            &state.mode,
            state.features,
            &state.memory,
        );
        report.continuous = state.continuous_report();
        report.rules = state.rules.as_ref().map(|r| r.report());
        report
    })
    .await?;
    Answer::json(&report)
}

pub(super) async fn processes(State(state): State<AgentState>) -> Result<Answer, ApiError> {
    let mode = match state.mode {
        tracecar_api::capabilities::Mode::Sidecar => "sidecar",
        tracecar_api::capabilities::Mode::Attached { .. } => "attached",
    };
    let permit = state.read_slot()?;
    let list = blocking(move || {
        let list = process::list(&state.procfs, Duration::from_millis(200));
        drop(permit);
        list
    })
    .await?
    .map_err(|e| ApiError::internal(format!("cannot read /proc: {e}"), "is /proc mounted?"))?;
    Ok(Answer::json(&list)?.header(tracecar_api::capabilities::MODE_HEADER, mode))
}
