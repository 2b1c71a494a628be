//! tracecar admission webhook: injects the tracecar sidecar into pods that
//! opt in with `tracecar.dev/inject: "true"`.
//!
//! [`inject`] is pure (pod in, patch out); [`admission`] maps reviews to it;
//! [`server`] and [`tls`] are the HTTPS shell; [`workload`] drives the same
//! injector offline over YAML.

pub mod admission;
pub mod annotations;
pub mod certs;
pub mod cli;
pub mod config;
pub mod inject;
pub mod metrics;
pub mod podcheck;
pub mod server;
pub mod tls;
pub mod workload;
