//! `/v1/dotnet/trace`, `/v1/dotnet/counters`, `/v1/dotnet/exceptions` and
//! `/v1/dotnet/gcdump`.

use axum::extract::State;
use tracecar_api::request::{
    CountersRequest, DotnetTraceRequest, ExceptionsRequest, GcdumpRequest,
};

use super::answer::Answer;
use super::extract::Params;
use super::stream::ready_then_stream;
use super::{AgentState, ApiError, blocking};
use crate::dotnet::port::{Port, PortError};
use crate::dotnet::session;
use crate::dotnet::spec::{self, GcdumpFormat, TraceFormat};
use crate::dotnet::{counters, exceptions, gcdump};
use crate::procfs::Procfs;

/// The diagnostic port of `pid`, once it is visible.
async fn port_of(state: &AgentState, pid: u32) -> Result<Port, ApiError> {
    state.procfs.check_visible(&[pid])?;
    let procfs = state.procfs();
    Ok(blocking(move || Port::find(&procfs, pid)).await??)
}

/// What a session executor is handed: the process's port, the cancel
/// flag, and where to say it started and to send its chunks.
type SessionRun = Box<
    dyn FnOnce(
            &Procfs,
            &Port,
            &std::sync::atomic::AtomicBool,
            Box<dyn FnOnce(Result<u64, PortError>) + '_>,
            Box<dyn FnMut(Vec<u8>) -> bool + '_>,
        ) + Send,
>;

/// Runs an EventPipe session executor on `pid`'s port, on a blocking
/// thread holding a capture slot: the runtime's session id, and the body
/// of what it sends.
async fn session_body(
    state: &AgentState,
    pid: u32,
    run: SessionRun,
) -> Result<(u64, axum::body::Body), ApiError> {
    let port = port_of(state, pid).await?;
    let permit = state.capture_slot()?;
    let procfs = state.procfs();
    ready_then_stream(64, permit, move |ready, chunks, cancel| {
        run(
            &procfs,
            &port,
            &cancel,
            Box::new(|started| ready.send(started)),
            Box::new(|chunk| chunks.send(chunk)),
        );
    })
    .await
}

pub(super) async fn trace(
    State(state): State<AgentState>,
    Params(request): Params<DotnetTraceRequest>,
) -> Result<Answer, ApiError> {
    let spec = spec::parse_trace(&request)?;
    let (pid, format) = (spec.pid, spec.format);
    let run: SessionRun = Box::new(move |procfs, port, cancel, ready, send| {
        session::trace(procfs, port, &spec, cancel, ready, send);
    });
    let (session, body) = session_body(&state, pid, run).await?;
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
    let (pid, format) = (spec.pid, spec.format);
    let run: SessionRun = Box::new(move |procfs, port, cancel, ready, send| {
        exceptions::stream(procfs, port, &spec, cancel, ready, send);
    });
    let (session, body) = session_body(&state, pid, run).await?;
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

pub(super) async fn gcdump(
    State(state): State<AgentState>,
    Params(request): Params<GcdumpRequest>,
) -> Result<Answer, ApiError> {
    let spec = spec::parse_gcdump(&request)?;
    let port = port_of(&state, spec.pid).await?;
    let permit = state.capture_slot()?;
    let procfs = state.procfs();
    let (pid, format) = (spec.pid, spec.format);
    // Answered once the walk is added up: its errors are the answer's.
    let ((), body) = ready_then_stream(2, permit, move |ready, chunks, cancel| {
        let comm = procfs
            .stat(pid)
            .map_or_else(|_| format!("pid-{pid}"), |s| s.comm);
        let encoded = gcdump::collect(&procfs, &port, &spec, &cancel)
            .map_err(ApiError::from)
            .and_then(|report| {
                Ok(match format {
                    GcdumpFormat::Table => gcdump::table(&report).into_bytes(),
                    GcdumpFormat::Json => serde_json::to_vec(&report).map_err(|e| {
                        ApiError::internal(
                            format!("the report could not be serialized: {e}"),
                            "this is a bug in the agent",
                        )
                    })?,
                    GcdumpFormat::Pprof => crate::profile::heap::pprof(&report, &comm)?,
                })
            });
        match encoded {
            Ok(bytes) => {
                ready.send(Ok(()));
                chunks.send(bytes);
            }
            Err(e) => ready.send(Err(e)),
        }
    })
    .await?;
    let content_type = match format {
        GcdumpFormat::Table => "text/plain; charset=utf-8",
        GcdumpFormat::Json => "application/json",
        GcdumpFormat::Pprof => crate::stacks::Format::Pprof.content_type(),
    };
    let answer = Answer::stream(content_type, body);
    Ok(match format {
        GcdumpFormat::Pprof => answer.file_name(format!("heap-{pid}.pb.gz")),
        GcdumpFormat::Table | GcdumpFormat::Json => answer,
    })
}
