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
    Serve(ServeArgs),
    /// Exit 0 if the agent on the socket answers `/healthz`, 1 otherwise:
    /// the sidecar's startup and readiness probes (exec, no TCP port).
    Health(HealthArgs),
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
            Self::Bind { .. } => 64,
            Self::Serve(_) | Self::Unhealthy { .. } => 1,
        }
    }
}

/// Runs `serve` until `shutdown` resolves.
pub async fn serve(
    args: ServeArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CliError> {
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
    let _ = std::fs::remove_file(&args.socket);
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(CliError::Serve(e)),
        Err(e) => Err(CliError::Serve(std::io::Error::other(e))),
    }
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
