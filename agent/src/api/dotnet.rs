//! `/v1/dotnet/trace`, `/v1/dotnet/counters` and `/v1/dotnet/exceptions`.

use axum::extract::State;
use tracecar_api::request::{CountersRequest, DotnetTraceRequest, ExceptionsRequest};

use super::answer::Answer;
use super::extract::Params;
use super::stream::ready_then_stream;
use super::{AgentState, ApiError, blocking};
use crate::dotnet::port::Port;
use crate::dotnet::session;
use crate::dotnet::spec::{self, TraceFormat};
use crate::dotnet::{counters, exceptions};

/// The diagnostic port of `pid`, once it is visible.
async fn port_of(state: &AgentState, pid: u32) -> Result<Port, ApiError> {
    state.procfs.check_visible(&[pid])?;
    let procfs = state.procfs();
    Ok(blocking(move || Port::find(&procfs, pid)).await??)
}

pub(super) async fn trace(
    State(state): State<AgentState>,
    Params(request): Params<DotnetTraceRequest>,
) -> Result<Answer, ApiError> {
    let spec = spec::parse_trace(&request)?;
    let pid = spec.pid;
    let port = port_of(&state, pid).await?;
    let permit = state.capture_slot()?;
    let procfs = state.procfs();
    let format = spec.format;
    let (session, body) = ready_then_stream(64, permit, move |ready, chunks, cancel| {
        session::trace(
            &procfs,
            &port,
            &spec,
            &cancel,
            |started| ready.send(started),
            |chunk| chunks.send(chunk),
        );
    })
    .await?;
    let answer = Answer::stream(format.content_type(), body).header("x-tracecar-session", session);
    Ok(match format {
        TraceFormat::Nettrace => answer.file_name(format!("dotnet-{pid}.nettrace")),
        TraceFormat::Json => answer,
    })
}

pub(super) async fn exceptions(
    State(state): State<AgentState>,
    Params(request): Params<ExceptionsRequest>,
) -> Result<Answer, ApiError> {
    let spec = spec::parse_exceptions(&request)?;
    let port = port_of(&state, spec.pid).await?;
    let permit = state.capture_slot()?;
    let procfs = state.procfs();
    let format = spec.format;
    let (session, body) = ready_then_stream(64, permit, move |ready, chunks, cancel| {
        exceptions::stream(
            &procfs,
            &port,
            &spec,
            &cancel,
            |started| ready.send(started),
            |chunk| chunks.send(chunk),
        );
    })
    .await?;
    Ok(Answer::stream(format.content_type(), body).header("x-tracecar-session", session))
}

pub(super) async fn counters(
    State(state): State<AgentState>,
    Params(request): Params<CountersRequest>,
) -> Result<Answer, ApiError> {
    let spec = spec::parse_counters(&request)?;
    let port = port_of(&state, spec.pid).await?;
    let permit = state.capture_slot()?;
    let procfs = state.procfs();
    let format = spec.format;
    let ((), body) = ready_then_stream(16, permit, move |ready, chunks, cancel| {
        counters::stream(
            &procfs,
            &port,
            &spec,
            &cancel,
            |started| ready.send(started),
            |snapshot| match counters::encode(&snapshot, format) {
                Ok(chunk) => chunks.send(chunk),
                Err(e) => {
                    tracing::error!(error = %e, "cannot serialize a counter snapshot; the stream stops");
                    false
                }
            },
        );
    })
    .await?;
    Ok(Answer::stream(format.content_type(), body))
}
