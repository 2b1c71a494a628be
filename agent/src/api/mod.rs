//! The agent's HTTP API, served on a Unix socket. Every endpoint has the
//! same shape: its spec module parses the query (with the shared parsers
//! of [`crate::params`]), a pure plan or resolver turns the spec into what to do,
//! an executor does it on a blocking thread, and the handler here only
//! translates: query → spec → domain call → response. Domain errors become
//! HTTP answers through the `From` conversions in [`error`]; captures that
//! stream use the one helper in [`stream`].
//!
//! One file per endpoint family: [`system`] (`/healthz`,
//! `/v1/capabilities`, `/v1/processes`), [`profile`] (`/v1/profile`,
//! `/v1/profile/trigger`, `/debug/pprof/profile`), [`uprobe`]
//! (`/v1/uprobe`, `/v1/symbols`), [`lttng`] (`/v1/lttng/*`) and
//! [`dotnet`] (`/v1/dotnet/*`) and [`dump`] (`/v1/dump`). Every route is
//! one line of [`routes`].

mod answer;
mod dotnet;
mod dump;
pub mod error;
mod extract;
mod lttng;
mod profile;
mod rules;
mod stream;
mod system;
mod uprobe;

use std::future::Future;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;
use tracecar_api::security::{Feature, Features};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use error::ApiError;

use crate::procfs::Procfs;

/// Captures that may run at once; more get 429.
pub const MAX_CONCURRENT_CAPTURES: usize = 4;
/// Uprobes that may be attached at once; more get 429.
pub const MAX_CONCURRENT_PROBES: usize = 8;
/// Reads of the pod's processes (`/v1/processes`, `/v1/symbols`) that may
/// run at once; more get 429. Each is bounded in time and memory, and
/// this bounds how many blocking threads they hold.
pub const MAX_CONCURRENT_READS: usize = 4;

/// Shared state of the handlers.
#[derive(Debug, Clone)]
pub struct AgentState {
    procfs: Procfs,
    captures: Arc<Semaphore>,
    probes: Arc<Semaphore>,
    reads: Arc<Semaphore>,
    lttng: Option<Arc<crate::lttng::Lttng>>,
    dump_dir: std::path::PathBuf,
    mode: tracecar_api::capabilities::Mode,
    features: Features,
    memory: Arc<crate::memory::Memory>,
    windows: Arc<crate::profile::continuous::Windows>,
    pushers: Vec<Arc<crate::push::Pusher>>,
    rules: Option<Arc<crate::rules::Rules>>,
}

impl Default for AgentState {
    fn default() -> Self {
        Self::new(Procfs::default())
    }
}

impl AgentState {
    /// State over a `/proc`.
    pub fn new(procfs: Procfs) -> Self {
        Self {
            procfs: procfs.clone(),
            captures: Arc::new(Semaphore::new(MAX_CONCURRENT_CAPTURES)),
            probes: Arc::new(Semaphore::new(MAX_CONCURRENT_PROBES)),
            reads: Arc::new(Semaphore::new(MAX_CONCURRENT_READS)),
            lttng: None,
            dump_dir: crate::dump::native::default_dump_dir(),
            mode: tracecar_api::capabilities::Mode::Sidecar,
            features: Features::all(),
            memory: Arc::new(crate::memory::Memory::new(procfs, None)),
            windows: Arc::default(),
            pushers: Vec::new(),
            rules: None,
        }
    }

    /// Runs attached to a running pod (an ephemeral container joined to
    /// the processes of container `target`).
    pub fn attached(mut self, target: String) -> Self {
        self.mode = tracecar_api::capabilities::Mode::Attached { target };
        self
    }

    /// Serves only `features` (403 for the others).
    pub fn with_features(mut self, features: Features) -> Self {
        self.features = features;
        self
    }

    /// Bounds the agent's memory by `limit` bytes (else its cgroup's
    /// limit, if readable): see [`crate::memory`].
    pub fn with_memory_limit(mut self, limit: Option<u64>) -> Self {
        self.memory = Arc::new(crate::memory::Memory::new(self.procfs.clone(), limit));
        self
    }

