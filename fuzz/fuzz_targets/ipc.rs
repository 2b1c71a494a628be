//! The diagnostic IPC framing and payloads the runtime answers with, and
//! the event metadata and payload decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracecar_agent::dotnet::{ipc, metadata};

fuzz_target!(|input: &[u8]| {
    if let Some(header) = input.first_chunk::<{ ipc::HEADER_LEN }>() {
        if let Ok(header) = ipc::parse_header(header) {
            let payload = &input[ipc::HEADER_LEN..];
            let payload = &payload[..payload.len().min(header.payload_len())];
            if let Ok(ok) = ipc::ok_payload(header, payload) {
                let _ = ipc::parse_process_info(ok, false);
                let _ = ipc::parse_process_info(ok, true);
                let _ = ipc::u64_payload(ok);
            }
            let _ = ipc::hresult_payload(payload);
        }
    }
    if let Ok(meta) = metadata::parse(input)
        && let Some(fields) = meta.fields
    {
        let _ = metadata::decode(&fields, input);
    }
});
