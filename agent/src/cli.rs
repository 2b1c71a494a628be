//! Command-line interface of `tracecar-agent`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use tracecar_api::security::{Feature, Features};

use clap::{Parser, Subcommand};

use crate::api::{self, AgentState};

/// The tracecar sidecar agent.
#[derive(Debug, Parser)]
#[command(name = "tracecar-agent", version, about)]
pub struct Cli {
    /// Log filter (tracing-subscriber EnvFilter syntax).
    #[arg(long, env = "TRACECAR_LOG", default_value = "info", global = true)]
    pub log: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API on a Unix socket.
    Serve(Box<ServeArgs>),
    /// Exit 0 if the agent on the socket answers `/healthz`, 1 otherwise:
    /// the sidecar's startup and readiness probes (exec, no TCP port).
    Health(HealthArgs),
    /// The agent runs this itself for a `signal` rule: seize PID, and
    /// stop it at a fatal signal until the agent answers (see
    /// `rules::fatal`). Not for people.
    #[command(hide = true)]
    WatchSignals(WatchSignalsArgs),
}

/// `watch-signals` flags.
#[derive(Debug, clap::Args)]
pub struct WatchSignalsArgs {
    /// The process.
    #[arg(long)]
    pub pid: i32,
    /// The fatal signals watched, as a signal mask.
    #[arg(long)]
    pub mask: u64,
    /// The agent's PID: the watch ends when it is gone.
    #[arg(long)]
    pub parent: i32,
}

/// Runs the signal watch on stdin and stdout: 0 when the process is gone
/// or let go, 1 (with why on stderr) when it could not be seized.
pub fn watch_signals(args: &WatchSignalsArgs) -> Result<(), crate::rules::fatal::WatchError> {
    crate::rules::fatal::watch(
        args.pid,
        args.mask,
        args.parent,
        &mut std::io::stdout(),
        std::io::stdin(),
    )
}

/// `health` flags.
#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// The agent's Unix socket.
    #[arg(
        long,
        env = "TRACECAR_SOCKET",
        default_value = "/run/tracecar/agent.sock"
    )]
    pub socket: PathBuf,
    /// How long to wait for the answer, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
}

/// Asks the agent on `args.socket` for `/healthz`: `Ok` if it answers
/// 200 within the timeout. Blocking, with no runtime: a probe runs it
/// every few seconds, so it stays small.
pub fn health(args: &HealthArgs) -> Result<(), CliError> {
    use std::io::{Read as _, Write as _};
    let failed = |why: String| CliError::Unhealthy {
        socket: args.socket.display().to_string(),
        why,
    };
    let timeout = Some(std::time::Duration::from_millis(args.timeout_ms.max(1)));
    let mut stream =
        std::os::unix::net::UnixStream::connect(&args.socket).map_err(|e| failed(e.to_string()))?;
    stream
        .set_read_timeout(timeout)
        .and_then(|()| stream.set_write_timeout(timeout))
        .map_err(|e| failed(e.to_string()))?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| failed(e.to_string()))?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).map_err(|e| failed(e.to_string()))?;
    let status_line = String::from_utf8_lossy(&head[..n]);
    match status_line.split(' ').nth(1) {
        Some("200") => Ok(()),
        _ => Err(failed(format!(
            "answered {:?}",
            status_line.lines().next().unwrap_or_default()
        ))),
    }
}