    /// Writes ptrace core files in `dir` while they are taken.
    pub fn with_dump_dir(mut self, dir: std::path::PathBuf) -> Self {
        self.dump_dir = dir;
        self
    }

    /// Runs continuous profiling (`spec`'s windows, with the pod's
    /// `identity` in each), serves its last windows at
    /// `/debug/pprof/window`, and offers each to `pushers`. It runs until
    /// the returned guard is dropped; call this after
    /// [`Self::with_memory_limit`], whose bound the windows keep.
    pub fn with_continuous(
        mut self,
        spec: &crate::profile::continuous::ContinuousSpec,
        identity: &crate::identity::Identity,
        pushers: Vec<Arc<crate::push::Pusher>>,
    ) -> std::io::Result<(Self, crate::profile::continuous::Running)> {
        use crate::profile::continuous;
        let windows = Arc::new(continuous::Windows::new(Some(spec)));
        let context = continuous::Context {
            procfs: self.procfs.clone(),
            memory: self.memory.clone(),
            comments: identity.comments(),
            sinks: pushers
                .iter()
                .map(|p| p.clone() as Arc<dyn continuous::Sink>)
                .collect(),
        };
        let running = continuous::start(spec, &context, &windows)?;
        self.windows = windows;
        self.pushers = pushers;
        Ok((self, running))
    }

    /// Continuous profiling's windows and pushes, for `/v1/capabilities`.
    fn continuous_report(&self) -> Option<tracecar_api::capabilities::ContinuousReport> {
        let modes = self.windows.report()?;
        let push = self
            .pushers
            .iter()
            .map(|p| {
                let tally = p.queue.tally();
                tracecar_api::capabilities::PushReport {
                    destination: p.destination.kind.name().to_owned(),
                    url: p.destination.url.clone(),
                    queued: p.queue.len() as u64,
                    sent: tally.sent,
                    dropped: tally.dropped,
                    rejected: tally.rejected,
                    retries: tally.retries,
                    last_error: tally.last_error,
                }
            })
            .collect();
        Some(tracecar_api::capabilities::ContinuousReport { modes, push })
    }

    /// Runs collection rules (the ConfigMap's in `config_dir`, and those
    /// `POST /v1/rules` adds) with their artifacts in `store`. Call this
    /// after [`Self::with_memory_limit`], [`Self::with_dump_dir`],
    /// [`Self::with_features`] and [`Self::with_lttng`]: the rules' actions
    /// use them (without an LTTng side, `lttng_record` and
    /// `lttng_snapshot` actions are refused as a feature the agent does
    /// not serve). The watch
    /// runs until the returned guard is dropped.
    pub fn with_rules(
        mut self,
        store: crate::rules::store::Store,
        config_dir: Option<std::path::PathBuf>,
        pod: Option<String>,
    ) -> std::io::Result<(Self, crate::rules::Running)> {
        let context = crate::rules::Context {
            procfs: self.procfs.clone(),
            proc_root: std::path::PathBuf::from("/proc"),
            cgroup_root: std::path::PathBuf::from("/sys/fs/cgroup"),
            memory: self.memory.clone(),
            captures: self.captures.clone(),
            probes: self.probes.clone(),
            dump_dir: self.dump_dir.clone(),
            wake: Arc::default(),
            lttng: self.lttng.clone(),
            features: if self.lttng.is_some() {
                self.features
            } else {
                self.features
                    .without(tracecar_api::security::Feature::Lttng)
            },
            pod,
            config_dir,
        };
        let rules = crate::rules::Rules::new(context, Arc::new(store));
        let running = rules.start()?;
        self.rules = Some(rules);
        Ok((self, running))
    }

    /// Serves `/v1/lttng/*` with this LTTng side.
    pub fn with_lttng(mut self, lttng: Arc<crate::lttng::Lttng>) -> Self {
        self.lttng = Some(lttng);
        self
    }

    /// A slot for a capture (profile, trigger, LTTng, .NET, dump): 429
    /// when all are taken, 503 when the agent's memory is near its limit.
    fn capture_slot(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.memory.admit()?;
        slot(
            &self.captures,
            format!("{MAX_CONCURRENT_CAPTURES} captures are already running"),
        )
    }

