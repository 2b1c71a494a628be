//! `/v1/profile`, `/debug/pprof/profile`, `/debug/pprof/window`,
//! `/v1/profile/trigger` and `/v1/stacks`.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::extract::State;
use tracecar_api::request::{
    ProfileRequest, ScrapeRequest, StacksRequest, TriggerRequest, WindowRequest,
};

use super::answer::Answer;
use super::extract::Params;
use super::stream::CancelOnDrop;
use super::{AgentState, ApiError, blocking};
use crate::profile::{self, Format};

pub(super) async fn profile(
    State(state): State<AgentState>,
    Params(request): Params<ProfileRequest>,
) -> Result<Answer, ApiError> {
    run_profile(state, profile::spec::parse(&request)?).await
}

/// net/http/pprof's path: 30 s by default, always gzipped pprof.
pub(super) async fn go_pprof(
    State(state): State<AgentState>,
    Params(mut request): Params<ProfileRequest>,
) -> Result<Answer, ApiError> {
    request.seconds.get_or_insert_with(|| "30".to_owned());
    request.format = Some("pprof".to_owned());
    run_profile(state, profile::spec::parse(&request)?).await
}

/// `/debug/pprof/profile` on the profiles listener: Go's convention and
/// nothing more (`seconds=`; any other parameter is refused by its
/// request type): a CPU profile of the pod's processes, gzipped pprof.
pub(super) async fn scrape(
    State(state): State<AgentState>,
    Params(request): Params<ScrapeRequest>,
) -> Result<Answer, ApiError> {
    let request = ProfileRequest {
        seconds: Some(request.seconds.unwrap_or_else(|| "30".to_owned())),
        format: Some("pprof".to_owned()),
        ..ProfileRequest::default()
    };
    run_profile(state, profile::spec::parse(&request)?).await
}

/// The last completed window of continuous profiling, as it was rendered
/// (gzipped pprof with the pod's identity in its comments).
pub(super) async fn window(
    State(state): State<AgentState>,
    Params(request): Params<WindowRequest>,
) -> Result<Answer, ApiError> {
    let mode = profile::continuous::parse_window(&request)?;
    let window = state.windows.last(mode)?;
    let started = window
        .started
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Ok(
        profile_answer(Format::Pprof, window.pprof.to_vec(), window.samples)
            .header(
                "x-tracecar-window-start",
                format!("{:.3}", started.as_secs_f64()),
            )
            .header(
                "x-tracecar-window-seconds",
                format!("{:.3}", window.duration.as_secs_f64()),
            ),
    )
}

pub(super) async fn stacks(
    State(state): State<AgentState>,
    Params(request): Params<StacksRequest>,
) -> Result<Answer, ApiError> {
    use profile::now::{self, StacksFormat};
    let spec = now::parse(&request)?;
    state.procfs.check_visible(&[spec.pid])?;
    // One at a time with the captures: it stops the app's threads.
    let _permit = state.capture_slot()?;
    let procfs = state.procfs();
    let stacks = blocking(move || now::take(&procfs, &spec)).await??;
    Ok(match spec.format {
        StacksFormat::Json => Answer::json(&stacks)?,
        StacksFormat::Text => {
            Answer::bytes(spec.format.content_type(), now::text(&stacks).into_bytes())
        }
    })
}

pub(super) async fn trigger(
    State(state): State<AgentState>,
    Params(request): Params<TriggerRequest>,
) -> Result<Answer, ApiError> {
    let spec = profile::trigger::parse(&request)?;
    let procfs = state.procfs();
    let (plan, _) = profile::plan_here(&spec.profile, &procfs)?;
    let permit = state.capture_slot()?;
    let cancel = Arc::new(AtomicBool::new(false));
    let _guard = CancelOnDrop(cancel.clone());
    let memory = state.memory.clone();
    let report = blocking(move || {
        let result = profile::trigger::run(&spec, &plan, &procfs, &cancel, &memory);
        drop(permit);
        result
    })
    .await??;
    Answer::json(&report)
}

async fn run_profile(state: AgentState, spec: profile::ProfileSpec) -> Result<Answer, ApiError> {
    if spec.mode.from_runtime() {
        return reported_profile(state, spec).await;
    }
    let received = std::time::Instant::now();
    let procfs = state.procfs();
    let (plan, meta) = profile::plan_here(&spec, &procfs)?;
    let permit = state.capture_slot()?;
    let cancel = Arc::new(AtomicBool::new(false));
    let _guard = CancelOnDrop(cancel.clone());
    let memory = state.memory.clone();
    let format = spec.format;
    let profiled = blocking(move || {
        let result = profile::profile(&plan, format, &meta, &procfs, &cancel, &memory);
        drop(permit);
        result
    })
    .await??;
    let (started, ended) = profiled.sampling;
    // Opening the events, sampling, and everything after it (final
    // symbolization, aggregation, rendering).
    let timing = format!(
        "setup;dur={:.1}, capture;dur={:.1}, result;dur={:.1}",
        started.duration_since(received).as_secs_f64() * 1000.0,
        profiled.capture.as_secs_f64() * 1000.0,
        ended.elapsed().as_secs_f64() * 1000.0
    );
    Ok(profile_answer(format, profiled.body, profiled.samples).header("server-timing", timing))
}

/// `mode=alloc|contention`: what the process's runtime reports, in the
/// same formats.
async fn reported_profile(
    state: AgentState,
    spec: profile::ProfileSpec,
) -> Result<Answer, ApiError> {
    state
        .procfs
        .check_visible(spec.pids.as_deref().unwrap_or_default())?;
    let permit = state.capture_slot()?;
    let cancel = Arc::new(AtomicBool::new(false));
    let _guard = CancelOnDrop(cancel.clone());
    let procfs = state.procfs();
    let format = spec.format;
    let profiled = blocking(move || {
        let result = profile::reported::reported(&spec, &procfs, &cancel);
        drop(permit);
        result
    })
    .await??;
    Ok(profile_answer(format, profiled.body, profiled.samples))
}

/// A rendered profile as the answer. Every format says when nothing was
/// sampled (SVG and JSON in the body); folded text has no place for it,
/// and is empty then.
fn profile_answer(format: Format, body: Vec<u8>, samples: u64) -> Answer {
    let answer = Answer::bytes(format.content_type(), body).header("x-tracecar-samples", samples);
    if format == Format::Pprof {
        answer.file_name("profile.pb.gz")
    } else {
        answer
    }
}
