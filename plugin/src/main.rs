//! `kubectl-tracecar`: see `kubectl_tracecar::cli`.

use clap::Parser as _;

fn main() {
    let cli = match kubectl_tracecar::cli::Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version print and exit 0; bad usage exits 64
        // (EX_USAGE), like the other tracecar binaries.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let _ = e.print();
            std::process::exit(64);
        }
    };
    if let Err(error) = kubectl_tracecar::run::run(&cli) {
        eprintln!(
            "error: {}",
            kubectl_tracecar::output::terminal_safe(&error.to_string())
        );
        std::process::exit(error.exit_code());
    }
}