    /// A slot for an attached probe: 429 when all are taken, 503 when the
    /// agent's memory is near its limit.
    fn probe_slot(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.memory.admit()?;
        slot(
            &self.probes,
            format!("{MAX_CONCURRENT_PROBES} probes are already attached"),
        )
    }
}

impl AgentState {
    /// The `/proc` handle of one request: it remembers the processes it
    /// opens files of, so that a PID reused during a long capture is not
    /// taken for the process the request named ([`Procfs::pinned`]).
    fn procfs(&self) -> Procfs {
        self.procfs.pinned()
    }

    /// A slot for a read of the pod's processes (`/v1/processes`,
    /// `/v1/symbols`): 429 when all are taken, 503 when the agent's memory
    /// is near its limit.
    fn read_slot(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.memory.admit()?;
        slot(
            &self.reads,
            format!("{MAX_CONCURRENT_READS} process listings or symbol reads are already running"),
        )
    }
}

fn slot(semaphore: &Arc<Semaphore>, full: String) -> Result<OwnedSemaphorePermit, ApiError> {
    semaphore.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            full,
            "retry when one of them has finished",
        )
    })
}

/// One endpoint: its path, the feature it belongs to (`None` for those
/// every agent serves) and its handler. [`routes`] is the one table the
/// router, the 404 hint, the feature gate and the docs test read.
#[derive(Debug)]
pub struct Route {
    /// The path, as routed.
    pub path: &'static str,
    /// The feature that serves it; `None` for health, capabilities and
    /// processes.
    pub feature: Option<Feature>,
    handler: axum::routing::MethodRouter<AgentState>,
}

impl Route {
    fn new(
        path: &'static str,
        feature: Option<Feature>,
        handler: axum::routing::MethodRouter<AgentState>,
    ) -> Self {
        Self {
            path,
            feature,
            handler,
        }
    }

    /// The path's first two segments (`/v1/dotnet` of
    /// `/v1/dotnet/trace`): the prefix the feature gate matches, so that
    /// a path under a family the agent does not serve gets 403, not 404.
    fn family(&self) -> &'static str {
        let end = self
            .path
            .match_indices('/')
            .nth(2)
            .map_or(self.path.len(), |(i, _)| i);
        &self.path[..end]
    }
}

/// Every endpoint. To add one, add its line here (and its page under
/// `docs/api/`: a test checks that every path is documented).
pub fn routes() -> Vec<Route> {
    use Feature::{Dotnet, Dump, Lttng, Profile, Uprobe};
    vec![
        Route::new("/healthz", None, get(|| async { "ok" })),
        Route::new("/v1/capabilities", None, get(system::capabilities)),
        Route::new("/v1/processes", None, get(system::processes)),
        Route::new("/v1/profile", Some(Profile), get(profile::profile)),
        Route::new("/v1/profile/trigger", Some(Profile), get(profile::trigger)),
        Route::new("/v1/stacks", Some(Profile), get(profile::stacks)),
        Route::new(
            "/debug/pprof/profile",
            Some(Profile),
            get(profile::go_pprof),
        ),
        Route::new(WINDOW_PATH, Some(Profile), get(profile::window)),
        Route::new("/v1/symbols", Some(Uprobe), get(uprobe::symbols)),
        Route::new("/v1/uprobe", Some(Uprobe), get(uprobe::uprobe)),
        Route::new("/v1/lttng/events", Some(Lttng), get(lttng::events)),
        Route::new("/v1/lttng/record", Some(Lttng), get(lttng::record)),
        Route::new("/v1/lttng/live", Some(Lttng), get(lttng::live)),
        Route::new("/v1/dotnet/trace", Some(Dotnet), get(dotnet::trace)),
        Route::new("/v1/dotnet/counters", Some(Dotnet), get(dotnet::counters)),
        Route::new(
            "/v1/dotnet/exceptions",
            Some(Dotnet),
            get(dotnet::exceptions),
        ),
        Route::new("/v1/dotnet/gcdump", Some(Dotnet), get(dotnet::gcdump)),
        Route::new("/v1/dump", Some(Dump), get(dump::dump)),
        Route::new("/v1/rules", None, get(rules::list).post(rules::add)),
        Route::new("/v1/rules/{name}", None, delete(rules::remove)),
        Route::new("/v1/artifacts", None, get(rules::artifacts)),
        Route::new("/v1/artifacts/{id}", None, get(rules::artifact)),
    ]
}

