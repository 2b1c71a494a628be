//! Command line of `kubectl tracecar`.

use clap::{Parser, Subcommand};

use crate::target::Runtime;

/// Profile, trace and record LTTng sessions in a pod through its tracecar
/// sidecar.
#[derive(Debug, Parser)]
#[command(name = "kubectl-tracecar", version, about)]
pub struct Cli {
    /// How to reach the sidecar: kubectl exec, or podman exec for pods run
    /// with `podman kube play`.
    #[arg(
        long,
        value_enum,
        default_value = "kubectl",
        env = "TRACECAR_RUNTIME",
        global = true
    )]
    pub runtime: Runtime,
    /// Namespace (kubectl).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// kubeconfig context (kubectl).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Name of the sidecar container (when the pod has none by that name,
    /// an agent added by `attach` is used).
    #[arg(
        long,
        env = "TRACECAR_CONTAINER",
        default_value = "tracecar",
        global = true
    )]
    pub container: String,
    /// The agent's socket inside the sidecar.
    #[arg(
        long,
        env = "TRACECAR_SOCKET",
        default_value = "/run/tracecar/agent.sock",
        global = true
    )]
    pub socket: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands. TARGET is POD, pod/POD or deploy/NAME.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add the agent to a running pod that has no sidecar, as an
    /// ephemeral container (no restart), and wait until it answers;
    /// every other command then works on that pod.
    Attach {
        /// POD, pod/POD or deploy/NAME.
        target: String,
        /// The app container whose processes the agent joins (default: the
        /// only, or first, container).
        #[arg(long)]
        target_container: Option<String>,
        /// Security profile, as the webhook's: minimal or privileged.
        #[arg(long, default_value = "minimal", value_parser = ["minimal", "privileged"])]
        profile: String,
        /// What the agent may do, as `tracecar.dev/features` says for an
        /// injected one: a comma list of profile, uprobe, lttng, dotnet
        /// and dump. The ephemeral container gets only their capabilities
        /// (with `--profile minimal`), and the agent answers 403 outside
        /// them.
        #[arg(long, default_value = "profile,uprobe,lttng,dotnet,dump", value_parser = parse_features)]
        features: tracecar_api::security::Features,
        /// The agent image.
        #[arg(long, default_value = tracecar_api::security::AGENT_IMAGE)]
        image: String,
        /// How long to wait for the agent to run and answer, in seconds.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        /// Print the ephemeral container as JSON and change nothing.
        #[arg(long)]
        print: bool,
    },
    /// The pod's processes.
    Ps {
        /// POD, pod/POD or deploy/NAME.
        target: String,
    },
    /// A CPU, off-CPU or wall-clock profile, written to a file whose name
    /// picks the format.
    Profile {
        /// POD, pod/POD or deploy/NAME.
        target: String,
        /// Capture length.
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        /// Samples per second (cpu and wall).
        #[arg(long)]
        hz: Option<u32>,
        /// Only these processes (PID or comma list).
        #[arg(long)]
        pid: Option<String>,
        /// auto, fp or dwarf.
        #[arg(long)]
        unwind: Option<String>,
        /// cpu (where CPU time goes), offcpu (where threads block, and
        /// for how long) or wall (both, in time).
        #[arg(long, value_parser = ["cpu", "offcpu", "wall"])]
        mode: Option<String>,
        /// offcpu/wall: drop blocks shorter than this many microseconds.
        #[arg(long)]
        min_block_us: Option<u32>,
        /// offcpu/wall: thread states counted: S, D, R or a list (S,D).
        #[arg(long)]
        state: Option<String>,
        /// offcpu/wall: switch-outs recorded per second at most.
        #[arg(long)]
        rate: Option<u32>,
        /// One root per thread, named.
        #[arg(long)]
        threads: bool,
        /// Output: .svg, .pprof/.pb.gz, .folded, .speedscope.json, .json.
        #[arg(short = 'o', long, default_value = "flame.svg")]
        output: String,
    },
    /// Stream calls of a function: arguments, return value, latency, and
    /// the calling stack; or write its callers as a flamegraph (-o).
    Trace {
        /// POD, pod/POD or deploy/NAME.
        target: String,
        /// Function name: an ELF symbol, or a JIT method named by the
        /// process's perf map or .NET runtime (by its full name, or a
        /// unique part of it).
        #[arg(long, required_unless_present = "address", conflicts_with = "address")]
        symbol: Option<String>,
        /// An address in the process instead of a name (JIT code too).
        #[arg(long)]
        address: Option<String>,
        /// Module the function is in (e.g. libc.so.6).
        #[arg(long)]
        module: Option<String>,
        /// Argument types, e.g. int,str.
        #[arg(long)]
        args: Option<String>,
        /// Return type, e.g. int.
        #[arg(long)]
        ret: Option<String>,
        /// The process (default: the pod's only app process).
        #[arg(long)]
        pid: Option<String>,
        /// How long to trace.
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        /// Stop after N calls.
        #[arg(long)]
        limit: Option<u64>,
        /// Print each call's stack under it.
        #[arg(long)]
        stack: bool,
        /// How stacks are walked: auto, fp or dwarf.
        #[arg(long)]
        unwind: Option<String>,
        /// The calling convention argN follows: sysv, java or v8 (default:
        /// the process's runtime).
        #[arg(long)]
        abi: Option<String>,
        /// Write the callers as a flamegraph instead of streaming calls:
        /// .svg, .pprof, .pb.gz, .folded, .speedscope.json or .json.
        #[arg(short = 'o', long)]
        output: Option<String>,
        /// With -o, what each call weighs: count, argN, ret or latency.
        #[arg(long, default_value = "count", requires = "output")]
        of: String,
        /// Print the agent's NDJSON as is.
        #[arg(long)]
        json: bool,
    },
    /// Record an LTTng session into a file whose name picks the format.
    Lttng {
        /// POD, pod/POD or deploy/NAME.
        target: String,
        /// Event patterns, e.g. 'myapp:*'.
        #[arg(long)]
        events: Option<String>,
        /// Only this process.
        #[arg(long)]
        pid: Option<String>,
        /// LTTng filter expression.
        #[arg(long)]
        filter: Option<String>,
        /// Log level and more severe ones.
        #[arg(long)]
        loglevel: Option<String>,
        /// Recording length.
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        /// Output: .tar.gz (CTF), .json/.ndjson, .txt.
        #[arg(short = 'o', long, default_value = "trace.tar.gz")]
        output: String,
        /// List the tracepoints registered apps offer instead of recording.
        #[arg(long, conflicts_with = "live")]
        list: bool,
        /// Stream events as NDJSON while they happen (LTTng live) instead
        /// of writing a file.
        #[arg(long)]
        live: bool,
    },
    /// .NET runtime events through the runtime's diagnostic port (EventPipe).
    DotnetTrace {
        /// POD, pod/POD or deploy/NAME.
        target: String,
        /// The .NET process (default: the pod's only app process).
        #[arg(long)]
        pid: Option<String>,
        /// dotnet-trace's syntax, Name[:Keywords[:Level[:args]]],…, or
        /// presets: gc, exceptions, jit, threadpool, cpu-sampling.
        #[arg(long)]
        providers: String,
        /// How long to trace.
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        /// Output: .nettrace (PerfView, TraceEvent) or .json/.ndjson;
        /// without it, NDJSON lines on the terminal.
        #[arg(short = 'o', long)]
        output: Option<String>,
    },
    /// .NET EventCounters (System.Runtime and more), like dotnet-counters.
    Counters {
        /// POD, pod/POD or deploy/NAME.
        target: String,
        /// The .NET process (default: the pod's only app process).
        #[arg(long)]
        pid: Option<String>,
        /// More EventCounters providers (comma list).
        #[arg(long)]
        providers: Option<String>,
        /// How long to stream.
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        /// The runtime's measuring interval, in seconds.
        #[arg(long, default_value_t = 1)]
        interval: u32,
        /// One scrape in the Prometheus text format.
        #[arg(long)]
        prometheus: bool,
    },
    /// A core file: written by the runtime for .NET, taken with ptrace for
    /// any other process (gdb opens it).
    Dump {
        /// POD, pod/POD or deploy/NAME.
        target: String,
        /// The process (default: the pod's only app process).
        #[arg(long)]
        pid: Option<String>,
        /// mini, heap (default), triage or full.
        #[arg(long = "type")]
        kind: Option<String>,
        /// The core file.
        #[arg(short = 'o', long, default_value = "core")]
        output: String,
    },
    /// What works in the sidecar, with hints for what does not.
    Status {
        /// POD, pod/POD or deploy/NAME.
        target: String,
    },
}

fn parse_features(list: &str) -> Result<tracecar_api::security::Features, String> {
    tracecar_api::security::Features::parse(list).map_err(|e| e.to_string())
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
