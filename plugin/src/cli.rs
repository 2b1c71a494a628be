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

/// Subcommands. TARGET is POD, pod/POD, deploy/NAME, sts/NAME or ds/NAME.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add the agent to a running pod that has no sidecar, as an
    /// ephemeral container (no restart), and wait until it answers;
    /// every other command then works on that pod.
    Attach(AttachArgs),
    /// The pod's processes.
    Ps {
        /// POD, pod/POD, deploy/NAME, sts/NAME or ds/NAME.
        target: String,
    },
    /// A CPU, off-CPU or wall-clock profile, written to a file whose name
    /// picks the format.
    Profile(ProfileArgs),
    /// Stream calls of a function: arguments, return value, latency, and
    /// the calling stack; or write its callers as a flamegraph (-o).
    Trace(TraceArgs),
    /// Every thread's stack right now (managed and native frames), like
    /// dotnet-stack, for any process.
    Stacks(StacksArgs),
    /// Record an LTTng session into a file whose name picks the format.
    Lttng(LttngArgs),
    /// .NET runtime events through the runtime's diagnostic port (EventPipe).
    DotnetTrace(DotnetTraceArgs),
    /// .NET EventCounters and meters (System.Runtime and more), like
    /// dotnet-counters.
    Counters(CountersArgs),
    /// .NET first-chance exceptions as they are thrown, with their
    /// managed stacks; or a summary by type and throw site.
    Exceptions(ExceptionsArgs),
    /// What a .NET process's GC heap holds by type (count, bytes), like
    /// dotnet-gcdump report; -o writes pprof (.pb.gz) or JSON.
    Gcdump(GcdumpArgs),
    /// A core file: written by the runtime for .NET, taken with ptrace for
    /// any other process (gdb opens it).
    Dump(DumpArgs),
    /// Collection rules: captures the agent takes by itself when a
    /// trigger fires (docs/api/rules.md).
    #[command(subcommand)]
    Rules(RulesCommand),
    /// The artifacts the pod's rules kept: listed, or downloaded with
    /// --pull.
    Artifacts(ArtifactsArgs),
    /// What works in the sidecar, with hints for what does not.
    Status {
        /// POD, pod/POD, deploy/NAME, sts/NAME or ds/NAME.
        target: String,
    },
}

/// `rules` subcommands.
#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Add the rules of a YAML or JSON file (one rule or a list): all or
    /// none; an error names the field.
    Add {
        /// POD, pod/POD, deploy/NAME, sts/NAME or ds/NAME.
        target: String,
        /// The file, or `-` for stdin.
        #[arg(short = 'f', long)]
        file: String,
    },
    /// The rules in force, with what each has done.
    List {
        /// POD, pod/POD, deploy/NAME, sts/NAME or ds/NAME.
        target: String,
        /// The agent's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a rule added with `rules add` (the ConfigMap's are edited
    /// there).
    Rm {
        /// POD, pod/POD, deploy/NAME, sts/NAME or ds/NAME.
        target: String,
        /// The rule.
        name: String,
    },
}

/// The arguments of `artifacts`.
#[derive(Debug, clap::Args)]
pub struct ArtifactsArgs {
    /// POD, pod/POD, deploy/NAME, sts/NAME or ds/NAME.
    pub target: String,
    /// Only this rule's.
    #[arg(long)]
    pub rule: Option<String>,
    /// Download them into DIR (created), each as ID-FILE with its
    /// record as ID.json; those already there are skipped.
    #[arg(long, value_name = "DIR")]
    pub pull: Option<String>,
    /// The agent's JSON instead of a table.
    #[arg(long, conflicts_with = "pull")]
    pub json: bool,
}