/// The API routes.
pub fn router(state: AgentState) -> Router {
    let routes = routes();
    let gate = Gate {
        features: state.features,
        families: routes.iter().map(|r| (r.family(), r.feature)).collect(),
    };
    let endpoints = routes.iter().map(|r| r.path).collect::<Vec<_>>().join(", ");
    let router = routes.into_iter().fold(Router::new(), |router, route| {
        router.route(route.path, route.handler)
    });
    router
        .fallback(|| async move {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such endpoint",
                format!("endpoints: {endpoints}"),
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(gate),
            require_feature,
        ))
        .with_state(state)
}

/// The profiles listener's routes (`--profiles-listen`): a scraper on
/// the network (Parca, Grafana Alloy's `pyroscope.scrape`, `go tool
/// pprof`) gets `/debug/pprof/profile` and `/debug/pprof/window` and
/// nothing else: no process list, probe, trace, dump or LTTng endpoint is
/// reachable there. They need the `profile` feature, as on the socket.
pub fn profiles_router(state: AgentState) -> Router {
    let gate = Gate {
        features: state.features,
        families: vec![
            (SCRAPE_PATH, Some(Feature::Profile)),
            (WINDOW_PATH, Some(Feature::Profile)),
        ],
    };
    Router::new()
        .route(SCRAPE_PATH, get(profile::scrape))
        .route(WINDOW_PATH, get(profile::window))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "this listener serves only profiles",
                format!(
                    "GET {SCRAPE_PATH}?seconds=N or {WINDOW_PATH} (gzipped pprof); the rest of the API is on the agent's Unix socket"
                ),
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(gate),
            require_feature,
        ))
        .with_state(state)
}

/// Where scrapers ask for a profile, as Go's `net/http/pprof` serves it.
pub const SCRAPE_PATH: &str = "/debug/pprof/profile";

/// Where the last completed window of continuous profiling is.
pub const WINDOW_PATH: &str = "/debug/pprof/window";