/// `serve` flags.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Unix socket to listen on (mode 0600).
    #[arg(
        long,
        env = "TRACECAR_SOCKET",
        default_value = "/run/tracecar/agent.sock"
    )]
    pub socket: PathBuf,
    /// Also listen on this TCP address. Off unless given: the API can read
    /// any process of the pod, so keep it off the network.
    #[arg(long, env = "TRACECAR_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Serve profiles, and only profiles, on this TCP address
    /// (`0.0.0.0:6060`): `/debug/pprof/profile?seconds=N`, gzipped pprof of
    /// the pod's processes, the way Parca, Grafana Alloy and `go tool
    /// pprof` fetch it. Nothing else of the API is there.
    #[arg(long, env = "TRACECAR_PROFILES_LISTEN")]
    pub profiles_listen: Option<SocketAddr>,
    /// Where LTTng sessions write their traces until they are sent. Keep
    /// it private to the sidecar (not the /tmp shared with the app).
    #[arg(
        long,
        env = "TRACECAR_LTTNG_TRACE_DIR",
        default_value = "/var/lib/tracecar/lttng"
    )]
    pub lttng_trace_dir: PathBuf,
    /// Disk cap of one LTTng session's trace, in MiB.
    #[arg(long, env = "TRACECAR_LTTNG_DISK_MB", default_value_t = 256, value_parser = clap::value_parser!(u64).range(8..=1_048_576))]
    pub lttng_disk_mb: u64,
    /// Where core files taken with ptrace are written (unnamed, O_TMPFILE)
    /// before they are sent. Private to the sidecar, like the trace dir.
    #[arg(
        long,
        env = "TRACECAR_DUMP_DIR",
        default_value = crate::dump::native::DEFAULT_DUMP_DIR
    )]
    pub dump_dir: PathBuf,
    /// Where collection rules keep their artifacts (the sidecar's work
    /// volume; never the app's filesystem). One agent at a time: a second
    /// one finds it locked and runs without rules.
    #[arg(
        long,
        env = "TRACECAR_ARTIFACT_DIR",
        default_value = "/var/lib/tracecar/artifacts"
    )]
    pub artifact_dir: PathBuf,
    /// The artifact store's budget, in MiB: the oldest artifacts are
    /// deleted beyond it, and a dump action takes at most this much.
    #[arg(long, env = "TRACECAR_ARTIFACT_BUDGET_MB", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub artifact_budget_mb: u64,
    /// A directory of rule files (the ConfigMap the webhook mounts for
    /// `tracecar.dev/rules`), read at start and again when it changes.
    #[arg(long, env = "TRACECAR_RULES_DIR", value_name = "DIR")]
    pub rules_dir: Option<PathBuf>,
    /// Neither run nor use an LTTng session daemon; /v1/lttng/* answer 503.
    #[arg(long, env = "TRACECAR_NO_LTTNG")]
    pub no_lttng: bool,
    /// Run as an agent attached to a running pod: an ephemeral container
    /// (`kubectl tracecar attach`) that joined the processes of the app
    /// container CONTAINER, with none of the webhook's shared volumes.
    /// Files of the app are reached through /proc/PID/root; LTTng is off
    /// (the app's LTTng-UST looks for its session daemon in its own
    /// /var/run/lttng and /dev/shm, which an ephemeral container cannot
    /// share), and /v1/lttng/* say so.
    #[arg(long, env = "TRACECAR_ATTACHED", value_name = "CONTAINER")]
    pub attached: Option<String>,
    /// What this agent may do, as a comma list of profile, uprobe, lttng,
    /// dotnet and dump (the webhook sets it from `tracecar.dev/features`);
    /// requests for the others get 403, and without lttng no session
    /// daemon is started.
    #[arg(long, env = "TRACECAR_FEATURES", value_name = "LIST", value_parser = parse_features, default_value = "profile,uprobe,lttng,dotnet,dump")]
    pub features: Features,
    /// The sidecar's memory limit, in bytes or as a quantity (`256Mi`);
    /// the webhook sets it from the container's `limits.memory` through
    /// the Downward API. Without it, the agent's memory cgroup's limit, if
    /// readable. Nothing new starts at 70% of it and a running profile
    /// stops at 85% (503), rather than the container being OOM-killed.
    #[arg(long, env = "TRACECAR_MEMORY_LIMIT", value_name = "BYTES", value_parser = crate::memory::parse_quantity)]
    pub memory_limit: Option<u64>,
    /// Profile the pod all the time, in windows: `cpu`, `offcpu`, or
    /// `cpu,offcpu` (the webhook sets it from `tracecar.dev/continuous`).
    /// The last completed window of each mode is at /debug/pprof/window.
    #[arg(long, env = "TRACECAR_CONTINUOUS", value_name = "MODES")]
    pub continuous: Option<String>,
    /// Samples per second of continuous CPU profiling.
    #[arg(long, env = "TRACECAR_CONTINUOUS_HZ", default_value_t = crate::profile::continuous::DEFAULT_HZ)]
    pub continuous_hz: u32,
    /// Length of a continuous profiling window, in seconds.
    #[arg(long, env = "TRACECAR_CONTINUOUS_WINDOW", value_name = "SECONDS", default_value_t = crate::profile::continuous::DEFAULT_WINDOW_SECONDS)]
    pub continuous_window: u32,
    /// Push every continuous window as OTLP profiles (HTTP, protobuf) to
    /// this OpenTelemetry Collector base URL (`http://otel-collector:4318`;
    /// the agent adds `/v1development/profiles`).
    #[arg(long, env = "TRACECAR_PUSH_OTLP", value_name = "URL")]
    pub push_otlp: Option<String>,
    /// Push every continuous window to this Pyroscope base URL
    /// (`http://pyroscope:4040`; the agent adds `/ingest`).
    #[arg(long, env = "TRACECAR_PUSH_PYROSCOPE", value_name = "URL")]
    pub push_pyroscope: Option<String>,
    /// Windows each push destination holds while its backend cannot take
    /// them; the oldest are dropped (and counted) beyond.
    #[arg(long, env = "TRACECAR_PUSH_QUEUE", value_name = "WINDOWS", default_value_t = crate::push::DEFAULT_QUEUE)]
    pub push_queue: u32,
    /// A directory with the push's `headers` (`Name: value` lines),
    /// `ca.crt`, `tls.crt` and `tls.key`, each optional: the Secret the
    /// webhook mounts.
    #[arg(long, env = "TRACECAR_PUSH_SECRET_DIR", value_name = "DIR")]
    pub push_secret_dir: Option<PathBuf>,
    /// Who the agent profiles, written into continuous profiles.
    #[command(flatten)]
    pub identity: IdentityArgs,
}

