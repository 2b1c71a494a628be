//! `kubectl-tracecar`: see `kubectl_tracecar::cli`.

use clap::Parser as _;

fn main() {
    let cli = kubectl_tracecar::cli::Cli::parse();
    if let Err(error) = kubectl_tracecar::run::run(&cli) {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}
