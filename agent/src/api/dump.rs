//! `/v1/dump`.

use std::io::Read as _;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::stream::ready_then_stream;
use super::{AgentState, ApiError};
use crate::dump;
use crate::params::Query as Params;

/// The size of the chunks a dump is sent in.
const CHUNK: usize = 1 << 20;

pub(super) async fn dump(
    State(state): State<AgentState>,
    Query(query): Query<Params>,
) -> Result<Response, ApiError> {
    let spec = dump::spec::parse(&query)?;
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
            let mut buf = vec![0u8; CHUNK];
            loop {
                match taken.file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if !chunks.send(buf[..n].to_vec()) {
                            break;
                        }
                    }
                    Err(e) => {
                        // The body ends short of its Content-Length: the
                        // client sees a broken transfer, not a short file.
                        tracing::warn!(pid, error = %e, "reading the dump failed");
                        break;
                    }
                }
            }
        })
        .await?;
    let mut response = (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, bytes.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"core.{pid}\""),
            ),
        ],
        body,
    )
        .into_response();
    if let Ok(v) = via.parse() {
        response.headers_mut().insert("x-tracecar-dump-via", v);
    }
    // Header values are visible ASCII: anything else becomes a space.
    let fallback = fallback.map(|why| {
        why.chars()
            .map(|c| if c.is_ascii_graphic() { c } else { ' ' })
            .collect::<String>()
    });
    if let Some(Ok(v)) = fallback.map(|why| why.parse()) {
        response.headers_mut().insert("x-tracecar-dump-fallback", v);
    }
    Ok(response)
}
