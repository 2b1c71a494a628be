//! Command-line interface: argument types and the body of each command.

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{ConfigError, InjectConfig};
use crate::server;
use crate::tls::TlsError;
use crate::{certs, workload};

/// The tracecar admission webhook.
#[derive(Debug, Parser)]
#[command(name = "tracecar-webhook", version, about)]
pub struct Cli {
    /// Log filter (tracing-subscriber EnvFilter syntax).
    #[arg(long, env = "TRACECAR_LOG", default_value = "info", global = true)]
    pub log: String,
    /// Log format.
    #[arg(long, env = "TRACECAR_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"], global = true)]
    pub log_format: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the admission webhook over HTTPS.
    Serve(ServeArgs),
    /// Inject offline into Pods and workloads in YAML, like `istioctl kube-inject`.
    Inject(InjectArgs),
    /// Generate a CA and a serving certificate for the webhook Service.
    Certs(CertsArgs),
}

/// `serve` flags.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "TRACECAR_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// PEM certificate chain; reloaded when it changes.
    #[arg(
        long,
        env = "TRACECAR_TLS_CERT",
        default_value = "/etc/tracecar/tls/tls.crt"
    )]
    pub tls_cert: PathBuf,
    /// PEM private key; reloaded when it changes.
    #[arg(
        long,
        env = "TRACECAR_TLS_KEY",
        default_value = "/etc/tracecar/tls/tls.key"
    )]
    pub tls_key: PathBuf,
    /// Injector config (YAML); defaults apply when omitted.
    #[arg(long, env = "TRACECAR_CONFIG")]
    pub config: Option<PathBuf>,
    /// How often to check the certificate files for changes, in milliseconds.
    #[arg(long, env = "TRACECAR_CERT_RELOAD_MS", default_value_t = 1000)]
    pub cert_reload_ms: u64,
    /// How many rendered injection decisions to cache by pod shape
    /// (replicas of one workload share one); 0 disables the cache.
    #[arg(long, env = "TRACECAR_PLAN_CACHE", default_value_t = 1024)]
    pub plan_cache: usize,
}

/// `inject` flags.
#[derive(Debug, clap::Args)]
pub struct InjectArgs {
    /// Input YAML file, or `-` for standard input.
    #[arg(short = 'f', long = "filename")]
    pub file: String,
    /// Injector config (YAML); defaults apply when omitted.
    #[arg(long, env = "TRACECAR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Namespace assumed for objects that do not name one.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
}

/// `certs` flags.
#[derive(Debug, clap::Args)]
pub struct CertsArgs {
    /// Service name of the webhook.
    #[arg(long, default_value = "tracecar-webhook")]
    pub service: String,
    /// Namespace of the webhook Service.
    #[arg(long, default_value = "tracecar-system")]
    pub namespace: String,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
}

/// A command failed; the exit code tells configuration errors apart.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad configuration (exit 64).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Unusable certificate files (exit 64).
    #[error("{0} (generate them with `tracecar-webhook certs --out DIR`)")]
    Tls(#[from] TlsError),
    /// The configuration cannot be rendered (exit 64).
    #[error(transparent)]
    Injector(#[from] crate::inject::InjectError),
    /// Cannot listen.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Cannot read the input.
    #[error("cannot read {path}: {source}")]
    Input {
        /// The input path.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Offline injection failed.
    #[error(transparent)]
    Workload(#[from] workload::WorkloadError),
    /// Certificate generation failed.
    #[error(transparent)]
    Certs(#[from] certs::CertsError),
}

impl CliError {
    /// The process exit code: 64 (EX_USAGE) for what the user must fix in
    /// the configuration, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Config(_)
            | Self::Tls(_)
            | Self::Injector(_)
            | Self::Bind { .. }
            | Self::Input { .. } => 64,
            Self::Certs(certs::CertsError::BadName(_)) => 64,
            Self::Workload(_) | Self::Certs(_) => 1,
        }
    }
}

fn load_config(path: Option<&PathBuf>) -> Result<InjectConfig, ConfigError> {
    path.map_or_else(|| Ok(InjectConfig::default()), |p| InjectConfig::load(p))
}

/// Runs `serve` until `shutdown` resolves.
pub async fn serve(
    args: ServeArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), CliError> {
    let config = load_config(args.config.as_ref())?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| CliError::Bind {
            addr: args.listen,
            source,
        })?;
    tracing::info!(addr = %args.listen, image = %config.image, profile = config.profile.as_str(), "serving admission webhook");
    let settings = server::Settings {
        config,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        cert_reload: Duration::from_millis(args.cert_reload_ms.max(10)),
        plan_cache: args.plan_cache,
        timeouts: server::Timeouts::default(),
    };
    match server::run(listener, settings, shutdown).await {
        Ok(()) => Ok(()),
        Err(server::StartError::Tls(e)) => Err(CliError::Tls(e)),
        Err(server::StartError::Injector(e)) => Err(CliError::Injector(e)),
    }
}

/// Runs `inject`, writing YAML to stdout and warnings to stderr.
pub fn inject(args: &InjectArgs) -> Result<workload::Injected, CliError> {
    let config = load_config(args.config.as_ref())?;
    let input_error = |source| CliError::Input {
        path: args.file.clone(),
        source,
    };
    let input = if args.file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(input_error)?;
        text
    } else {
        std::fs::read_to_string(&args.file).map_err(input_error)?
    };
    Ok(workload::inject_yaml(&input, &args.namespace, &config)?)
}

/// Runs `certs`.
pub fn certs(args: &CertsArgs) -> Result<certs::Written, CliError> {
    Ok(certs::write_certs(
        &args.service,
        &args.namespace,
        &args.out,
    )?)
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
