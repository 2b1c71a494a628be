//! A window as a request to Pyroscope's ingest API (`POST /ingest`, the
//! documented HTTP API that Pyroscope and Grafana Alloy's
//! `pyroscope.receive_http` both serve): the gzipped pprof as the body,
//! and in the query the application name with the pod's labels, the
//! window's start and end, `format=pprof`, the sampling rate and
//! `spyName=tracecar`.
//!
//! Pyroscope's label names take letters, digits and `_` only: the
//! identity's keys are written with `_` for `.` (`k8s_pod_name`), and
//! `service.name` is the application name itself (`web{…}`), which
//! Pyroscope stores as `service_name`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The ingest path, after Pyroscope's base URL.
pub const PATH: &str = "/ingest";

/// The application name when the pod's identity has no service.
pub const UNNAMED: &str = "tracecar";

/// `?name=…&from=…` of one window: `resource` is the pod's identity
/// (`key=value` pairs), `started` and `duration` the window's, `hz` its
/// rate (0 for an off-CPU window, which is not sampled).
pub fn query(
    resource: &[(String, String)],
    started: SystemTime,
    duration: Duration,
    hz: u32,
) -> String {
    let service = resource
        .iter()
        .find(|(k, _)| k == "service.name")
        .map_or(UNNAMED, |(_, v)| v.as_str());
    let labels: Vec<String> = resource
        .iter()
        .filter(|(k, _)| k != "service.name")
        .map(|(k, v)| format!("{}={}", label_name(k), label_value(v)))
        .collect();
    let name = format!("{}{{{}}}", label_value(service), labels.join(","));
    let from = started.duration_since(UNIX_EPOCH).unwrap_or_default();
    let until = from + duration;
    let mut query = format!(
        "name={}&from={}&until={}&format=pprof&spyName=tracecar",
        tracecar_api::request::encode(&name),
        from.as_secs(),
        until.as_secs().max(from.as_secs() + 1),
    );
    if hz > 0 {
        query.push_str(&format!("&sampleRate={hz}"));
    }
    query
}

/// A label name Pyroscope takes: `[a-zA-Z_][a-zA-Z0-9_]*`.
fn label_name(key: &str) -> String {
    let mut name: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) || name.is_empty() {
        name.insert(0, '_');
    }
    name
}

/// A label value without the characters that end one in the name's
/// `{k=v,…}` syntax.
fn label_value(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if matches!(c, '{' | '}' | ',' | '=') {
                '_'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_names_the_service_and_labels_the_pod() {
        let resource = [
            ("service.name", "web"),
            ("k8s.namespace.name", "shop"),
            ("k8s.pod.name", "web-0"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let started = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let q = query(&resource, started, Duration::from_secs(15), 19);
        assert_eq!(
            q,
            "name=web%7Bk8s_namespace_name%3Dshop,k8s_pod_name%3Dweb-0%7D&from=1700000000&until=1700000015&format=pprof&spyName=tracecar&sampleRate=19"
        );
        let q = query(&[], started, Duration::from_millis(10), 0);
        assert!(
            q.starts_with("name=tracecar%7B%7D&from=1700000000&until=1700000001&"),
            "{q}"
        );
        assert!(!q.contains("sampleRate"), "{q}");
        assert_eq!(label_name("1.a-b"), "_1_a_b");
        assert_eq!(label_value("a{b}=c,d"), "a_b__c_d");
    }
}