/// The pod's identity (the webhook sets these; see [`crate::identity`]).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct IdentityArgs {
    /// The pod's name (Downward API `metadata.name`, which every sidecar
    /// has as `POD_NAME`).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// The pod's namespace (Downward API `metadata.namespace`).
    #[arg(long, env = "POD_NAMESPACE")]
    pub pod_namespace: Option<String>,
    /// The node (Downward API `spec.nodeName`).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// The service the pod belongs to.
    #[arg(long, env = "TRACECAR_SERVICE_NAME")]
    pub service_name: Option<String>,
    /// The owning workload, `KIND/NAME`.
    #[arg(long, env = "TRACECAR_WORKLOAD", value_name = "KIND/NAME")]
    pub workload: Option<String>,
    /// The app containers, comma-separated.
    #[arg(long, env = "TRACECAR_APP_CONTAINERS", value_name = "LIST")]
    pub app_containers: Option<String>,
}

impl IdentityArgs {
    /// As the agent's [`crate::identity::Identity`].
    pub fn identity(&self) -> crate::identity::Identity {
        crate::identity::Identity {
            service: self.service_name.clone(),
            namespace: self.pod_namespace.clone(),
            pod: self.pod_name.clone(),
            node: self.node_name.clone(),
            containers: self.app_containers.clone(),
            workload: self.workload.clone(),
        }
    }
}

fn parse_features(list: &str) -> Result<Features, String> {
    Features::parse(list).map_err(|e| e.to_string())
}

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The socket or TCP address cannot be bound.
    #[error("cannot listen on {what}: {source}")]
    Bind {
        /// The socket path or address.
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A setting cannot be honoured.
    #[error("{0}")]
    Config(String),
    /// The server failed.
    #[error("server failed: {0}")]
    Serve(#[source] std::io::Error),
    /// `health`: no agent answers on the socket.
    #[error("no healthy agent on {socket}: {why}")]
    Unhealthy {
        /// The socket.
        socket: String,
        /// What happened.
        why: String,
    },
}

impl CliError {
    /// Exit code: 64 for what the user must fix in the configuration.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Bind { .. } | Self::Config(_) => 64,
            Self::Serve(_) | Self::Unhealthy { .. } => 1,
        }
    }
}

