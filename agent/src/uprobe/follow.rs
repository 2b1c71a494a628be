//! Breakpoint probes on JIT code: the versions of one method being
//! probed, their entry and return sites, and following the runtime as it
//! compiles new versions (perf map or .NET method-load events) or gives a
//! version's code to another method. Used by [`super::stream`].

use std::collections::{BTreeSet, HashMap};

use tracecar_api::uprobe::{CodeVersion, VersionSummary};

use super::attach::{AttachError, Probe, Role};
use super::host::Host;
use super::jit::{self, Version};
use super::plan::{self, Follow, JitPlan, VersionPlan};
use super::resolve;
use super::spec::UprobeSpec;
use crate::procfs::Procfs;

/// A JIT method's version being followed.
#[derive(Debug)]
pub(super) struct Tracked {
    pub(super) plan: VersionPlan,
    /// Breakpoints on it now.
    pub(super) breakpoints: u32,
    pub(super) events: u64,
    pub(super) since: f64,
    pub(super) note: Option<String>,
}

impl Tracked {
    pub(super) fn summary(&self) -> VersionSummary {
        VersionSummary {
            code: code_version(&self.plan.version),
            size: self.plan.version.size,
            name: self.plan.version.name.clone(),
            source: self.plan.version.source.name().to_owned(),
            breakpoints: self.breakpoints,
            events: self.events,
            since_seconds: (self.since * 1000.0).round() / 1000.0,
            note: self.note.clone(),
        }
    }
}

pub(super) fn code_version(version: &Version) -> CodeVersion {
    CodeVersion {
        address: format!("{:#x}", version.start),
        tier: version.tier.clone(),
    }
}

/// The breakpoints of a JIT probe: its versions, their sites, and how new
/// ones are found.
#[derive(Debug)]
pub(super) struct Breakpoints {
    pub(super) pid: u32,
    pub(super) key: String,
    pub(super) runtime: crate::runtime::Runtime,
    pub(super) returns: bool,
    pub(super) cpus: Vec<u32>,
    pub(super) versions: Vec<Tracked>,
    /// Site address → version index.
    pub(super) sites: HashMap<u64, usize>,
    pub(super) follow: Follow,
    /// For .NET: every method the runtime named, for stacks.
    pub(super) table: Option<crate::runtime::Methods>,
}

impl Breakpoints {
    /// Puts the breakpoints of one version: returns first, then the entry
    /// (an entry recorded before its returns are probed would wait
    /// forever).
    pub(super) fn probe(&mut self, probe: &mut Probe, index: usize) -> Result<(), AttachError> {
        let Some(tracked) = self.versions.get(index) else {
            return Ok(());
        };
        let plan = tracked.plan.clone();
        let what = format!(
            "pid {} {} at {:#x}",
            self.pid, plan.version.name, plan.version.start
        );
        let mut placed = Vec::new();
        let sites = plan
            .returns
            .iter()
            .map(|a| (*a, Role::Return))
            .chain(std::iter::once((plan.entry, Role::Entry)));
        for (address, role) in sites {
            if let Err(e) = probe.add_breakpoint(address, role, &self.cpus, &what) {
                for a in placed {
                    probe.remove_breakpoint(a);
                }
                return Err(e);
            }
            placed.push(address);
        }
        for address in &placed {
            self.sites.insert(*address, index);
        }
        if let Some(tracked) = self.versions.get_mut(index) {
            tracked.breakpoints = placed.len() as u32;
            tracked.note = None;
        }
        Ok(())
    }

    fn unprobe(&mut self, probe: &mut Probe, index: usize, note: &str) {
        let Some(tracked) = self.versions.get_mut(index) else {
            return;
        };
        let plan = &tracked.plan;
        for address in plan.returns.iter().chain(std::iter::once(&plan.entry)) {
            probe.remove_breakpoint(*address);
            self.sites.remove(address);
        }
        tracked.breakpoints = 0;
        tracked.note = Some(note.to_owned());
    }

