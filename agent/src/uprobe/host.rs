//! The machine facts a probe's configuration depends on.

/// What [`super::stream::config`] needs of the machine: the agent's PID namespace (the
/// BPF program reports PIDs as this namespace sees them) and the CPUs the
/// rate limit is split over (and breakpoints are put on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Device of `/proc/self/ns/pid`.
    pub pidns_dev: u64,
    /// Inode of `/proc/self/ns/pid`.
    pub pidns_ino: u64,
    /// Online CPUs.
    pub cpus: usize,
    /// Their numbers.
    pub cpu_list: Vec<u32>,
}

impl Host {
    /// Reads them.
    pub fn read() -> Self {
        use std::os::unix::fs::MetadataExt;
        let ns = std::fs::metadata("/proc/self/ns/pid").ok();
        let cpu_list = crate::sys::online_cpus();
        Self {
            pidns_dev: ns.as_ref().map_or(0, MetadataExt::dev),
            pidns_ino: ns.as_ref().map_or(0, MetadataExt::ino),
            cpus: cpu_list.len(),
            cpu_list,
        }
    }
}
