//! babeltrace2's pretty output lines (event payloads come from the apps)
//! and LTTng's machine-interface XML.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracecar_agent::lttng::{mi, pretty};

fuzz_target!(|input: &[u8]| {
    let text = String::from_utf8_lossy(input);
    for line in text.lines() {
        let _ = pretty::event(line);
    }
    let _ = mi::succeeded(&text);
    let _ = mi::session_names(&text);
    let _ = mi::discarded(&text);
    let _ = mi::tracepoints(&text);
});
