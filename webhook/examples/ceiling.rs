//! Benchmark ceiling: the same TLS (rustls), HTTP (hyper/axum) and typed
//! `AdmissionReview<Pod>` parsing as the webhook, answering `allowed` with
//! no injection. The gap between this and the webhook is the injector.
//!
//! `cargo run --release --example ceiling -- ADDR CERT KEY`
#![allow(clippy::expect_used)]

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::routing::post;
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::AdmissionReview;
use serde_json::{Value, json};
use tracecar_webhook::server::{MAX_BODY_BYTES, Timeouts, serve};
use tracecar_webhook::tls::{ReloadingCert, server_config};

// Admission reviews allocate many small JSON nodes; mimalloc keeps that cheap
// and RSS flat. The benchmark ceiling uses the same allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn allow(body: Bytes) -> Result<Json<Value>, axum::http::StatusCode> {
    let review: AdmissionReview<Pod> =
        serde_json::from_slice(&body).map_err(|_| axum::http::StatusCode::BAD_REQUEST)?;
    let uid = review.request.map(|r| r.uid).unwrap_or_default();
    Ok(Json(json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": uid, "allowed": true}
    })))
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, cert, key] = args.as_slice() else {
        eprintln!("usage: ceiling ADDR CERT KEY");
        std::process::exit(64);
    };
    let cert = Arc::new(ReloadingCert::load(cert.as_ref(), key.as_ref()).expect("cert"));
    let tls = Arc::new(server_config(cert).expect("tls"));
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    let app = axum::Router::new()
        .route("/mutate", post(allow))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    serve(listener, tls, app, Timeouts::default(), async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
}
