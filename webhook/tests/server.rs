//! Integration tests: the real HTTPS server on 127.0.0.1:0 with generated
//! certificates, driven by a real TLS client that verifies the CA.

#![cfg(test)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use common::*;
use serde_json::Value;
use tokio::sync::oneshot;
use tracecar_webhook::certs;
use tracecar_webhook::config::InjectConfig;
use tracecar_webhook::server::{self, Settings, Timeouts};

struct Running {
    url: String,
    ca_pem: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn start() -> Self {
        Self::start_with(Timeouts::default()).await
    }

    async fn start_with(timeouts: Timeouts) -> Self {
        let dir = tempfile::tempdir().unwrap();
        certs::write_certs("tracecar-webhook", "tracecar-system", dir.path()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let settings = Settings {
            config: InjectConfig::default(),
            tls_cert: dir.path().join("tls.crt"),
            tls_key: dir.path().join("tls.key"),
            cert_reload: Duration::from_millis(50),
            plan_cache: 64,
            timeouts,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server::run(listener, settings, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        let ca_pem = std::fs::read_to_string(dir.path().join("ca.crt")).unwrap();
        Self {
            url: format!("https://tracecar-webhook.tracecar-system.svc:{port}"),
            ca_pem,
            stop: Some(stop),
            task,
            _dir: dir,
        }
    }

    fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// A client builder that trusts only our CA and resolves the service
    /// name to loopback.
    fn client_builder(&self) -> reqwest::ClientBuilder {
        let port: u16 = self.url.rsplit(':').next().unwrap().parse().unwrap();
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap())
            .resolve(
                "tracecar-webhook.tracecar-system.svc",
                std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            )
            .timeout(Duration::from_secs(10))
    }

    /// A verifying client, with or without connection reuse.
    fn client(&self, keep_alive: bool) -> reqwest::Client {
        let mut builder = self.client_builder().tls_info(true);
        if !keep_alive {
            builder = builder.pool_max_idle_per_host(0);
        }
        builder.build().unwrap()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(20), &mut self.task)
            .await
            .expect("server drains and stops")
            .unwrap();
    }
}

fn peer_cert(response: &reqwest::Response) -> Vec<u8> {
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(<[u8]>::to_vec)
        .expect("peer certificate")
}

/// DER of the first certificate in a PEM file.
fn leaf_der(pem: &str) -> Vec<u8> {
    let b64: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

#[tokio::test]
async fn admission_review_over_https_patches_the_pod() {
    let server = Running::start().await;
    let client = server.client(true);
    let pod = fixture("minimal.yaml");
    let response = client
        .post(format!("{}/mutate", server.url))
        .json(&review(Some(&pod), "CREATE", "default"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let patch = base64::engine::general_purpose::STANDARD
        .decode(body["response"]["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    let mut patched = pod;
    json_patch::patch(&mut patched, &patch).unwrap();
    assert!(tracecar_webhook::podcheck::violations(&typed(&patched)).is_empty());
    assert_eq!(
        container(&patched, "containers", "tracecar")["name"],
        "tracecar"
    );

    // The PodSecurity entries' paths: the pod is left as it is, but for
    // the status annotation; an unknown level is a 404.
    let r = client
        .post(format!("{}/mutate/podsecurity/restricted", server.url))
        .json(&review(Some(&fixture("minimal.yaml")), "CREATE", "default"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("PodSecurity restricted"),
        "{body}"
    );
    let r = client
        .post(format!("{}/mutate/podsecurity/privileged", server.url))
        .json(&review(Some(&fixture("minimal.yaml")), "CREATE", "default"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    for path in ["/healthz", "/readyz"] {
        let r = client
            .get(format!("{}{path}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.text().await.unwrap(), "ok");
    }
    server.stop().await;
}

#[tokio::test]
async fn bad_requests_get_clear_http_errors() {
    let server = Running::start().await;
    let client = server.client(true);
    let r = client
        .post(format!("{}/mutate", server.url))
        .body("{\"apiVersion\": 1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("malformed AdmissionReview")
    );

    let huge = vec![b' '; server::MAX_BODY_BYTES + 1];
    let r = client
        .post(format!("{}/mutate", server.url))
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    // The server is still healthy afterwards.
    let r = client
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn metrics_parse_and_count_outcomes() {
    let server = Running::start().await;
    let client = server.client(true);
    let url = format!("{}/mutate", server.url);
    let pod = fixture("minimal.yaml");
    client
        .post(&url)
        .json(&review(Some(&pod), "CREATE", "default"))
        .send()
        .await
        .unwrap();
    client
        .post(&url)
        .json(&review(Some(&pod), "CREATE", "kube-system"))
        .send()
        .await
        .unwrap();
    client.post(&url).body("garbage").send().await.unwrap();
    let text = client
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("metrics parse");
    let value = |outcome: &str, reason: &str| {
        scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == "tracecar_webhook_admission_requests_total"
                    && s.labels.get("outcome") == Some(outcome)
                    && s.labels.get("reason") == Some(reason)
            })
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => -1.0,
            })
    };
    assert_eq!(value("injected", ""), Some(1.0), "{text}");
    assert_eq!(value("skipped", "system_namespace"), Some(1.0), "{text}");
    assert_eq!(value("error", "malformed"), Some(1.0), "{text}");
    assert!(
        scrape.samples.iter().any(|s| s
            .metric
            .starts_with("tracecar_webhook_admission_duration_seconds")),
        "{text}"
    );
    let not_after = scrape
        .samples
        .iter()
        .find(|s| s.metric == "tracecar_webhook_certificate_not_after_timestamp_seconds")
        .expect("cert gauge");
    match not_after.value {
        prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => {
            assert!(v > 1.7e9, "{v}");
        }
        ref other => panic!("{other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn certificate_rotation_has_no_failed_requests() {
    let server = Running::start().await;
    let old_leaf = leaf_der(&std::fs::read_to_string(server.dir().join("tls.crt")).unwrap());
    let running = Arc::new(AtomicBool::new(true));
    let failures = Arc::new(AtomicUsize::new(0));
    let successes = Arc::new(AtomicUsize::new(0));
    let pod = fixture("minimal.yaml");
    let body = serde_json::to_vec(&review(Some(&pod), "CREATE", "default")).unwrap();

    // One keep-alive client and one that reconnects for every request.
    let mut loops = Vec::new();
    for keep_alive in [true, false] {
        let client = server.client(keep_alive);
        let url = format!("{}/mutate", server.url);
        let (running, failures, successes, body) = (
            running.clone(),
            failures.clone(),
            successes.clone(),
            body.clone(),
        );
        loops.push(tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                match client.post(&url).body(body.clone()).send().await {
                    Ok(r) if r.status() == 200 => {
                        successes.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        eprintln!("request failed: {other:?}");
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Rotate three times, the way `tracecar-webhook certs` does it (same CA).
    for _ in 0..3 {
        certs::write_certs("tracecar-webhook", "tracecar-system", server.dir()).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // And once with a torn write: new key first, certificate a moment later.
    let fresh = tempfile::tempdir().unwrap();
    std::fs::copy(server.dir().join("ca.crt"), fresh.path().join("ca.crt")).unwrap();
    std::fs::copy(server.dir().join("ca.key"), fresh.path().join("ca.key")).unwrap();
    certs::write_certs("tracecar-webhook", "tracecar-system", fresh.path()).unwrap();
    std::fs::copy(fresh.path().join("tls.key"), server.dir().join("tls.key")).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::copy(fresh.path().join("tls.crt"), server.dir().join("tls.crt")).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    running.store(false, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "failed requests during rotation"
    );
    assert!(successes.load(Ordering::Relaxed) > 20);

    let new_leaf = leaf_der(&std::fs::read_to_string(server.dir().join("tls.crt")).unwrap());
    assert_ne!(old_leaf, new_leaf);
    let r = server
        .client(false)
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        peer_cert(&r),
        new_leaf,
        "a new connection gets the new certificate"
    );
    server.stop().await;
}

#[tokio::test]
async fn tls_1_2_and_1_3_are_both_served() {
    let server = Running::start().await;
    for version in [
        reqwest::tls::Version::TLS_1_2,
        reqwest::tls::Version::TLS_1_3,
    ] {
        let client = server
            .client_builder()
            .min_tls_version(version)
            .max_tls_version(version)
            .build()
            .unwrap();
        let r = client
            .get(format!("{}/healthz", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{version:?}");
    }
    server.stop().await;
}
