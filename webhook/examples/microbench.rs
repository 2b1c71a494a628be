#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::time::Instant;

// Admission reviews allocate many small JSON nodes; mimalloc keeps that cheap
// and RSS flat. The benchmark ceiling uses the same allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
fn main() {
    let body = std::fs::read(std::env::args().nth(1).unwrap()).unwrap();
    let config = tracecar_webhook::admission::Reviewer::new(
        tracecar_webhook::inject::Injector::new(Default::default()).unwrap(),
        std::env::args().nth(2).map_or(1024, |s| s.parse().unwrap()),
    );
    let n = 200000;
    let t = Instant::now();
    for _ in 0..n {
        let _ = tracecar_webhook::admission::parse(&body).unwrap();
    }
    let parse = t.elapsed() / n;
    let req = tracecar_webhook::admission::parse(&body).unwrap();
    let t = Instant::now();
    for _ in 0..n {
        let (r, _) = config.review(&req);
        let _ = serde_json::to_vec(&r).unwrap();
    }
    let review = t.elapsed() / n;
    println!("parse {parse:?} review+serialize {review:?}");
}