/// Runs `serve` until `shutdown` resolves.
pub async fn serve(
    args: ServeArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CliError> {
    // Settings first: a pod whose continuous profiling cannot run stops
    // here, before anything is bound or started.
    let continuous = args
        .continuous
        .as_deref()
        .map(|modes| continuous_spec(&args, modes))
        .transpose()?;
    let push = push_spec(&args)?;
    let bind_error = |what: String| move |source| CliError::Bind { what, source };
    let unix =
        api::bind_socket(&args.socket).map_err(bind_error(args.socket.display().to_string()))?;
    let mut state = AgentState::default()
        .with_dump_dir(args.dump_dir.clone())
        .with_features(args.features)
        .with_memory_limit(args.memory_limit);
    if let Some(target) = &args.attached {
        state = state.attached(target.clone());
    }
    if !args.no_lttng && args.attached.is_none() && args.features.contains(Feature::Lttng) {
        state = state.with_lttng(crate::lttng::Lttng::start(
            args.lttng_trace_dir.clone(),
            args.lttng_disk_mb << 20,
            u32::try_from(crate::sys::online_cpus().len()).unwrap_or(1),
        ));
    }
    let continuous = match continuous {
        Some(spec) => {
            let identity = args.identity.identity();
            let pushers = match push {
                Some((push, client)) => crate::push::start(&push, &client, identity.attributes()),
                None => Vec::new(),
            };
            let (with, running) = state
                .with_continuous(&spec, &identity, pushers)
                .map_err(CliError::Serve)?;
            state = with;
            Some(running)
        }
        None => None,
    };
    let rules = match crate::rules::store::Store::open(
        &args.artifact_dir,
        args.artifact_budget_mb << 20,
    ) {
        Ok(store) => {
            let (with, running) = state
                .with_rules(
                    store,
                    args.rules_dir.clone(),
                    args.identity.pod_name.clone(),
                )
                .map_err(CliError::Serve)?;
            state = with;
            Some(running)
        }
        Err(e) => {
            tracing::warn!(error = %e, "collection rules are off: the artifact store cannot be used");
            None
        }
    };
    let profiles = api::profiles_router(state.clone());
    let router = api::router(state);
    tracing::info!(socket = %args.socket.display(), "agent listening");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tcp = Vec::new();
    if let Some(addr) = args.listen {
        tracing::warn!(%addr, "also listening on TCP: anyone who can reach it can profile this pod");
        tcp.push(serve_tcp(addr, router.clone(), &stop_rx).await?);
    }
    if let Some(addr) = args.profiles_listen {
        tracing::info!(%addr, path = api::SCRAPE_PATH, "serving profiles on TCP");
        tcp.push(serve_tcp(addr, profiles, &stop_rx).await?);
    }
    let mut rx = stop_rx;
    let unix_server = tokio::spawn(api::serve(unix, router, async move {
        let _ = rx.changed().await;
    }));
    shutdown.await;
    let _ = stop_tx.send(true);
    let result = unix_server.await;
    for server in tcp {
        let _ = server.await;
    }
    // Stops the windows and the rules, and waits for their threads.
    drop(continuous);
    drop(rules);
    let _ = std::fs::remove_file(&args.socket);
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(CliError::Serve(e)),
        Err(e) => Err(CliError::Serve(std::io::Error::other(e))),
    }
}

/// What `--continuous MODES` runs, with the rate and window of `args`.
fn continuous_spec(
    args: &ServeArgs,
    modes: &str,
) -> Result<crate::profile::continuous::ContinuousSpec, CliError> {
    if !args.features.contains(Feature::Profile) {
        return Err(CliError::Config(format!(
            "--continuous {modes} needs the profile feature, and this agent has {}",
            args.features.list()
        )));
    }
    let spec = crate::profile::continuous::parse(modes, args.continuous_hz, args.continuous_window)
        .map_err(|e| CliError::Config(format!("--continuous: {}; {}", e.message, e.hint)))?;
    tracing::info!(
        modes,
        hz = args.continuous_hz,
        window_seconds = args.continuous_window,
        "continuous profiling"
    );
    Ok(spec)
}

/// Where continuous windows are pushed (`--push-*`), with the client that
/// carries the Secret's credentials; `None` when nowhere.
fn push_spec(
    args: &ServeArgs,
) -> Result<Option<(crate::push::PushSpec, reqwest::Client)>, CliError> {
    let spec = crate::push::parse(
        args.push_otlp.as_deref(),
        args.push_pyroscope.as_deref(),
        args.push_queue,
    )
    .map_err(|e| CliError::Config(e.to_string()))?;
    if spec.destinations.is_empty() {
        return Ok(None);
    }
    if args.continuous.is_none() {
        return Err(CliError::Config(
            "--push-otlp and --push-pyroscope send continuous windows: add --continuous".to_owned(),
        ));
    }
    let credentials = match &args.push_secret_dir {
        Some(dir) => crate::push::credentials(dir).map_err(|e| CliError::Config(e.to_string()))?,
        None => crate::push::Credentials::default(),
    };
    let client = crate::push::client(credentials).map_err(|e| CliError::Config(e.to_string()))?;
    for destination in &spec.destinations {
        tracing::info!(destination = destination.kind.name(), url = %destination.url, "pushing windows");
    }
    Ok(Some((spec, client)))
}

/// Serves `router` on the TCP address `addr` until `stop` changes.
async fn serve_tcp(
    addr: SocketAddr,
    router: axum::Router,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<std::io::Result<()>>, CliError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| CliError::Bind {
            what: addr.to_string(),
            source,
        })?;
    let mut stop = stop.clone();
    Ok(tokio::spawn(api::serve(listener, router, async move {
        let _ = stop.changed().await;
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
