//! Whether `lttng-sessiond` can work in the directories it needs, and when
//! it cannot, the exact cause and the fix that applies.
//!
//! The root session daemon creates its lock file and sockets in
//! [`RUN_DIR`] (the emptyDir the webhook shares with the apps) and its
//! wait shared memory in [`SHM_DIR`]; an app that started first may have
//! created that shared memory already, and the daemon then takes it over
//! with `fchown` (CAP_CHOWN). When one of these fails, the daemon prints a
//! misleading "A session daemon is already running" and exits; this module
//! says what is really wrong, from what the kernel reports.
//!
//! [`observe`] is the thin reader (`lstat`, `faccessat(AT_EACCESS)`, never
//! following a symlink and never creating anything in these app-writable
//! directories); [`assess`] is pure and turns the observation and the
//! agent's credentials into the check `/v1/capabilities` shows.
//!
//! The semantics it explains: Kubernetes creates an emptyDir as a
//! root-owned directory with mode 0777 before any container starts; with a
//! pod `fsGroup` G it is group G with mode 02777, and every container gets
//! G as a supplementary group. Other runtimes differ: podman gives a new
//! volume to the user of the first container that mounts it (0755), and
//! copies an image's own directory (owner and mode) into a new volume
//! mounted over it.

use std::path::{Path, PathBuf};

pub use tracecar_api::capabilities::{DirCheck, Fix};

use crate::caps::has_cap;
use tracecar_api::capabilities::Check;

/// The root session daemon's run directory (`LTTNG_RUNDIR` for root).
pub const RUN_DIR: &str = "/var/run/lttng";
/// Where LTTng-UST and the daemon keep their wait shared memory.
pub const SHM_DIR: &str = "/dev/shm";
/// Prefix of the global (root daemon) wait shared memory, followed by the
/// protocol's major version, e.g. `lttng-ust-wait-8`.
const WAIT_SHM_PREFIX: &str = "lttng-ust-wait-";

/// What is at a path, without following a symlink there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// Nothing.
    Missing,
    /// Something other than a directory (`kind` says what).
    NotDirectory {
        /// "symlink", "file", "socket", ….
        kind: &'static str,
    },
    /// A directory.
    Directory {
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
        /// Permission bits, including setgid and sticky.
        mode: u32,
    },
}

/// Whether the agent may create entries in a directory, as
/// `faccessat(W_OK | X_OK, AT_EACCESS)` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// It may.
    Writable,
    /// Permission denied (`EACCES`/`EPERM`).
    Denied,
    /// The filesystem is mounted read-only (`EROFS`).
    ReadOnlyFs,
    /// Not asked: there is no directory to ask about.
    NotAsked,
    /// The kernel could not tell (`lstat` or `faccessat` failed otherwise).
    Unknown(String),
}

/// An owned file found in a directory (the wait shared memory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owned {
    /// Its name.
    pub name: String,
    /// Its owner.
    pub uid: u32,
}

/// One directory as the agent found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The path.
    pub path: PathBuf,
    /// What is there.
    pub entry: Entry,
    /// Whether the agent can write it.
    pub access: Access,
    /// Global wait shared memory files in it (only looked for in
    /// [`SHM_DIR`]).
    pub wait_shm: Vec<Owned>,
}

/// The agent's own credentials (from `/proc/self/status`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Creds {
    /// Effective UID.
    pub euid: u32,
    /// Effective GID.
    pub egid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Effective capability mask.
    pub cap_eff: u64,
}

impl Creds {
    fn in_group(&self, gid: u32) -> bool {
        self.egid == gid || self.groups.contains(&gid)
    }
}

fn describe(path: &Path, entry: &Entry) -> String {
    match entry {
        Entry::Missing => format!("{} does not exist", path.display()),
        Entry::NotDirectory { kind } => format!("{} is a {kind}, not a directory", path.display()),
        Entry::Directory { uid, gid, mode } => {
            format!(
                "{}: owner uid {uid}, gid {gid}, mode {mode:04o}",
                path.display()
            )
        }
    }
}

