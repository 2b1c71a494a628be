//! Pushing continuous windows to the backends users run: OTLP profiles
//! over HTTP (protobuf) to an OpenTelemetry Collector, and Pyroscope's
//! ingest API. The agent feeds them; it stores nothing of its own.
//!
//! [`parse`] (pure: the destinations) and [`credentials`] (the Secret's
//! files, into the one HTTP [`client`]), checked before the agent binds
//! anything → [`start`] (a sender task per destination, fed by a bounded
//! [`queue::Queue`] that the continuous threads offer every window to) →
//! [`body`] (pure: a window as one destination's request).
//!
//! Decisions:
//! - Each destination has its own queue (4 windows by default,
//!   `--push-queue`): a backend that is down costs at most that many
//!   windows of memory, drops its oldest windows (counted), and never
//!   holds up the windows, the other destination or the app.
//! - A failed attempt (no connection, a timeout, 408, 429 or 5xx) is
//!   retried after 1 s, then 2, 4, … up to 30 s; when newer windows fill
//!   the queue meanwhile, the one being retried gives way (dropped,
//!   counted). Any other 4xx is the backend refusing that window: it is
//!   counted as rejected and not sent again.
//! - Headers (`Authorization`, `X-Scope-OrgID`, …) and TLS come from a
//!   directory, the Secret the webhook mounts: `headers` (one `Name:
//!   value` a line), `ca.crt` (roots to trust instead of the built-in
//!   Mozilla roots), `tls.crt` and `tls.key` (a client certificate). Each
//!   file is optional and read once, at start.
//! - Requests time out after 10 s, follow no redirect, and honour the
//!   usual `HTTPS_PROXY`/`NO_PROXY` variables.

pub mod otlp;
mod otlp_proto;
pub mod pyroscope;
pub mod queue;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prost::Message as _;

use crate::profile::continuous::{Sink, Window};
use queue::Queue;

/// Windows a destination's queue holds when `--push-queue` is not given.
pub const DEFAULT_QUEUE: u32 = 4;
/// How long one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The most a file of the Secret may hold.
const SECRET_FILE_BYTES: u64 = 1 << 20;
/// The most an encoded window may unpack to.
const PPROF_BYTES: u64 = 256 << 20;

/// A backend's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// OTLP profiles over HTTP, protobuf.
    Otlp,
    /// Pyroscope's `/ingest`.
    Pyroscope,
}

impl Kind {
    /// Its name in flags, logs and `/v1/capabilities`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Otlp => "otlp",
            Self::Pyroscope => "pyroscope",
        }
    }
}

/// Where windows go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The protocol.
    pub kind: Kind,
    /// The request's URL without its query: the base URL given, with the
    /// protocol's path (`/v1development/profiles`, `/ingest`).
    pub url: String,
}

/// The destinations, and how many windows each may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushSpec {
    /// One per backend.
    pub destinations: Vec<Destination>,
    /// Windows each queue holds.
    pub queue: usize,
}

