//! `/v1/uprobe` and `/v1/symbols`.

use axum::extract::State;
use tracecar_api::request::{SymbolsRequest, UprobeRequest};

use super::answer::Answer;
use super::extract::Params;
use super::stream::ready_then_stream;
use super::{AgentState, ApiError, blocking};
use crate::uprobe::{resolve, spec, stream, symbols};

pub(super) async fn symbols(
    State(state): State<AgentState>,
    Params(request): Params<SymbolsRequest>,
) -> Result<Answer, ApiError> {
    let spec = spec::parse_symbols(&request)?;
    let permit = state.read_slot()?;
    let (procfs, memory) = (state.procfs(), state.memory.clone());
    let pid = spec.pid;
    let listing = blocking(move || {
        let listing = symbols::list(
            &procfs,
            spec.pid,
            &spec.pattern,
            spec.module.as_deref(),
            spec.limit,
            &memory,
        );
        drop(permit);
        listing
    })
    .await??;
    Answer::json(&serde_json::json!({
        "pid": pid,
        "total": listing.total,
        "truncated": listing.total > listing.symbols.len(),
        "symbols": listing.symbols,
        "refused": listing.refused,
    }))
}

pub(super) async fn uprobe(
    State(state): State<AgentState>,
    Params(request): Params<UprobeRequest>,
) -> Result<Answer, ApiError> {
    let spec = spec::parse(&request)?;
    // Before resolving: naming a .NET method starts sessions in its runtime.
    let permit = state.probe_slot()?;
    let procfs = state.procfs();
    let resolve_spec = spec.clone();
    let resolving = procfs.clone();
    let plan = blocking(move || resolve::resolve(&resolve_spec, &resolving)).await??;
    let content_type = match spec.aggregate {
        Some((spec::Aggregation::Flame, _)) => spec.format.content_type(),
        _ => "application/x-ndjson",
    };
    let ((), body) = ready_then_stream(64, permit, move |ready, chunks, cancel| {
        stream::stream(
            &spec,
            plan,
            &procfs,
            &cancel,
            |attached| ready.send(attached),
            |bytes| chunks.send(bytes),
        );
    })
    .await?;
    Ok(Answer::stream(content_type, body))
}