/// Judges a directory the daemon writes into.
pub fn assess(observed: &Observed, creds: &Creds) -> DirCheck {
    let path = observed.path.display().to_string();
    let what = describe(&observed.path, &observed.entry);
    let (uid, gid, mode) = match observed.entry {
        Entry::Directory { uid, gid, mode } => (Some(uid), Some(gid), Some(mode)),
        _ => (None, None, None),
    };
    let mut out = DirCheck {
        check: Check::ok(String::new()),
        path: path.clone(),
        uid,
        gid,
        mode: mode.map(|m| format!("{m:04o}")),
        fix: None,
        missing_capability: None,
    };
    let empty_dir_hint = format!(
        "mount a writable emptyDir at {path} (tracecar.dev/inject does: Kubernetes creates it root-owned with mode 0777 before any container starts)"
    );
    let fail = |out: &mut DirCheck, detail: String, hint: String, fix: Option<Fix>| {
        out.check = Check::fail(detail, hint);
        out.fix = fix;
    };
    match (&observed.entry, &observed.access) {
        (Entry::Missing, Access::Unknown(error)) => fail(
            &mut out,
            format!("cannot look at {path}: {error}"),
            empty_dir_hint,
            None,
        ),
        (Entry::Missing, _) => {
            out.check = Check::ok(format!(
                "{what}; lttng-sessiond creates it, but only processes that share it can register (the webhook mounts an emptyDir there)"
            ));
        }
        (Entry::NotDirectory { .. }, _) => fail(
            &mut out,
            format!("{what}; the agent does not follow it"),
            empty_dir_hint,
            Some(Fix::EmptyDir),
        ),
        (Entry::Directory { .. }, Access::ReadOnlyFs) => fail(
            &mut out,
            format!("{what}, on a read-only filesystem"),
            empty_dir_hint,
            Some(Fix::EmptyDir),
        ),
        (Entry::Directory { .. }, access @ (Access::Unknown(_) | Access::NotAsked)) => {
            let error = match access {
                Access::Unknown(error) => error.as_str(),
                _ => "not checked",
            };
            fail(
                &mut out,
                format!("{what}; cannot check access: {error}"),
                empty_dir_hint,
                None,
            )
        }
        (Entry::Directory { uid, gid, mode }, Access::Denied) => {
            let (detail, hint, fix, missing) =
                denied(&what, &path, (*uid, *gid, *mode), creds, &empty_dir_hint);
            out.missing_capability = missing;
            fail(&mut out, detail, hint, Some(fix));
        }
        (Entry::Directory { .. }, Access::Writable) => {
            match observed.wait_shm.iter().find(|o| o.uid != creds.euid) {
                Some(shm) if !has_cap(creds.cap_eff, "CHOWN") => {
                    out.missing_capability = Some("CHOWN".to_owned());
                    fail(
                        &mut out,
                        format!(
                            "{what}; {}/{} belongs to uid {} (an app that started before the daemon), and the agent lacks CAP_CHOWN to take it over",
                            path, shm.name, shm.uid
                        ),
                        "add CHOWN to the sidecar's capabilities (the minimal profile has it): lttng-sessiond takes ownership of the wait shared memory that apps created first".to_owned(),
                        Some(Fix::Capability),
                    );
                }
                _ => out.check = Check::ok(format!("{what}; writable by the agent")),
            }
        }
    }
    out
}

/// Why the agent cannot create files in a directory `(uid, gid, mode)`,
/// what to do, the fix and the capability it lacks: the detail, the
/// hint, the fix, and the missing capability.
fn denied(
    what: &str,
    path: &str,
    (uid, gid, mode): (u32, u32, u32),
    creds: &Creds,
    empty_dir_hint: &str,
) -> (String, String, Fix, Option<String>) {
    let who = format!(
        "the agent (uid {}, gid {}, groups {:?}) cannot create files in it",
        creds.euid, creds.egid, creds.groups
    );
    // Root is refused only for want of DAC_OVERRIDE.
    let lacks_override = creds.euid == 0 && !has_cap(creds.cap_eff, "DAC_OVERRIDE");
    let missing = lacks_override.then(|| "DAC_OVERRIDE".to_owned());
    let detail = format!(
        "{what}; {who}{}",
        if lacks_override {
            " without CAP_DAC_OVERRIDE"
        } else {
            ""
        }
    );
    if mode & 0o020 != 0 && !creds.in_group(gid) {
        (
            detail,
            format!(
                "it is writable for group {gid}, which the sidecar lacks: set the pod's securityContext.fsGroup (Kubernetes then makes the emptyDir group-writable for that group and gives the group to every container, the sidecar too)"
            ),
            Fix::FsGroup,
            missing,
        )
    } else {
        (
            detail,
            format!(
                "it belongs to uid {uid} with mode {mode:04o}, as a container runtime leaves a volume it gave to the first container that mounted it (podman), or an app image's own {path} copied into the volume: {empty_dir_hint}; or set the pod's securityContext.fsGroup so that it is group-writable for the sidecar; granting CAP_DAC_OVERRIDE also works, but lets the agent bypass every file permission"
            ),
            Fix::EmptyDir,
            missing,
        )
    }
}

