//! The real `tracecar-webhook serve` binary under abuse, as Kubernetes'
//! webhook good practices ask of anything in the pod-creation path:
//!
//! 1. generated AdmissionReviews at about 1,000 requests/s while its
//!    certificate is rotated every second: zero failed requests, zero
//!    panics;
//! 2. slowloris clients (headers, then bodies, trickled), 10,000 idle TCP
//!    connections, TLS garbage and oversize bodies, all at once: real
//!    requests keep their p99 within 2× of the unabused server's, the slow
//!    and idle connections are closed by the server once its timeouts
//!    pass, and its memory stays bounded.
//!
//! The server is a separate process, as in a cluster, so that the 10,000
//! client sockets and the server's 10,000 fit the machine's fd limit.

#![cfg(test)]

mod common;

use std::io::{Read as _, Write as _};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree as _;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};

struct Server {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    ca_pem: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        tracecar_webhook::certs::write_certs("tracecar-webhook", "tracecar-system", dir.path())
            .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_tracecar-webhook"))
            .args(["--log", "warn", "serve", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--tls-cert")
            .arg(dir.path().join("tls.crt"))
            .arg("--tls-key")
            .arg(dir.path().join("tls.key"))
            .args(["--cert-reload-ms", "100"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
            .spawn()
            .unwrap();
        let ca_pem = std::fs::read_to_string(dir.path().join("ca.crt")).unwrap();
        Self {
            child,
            port,
            dir,
            ca_pem,
        }
    }

    fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap())
            .resolve(
                "tracecar-webhook.tracecar-system.svc",
                std::net::SocketAddr::from(([127, 0, 0, 1], self.port)),
            )
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!(
            "https://tracecar-webhook.tracecar-system.svc:{}{path}",
            self.port
        )
    }

    async fn wait_up(&self) {
        let client = self.client();
        let deadline = Instant::now() + Duration::from_secs(10);
        while client.get(self.url("/healthz")).send().await.is_err() {
            assert!(Instant::now() < deadline, "webhook did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn rss_kib(&self) -> u64 {
        status_kib(self.child.id(), "VmRSS:")
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    /// A TLS connection that trusts our CA, without HTTP on it.
    async fn tls(&self) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        let der = pem_der(&self.ca_pem);
        roots
            .add(rustls::pki_types::CertificateDer::from(der))
            .unwrap();
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("tracecar-webhook.tracecar-system.svc")
            .unwrap();
        connector.connect(name, tcp).await.unwrap()
    }
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn pem_der(pem: &str) -> Vec<u8> {
    use base64::Engine as _;
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

/// Generated reviews: every fixture pod, in a namespace, with the
/// operation, and tracecar annotations (valid or not) drawn at random.
fn reviews(count: usize) -> Vec<Vec<u8>> {
    let fixtures: Vec<Value> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "yaml"))
            .map(|e| fixture(e.file_name().to_str().unwrap()))
            .collect();
    let annotation = prop_oneof![
        Just(None),
        Just(Some("profile")),
        Just(Some("profile,uprobe")),
        Just(Some("lttng,dotnet,dump")),
        Just(Some("gpu")),
        "[a-z, ]{0,20}".prop_map(|s| Some(Box::leak(s.into_boxed_str()) as &str)),
    ];
    let strategy = (
        0..fixtures.len(),
        prop::sample::select(vec!["default", "kube-system", "team-a", "tracecar-system"]),
        prop::sample::select(vec!["CREATE", "CREATE", "CREATE", "UPDATE", "DELETE"]),
        annotation,
        prop::option::of(prop::sample::select(vec!["minimal", "privileged", "root"])),
        prop::option::of(prop::sample::select(vec!["dotnet", "node", "java", "perl"])),
    );
    let mut runner = TestRunner::deterministic();
    (0..count)
        .map(|_| {
            let (index, namespace, operation, features, profile, runtime) =
                strategy.new_tree(&mut runner).unwrap().current();
            let mut pod = fixtures[index].clone();
            let annotations = &mut pod["metadata"]["annotations"];
            if !annotations.is_object() {
                *annotations = json!({});
            }
            for (key, value) in [
                ("tracecar.dev/features", features),
                ("tracecar.dev/profile", profile),
                ("tracecar.dev/runtime", runtime),
            ] {
                if let Some(value) = value {
                    annotations[key] = json!(value);
                }
            }
            serde_json::to_vec(&review(Some(&pod), operation, namespace)).unwrap()
        })
        .collect()
}

fn p99(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() * 99 / 100]
}

/// `count` sequential requests on one kept-alive connection: their
/// latencies.
async fn latencies(server: &Server, count: usize) -> Vec<Duration> {
    let client = server.client();
    let body =
        serde_json::to_vec(&review(Some(&fixture("minimal.yaml")), "CREATE", "default")).unwrap();
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let response = client
            .post(server.url("/mutate"))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
        out.push(started.elapsed());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_reviews_at_1000_per_second_during_rotation_never_fail() {
    let server = Server::start();
    server.wait_up().await;
    let bodies = Arc::new(reviews(10_000));
    let failures = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    // 8 senders, each paced to 125 requests/s.
    let mut senders = Vec::new();
    for lane in 0..8 {
        let (client, url, bodies, failures) = (
            server.client(),
            server.url("/mutate"),
            bodies.clone(),
            failures.clone(),
        );
        senders.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(8));
            for body in bodies.iter().skip(lane).step_by(8) {
                tick.tick().await;
                match client.post(&url).body(body.clone()).send().await {
                    Ok(r) if r.status() == 200 => {
                        let answer: Value = r.json().await.unwrap_or_default();
                        if answer["response"]["allowed"] != true {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    other => {
                        eprintln!("failed: {other:?}");
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    // A new serving certificate from the same CA every second.
    let dir = server.dir.path().to_owned();
    let rotations = tokio::spawn(async move {
        let mut rotated = 0;
        while rotated < 9 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let fresh = tempfile::tempdir().unwrap();
            for file in ["ca.crt", "ca.key"] {
                std::fs::copy(dir.join(file), fresh.path().join(file)).unwrap();
            }
            tracecar_webhook::certs::write_certs(
                "tracecar-webhook",
                "tracecar-system",
                fresh.path(),
            )
            .unwrap();
            for file in ["tls.key", "tls.crt"] {
                std::fs::copy(fresh.path().join(file), dir.join(file)).unwrap();
            }
            rotated += 1;
        }
        rotated
    });
    for sender in senders {
        sender.await.unwrap();
    }
    let rotated = rotations.await.unwrap();
    let elapsed = started.elapsed();
    let rate = bodies.len() as f64 / elapsed.as_secs_f64();
    eprintln!(
        "{} generated reviews in {elapsed:?} ({rate:.0}/s), {rotated} rotations",
        bodies.len()
    );
    assert_eq!(failures.load(Ordering::Relaxed), 0, "failed requests");
    assert!(rate > 800.0, "the load was {rate:.0} requests/s, not ~1000");
    assert!(!server.stderr().contains("panicked"), "{}", server.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_idle_garbage_and_oversize_clients_do_not_hurt_real_requests() {
    let server = Server::start();
    server.wait_up().await;
    // Warm up, then the unabused latency.
    latencies(&server, 100).await;
    let normal = p99(latencies(&server, 1000).await);
    let rss_before = server.rss_kib();

    // 10,000 idle TCP connections: never a TLS handshake.
    let mut idle = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        idle.push(std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap());
    }
    // Slowloris: TLS, then headers that never end.
    let mut slow_headers = Vec::new();
    for _ in 0..100 {
        let mut tls = server.tls().await;
        tokio::io::AsyncWriteExt::write_all(&mut tls, b"POST /mutate HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow_headers.push(tls);
    }
    // Then a body that never ends.
    let mut slow_bodies = Vec::new();
    for _ in 0..100 {
        let mut tls = server.tls().await;
        tokio::io::AsyncWriteExt::write_all(
            &mut tls,
            b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"apiVersion\"",
        )
        .await
        .unwrap();
        slow_bodies.push(tls);
    }
    // TLS garbage: the server closes the connection.
    for i in 0..100u32 {
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        let garbage: Vec<u8> = (0..2048u32)
            .map(|j| (j.wrapping_mul(2_654_435_761).wrapping_add(i) >> 13) as u8)
            .collect();
        let _ = tcp.write_all(&garbage);
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        let closed = loop {
            match tcp.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
                Err(_) => break false,
            }
        };
        assert!(closed, "a garbage TLS connection was left open");
    }
    // Oversize bodies: 413, while the abuse above is held.
    let client = server.client();
    for _ in 0..20 {
        let response = client
            .post(server.url("/mutate"))
            .body(vec![b' '; 4 * 1024 * 1024])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 413);
    }

    let abused = p99(latencies(&server, 1000).await);
    let rss_abused = server.rss_kib();
    eprintln!(
        "p99 {normal:?} normal, {abused:?} under abuse; RSS {rss_before} KiB before, {rss_abused} KiB with 10,000 idle and 200 slow connections"
    );
    assert!(
        abused <= normal * 2,
        "p99 went from {normal:?} to {abused:?} under abuse"
    );
    assert!(
        rss_abused < rss_before + 256 * 1024,
        "RSS went from {rss_before} KiB to {rss_abused} KiB"
    );

    // Past the 10 s timeouts, the server has closed every slow and idle
    // connection.
    tokio::time::sleep(Duration::from_secs(12)).await;
    for mut tls in slow_headers.into_iter().chain(slow_bodies) {
        let mut buf = [0u8; 256];
        let read = tokio::time::timeout(
            Duration::from_secs(1),
            tokio::io::AsyncReadExt::read(&mut tls, &mut buf),
        )
        .await
        .expect("closed, not still waiting");
        // EOF, an error, or a 408/400 answer before the close.
        if let Ok(n) = read
            && n > 0
        {
            let text = String::from_utf8_lossy(&buf[..n]);
            assert!(text.starts_with("HTTP/1.1 4"), "{text}");
        }
    }
    let mut still_open = 0;
    for tcp in &mut idle {
        tcp.set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        let mut buf = [0u8; 8];
        if matches!(tcp.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) {
            still_open += 1;
        }
    }
    assert_eq!(still_open, 0, "idle connections the server kept");
    assert!(!server.stderr().contains("panicked"), "{}", server.stderr());
}

/// Whether this test may create a memory cgroup (root, cgroup v1's memory
/// controller as on the CI machine); under `TRACECAR_REQUIRE_PRIVILEGED=1`
/// not being able to is a failure.
fn memory_cgroups(test: &str) -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        .unwrap_or(false);
    let able = root && std::path::Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists();
    if !able {
        assert!(
            std::env::var_os("TRACECAR_REQUIRE_PRIVILEGED").is_none(),
            "{test} needs root and cgroup v1's memory controller"
        );
        eprintln!("skipping {test}: needs root and cgroup v1's memory controller");
    }
    able
}

/// A mutating webhook reviews pods before anything validates them: 30
/// opted-in pods, each with a distinct 2.9 MB `tracecar.dev/runtime` value,
/// sent to the real binary in a 64 MiB memory cgroup (a replica's limit).
/// Every review is answered, the warnings quote the value clipped, the
/// cache keeps none of it, and the webhook is not OOM-killed (it had grown
/// from 15 MB to 310 MB and stayed there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_huge_annotations_neither_grow_nor_kill_the_webhook() {
    let test = "distinct_huge_annotations_neither_grow_nor_kill_the_webhook";
    if !memory_cgroups(test) {
        return;
    }
    let server = Server::start();
    server.wait_up().await;
    latencies(&server, 50).await;
    let cgroup = std::path::Path::new("/sys/fs/cgroup/memory")
        .join(format!("tracecar-test-webhook-{}", std::process::id()));
    std::fs::create_dir(&cgroup).unwrap();
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            for _ in 0..100 {
                if std::fs::remove_dir(&self.0).is_ok() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    std::fs::write(
        cgroup.join("memory.limit_in_bytes"),
        (64u64 << 20).to_string(),
    )
    .unwrap();
    std::fs::write(cgroup.join("cgroup.procs"), server.child.id().to_string()).unwrap();
    let rss_before = server.rss_kib();

    let client = server.client();
    let pod = fixture("minimal.yaml");
    let send = |i: usize| {
        let mut pod = pod.clone();
        pod["metadata"]["annotations"]["tracecar.dev/runtime"] =
            json!(format!("{i:06}{}", "r".repeat(2_900_000)));
        let body = serde_json::to_vec(&review(Some(&pod), "CREATE", "default")).unwrap();
        let client = client.clone();
        let url = server.url("/mutate");
        async move {
            let response = client.post(url).body(body).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    // Ten at a time, three rounds.
    for round in 0..3 {
        let tasks: Vec<_> = (0..10)
            .map(|i| tokio::spawn(send(round * 10 + i)))
            .collect();
        for task in tasks {
            let answer = task.await.unwrap();
            let response = &answer["response"];
            assert_eq!(response["allowed"], true);
            let warnings = response["warnings"].to_string();
            assert!(
                warnings.len() < 2048,
                "{} bytes of warnings",
                warnings.len()
            );
            assert!(warnings.contains("(2900006 bytes)"), "{warnings}");
        }
    }
    let rss_after = server.rss_kib();
    let oom_kills = std::fs::read_to_string(cgroup.join("memory.oom_control"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .map_or(0, |v| v.trim().parse::<u64>().unwrap());
    let peak: u64 = std::fs::read_to_string(cgroup.join("memory.max_usage_in_bytes"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eprintln!(
        "RSS {rss_before} KiB before, {rss_after} KiB after 30 reviews of 2.9 MB annotations; cgroup peak {} MiB, OOM kills {oom_kills}",
        peak >> 20
    );
    assert_eq!(oom_kills, 0, "the webhook was OOM-killed");
    assert!(
        rss_after < rss_before + 24 * 1024,
        "RSS went from {rss_before} KiB to {rss_after} KiB"
    );
    // Still serving.
    assert_eq!(latencies(&server, 10).await.len(), 10);
    drop(server);
    drop(Remove(cgroup));
}
