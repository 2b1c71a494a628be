//! Pure argv builders for the `lttng` CLI and the channel plan. Every
//! command goes through `Command::args` (never a shell), asks for the
//! machine interface, and never spawns a session daemon on its own: the
//! supervisor owns the daemon.

use std::path::Path;

use super::spec::{LogLevel, RecordSpec};

/// Prefix of every session the agent creates; start-up cleanup destroys
/// leftovers with it.
pub const SESSION_PREFIX: &str = "tracecar-";

/// The one channel of a tracecar session.
pub const CHANNEL: &str = "tracecar";

/// Context fields added to every event.
pub const CONTEXTS: [&str; 3] = ["vpid", "vtid", "procname"];

/// The session name for the `sequence`-th recording of the agent `agent_pid`.
/// The agent's PID lets start-up cleanup tell a dead agent's leftovers from
/// a live agent's sessions on a shared daemon.
pub fn session_name(agent_pid: u32, sequence: u64) -> String {
    format!("{SESSION_PREFIX}{agent_pid}-{sequence}")
}

/// The agent PID in a session name made by [`session_name`].
pub fn session_owner(name: &str) -> Option<u32> {
    name.strip_prefix(SESSION_PREFIX)?
        .split_once('-')?
        .0
        .parse()
        .ok()
}

/// Ring-buffer and on-disk sizes of the session's channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelPlan {
    /// Bytes per sub-buffer.
    pub subbuf_size: u64,
    /// Sub-buffers per ring buffer (one ring buffer per CPU).
    pub subbuf_count: u32,
    /// Bytes per trace file before the next one is started.
    pub tracefile_size: u64,
    /// Trace files kept per stream; the oldest is overwritten after that.
    pub tracefile_count: u32,
}

/// Sub-buffers of 1 MiB, 8 per CPU: 8 MiB per CPU absorbs a burst of about
/// 100k events of 80 bytes while the consumer is descheduled.
const SUBBUF_SIZE: u64 = 1 << 20;
const SUBBUF_COUNT: u32 = 8;
/// Trace files per stream: the disk budget is split into this many files
/// so that hitting it drops only the oldest quarter.
const TRACEFILE_COUNT: u32 = 4;

impl ChannelPlan {
    /// Splits `disk_budget` bytes over one stream per CPU. Each trace file
    /// holds at least one sub-buffer, as LTTng requires.
    pub fn for_budget(disk_budget: u64, cpus: u32) -> Self {
        let per_stream = disk_budget / u64::from(cpus.max(1));
        Self {
            subbuf_size: SUBBUF_SIZE,
            subbuf_count: SUBBUF_COUNT,
            tracefile_size: (per_stream / u64::from(TRACEFILE_COUNT)).max(SUBBUF_SIZE),
            tracefile_count: TRACEFILE_COUNT,
        }
    }

    /// The most the session's streams can hold on disk.
    pub fn disk_bytes(&self, cpus: u32) -> u64 {
        self.tracefile_size * u64::from(self.tracefile_count) * u64::from(cpus.max(1))
    }
}

/// The flags every `lttng` invocation starts with.
const GLOBAL_FLAGS: [&str; 3] = ["--no-sessiond", "--mi", "xml"];

/// `lttng` with the flags every invocation takes, then `args`.
fn lttng(args: impl IntoIterator<Item = String>) -> Vec<String> {
    GLOBAL_FLAGS
        .into_iter()
        .map(str::to_owned)
        .chain(args)
        .collect()
}

/// The subcommand of an argv these builders made (`create`, `start`, …).
pub fn subcommand(argv: &[String]) -> &str {
    argv.get(GLOBAL_FLAGS.len()).map_or("", String::as_str)
}

fn strings<const N: usize>(args: [&str; N]) -> impl Iterator<Item = String> {
    args.into_iter().map(str::to_owned)
}

/// `lttng create NAME --output=DIR`.
pub fn create(session: &str, output: &Path) -> Vec<String> {
    lttng(strings(["create", session]).chain([format!("--output={}", output.display())]))
}

/// `lttng create NAME --snapshot --output=DIR`: a session that records
/// into its ring buffers only, each `lttng snapshot record` writing what
/// they hold into a directory of its own under DIR.
pub fn create_snapshot(session: &str, output: &Path) -> Vec<String> {
    lttng(
        strings(["create", session, "--snapshot"])
            .chain([format!("--output={}", output.display())]),
    )
}

/// `lttng snapshot record --session NAME`.
pub fn snapshot_record(session: &str) -> Vec<String> {
    lttng(strings(["snapshot", "record", "--session", session]))
}

/// `lttng rotate NAME`: closes the session's current trace chunk (its
/// data flushed, readable on its own) and starts the next one. Live
/// sessions read each closed chunk.
pub fn rotate(session: &str) -> Vec<String> {
    lttng(strings(["rotate", session]))
}