/// Reads what is at `path` and whether the agent can write it. Follows no
/// symlink at `path` itself; creates nothing. `wait_shm` is left empty:
/// only [`SHM_DIR`] has it ([`checks`]).
pub fn observe(path: &Path) -> Observed {
    use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
    let entry = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Entry::Missing,
        Err(e) => {
            return Observed {
                path: path.to_owned(),
                entry: Entry::Missing,
                access: Access::Unknown(e.to_string()),
                wait_shm: Vec::new(),
            };
        }
        Ok(meta) => {
            let t = meta.file_type();
            if t.is_dir() {
                Entry::Directory {
                    uid: meta.uid(),
                    gid: meta.gid(),
                    mode: meta.mode() & 0o7777,
                }
            } else {
                let kind = if t.is_symlink() {
                    "symlink"
                } else if t.is_socket() {
                    "socket"
                } else if t.is_fifo() {
                    "FIFO"
                } else if t.is_file() {
                    "regular file"
                } else {
                    "device"
                };
                Entry::NotDirectory { kind }
            }
        }
    };
    let access = if matches!(entry, Entry::Directory { .. }) {
        use rustix::io::Errno;
        match crate::sys::can_create_in(path) {
            Ok(()) => Access::Writable,
            Err(Errno::ROFS) => Access::ReadOnlyFs,
            Err(Errno::ACCESS | Errno::PERM) => Access::Denied,
            Err(e) => Access::Unknown(std::io::Error::from(e).to_string()),
        }
    } else {
        Access::NotAsked
    };
    Observed {
        path: path.to_owned(),
        entry,
        access,
        wait_shm: Vec::new(),
    }
}

/// Whether `name` is a root daemon's wait shared memory (`lttng-ust-wait-8`;
/// per-user ones end in `-UID`).
fn is_global_wait_shm(name: &str) -> bool {
    name.strip_prefix(WAIT_SHM_PREFIX)
        .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
}

fn wait_shm_files(dir: &Path) -> Vec<Owned> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_owned();
            // DirEntry::metadata does not follow symlinks.
            let meta = e.metadata().ok()?;
            (is_global_wait_shm(&name) && meta.is_file()).then(|| Owned {
                name,
                uid: meta.uid(),
            })
        })
        .collect()
}

impl Creds {
    /// The credentials in a `/proc/PID/status`.
    pub fn of(status: &crate::procfs::Status) -> Self {
        Self {
            euid: status.euid.unwrap_or(u32::MAX),
            egid: status.egid.unwrap_or(u32::MAX),
            groups: status.groups.clone(),
            cap_eff: status.cap_eff.unwrap_or(0),
        }
    }
}