/// Which pods a command covers with `--all`.
#[derive(Debug, clap::Args)]
pub struct FleetArgs {
    /// Every ready pod of TARGET's workload (deploy/, sts/, ds/), or of
    /// -l: reached concurrently (16 at a time), answers merged into one;
    /// a pod that fails is listed with why, and the others go on.
    #[arg(long)]
    pub all: bool,
    /// With --all, instead of a TARGET: the pods this label selector
    /// matches (kubectl's -l).
    #[arg(short = 'l', long, requires = "all", conflicts_with = "target")]
    pub selector: Option<String>,
}

/// The arguments of `attach`.
#[derive(Debug, clap::Args)]
pub struct AttachArgs {
    /// POD, pod/POD, deploy/NAME, sts/NAME or ds/NAME.
    pub target: String,
    /// The app container whose processes the agent joins (default: the
    /// only, or first, container).
    #[arg(long)]
    pub target_container: Option<String>,
    /// Security profile, as the webhook's: minimal or privileged.
    #[arg(long, default_value = "minimal", value_parser = ["minimal", "privileged"])]
    pub profile: String,
    /// What the agent may do, as `tracecar.dev/features` says for an
    /// injected one: a comma list of profile, uprobe, lttng, dotnet
    /// and dump. The ephemeral container gets only their capabilities
    /// (with `--profile minimal`), and the agent answers 403 outside
    /// them.
    #[arg(long, default_value = "profile,uprobe,lttng,dotnet,dump", value_parser = parse_features)]
    pub features: tracecar_api::security::Features,
    /// The agent image.
    #[arg(long, default_value = tracecar_api::security::AGENT_IMAGE)]
    pub image: String,
    /// How long to wait for the agent to run and answer, in seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// Print the ephemeral container as JSON and change nothing.
    #[arg(long)]
    pub print: bool,
}

/// The arguments of `profile`.
#[derive(Debug, clap::Args)]
pub struct ProfileArgs {
    /// POD, pod/POD, deploy/NAME, sts/NAME or ds/NAME.
    #[arg(required_unless_present = "selector")]
    pub target: Option<String>,
    /// Which pods, with --all.
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Capture length.
    #[arg(long, default_value_t = 10)]
    pub seconds: u32,
    /// Samples per second (cpu and wall).
    #[arg(long)]
    pub hz: Option<u32>,
    /// Only these processes (PID or comma list).
    #[arg(long)]
    pub pid: Option<String>,
    /// auto, fp or dwarf.
    #[arg(long)]
    pub unwind: Option<String>,
    /// cpu (where CPU time goes), offcpu (where threads block, and
    /// for how long), wall (both, in time), or for one .NET process
    /// alloc (what allocates, in bytes) or contention (where threads
    /// wait for locks, in time).
    #[arg(long, value_parser = ["cpu", "offcpu", "wall", "alloc", "contention"])]
    pub mode: Option<String>,
    /// offcpu/wall: drop blocks shorter than this many microseconds.
    #[arg(long)]
    pub min_block_us: Option<u32>,
    /// offcpu/wall: thread states counted: S, D, R or a list (S,D).
    #[arg(long)]
    pub state: Option<String>,
    /// offcpu/wall: switch-outs recorded per second at most.
    #[arg(long)]
    pub rate: Option<u32>,
    /// One root per thread, named.
    #[arg(long)]
    pub threads: bool,
    /// With --all: the pod as the first level of the stacks (.svg and
    /// .folded; pprof always has `pod` and `node` labels).
    #[arg(long, requires = "all")]
    pub pod_level: bool,
    /// Output: .svg, .pprof/.pb.gz, .folded, .speedscope.json, .json.
    #[arg(short = 'o', long, default_value = "flame.svg")]
    pub output: String,
}