/// `lttng enable-channel -u` with the plan's sizes, in discard mode (so lost
/// events are counted rather than overwritten).
pub fn enable_channel(session: &str, plan: &ChannelPlan) -> Vec<String> {
    channel(
        session,
        "--discard",
        plan,
        [
            format!("--tracefile-size={}", plan.tracefile_size),
            format!("--tracefile-count={}", plan.tracefile_count),
        ],
    )
}

/// `lttng enable-channel -u` in `mode` with the plan's ring buffers, then
/// `files`.
fn channel(
    session: &str,
    mode: &str,
    plan: &ChannelPlan,
    files: impl IntoIterator<Item = String>,
) -> Vec<String> {
    lttng(
        strings(["enable-channel", "--userspace", "--session", session, mode])
            .chain([
                format!("--subbuf-size={}", plan.subbuf_size),
                format!("--num-subbuf={}", plan.subbuf_count),
            ])
            .chain(files)
            .chain([CHANNEL.to_owned()]),
    )
}

/// `lttng enable-channel -u` for a snapshot session: the plan's ring
/// buffers in overwrite mode (the newest events kept, the oldest dropped),
/// with no trace files (nothing is written until a snapshot).
pub fn enable_flight_channel(session: &str, plan: &ChannelPlan) -> Vec<String> {
    channel(session, "--overwrite", plan, [])
}

/// `SUBCOMMAND -u -s SESSION -c tracecar`: the start of the commands that
/// act on the session's channel.
fn on_channel(subcommand: &str, session: &str) -> Vec<String> {
    strings([
        subcommand,
        "--userspace",
        "--session",
        session,
        "--channel",
        CHANNEL,
    ])
    .collect()
}

/// `lttng enable-event -u` for the spec's patterns, filter and log level.
pub fn enable_events(session: &str, spec: &RecordSpec) -> Vec<String> {
    let mut args = on_channel("enable-event", session);
    if let Some(filter) = &spec.filter {
        args.push(format!("--filter={filter}"));
    }
    match spec.loglevel {
        Some(LogLevel::AtLeast(level)) => args.push(format!("--loglevel={}", level.name())),
        Some(LogLevel::Only(level)) => args.push(format!("--loglevel-only={}", level.name())),
        None => {}
    }
    args.push(spec.events.join(","));
    lttng(args)
}

/// `lttng add-context -u` for [`CONTEXTS`].
pub fn add_contexts(session: &str) -> Vec<String> {
    let mut args = on_channel("add-context", session);
    for context in CONTEXTS {
        args.push(format!("--type={context}"));
    }
    lttng(args)
}

/// `lttng track -u --vpid=P,…`: only these processes are recorded.
pub fn track_pids(session: &str, pids: &[u32]) -> Vec<String> {
    let list = pids
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    lttng(strings(["track", "--userspace", "--session", session]).chain([format!("--vpid={list}")]))
}

/// `lttng start NAME`.
pub fn start(session: &str) -> Vec<String> {
    lttng(strings(["start", session]))
}

/// `lttng stop NAME`: waits until the buffers are flushed to disk.
pub fn stop(session: &str) -> Vec<String> {
    lttng(strings(["stop", session]))
}

/// `lttng destroy NAME`. Waiting is needed unless the session was stopped
/// (which flushes everything): then `--no-wait` saves the daemon's
/// ~500 ms tear-down wait.
pub fn destroy(session: &str, wait: bool) -> Vec<String> {
    if wait {
        lttng(strings(["destroy", session]))
    } else {
        lttng(strings(["destroy", "--no-wait", session]))
    }
}

/// `lttng list`: every session.
pub fn list_sessions() -> Vec<String> {
    lttng(strings(["list"]))
}

/// `lttng list NAME`: one session's channels and their counters.
pub fn list_session(session: &str) -> Vec<String> {
    lttng(strings(["list", session]))
}

/// `lttng list -u -f`: tracepoints of registered applications with fields.
pub fn list_tracepoints() -> Vec<String> {
    lttng(strings(["list", "--userspace", "--fields"]))
}

/// `lttng-sessiond` for userspace only, in the foreground so that the
/// supervisor sees it exit.
pub fn sessiond() -> Vec<String> {
    strings(["--no-kernel"]).collect()
}

/// `babeltrace2` printing one line per event with named scopes and
/// nanosecond epoch timestamps, which [`super::pretty`] parses.
pub fn babeltrace_json_source(trace: &Path) -> Vec<String> {
    strings(["--clock-seconds", "--no-delta", "--names=all"])
        .chain([trace.display().to_string()])
        .collect()
}

