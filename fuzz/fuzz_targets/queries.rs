//! The agent's request decoding and spec validation, for every endpoint:
//! the same raw query string (as it arrives after `?`) decoded into each
//! endpoint's typed request, then validated into its spec.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracecar_agent::params::decode;
use tracecar_agent::{dotnet, dump, lttng, profile, uprobe};

fuzz_target!(|raw: &[u8]| {
    let Ok(raw) = std::str::from_utf8(raw) else {
        return;
    };
    let raw = Some(raw);
    if let Ok(request) = decode(raw) {
        let _ = profile::spec::parse(&request);
    }
    if let Ok(request) = decode(raw) {
        let _ = profile::trigger::parse(&request);
    }
    if let Ok(request) = decode(raw) {
        let _ = uprobe::spec::parse(&request);
    }
    if let Ok(request) = decode(raw) {
        let _ = uprobe::spec::parse_symbols(&request);
    }
    if let Ok(request) = decode(raw) {
        let _ = lttng::spec::parse_record(&request);
    }
    if let Ok(request) = decode(raw) {
        let _ = lttng::spec::parse_live(&request);
    }
    if let Ok(request) = decode(raw) {
        let _ = lttng::spec::parse_events(&request);
    }
    if let Ok(request) = decode(raw) {
        let _ = dotnet::spec::parse_trace(&request);
    }
    if let Ok(request) = decode(raw) {
        let _ = dotnet::spec::parse_counters(&request);
    }
    if let Ok(request) = decode(raw) {
        let _ = dotnet::spec::parse_exceptions(&request);
    }
    if let Ok(request) = decode(raw) {
        let _ = dotnet::spec::parse_gcdump(&request);
    }
    if let Ok(request) = decode(raw) {
        let _ = profile::now::parse(&request);
    }
    if let Ok(request) = decode(raw) {
        let _ = profile::continuous::parse_window(&request);
    }
    if let Ok(request) = decode(raw) {
        let _ = dump::spec::parse(&request);
    }
});