/// The arguments of `trace`.
#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    /// POD, pod/POD, deploy/NAME, sts/NAME or ds/NAME.
    #[arg(required_unless_present = "selector")]
    pub target: Option<String>,
    /// Which pods, with --all.
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Function name: an ELF symbol, or a JIT method named by the
    /// process's perf map or .NET runtime (by its full name, or a
    /// unique part of it).
    #[arg(long, required_unless_present = "address", conflicts_with = "address")]
    pub symbol: Option<String>,
    /// An address in the process instead of a name (JIT code too).
    #[arg(long)]
    pub address: Option<String>,
    /// Module the function is in (e.g. libc.so.6).
    #[arg(long)]
    pub module: Option<String>,
    /// Argument types, e.g. int,str.
    #[arg(long)]
    pub args: Option<String>,
    /// Return type, e.g. int.
    #[arg(long)]
    pub ret: Option<String>,
    /// The process (default: the pod's only app process).
    #[arg(long)]
    pub pid: Option<String>,
    /// How long to trace.
    #[arg(long, default_value_t = 10)]
    pub seconds: u32,
    /// Stop after N calls.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Print each call's stack under it.
    #[arg(long)]
    pub stack: bool,
    /// How stacks are walked: auto, fp or dwarf.
    #[arg(long)]
    pub unwind: Option<String>,
    /// The calling convention argN follows: sysv, java or v8 (default:
    /// the process's runtime).
    #[arg(long)]
    pub abi: Option<String>,
    /// Write the callers as a flamegraph instead of streaming calls:
    /// .svg, .pprof, .pb.gz, .folded, .speedscope.json or .json.
    #[arg(short = 'o', long)]
    pub output: Option<String>,
    /// With -o, what each call weighs: count, argN, ret or latency.
    #[arg(long, default_value = "count", requires = "output")]
    pub of: String,
    /// With --all and -o: the pod as the first level of the stacks (.svg
    /// and .folded).
    #[arg(long, requires = "all")]
    pub pod_level: bool,
    /// Print the agent's NDJSON as is.
    #[arg(long)]
    pub json: bool,
}

/// The arguments of `lttng`.
#[derive(Debug, clap::Args)]
pub struct LttngArgs {
    /// POD, pod/POD, deploy/NAME, sts/NAME or ds/NAME.
    pub target: String,
    /// Event patterns, e.g. 'myapp:*'.
    #[arg(long)]
    pub events: Option<String>,
    /// Only this process.
    #[arg(long)]
    pub pid: Option<String>,
    /// LTTng filter expression.
    #[arg(long)]
    pub filter: Option<String>,
    /// Log level and more severe ones.
    #[arg(long)]
    pub loglevel: Option<String>,
    /// Recording length.
    #[arg(long, default_value_t = 10)]
    pub seconds: u32,
    /// Output: .tar.gz (CTF), .json/.ndjson, .txt.
    #[arg(short = 'o', long, default_value = "trace.tar.gz")]
    pub output: String,
    /// List the tracepoints registered apps offer instead of recording.
    #[arg(long, conflicts_with = "live")]
    pub list: bool,
    /// Stream events as NDJSON while they happen (LTTng live) instead
    /// of writing a file.
    #[arg(long)]
    pub live: bool,
}

/// The arguments of `dotnettrace`.
#[derive(Debug, clap::Args)]
pub struct DotnetTraceArgs {
    /// POD, pod/POD, deploy/NAME, sts/NAME or ds/NAME.
    pub target: String,
    /// The .NET process (default: the pod's only app process).
    #[arg(long)]
    pub pid: Option<String>,
    /// dotnet-trace's syntax, Name[:Keywords[:Level[:args]]],…, or
    /// presets: gc, exceptions, jit, threadpool, cpu-sampling.
    #[arg(long)]
    pub providers: String,
    /// How long to trace.
    #[arg(long, default_value_t = 10)]
    pub seconds: u32,
    /// Output: .nettrace (PerfView, TraceEvent) or .json/.ndjson;
    /// without it, NDJSON lines on the terminal.
    #[arg(short = 'o', long)]
    pub output: Option<String>,
}