    /// A new version: probed, making room by leaving the least optimized
    /// versions when the debug registers are full.
    fn add(&mut self, probe: &mut Probe, procfs: &Procfs, version: Version, since: f64) {
        let plan =
            match resolve::version_sites(procfs, self.pid, self.runtime, &version, self.returns) {
                Ok(plan) => plan,
                Err(e) => {
                    self.versions.push(Tracked {
                        plan: VersionPlan {
                            entry: version.start,
                            returns: Vec::new(),
                            version,
                        },
                        breakpoints: 0,
                        events: 0,
                        since,
                        note: Some(e.to_string()),
                    });
                    return;
                }
            };
        tracing::info!(pid = self.pid, method = %self.key, address = format_args!("{:#x}", plan.version.start), tier = ?plan.version.tier, "new version of a probed method");
        self.versions.push(Tracked {
            plan,
            breakpoints: 0,
            events: 0,
            since,
            note: None,
        });
        let index = self.versions.len() - 1;
        loop {
            match self.probe(probe, index) {
                Ok(()) => return,
                Err(AttachError::NoDebugRegister { .. }) => {
                    // The least optimized probed version (the oldest of
                    // those) makes room for the new one.
                    let oldest = self
                        .versions
                        .iter()
                        .enumerate()
                        .filter(|(i, t)| *i != index && t.breakpoints > 0)
                        .min_by_key(|(_, t)| {
                            (
                                plan::tier_rank(t.plan.version.tier.as_deref()),
                                t.since.to_bits(),
                            )
                        })
                        .map(|(i, _)| i);
                    match oldest {
                        Some(i) => self.unprobe(
                            probe,
                            i,
                            "left for a newer version: no debug register free",
                        ),
                        None => {
                            if let Some(t) = self.versions.get_mut(index) {
                                t.note = Some("not probed: no debug register free".to_owned());
                            }
                            return;
                        }
                    }
                }
                Err(e) => {
                    if let Some(t) = self.versions.get_mut(index) {
                        t.note = Some(format!("not probed: {e}"));
                    }
                    return;
                }
            }
        }
    }

    /// Looks for new versions (and code that another method took over).
    pub(super) fn follow(&mut self, probe: &mut Probe, procfs: &Procfs, since: f64) -> bool {
        let known: BTreeSet<u64> = self.versions.iter().map(|t| t.plan.version.start).collect();
        let mut new: Vec<Version> = Vec::new();
        let mut table_changed = false;
        match &mut self.follow {
            Follow::Nothing => {}
            Follow::PerfMap(map) => {
                // Only what the runtime appended since the last look; the
                // process's maps are read only when it named this method.
                let added = map.refresh_added();
                let candidates: Vec<Version> =
                    jit::new_versions(&self.key, added.iter().map(plan::perf_map_version), &known)
                        .collect();
                if !candidates.is_empty() {
                    let maps = procfs.maps(self.pid).unwrap_or_default();
                    new.extend(
                        candidates
                            .into_iter()
                            .filter(|v| crate::procfs::is_code_at(&maps, v.start)),
                    );
                }
                // Code reused by another method: its breakpoints go.
                let stale: Vec<usize> = self
                    .versions
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| t.breakpoints > 0)
                    .filter(|(_, t)| {
                        map.index()
                            .lookup(t.plan.version.start)
                            .is_some_and(|e| jit::parse_name(&e.name).key != self.key)
                    })
                    .map(|(i, _)| i)
                    .collect();
                for i in stale {
                    self.unprobe(probe, i, "its code now belongs to another method");
                }
            }
            Follow::Runtime(loads) => {
                for method in loads.loaded() {
                    let version = plan::runtime_version(&method);
                    if let Some(table) = &mut self.table {
                        table.insert(method);
                        table_changed = true;
                    }
                    if !known.contains(&version.start)
                        && jit::parse_name(&version.name).key == self.key
                    {
                        new.push(version);
                    }
                }
            }
        }
        for version in new {
            self.add(probe, procfs, version, since);
        }
        table_changed
    }
}

/// The breakpoints of a planned JIT probe: its planned versions first,
/// then those left out for lack of debug registers (marked, unprobed).
pub(super) fn breakpoints_of(jit: &mut JitPlan, spec: &UprobeSpec, host: &Host) -> Breakpoints {
    let follow = std::mem::take(&mut jit.follow);
    let mut versions: Vec<Tracked> = jit
        .versions
        .iter()
        .map(|plan| Tracked {
            plan: plan.clone(),
            breakpoints: 0,
            events: 0,
            since: 0.0,
            note: None,
        })
        .collect();
    versions.extend(jit.skipped.iter().map(|v| Tracked {
        plan: VersionPlan {
            version: v.clone(),
            entry: v.start,
            returns: Vec::new(),
        },
        breakpoints: 0,
        events: 0,
        since: 0.0,
        note: Some("not probed: the debug registers went to more optimized versions".to_owned()),
    }));
    let table = jit.table.take();
    Breakpoints {
        pid: jit.pid,
        key: jit.name.clone(),
        runtime: jit.runtime,
        returns: spec.ret.is_some(),
        cpus: host.cpu_list.clone(),
        versions,
        sites: HashMap::new(),
        follow,
        table,
    }
}