/// Why pushing cannot start, or a window cannot be sent.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// A destination's URL is not one the agent can send to.
    #[error("--push-{kind} {url:?}: {why}")]
    Url {
        /// `otlp` or `pyroscope`.
        kind: &'static str,
        /// As given.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// `--push-queue` is out of range.
    #[error("--push-queue {0}: a queue holds 1 to 64 windows")]
    Queue(u32),
    /// A file of the Secret cannot be read or used.
    #[error("push secret {path}: {why}")]
    Secret {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The HTTP client cannot be built with the Secret's TLS files.
    #[error("push client: {0}")]
    Client(#[source] reqwest::Error),
    /// A window cannot be encoded for a destination.
    #[error("cannot encode the window: {0}")]
    Encode(String),
}

/// Parses the destinations (`--push-otlp`, `--push-pyroscope`: base
/// URLs, `http` or `https`, without query or fragment).
pub fn parse(
    otlp: Option<&str>,
    pyroscope: Option<&str>,
    queue: u32,
) -> Result<PushSpec, PushError> {
    if !(1..=64).contains(&queue) {
        return Err(PushError::Queue(queue));
    }
    let mut destinations = Vec::new();
    for (kind, raw, path) in [
        (Kind::Otlp, otlp, otlp::PATH),
        (Kind::Pyroscope, pyroscope, pyroscope::PATH),
    ] {
        let Some(raw) = raw else { continue };
        let bad = |why: &str| PushError::Url {
            kind: kind.name(),
            url: raw.to_owned(),
            why: why.to_owned(),
        };
        let url = reqwest::Url::parse(raw.trim()).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("the scheme must be http or https"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad(
                "give the base URL, without a query or fragment: the agent adds the path and the query",
            ));
        }
        destinations.push(Destination {
            kind,
            url: format!("{}{path}", url.as_str().trim_end_matches('/')),
        });
    }
    Ok(PushSpec {
        destinations,
        queue: queue as usize,
    })
}

/// The Secret's headers and TLS files.
#[derive(Debug, Default)]
pub struct Credentials {
    headers: reqwest::header::HeaderMap,
    ca: Vec<reqwest::Certificate>,
    identity: Option<reqwest::Identity>,
}

/// Reads the Secret mounted at `dir` (every file optional).
pub fn credentials(dir: &Path) -> Result<Credentials, PushError> {
    let read = |name: &str| -> Result<Option<Vec<u8>>, PushError> {
        use std::io::Read as _;
        let path = dir.join(name);
        let failed = |why: String| PushError::Secret {
            path: path.clone(),
            why,
        };
        let file = match std::fs::File::open(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(failed(e.to_string())),
            Ok(file) => file,
        };
        // One read, bounded: a byte past the bound says it is too large.
        let mut bytes = Vec::new();
        file.take(SECRET_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| failed(e.to_string()))?;
        if bytes.len() as u64 > SECRET_FILE_BYTES {
            return Err(failed("more than 1 MiB".to_owned()));
        }
        Ok(Some(bytes))
    };
    let mut credentials = Credentials::default();
    if let Some(text) = read("headers")? {
        credentials.headers =
            headers(&String::from_utf8_lossy(&text)).map_err(|why| PushError::Secret {
                path: dir.join("headers"),
                why,
            })?;
    }
    if let Some(pem) = read("ca.crt")? {
        credentials.ca =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| PushError::Secret {
                path: dir.join("ca.crt"),
                why: e.to_string(),
            })?;
    }
    match (read("tls.crt")?, read("tls.key")?) {
        (Some(mut cert), Some(key)) => {
            cert.push(b'\n');
            cert.extend_from_slice(&key);
            credentials.identity =
                Some(
                    reqwest::Identity::from_pem(&cert).map_err(|e| PushError::Secret {
                        path: dir.join("tls.crt"),
                        why: e.to_string(),
                    })?,
                );
        }
        (None, None) => {}
        (Some(_), None) | (None, Some(_)) => {
            return Err(PushError::Secret {
                path: dir.to_owned(),
                why: "a client certificate needs both tls.crt and tls.key".to_owned(),
            });
        }
    }
    Ok(credentials)
}

/// Parses `Name: value` lines (blank lines and `#` comments skipped).
fn headers(text: &str) -> Result<reqwest::header::HeaderMap, String> {
    use reqwest::header::{HeaderName, HeaderValue};
    let mut map = reqwest::header::HeaderMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| format!("line {}: {why}", number + 1);
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad("not `Name: value`"))?;
        let name =
            HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad("not a header name"))?;
        let mut value =
            HeaderValue::from_str(value.trim()).map_err(|_| bad("not a header value"))?;
        value.set_sensitive(true);
        map.append(name, value);
    }
    Ok(map)
}

/// One window as one destination's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    /// The URL, with the query.
    pub url: String,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// Encodes `window` for `destination`, from the pod's `resource`
