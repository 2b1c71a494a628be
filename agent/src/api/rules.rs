//! `/v1/rules` and `/v1/artifacts`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::answer::Answer;
use super::{AgentState, ApiError, blocking};
use crate::rules::Rules;

/// The rules, or 503 when the agent runs without them.
fn rules(state: &AgentState) -> Result<std::sync::Arc<Rules>, ApiError> {
    state.rules.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "collection rules are off in this agent",
            "the agent could not open its artifact store (--artifact-dir); see its log",
        )
    })
}

pub(super) async fn list(State(state): State<AgentState>) -> Result<Answer, ApiError> {
    Answer::json(&rules(&state)?.list())
}

pub(super) async fn add(State(state): State<AgentState>, body: Bytes) -> Result<Answer, ApiError> {
    let rules = rules(&state)?;
    if body.len() > crate::rules::spec::MAX_DOCUMENT_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the rules are {} bytes", body.len()),
            format!(
                "send at most {} bytes",
                crate::rules::spec::MAX_DOCUMENT_BYTES
            ),
        ));
    }
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("the rules are not UTF-8 text", "send YAML or JSON"))?;
    let added = rules.add(text)?;
    Ok(Answer::json(&added)?.status(StatusCode::CREATED))
}

pub(super) async fn remove(
    State(state): State<AgentState>,
    Path(name): Path<String>,
) -> Result<Answer, ApiError> {
    let rules = rules(&state)?;
    blocking(move || rules.remove(&name)).await??;
    Ok(Answer::bytes("text/plain; charset=utf-8", Vec::new()).status(StatusCode::NO_CONTENT))
}

pub(super) async fn artifacts(State(state): State<AgentState>) -> Result<Answer, ApiError> {
    Answer::json(&rules(&state)?.store().list())
}

pub(super) async fn artifact(
    State(state): State<AgentState>,
    Path(id): Path<String>,
) -> Result<Answer, ApiError> {
    let store = rules(&state)?.store().clone();
    let permit = state.read_slot()?;
    let (record, body) =
        super::stream::ready_then_stream(4, permit, move |ready, chunks, _cancel| {
            match store.open_artifact(&id) {
                Ok((record, mut file)) => {
                    ready.send(Ok::<_, crate::rules::store::StoreError>(record));
                    crate::dump::send_file(&mut file, &format!("artifact {id}"), |chunk| {
                        chunks.send(chunk)
                    });
                }
                Err(e) => ready.send(Err(e)),
            }
        })
        .await?;
    let content_type = if record.content_type == "application/json" {
        "application/json"
    } else {
        "application/octet-stream"
    };
    Ok(Answer::stream(content_type, body)
        .length(record.bytes)
        .file_name(record.file_name.clone())
        .header(tracecar_api::rules::RULE_HEADER, &record.rule))
}
