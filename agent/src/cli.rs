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
}

impl CliError {
    /// Exit code: 64 for what the user must fix in the configuration.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Bind { .. } => 64,
            Self::Serve(_) => 1,
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
        .with_features(args.features);
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
    let router = api::router(state);
    tracing::info!(socket = %args.socket.display(), "agent listening");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tcp = match args.listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(bind_error(addr.to_string()))?;
            tracing::warn!(%addr, "also listening on TCP: anyone who can reach it can profile this pod");
            let mut rx = stop_rx.clone();
            Some(tokio::spawn(api::serve(
                listener,
                router.clone(),
                async move {
                    let _ = rx.changed().await;
                },
            )))
        }
        None => None,
    };
    let mut rx = stop_rx;
    let unix_server = tokio::spawn(api::serve(unix, router, async move {
        let _ = rx.changed().await;
    }));
    shutdown.await;
    let _ = stop_tx.send(true);
    let result = unix_server.await;
    if let Some(tcp) = tcp {
        let _ = tcp.await;
    }
    let _ = std::fs::remove_file(&args.socket);
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(CliError::Serve(e)),
        Err(e) => Err(CliError::Serve(std::io::Error::other(e))),
    }
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