/// (`key=value` pairs); `id` is the OTLP profile ID.
pub fn body(
    destination: &Destination,
    window: &Window,
    resource: &[(String, String)],
    id: [u8; 16],
) -> Result<Body, PushError> {
    match destination.kind {
        Kind::Pyroscope => Ok(Body {
            url: format!(
                "{}?{}",
                destination.url,
                pyroscope::query(resource, window.started, window.duration, window.hz)
            ),
            content_type: "application/octet-stream",
            bytes: window.pprof.to_vec(),
        }),
        Kind::Otlp => {
            let profile = crate::stacks::pprof::gunzip(window.pprof.as_slice(), PPROF_BYTES)
                .map_err(|e| PushError::Encode(e.to_string()))?;
            Ok(Body {
                url: destination.url.clone(),
                content_type: "application/x-protobuf",
                bytes: otlp::request(&profile, resource, id).encode_to_vec(),
            })
        }
    }
}

/// A destination, running: its queue is what the windows are offered to
/// and what `/v1/capabilities` reports.
#[derive(Debug)]
pub struct Pusher {
    /// Where it sends.
    pub destination: Destination,
    /// Its windows.
    pub queue: Arc<Queue>,
}

impl Sink for Pusher {
    fn offer(&self, window: &Window) {
        self.queue.push(window.clone());
    }
}

/// The HTTP client every push uses, with `credentials` on every request.
pub fn client(credentials: Credentials) -> Result<reqwest::Client, PushError> {
    let mut builder = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(REQUEST_TIMEOUT / 2)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tracecar/", env!("CARGO_PKG_VERSION")))
        .default_headers(credentials.headers);
    if !credentials.ca.is_empty() {
        builder = builder.tls_built_in_root_certs(false);
        for certificate in credentials.ca {
            builder = builder.add_root_certificate(certificate);
        }
    }
    if let Some(identity) = credentials.identity {
        builder = builder.identity(identity);
    }
    builder.build().map_err(PushError::Client)
}

/// Starts a sender task per destination of `spec` on the current Tokio
/// runtime, sending with `client` and with `resource` (the pod's
/// identity) in every window. The tasks run until the runtime ends.
pub fn start(
    spec: &PushSpec,
    client: &reqwest::Client,
    resource: Vec<(String, String)>,
) -> Vec<Arc<Pusher>> {
    let resource = Arc::new(resource);
    spec.destinations
        .iter()
        .map(|destination| {
            let pusher = Arc::new(Pusher {
                destination: destination.clone(),
                queue: Arc::new(Queue::new(spec.queue)),
            });
            tokio::spawn(send(pusher.clone(), client.clone(), resource.clone()));
            pusher
        })
        .collect()
}

/// What one attempt came to.
enum Outcome {
    Sent,
    Refused(String),
    Retry(String),
}

/// Sends `pusher`'s windows, oldest first, for ever.
async fn send(pusher: Arc<Pusher>, client: reqwest::Client, resource: Arc<Vec<(String, String)>>) {
    loop {
        let window = pusher.queue.next().await;
        match body(&pusher.destination, &window, &resource, profile_id()) {
            Ok(body) => deliver(&pusher, &client, &body).await,
            Err(e) => pusher.queue.rejected(e.to_string()),
        }
    }
}

