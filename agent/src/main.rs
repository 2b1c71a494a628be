//! `tracecar-agent`: see `tracecar_agent::cli`.

use clap::Parser as _;
use tracecar_agent::cli::{self, Cli, Command};

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutdown signal received");
}

fn main() {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let args = match cli.command {
        Command::Serve(args) => args,
        Command::Health(args) => {
            if let Err(error) = cli::health(&args) {
                eprintln!("error: {error}");
                std::process::exit(error.exit_code());
            }
            return;
        }
        Command::WatchSignals(args) => {
            if let Err(error) = cli::watch_signals(&args) {
                eprintln!("error: {error}");
                std::process::exit(1);
            }
            return;
        }
    };
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(cli::CliError::Serve)
        .and_then(|rt| rt.block_on(cli::serve(*args, shutdown_signal())));
    if let Err(error) = result {
        eprintln!("error: {error}");
        std::process::exit(error.exit_code());
    }
}