/// What the feature gate knows: the agent's features and each route's
/// family with its feature.
#[derive(Debug)]
struct Gate {
    features: Features,
    families: Vec<(&'static str, Option<Feature>)>,
}

/// The feature an endpoint belongs to, from [`routes`]; `None` for those
/// every agent serves (health, capabilities, processes). Paths are matched
/// by family on whole segments: `/v1/dotnet/other` is the .NET feature's,
/// `/v1/uprobes` nobody's.
pub fn feature_for(path: &str) -> Option<Feature> {
    let families: Vec<_> = routes().iter().map(|r| (r.family(), r.feature)).collect();
    feature_in(&families, path)
}

fn feature_in(families: &[(&'static str, Option<Feature>)], path: &str) -> Option<Feature> {
    families
        .iter()
        .find(|(family, _)| {
            path.strip_prefix(family)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
        .and_then(|(_, feature)| *feature)
}

/// 403 for an endpoint outside the agent's features, naming the
/// annotation that adds it.
async fn require_feature(
    axum::extract::State(gate): axum::extract::State<Arc<Gate>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let features = gate.features;
    match feature_in(&gate.families, request.uri().path()) {
        Some(feature) if !features.contains(feature) => {
            let wanted = features.with(feature).list();
            ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "this agent was started for {} only; {} needs the {} feature",
                    if features == Features::none() {
                        "no feature".to_owned()
                    } else {
                        features.list()
                    },
                    request.uri().path(),
                    feature.as_str()
                ),
                format!(
                    "annotate the pod template with tracecar.dev/features: \"{wanted}\" and roll the pods out again: the sidecar's capabilities are set when the pod is created"
                ),
            )
            .into_response()
        }
        _ => next.run(request).await,
    }
}

/// Creates the socket's directory, replaces a stale socket, binds, and
/// restricts the socket to its owner (0600).
pub fn bind_socket(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => tracing::info!(socket = %path.display(), "removed stale socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves `router` on `listener` (the Unix socket, or TCP with `--listen`)
/// until `shutdown` resolves, then finishes open requests.
pub async fn serve<L>(
    listener: L,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Runs `f` on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("worker failed: {e}"), "see the agent's log"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pages of `docs/api/`, by file name.
    fn api_pages() -> Vec<(String, String)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/api");
        let mut pages: Vec<(String, String)> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| {
                let path = entry.expect("a directory entry").path();
                let text = std::fs::read_to_string(&path).expect("a page");
                (
                    path.file_name()
                        .expect("a name")
                        .to_string_lossy()
                        .into_owned(),
                    text,
                )
            })
            .collect();
        pages.sort();
        pages
    }

    #[test]
    fn every_route_is_documented() {
        let pages = api_pages();
        let index = &pages
            .iter()
            .find(|(name, _)| name == "README.md")
            .expect("docs/api/README.md")
            .1;
        for route in routes() {
            let quoted = format!("`{}", route.path);
            let row = index
                .lines()
                .find(|line| line.starts_with(&format!("| `{}` |", route.path)))
                .unwrap_or_else(|| panic!("{} is not in docs/api/README.md's table", route.path));
            let feature = route
                .feature
                .map_or("—".to_owned(), |f| format!("`{}`", f.as_str()));
            assert!(
                row.contains(&format!("| {feature} |")),
                "{}: the index says {row:?}, the route table {feature}",
                route.path
            );
            assert!(
                pages
                    .iter()
                    .any(|(name, text)| name != "README.md" && text.contains(&quoted)),
                "{} is documented on no page of docs/api/",
                route.path
            );
        }
    }

    /// Every parameter of every request, on the page of its endpoint
    /// (as `` `name` `` or `name=`).
    #[test]
    fn every_parameter_is_documented() {
        use tracecar_api::request::*;
        fn fields<R: Request>() -> (&'static str, &'static [&'static str]) {
            (R::PATH, R::FIELDS)
        }
        let pages = api_pages();
        for ((path, names), page) in [
            (fields::<ProfileRequest>(), "profile.md"),
            (fields::<TriggerRequest>(), "profile.md"),
            (fields::<StacksRequest>(), "profile.md"),
            (fields::<ScrapeRequest>(), "profile.md"),
            (fields::<WindowRequest>(), "profile.md"),
            (fields::<SymbolsRequest>(), "uprobe.md"),
            (fields::<UprobeRequest>(), "uprobe.md"),
            (fields::<LttngEventsRequest>(), "lttng.md"),
            (fields::<LttngRecordRequest>(), "lttng.md"),
            (fields::<LttngLiveRequest>(), "lttng.md"),
            (fields::<DotnetTraceRequest>(), "dotnet.md"),
            (fields::<CountersRequest>(), "dotnet.md"),
            (fields::<ExceptionsRequest>(), "dotnet.md"),
            (fields::<GcdumpRequest>(), "dotnet.md"),
            (fields::<DumpRequest>(), "dump.md"),
        ] {
            let text = &pages
                .iter()
                .find(|(name, _)| name == page)
                .unwrap_or_else(|| panic!("docs/api/{page}"))
                .1;
            assert!(
                text.contains(&format!("`{path}")),
                "{path} is not on {page}"
            );
            let missing: Vec<&str> = names
                .iter()
                .copied()
                .filter(|name| {
                    !text.contains(&format!("`{name}`")) && !text.contains(&format!("{name}="))
                })
                .collect();
            assert!(
                missing.is_empty(),
                "{path}: {missing:?} not on docs/api/{page}"
            );
        }
    }

    #[test]
    fn families_gate_whole_segments() {
        assert_eq!(feature_for("/v1/dotnet/other"), Some(Feature::Dotnet));
        assert_eq!(feature_for("/debug/pprof/heap"), Some(Feature::Profile));
        assert_eq!(feature_for("/v1/profiles"), None);
        assert_eq!(feature_for("/v1/processes"), None);
        assert_eq!(feature_for("/healthz"), None);
    }
}