/// Sends one window until the backend takes or refuses it, or newer
/// windows fill the queue meanwhile (it then gives way, counted).
async fn deliver(pusher: &Pusher, client: &reqwest::Client, body: &Body) {
    let (queue, kind) = (&pusher.queue, pusher.destination.kind);
    let mut backoff = Duration::from_secs(1);
    loop {
        match attempt(client, kind, body).await {
            Outcome::Sent => return queue.sent(),
            Outcome::Refused(why) => {
                tracing::warn!(destination = kind.name(), %why, "window refused");
                return queue.rejected(why);
            }
            Outcome::Retry(why) => {
                tracing::debug!(destination = kind.name(), %why, "push failed; retrying");
                queue.retry(why);
                if queue.full() {
                    return queue.gave_up();
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

async fn attempt(client: &reqwest::Client, kind: Kind, body: &Body) -> Outcome {
    let response = client
        .post(&body.url)
        .header(reqwest::header::CONTENT_TYPE, body.content_type)
        .body(body.bytes.clone())
        .send()
        .await;
    match response {
        Err(e) => Outcome::Retry(error_chain(&e)),
        Ok(r) if r.status().is_success() && kind == Kind::Otlp => {
            // OTLP's partial success: a 200 that rejected the profiles.
            let answer = r.bytes().await.unwrap_or_default();
            match otlp::rejected(&answer) {
                Some(why) => Outcome::Refused(why),
                None => Outcome::Sent,
            }
        }
        Ok(r) if r.status().is_success() => Outcome::Sent,
        Ok(r) => {
            let status = r.status();
            // The answer's first bytes say why; a backend's error page is
            // not read whole.
            let text = r
                .text()
                .await
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect::<String>();
            let why = format!("{status}: {}", text.trim());
            if status.is_server_error() || matches!(status.as_u16(), 408 | 429) {
                Outcome::Retry(why)
            } else {
                Outcome::Refused(why)
            }
        }
    }
}

/// An error with its causes (reqwest's own text is only the outermost).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// 16 random bytes: two draws of a randomly keyed SipHash (std's
/// `RandomState`), with the time.
fn profile_id() -> [u8; 16] {
    use std::hash::{BuildHasher as _, Hasher as _};
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let mut id = [0u8; 16];
    for half in id.chunks_mut(8) {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(now);
        half.copy_from_slice(&hasher.finish().to_le_bytes());
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_base_urls_with_the_protocols_path() {
        let spec = parse(
            Some("http://collector.obs:4318/"),
            Some("https://pyroscope.obs/prefix"),
            4,
        )
        .unwrap();
        assert_eq!(
            spec.destinations,
            [
                Destination {
                    kind: Kind::Otlp,
                    url: "http://collector.obs:4318/v1development/profiles".to_owned()
                },
                Destination {
                    kind: Kind::Pyroscope,
                    url: "https://pyroscope.obs/prefix/ingest".to_owned()
                },
            ]
        );
        assert!(parse(None, None, 4).unwrap().destinations.is_empty());
        for (otlp, why) in [
            ("ftp://x", "http or https"),
            ("http://x/?a=1", "without a query"),
            ("not a url", "relative URL"),
        ] {
            let e = parse(Some(otlp), None, 4).unwrap_err().to_string();
            assert!(e.starts_with("--push-otlp") && e.contains(why), "{e}");
        }
        assert!(parse(None, None, 0).is_err());
        assert!(parse(None, None, 65).is_err());
    }

    #[test]
    fn headers_are_name_value_lines() {
        let map =
            headers("# auth\nAuthorization: Bearer abc\n\nX-Scope-OrgID:  tenant-1 \n").unwrap();
        assert_eq!(map["authorization"], "Bearer abc");
        assert_eq!(map["x-scope-orgid"], "tenant-1");
        assert!(map["authorization"].is_sensitive());
        assert_eq!(
            headers("no colon").unwrap_err(),
            "line 1: not `Name: value`"
        );
        assert_eq!(
            headers("ok: 1\nbad name: x").unwrap_err(),
            "line 2: not a header name"
        );
    }

    #[test]
    fn a_secret_with_half_a_client_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(credentials(dir.path()).unwrap().headers.is_empty());
        std::fs::write(dir.path().join("tls.crt"), "x").unwrap();
        let e = credentials(dir.path()).unwrap_err().to_string();
        assert!(e.contains("both tls.crt and tls.key"), "{e}");
        std::fs::remove_file(dir.path().join("tls.crt")).unwrap();
        std::fs::write(dir.path().join("headers"), "Authorization Bearer").unwrap();
        let e = credentials(dir.path()).unwrap_err().to_string();
        assert!(e.contains("headers: line 1"), "{e}");
    }

    #[test]
    fn profile_ids_differ() {
        assert_ne!(profile_id(), profile_id());
    }
}