/// `babeltrace2` with its default pretty text.
pub fn babeltrace_text(trace: &Path) -> Vec<String> {
    vec![trace.display().to_string()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lttng::spec::Level;

    fn spec() -> RecordSpec {
        RecordSpec {
            events: vec!["app:*".to_owned(), "lttng_ust_libc:malloc".to_owned()],
            pids: Some(vec![42, 43]),
            filter: Some("size > 100 && msg == \"a b\"".to_owned()),
            loglevel: Some(LogLevel::AtLeast(Level::Info)),
            ..RecordSpec::default()
        }
    }

    #[test]
    fn session_names_carry_the_owner() {
        let name = session_name(1234, 7);
        assert_eq!(name, "tracecar-1234-7");
        assert_eq!(session_owner(&name), Some(1234));
        assert_eq!(session_owner("tracecar-x"), None);
        assert_eq!(session_owner("mine-1-2"), None);
    }

    #[test]
    fn every_command_asks_for_xml_and_never_spawns_a_daemon() {
        for argv in [
            create("s", Path::new("/d")),
            enable_channel("s", &ChannelPlan::for_budget(1 << 30, 2)),
            enable_events("s", &spec()),
            add_contexts("s"),
            track_pids("s", &[1]),
            start("s"),
            stop("s"),
            destroy("s", true),
            destroy("s", false),
            list_sessions(),
            list_session("s"),
            list_tracepoints(),
            create_snapshot("s", Path::new("/d")),
            enable_flight_channel("s", &ChannelPlan::for_budget(1 << 30, 2)),
            snapshot_record("s"),
        ] {
            assert_eq!(argv[..3], ["--no-sessiond", "--mi", "xml"], "{argv:?}");
            assert!(!subcommand(&argv).is_empty(), "{argv:?}");
        }
        assert_eq!(subcommand(&start("s")), "start");
        assert_eq!(subcommand(&list_tracepoints()), "list");
        // A flight recorder: snapshot mode, ring buffers in overwrite mode
        // and no trace files.
        assert_eq!(
            create_snapshot("s", Path::new("/d"))[3..],
            ["create", "s", "--snapshot", "--output=/d"]
        );
        let plan = ChannelPlan::for_budget(1 << 30, 2);
        let flight = enable_flight_channel("s", &plan);
        assert!(flight.contains(&"--overwrite".to_owned()), "{flight:?}");
        assert!(
            !flight.iter().any(|a| a.starts_with("--tracefile")),
            "{flight:?}"
        );
        assert_eq!(flight.last().map(String::as_str), Some(CHANNEL));
        let recorded = enable_channel("s", &plan);
        assert!(recorded.contains(&"--discard".to_owned()), "{recorded:?}");
        assert_eq!(recorded.last().map(String::as_str), Some(CHANNEL));
        assert_eq!(
            snapshot_record("s")[3..],
            ["snapshot", "record", "--session", "s"]
        );
    }

    #[test]
    fn enable_events_keeps_the_filter_as_one_argument() {
        let argv = enable_events("tracecar-1-1", &spec());
        assert_eq!(
            argv[3..],
            [
                "enable-event",
                "--userspace",
                "--session",
                "tracecar-1-1",
                "--channel",
                "tracecar",
                "--filter=size > 100 && msg == \"a b\"",
                "--loglevel=TRACE_INFO",
                "app:*,lttng_ust_libc:malloc",
            ]
        );
        let only = RecordSpec {
            loglevel: Some(LogLevel::Only(Level::Warning)),
            filter: None,
            ..spec()
        };
        let argv = enable_events("s", &only);
        assert!(argv.contains(&"--loglevel-only=TRACE_WARNING".to_owned()));
        assert!(!argv.iter().any(|a| a.starts_with("--filter")));
    }

    #[test]
    fn tracking_and_contexts() {
        assert_eq!(
            track_pids("s", &[42, 43])[3..],
            ["track", "--userspace", "--session", "s", "--vpid=42,43"]
        );
        let argv = add_contexts("s");
        assert!(argv.ends_with(&[
            "--type=vpid".to_owned(),
            "--type=vtid".to_owned(),
            "--type=procname".to_owned()
        ]));
    }

    #[test]
    fn live_sessions_rotate_their_chunks_locally() {
        assert_eq!(
            rotate("tracecar-1-2"),
            ["--no-sessiond", "--mi", "xml", "rotate", "tracecar-1-2"]
        );
        // No network output anywhere: a live session is a local one.
        let create = create("tracecar-1-2", Path::new("/traces/tracecar-1-2"));
        assert!(
            !create
                .iter()
                .any(|a| a.contains("net://") || a.contains("--live"))
        );
    }

    #[test]
    fn the_channel_plan_honours_the_disk_budget() {
        let plan = ChannelPlan::for_budget(256 << 20, 2);
        assert_eq!(plan.tracefile_size, 32 << 20);
        assert_eq!(plan.disk_bytes(2), 256 << 20);
        let argv = enable_channel("s", &plan);
        assert!(argv.contains(&"--discard".to_owned()));
        assert!(argv.contains(&format!("--tracefile-size={}", 32 << 20)));
        assert!(argv.contains(&"--tracefile-count=4".to_owned()));
        assert_eq!(argv.last().map(String::as_str), Some(CHANNEL));
        // A tiny budget still gives files of one sub-buffer.
        let tiny = ChannelPlan::for_budget(1 << 20, 64);
        assert_eq!(tiny.tracefile_size, tiny.subbuf_size);
    }
}
