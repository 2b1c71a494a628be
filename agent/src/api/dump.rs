//! `/v1/dump`.

use axum::extract::State;
use tracecar_api::request::DumpRequest;

use super::answer::Answer;
use super::extract::Params;
use super::stream::ready_then_stream;
use super::{AgentState, ApiError};
use crate::dump;

pub(super) async fn dump(
    State(state): State<AgentState>,
    Params(request): Params<DumpRequest>,
) -> Result<Answer, ApiError> {
    let spec = dump::spec::parse(&request)?;
    state.procfs.check_visible(&[spec.pid])?;
    let permit = state.capture_slot()?;
    let procfs = state.procfs();
    let dump_dir = state.dump_dir.clone();
    let pid = spec.pid;
    let ((bytes, via, fallback), body) =
        ready_then_stream(4, permit, move |ready, chunks, _cancel| {
            let mut taken = match dump::take(&procfs, &spec, &dump_dir) {
                Ok(taken) => taken,
                Err(e) => return ready.send(Err(e)),
            };
            ready.send(Ok((taken.bytes, taken.via, taken.fallback.take())));
            taken.send(pid, |chunk| chunks.send(chunk));
        })
        .await?;
    let answer = Answer::stream("application/octet-stream", body)
        .length(bytes)
        .file_name(format!("core.{pid}"))
        .header("x-tracecar-dump-via", via);
    Ok(match fallback {
        Some(why) => answer.header("x-tracecar-dump-fallback", why),
        None => answer,
    })
}
