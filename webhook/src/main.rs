//! `tracecar-webhook`: see `tracecar_webhook::cli`.

use std::io::Write as _;

use clap::Parser as _;
use tracecar_webhook::cli::{self, Cli, CliError, Command};

// Admission reviews allocate many small JSON nodes; mimalloc keeps that cheap
// and RSS flat. The benchmark ceiling uses the same allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn init_tracing(filter: &str, format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown signal received");
}

fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|source| CliError::Input {
                    path: "tokio runtime".to_owned(),
                    source,
                })?;
            runtime.block_on(cli::serve(args, shutdown_signal()))
        }
        Command::Inject(args) => {
            let injected = cli::inject(&args)?;
            for warning in &injected.warnings {
                eprintln!("warning: {warning}");
            }
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(injected.yaml.as_bytes());
            eprintln!("injected {} pod template(s)", injected.injected);
            Ok(())
        }
        Command::Certs(args) => {
            let written = cli::certs(&args)?;
            eprintln!(
                "{} {}: wrote ca.crt, tls.crt, tls.key and caBundle{}",
                if written.reused_ca {
                    "reused the CA in"
                } else {
                    "created a CA in"
                },
                args.out.display(),
                if written.reused_ca {
                    ""
                } else {
                    " (keep ca.key out of the cluster)"
                }
            );
            Ok(())
        }
    }
}

fn main() {
    let cli = Cli::parse();
    init_tracing(&cli.log, &cli.log_format);
    if let Err(error) = run(cli) {
        eprintln!("error: {error}");
        std::process::exit(error.exit_code());
    }
}
