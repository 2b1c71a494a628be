//! `/v1/profile`, `/debug/pprof/profile` and `/v1/profile/trigger`.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::stream::CancelOnDrop;
use super::{AgentState, ApiError, blocking};
use crate::params::Query as Params;
use crate::profile::{self, Format};

pub(super) async fn profile(
    State(state): State<AgentState>,
    Query(query): Query<Params>,
) -> Result<Response, ApiError> {
    run_profile(state, profile::spec::parse(&query)?).await
}

/// net/http/pprof's path: 30 s by default, always gzipped pprof.
pub(super) async fn go_pprof(
    State(state): State<AgentState>,
    Query(mut query): Query<Params>,
) -> Result<Response, ApiError> {
    query
        .entry("seconds".to_owned())
        .or_insert_with(|| "30".to_owned());
    query.insert("format".to_owned(), "pprof".to_owned());
    run_profile(state, profile::spec::parse(&query)?).await
}

pub(super) async fn trigger(
    State(state): State<AgentState>,
    Query(query): Query<Params>,
) -> Result<Response, ApiError> {
    let spec = profile::trigger::parse(&query)?;
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
    Ok(Json(report).into_response())
}

async fn run_profile(state: AgentState, spec: profile::ProfileSpec) -> Result<Response, ApiError> {
    let received = std::time::Instant::now();
    let procfs = state.procfs();
    let (plan, meta) = profile::plan_here(&spec, &procfs)?;
    let permit = state.capture_slot()?;
    let cancel = Arc::new(AtomicBool::new(false));
    let _guard = CancelOnDrop(cancel.clone());
    let memory = state.memory.clone();
    let captured = blocking(move || {
        let result = profile::capture::run(&plan, &procfs, &cancel, &memory);
        drop(permit);
        result
    })
    .await??;
    tracing::info!(
        samples = captured.samples,
        lost = captured.lost,
        processes = captured.processes.len(),
        "profile captured"
    );
    let format = spec.format;
    if let Err(e) = profile::capture::check_answer(&captured, format, &state.memory) {
        drop(captured);
        crate::sys::release_free_memory();
        return Err(e.into());
    }
    let samples = captured.samples;
    let capture_ms = captured.duration.as_secs_f64() * 1000.0;
    let (started, ended) = captured.sampling;
    let setup_ms = started.duration_since(received).as_secs_f64() * 1000.0;
    let body = blocking(move || {
        let body = crate::stacks::render::render(&captured, format, &meta);
        // What the capture and the rendering held goes back to the
        // kernel: the memory bound counts resident memory.
        drop(captured);
        crate::sys::release_free_memory();
        body
    })
    .await??;
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
    // Every format says when nothing was sampled (SVG and JSON in the
    // body); folded text has no place for it, and is empty then.
    response
        .headers_mut()
        .insert("x-tracecar-samples", samples.into());
    if format == Format::Pprof
        && let Ok(value) = "attachment; filename=\"profile.pb.gz\"".parse()
    {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}