/// Both checks, with the agent's credentials: the run directory, and the
/// shared memory directory with its wait shared memory files.
pub fn checks(creds: &Creds) -> [DirCheck; 2] {
    let run = observe(Path::new(RUN_DIR));
    let mut shm = observe(Path::new(SHM_DIR));
    if matches!(shm.entry, Entry::Directory { .. }) {
        shm.wait_shm = wait_shm_files(&shm.path);
    }
    [assess(&run, creds), assess(&shm, creds)]
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAC_OVERRIDE: u64 = 1 << 1;
    const CHOWN: u64 = 1 << 0;

    fn dir(uid: u32, gid: u32, mode: u32, access: Access) -> Observed {
        Observed {
            path: PathBuf::from(RUN_DIR),
            entry: Entry::Directory { uid, gid, mode },
            access,
            wait_shm: Vec::new(),
        }
    }

    /// The sidecar: root, the minimal profile's capabilities (CHOWN, no
    /// DAC_OVERRIDE), plus whatever supplementary groups the pod gives.
    fn sidecar(groups: &[u32]) -> Creds {
        Creds {
            euid: 0,
            egid: 0,
            groups: groups.to_vec(),
            cap_eff: CHOWN,
        }
    }

    #[test]
    fn kubelet_empty_dir_is_fine() {
        let c = assess(&dir(0, 0, 0o777, Access::Writable), &sidecar(&[0]));
        assert!(c.check.ok, "{c:?}");
        assert_eq!(c.mode.as_deref(), Some("0777"));
        assert_eq!(c.fix, None);
    }

    /// `runAsUser: 1000, fsGroup: 2000`: kubelet makes the emptyDir
    /// root:2000 02777 and gives group 2000 to every container.
    #[test]
    fn fs_group_empty_dir_is_fine() {
        let c = assess(
            &dir(0, 2000, 0o2777, Access::Writable),
            &sidecar(&[0, 2000]),
        );
        assert!(c.check.ok, "{c:?}");
        assert_eq!(c.mode.as_deref(), Some("2777"));
    }

    /// What podman does when the app (uid 1000) mounts the volume first,
    /// and what it copies up from an image that has its own
    /// /var/run/lttng owned by the app's user.
    #[test]
    fn volume_owned_by_the_app_user_names_owner_mode_and_fix() {
        let c = assess(&dir(1000, 1000, 0o755, Access::Denied), &sidecar(&[0]));
        assert!(!c.check.ok);
        assert_eq!((c.uid, c.gid), (Some(1000), Some(1000)));
        assert_eq!(c.mode.as_deref(), Some("0755"));
        assert_eq!(c.fix, Some(Fix::EmptyDir));
        assert_eq!(c.missing_capability.as_deref(), Some("DAC_OVERRIDE"));
        assert!(
            c.check
                .detail
                .contains("owner uid 1000, gid 1000, mode 0755")
                && c.check.detail.contains("without CAP_DAC_OVERRIDE"),
            "{}",
            c.check.detail
        );
        let hint = c.check.hint.unwrap_or_default();
        assert!(
            hint.contains("emptyDir") && hint.contains("fsGroup"),
            "{hint}"
        );
        assert!(!hint.contains("already running"), "{hint}");
    }

    #[test]
    fn group_writable_for_a_group_the_sidecar_lacks_wants_fs_group() {
        let c = assess(&dir(0, 2000, 0o2775, Access::Denied), &sidecar(&[0]));
        assert_eq!(c.fix, Some(Fix::FsGroup), "{c:?}");
        assert!(c.check.hint.unwrap_or_default().contains("fsGroup"));
    }

    #[test]
    fn a_non_root_agent_is_not_told_about_dac_override() {
        let creds = Creds {
            euid: 1000,
            egid: 1000,
            groups: vec![],
            cap_eff: 0,
        };
        let c = assess(&dir(0, 0, 0o755, Access::Denied), &creds);
        assert_eq!(c.missing_capability, None);
        assert_eq!(c.fix, Some(Fix::EmptyDir));
    }

    #[test]
    fn read_only_symlink_and_missing() {
        let ro = assess(&dir(0, 0, 0o777, Access::ReadOnlyFs), &sidecar(&[]));
        assert_eq!(ro.fix, Some(Fix::EmptyDir));
        assert!(ro.check.detail.contains("read-only"));
        let link = Observed {
            path: PathBuf::from(RUN_DIR),
            entry: Entry::NotDirectory { kind: "symlink" },
            access: Access::NotAsked,
            wait_shm: Vec::new(),
        };
        let c = assess(&link, &sidecar(&[]));
        assert!(
            !c.check.ok && c.check.detail.contains("is a symlink"),
            "{c:?}"
        );
        let missing = Observed {
            entry: Entry::Missing,
            ..link.clone()
        };
        assert!(assess(&missing, &sidecar(&[])).check.ok);
        // An lstat that fails for another reason is not "missing, fine".
        let unreadable = Observed {
            entry: Entry::Missing,
            access: Access::Unknown("Permission denied (os error 13)".to_owned()),
            ..link
        };
        let c = assess(&unreadable, &sidecar(&[]));
        assert!(
            !c.check.ok && c.check.detail.contains("cannot look at"),
            "{c:?}"
        );
    }

    #[test]
    fn foreign_wait_shm_needs_chown() {
        let shm = Observed {
            path: PathBuf::from(SHM_DIR),
            entry: Entry::Directory {
                uid: 0,
                gid: 0,
                mode: 0o1777,
            },
            access: Access::Writable,
            wait_shm: vec![Owned {
                name: "lttng-ust-wait-8".to_owned(),
                uid: 1000,
            }],
        };
        let without = Creds {
            cap_eff: DAC_OVERRIDE,
            ..sidecar(&[])
        };
        let c = assess(&shm, &without);
        assert_eq!(
            (c.fix, c.missing_capability.as_deref()),
            (Some(Fix::Capability), Some("CHOWN"))
        );
        assert!(
            c.check
                .detail
                .contains("/dev/shm/lttng-ust-wait-8 belongs to uid 1000")
        );
        assert!(assess(&shm, &sidecar(&[])).check.ok);
    }

    #[test]
    fn global_wait_shm_names() {
        assert!(is_global_wait_shm("lttng-ust-wait-8"));
        assert!(is_global_wait_shm("lttng-ust-wait-10"));
        assert!(!is_global_wait_shm("lttng-ust-wait-8-1000"));
        assert!(!is_global_wait_shm("lttng-ust-wait-"));
        assert!(!is_global_wait_shm("other"));
    }

    /// The reader, on real directories (no root needed).
    #[test]
    fn observe_reads_without_following() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("d");
        std::fs::create_dir(&d).unwrap();
        let o = observe(&d);
        assert!(matches!(o.entry, Entry::Directory { .. }), "{o:?}");
        assert_eq!(o.access, Access::Writable);
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&d, &link).unwrap();
        assert_eq!(
            observe(&link).entry,
            Entry::NotDirectory { kind: "symlink" }
        );
        assert_eq!(observe(&tmp.path().join("none")).entry, Entry::Missing);
    }
}
