//! Prometheus metrics for the webhook.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::admission::Outcome;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
    reason: &'static str,
}

/// The webhook's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<OutcomeLabels, prometheus_client::metrics::counter::Counter>,
    latency: Histogram,
    cert_not_after: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tracecar_webhook");
        let requests = Family::default();
        registry.register(
            "admission_requests",
            "Admission reviews by outcome (injected, skipped with a reason, error)",
            requests.clone(),
        );
        // 50 µs .. ~3.3 s
        let latency = Histogram::new(exponential_buckets(0.000_05, 2.0, 17));
        registry.register(
            "admission_duration_seconds",
            "Time from request body received to response built",
            latency.clone(),
        );
        let cert_not_after = Gauge::default();
        registry.register(
            "certificate_not_after_timestamp_seconds",
            "notAfter of the serving certificate, as a Unix timestamp",
            cert_not_after.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            cert_not_after,
        }
    }

    /// Records one review.
    pub fn observe(&self, outcome: &Outcome, elapsed: Duration) {
        let labels = match outcome {
            Outcome::Injected => OutcomeLabels {
                outcome: "injected",
                reason: "",
            },
            Outcome::Skipped(reason) => OutcomeLabels {
                outcome: "skipped",
                reason,
            },
            Outcome::Error => OutcomeLabels {
                outcome: "error",
                reason: "",
            },
        };
        self.requests.get_or_create(&labels).inc();
        self.latency.observe(elapsed.as_secs_f64());
    }

    /// Records a malformed request (HTTP 400).
    pub fn observe_malformed(&self) {
        self.requests
            .get_or_create(&OutcomeLabels {
                outcome: "error",
                reason: "malformed",
            })
            .inc();
    }

    /// Sets the certificate expiry gauge.
    pub fn set_cert_not_after(&self, unix_seconds: i64) {
        self.cert_not_after.set(unix_seconds);
    }

    /// OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
