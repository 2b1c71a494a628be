//! What the agent reads from /proc and from the app's perf map: `stat`,
//! `status`, `maps`, and `perf-PID.map` lines (which the app writes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracecar_agent::procfs::{parse_maps, parse_maps_from, parse_stat, parse_status};
use tracecar_agent::runtime::perfmap::PerfMapIndex;

fuzz_target!(|input: &[u8]| {
    let text = String::from_utf8_lossy(input);
    let _ = parse_stat(&text);
    let _ = parse_status(&text);
    let _ = parse_maps(&text);
    let _ = parse_maps_from(input);
    let mut index = PerfMapIndex::default();
    let added = index.extend(&text);
    for entry in added {
        let _ = index.lookup(entry.start);
    }
});