/// The arguments of `counters`.
#[derive(Debug, clap::Args)]
pub struct CountersArgs {
    /// POD, pod/POD, deploy/NAME, sts/NAME or ds/NAME.
    #[arg(required_unless_present = "selector")]
    pub target: Option<String>,
    /// Which pods, with --all.
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// The .NET process (default: the pod's only app process).
    #[arg(long)]
    pub pid: Option<String>,
    /// More EventCounters sources or meters (comma list), e.g.
    /// Microsoft.AspNetCore.Hosting,MyApp.
    #[arg(long)]
    pub providers: Option<String>,
    /// How long to stream.
    #[arg(long, default_value_t = 10)]
    pub seconds: u32,
    /// The runtime's measuring interval, in seconds.
    #[arg(long, default_value_t = 1)]
    pub interval: u32,
    /// One scrape in the Prometheus text format.
    #[arg(long)]
    pub prometheus: bool,
}

/// The arguments of `exceptions`.
#[derive(Debug, clap::Args)]
pub struct ExceptionsArgs {
    /// POD, pod/POD, deploy/NAME, sts/NAME or ds/NAME.
    pub target: String,
    /// The .NET process (default: the pod's only app process).
    #[arg(long)]
    pub pid: Option<String>,
    /// How long to watch.
    #[arg(long, default_value_t = 10)]
    pub seconds: u32,
    /// Stop after this many exceptions.
    #[arg(long)]
    pub limit: Option<u32>,
    /// Only the counts by type and throw site, at the end.
    #[arg(long)]
    pub summary: bool,
}

/// The arguments of `stacks`.
#[derive(Debug, clap::Args)]
pub struct StacksArgs {
    /// POD, pod/POD, deploy/NAME, sts/NAME or ds/NAME.
    pub target: String,
    /// The process (default: the pod's only app process).
    #[arg(long)]
    pub pid: Option<String>,
    /// JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The arguments of `gcdump`.
#[derive(Debug, clap::Args)]
pub struct GcdumpArgs {
    /// POD, pod/POD, deploy/NAME, sts/NAME or ds/NAME.
    pub target: String,
    /// The .NET process (default: the pod's only app process).
    #[arg(long)]
    pub pid: Option<String>,
    /// How long to wait for the heap walk (the full GC it runs).
    #[arg(long, default_value_t = 30)]
    pub seconds: u32,
    /// .pb.gz/.pprof (inuse_space by type, for go tool pprof), .json, or
    /// .txt (the table); without it, the table on the terminal.
    #[arg(short = 'o', long)]
    pub output: Option<String>,
}

/// The arguments of `dump`.
#[derive(Debug, clap::Args)]
pub struct DumpArgs {
    /// POD, pod/POD, deploy/NAME, sts/NAME or ds/NAME.
    pub target: String,
    /// The process (default: the pod's only app process).
    #[arg(long)]
    pub pid: Option<String>,
    /// mini, heap (default), triage or full.
    #[arg(long = "type")]
    pub kind: Option<String>,
    /// The core file.
    #[arg(short = 'o', long, default_value = "core")]
    pub output: String,
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

    #[test]
    fn all_takes_a_workload_or_a_selector() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["kubectl-tracecar"], args].concat());
        let Ok(Cli {
            command: Command::Profile(p),
            ..
        }) = parse(&["profile", "-l", "app=web", "--all", "--pod-level"])
        else {
            panic!("-l with --all")
        };
        assert_eq!(p.fleet.selector.as_deref(), Some("app=web"));
        assert!(p.fleet.all && p.pod_level && p.target.is_none());
        assert!(parse(&["profile", "deploy/web", "--all"]).is_ok());
        assert!(parse(&["counters", "sts/db", "--all", "--prometheus"]).is_ok());
        // -l and --pod-level only with --all; a selector or a target, not both.
        assert!(parse(&["profile", "-l", "app=web"]).is_err());
        assert!(parse(&["profile", "web-1", "--pod-level"]).is_err());
        assert!(parse(&["trace", "deploy/web", "-l", "a=b", "--all", "--symbol", "f"]).is_err());
        assert!(parse(&["profile"]).is_err());
    }
}
