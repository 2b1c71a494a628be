//! `/v1/dotnet/trace` and `/v1/dotnet/counters`.

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::stream::ready_then_stream;
use super::{AgentState, ApiError, blocking};
use crate::dotnet::counters::{self, CountersFormat};
use crate::dotnet::port::Port;
use crate::dotnet::providers::{self, TraceFormat};
use crate::dotnet::session;
use crate::params::Query as Params;

/// The diagnostic port of a visible .NET process.
async fn port_of(state: &AgentState, pid: u32) -> Result<Port, ApiError> {
    state.procfs.check_visible(&[pid])?;
    let procfs = state.procfs();
    Ok(blocking(move || Port::find(&procfs, pid)).await??)
}

pub(super) async fn trace(
    State(state): State<AgentState>,
    Query(query): Query<Params>,
) -> Result<Response, ApiError> {
    let spec = providers::parse_trace(&query)?;
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
    let (content_type, disposition) = match format {
        TraceFormat::Json => ("application/x-ndjson", None),
        TraceFormat::Nettrace => (
            "application/octet-stream",
            Some(format!("attachment; filename=\"dotnet-{pid}.nettrace\"")),
        ),
    };
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    let headers = response.headers_mut();
    if let Some(d) = disposition.and_then(|d| d.parse().ok()) {
        headers.insert(header::CONTENT_DISPOSITION, d);
    }
    if let Ok(v) = session.to_string().parse() {
        headers.insert("x-tracecar-session", v);
    }
    Ok(response)
}

pub(super) async fn counters(
    State(state): State<AgentState>,
    Query(query): Query<Params>,
) -> Result<Response, ApiError> {
    let spec = counters::parse(&query)?;
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
            |snapshot| {
                let chunk = match format {
                    CountersFormat::Json => {
                        let mut line = serde_json::to_vec(&snapshot).unwrap_or_default();
                        line.push(b'\n');
                        line
                    }
                    CountersFormat::Prometheus => counters::prometheus(&snapshot).into_bytes(),
                };
                chunks.send(chunk)
            },
        );
    })
    .await?;
    let content_type = match format {
        CountersFormat::Json => "application/x-ndjson",
        CountersFormat::Prometheus => "text/plain; version=0.0.4",
    };
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}
