//! The sidecar's security profiles: one definition, used by the webhook
//! when it injects the sidecar (and by an attach, which must ask for the
//! same).

/// Capabilities of the `minimal` profile: sampling (PERFMON), loading BPF
/// (BPF), creating uprobes (SYS_ADMIN: Linux requires it for uprobe perf
/// events since the 2025 fix "perf: require CAP_SYS_ADMIN for uprobes",
/// also in stable kernels), reading other processes' memory and maps
/// (SYS_PTRACE), raising RLIMIT_MEMLOCK for older kernels' BPF maps
/// (SYS_RESOURCE), opening `/proc/PID/map_files` entries
/// (CHECKPOINT_RESTORE) and listing that directory, which belongs to the
/// app's user (DAC_READ_SEARCH: without it symbols of a non-root app go
/// missing), and for lttng-sessiond taking ownership of its sockets and of
/// the wait shared memory an app that started first created (CHOWN: without
/// it the daemon aborts, or early apps never register), and for connecting
/// to a .NET runtime's diagnostic socket, which is `srw-------` for the
/// app's user, as that user on one thread only (SETUID, SETGID: without
/// them every .NET endpoint and the rundown of profiles get EACCES; the
/// alternative, DAC_OVERRIDE, would lift permission checks from every file
/// operation of the agent). The last five were found by the podman
/// end-to-end test with an app running as uid 1000.
pub const MINIMAL_CAPABILITIES: [&str; 10] = [
    "BPF",
    "PERFMON",
    "SYS_ADMIN",
    "SYS_PTRACE",
    "SYS_RESOURCE",
    "CHECKPOINT_RESTORE",
    "DAC_READ_SEARCH",
    "CHOWN",
    "SETUID",
    "SETGID",
];
