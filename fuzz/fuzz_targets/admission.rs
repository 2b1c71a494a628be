//! The webhook's AdmissionReview parsing and injection: any body the API
//! server (or anyone who reaches the port) sends.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use tracecar_webhook::admission::{Reviewer, parse};
use tracecar_webhook::config::InjectConfig;
use tracecar_webhook::inject::Injector;

static REVIEWER: LazyLock<Reviewer> = LazyLock::new(|| {
    let injector = Injector::new(InjectConfig::default()).expect("the default config is valid");
    Reviewer::new(injector, 0)
});

fuzz_target!(|body: &[u8]| {
    if let Ok(request) = parse(body) {
        let _ = REVIEWER.review(&request);
    }
});
