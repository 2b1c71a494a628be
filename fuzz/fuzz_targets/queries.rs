//! The agent's query parsers, for every endpoint: the same query string
//! (decoded as axum decodes it) through each.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use tracecar_agent::{dotnet, dump, lttng, profile, uprobe};

fuzz_target!(|raw: &[u8]| {
    let Ok(query) = serde_urlencoded::from_bytes::<HashMap<String, String>>(raw) else {
        return;
    };
    let _ = profile::spec::parse(&query);
    let _ = uprobe::spec::parse(&query);
    let _ = uprobe::spec::parse_symbols(&query);
    let _ = lttng::spec::parse_record(&query);
    let _ = lttng::spec::parse_live(&query);
    let _ = lttng::spec::parse_events(&query);
    let _ = dotnet::providers::parse_trace(&query);
    let _ = dotnet::counters::parse(&query);
    let _ = dump::spec::parse(&query);
});
