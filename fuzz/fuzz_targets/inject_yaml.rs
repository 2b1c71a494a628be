//! The offline `tracecar-webhook inject` YAML stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracecar_webhook::config::InjectConfig;
use tracecar_webhook::workload::inject_yaml;

fuzz_target!(|input: &[u8]| {
    if let Ok(text) = std::str::from_utf8(input) {
        let _ = inject_yaml(text, "default", &InjectConfig::default());
    }
});
