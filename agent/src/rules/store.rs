//! The artifact store: what rules' actions wrote, in the sidecar's work
//! volume (never the app's filesystem), within a byte budget.
//!
//! Each artifact is two files in the store's directory (mode 0700):
//! `ID.data`, written as `ID.data.partial` and renamed when complete, and
//! `ID.json`, its [`Artifact`] record, written last: an artifact without
//! its record is incomplete and is removed when the store opens (an
//! agent restarted mid-write). The store outlives the agent's container
//! (an emptyDir lives as long as the pod), and is read back at start.
//!
//! When a new artifact takes the store past its budget, the oldest are
//! deleted until it fits; one larger than the whole budget is deleted at
//! once and its action fails, saying so. A download already under way
//! keeps its open file when the artifact is evicted.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tracecar_api::rules::{Artifact, StoreReport};

/// What the store answers with when an artifact cannot be kept or found.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory or a file of it cannot be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The artifact is larger than the whole budget.
    #[error("the artifact is {bytes} bytes, more than the store's whole budget of {budget} bytes")]
    TooLarge {
        /// Its size.
        bytes: u64,
        /// The budget.
        budget: u64,
    },
    /// No artifact has this ID (never, or evicted).
    #[error("no artifact {}", tracecar_api::quoted(.0))]
    NotFound(String),
    /// Another agent uses the directory.
    #[error("{dir} is used by another agent (its .lock is held)")]
    Locked {
        /// The directory.
        dir: String,
    },
    /// Writing the artifact's content failed.
    #[error("{0}")]
    Content(String),
}

#[derive(Debug, Default)]
struct Inner {
    /// Oldest first.
    artifacts: Vec<Artifact>,
    used: u64,
    evicted: u64,
    seq: u64,
}

/// The store.
#[derive(Debug)]
pub struct Store {
    /// Held while the store is open: one agent per directory.
    _lock: File,
    dir: PathBuf,
    budget: u64,
    inner: Mutex<Inner>,
}

impl Store {
    /// Opens (creating) the store in `dir` with `budget` bytes, reading
    /// back the artifacts already there and removing incomplete ones.
    pub fn open(dir: &Path, budget: u64) -> Result<Self, StoreError> {
        use std::os::unix::fs::DirBuilderExt as _;
        let failed = |source| StoreError::Write {
            path: dir.display().to_string(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(failed)?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(".lock"))
            .map_err(failed)?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |_| StoreError::Locked {
                dir: dir.display().to_string(),
            },
        )?;
        let mut artifacts = Vec::new();
        let mut stray = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(failed)?.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == ".lock" {
                continue;
            }
            if let Some(id) = name.strip_suffix(".json") {
                let record = std::fs::read(&path)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Artifact>(&b).ok())
                    .filter(|a| a.id == id && data_path(dir, id).is_file());
                match record {
                    Some(artifact) => artifacts.push(artifact),
                    None => stray.push(path),
                }
            } else if let Some(id) = name.strip_suffix(".data") {
                if !dir.join(format!("{id}.json")).is_file() {
                    stray.push(path);
                }
            } else {
                stray.push(path);
            }
        }
        for path in stray {
            let _ = std::fs::remove_file(path);
        }
        artifacts.sort_by(|a, b| (a.started_unix_ms, &a.id).cmp(&(b.started_unix_ms, &b.id)));
        let used = artifacts.iter().map(|a| a.bytes).sum();
        let store = Self {
            _lock: lock,
            dir: dir.to_path_buf(),
            budget,
            inner: Mutex::new(Inner {
                seq: artifacts.len() as u64,
                artifacts,
                used,
                ..Inner::default()
            }),
        };
        store.evict(&mut crate::sync::lock(&store.inner), None);
        Ok(store)
    }

    /// The budget, in bytes.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Keeps a new artifact: `write` fills its file; `record` is
    /// completed with its ID and size.
    pub fn put(
        &self,
        mut record: Artifact,
        write: impl FnOnce(&mut File) -> Result<(), String>,
    ) -> Result<Artifact, StoreError> {
        let seq = {
            let mut inner = crate::sync::lock(&self.inner);
            inner.seq += 1;
            inner.seq
        };
        record.id = format!("{}-{seq}-{}", record.started_unix_ms, record.rule);
        let data = data_path(&self.dir, &record.id);
        let partial = self.dir.join(format!("{}.data.partial", record.id));
        let failed = |path: &Path| {
            let path = path.display().to_string();
            move |source| StoreError::Write { path, source }
        };
        let result = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&partial)
                .map_err(failed(&partial))?;
            write(&mut file).map_err(StoreError::Content)?;
            record.ended_unix_ms = unix_ms(std::time::SystemTime::now());
            file.flush().map_err(failed(&partial))?;
            record.bytes = file.metadata().map_err(failed(&partial))?.len();
            if record.bytes > self.budget {
                return Err(StoreError::TooLarge {
                    bytes: record.bytes,
                    budget: self.budget,
                });
            }
            std::fs::rename(&partial, &data).map_err(failed(&data))?;
            let json = self.dir.join(format!("{}.json", record.id));
            let text = serde_json::to_vec_pretty(&record)
                .map_err(|e| StoreError::Content(e.to_string()))?;
            std::fs::write(&json, text).map_err(failed(&json))?;
            Ok(())
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&partial);
            let _ = std::fs::remove_file(&data);
            return Err(e);
        }
        let mut inner = crate::sync::lock(&self.inner);
        inner.used += record.bytes;
        inner.artifacts.push(record.clone());
        self.evict(&mut inner, Some(&record.id));
        Ok(record)
    }

    /// Deletes the oldest artifacts, but not `keep`, until the store fits
    /// its budget.
    fn evict(&self, inner: &mut Inner, keep: Option<&str>) {
        while inner.used > self.budget {
            let Some(index) = inner
                .artifacts
                .iter()
                .position(|a| Some(a.id.as_str()) != keep)
            else {
                break;
            };
            let old = inner.artifacts.remove(index);
            let _ = std::fs::remove_file(self.dir.join(format!("{}.json", old.id)));
            let _ = std::fs::remove_file(data_path(&self.dir, &old.id));
            inner.used = inner.used.saturating_sub(old.bytes);
            inner.evicted += 1;
            tracing::info!(artifact = %old.id, bytes = old.bytes, "artifact evicted to stay within the store's budget");
        }
    }

    /// The artifacts, oldest first.
    pub fn list(&self) -> Vec<Artifact> {
        crate::sync::lock(&self.inner).artifacts.clone()
    }

    /// An artifact's record and its open file.
    pub fn open_artifact(&self, id: &str) -> Result<(Artifact, File), StoreError> {
        let inner = crate::sync::lock(&self.inner);
        let record = inner
            .artifacts
            .iter()
            .find(|a| a.id == id)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
        let file = File::open(data_path(&self.dir, id))
            .map_err(|_| StoreError::NotFound(id.to_owned()))?;
        Ok((record, file))
    }

    /// Its use, for `/v1/capabilities`.
    pub fn report(&self) -> StoreReport {
        let inner = crate::sync::lock(&self.inner);
        StoreReport {
            dir: self.dir.display().to_string(),
            budget_bytes: self.budget,
            used_bytes: inner.used,
            artifacts: inner.artifacts.len() as u64,
            evicted: inner.evicted,
        }
    }
}

fn data_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.data"))
}

/// `at` in milliseconds since the Unix epoch (0 before it).
pub fn unix_ms(at: std::time::SystemTime) -> u64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(rule: &str, at: u64) -> Artifact {
        Artifact {
            id: String::new(),
            rule: rule.to_owned(),
            action: "test".to_owned(),
            trigger: "test".to_owned(),
            value: 1.0,
            fired_unix_ms: at,
            started_unix_ms: at,
            ended_unix_ms: at,
            pod: None,
            pid: Some(7),
            comm: None,
            cgroup: None,
            file_name: "a.bin".to_owned(),
            content_type: "application/octet-stream".to_owned(),
            bytes: 0,
        }
    }

    fn put(store: &Store, rule: &str, at: u64, bytes: usize) -> Result<Artifact, StoreError> {
        store.put(record(rule, at), |f| {
            f.write_all(&vec![b'x'; bytes]).map_err(|e| e.to_string())
        })
    }

    #[test]
    fn keeps_within_its_budget_oldest_out_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 100).unwrap();
        let a = put(&store, "r", 1, 40).unwrap();
        let b = put(&store, "r", 2, 40).unwrap();
        assert_eq!((a.bytes, b.bytes), (40, 40));
        assert_ne!(a.id, b.id);
        let c = put(&store, "s", 3, 40).unwrap();
        let ids: Vec<String> = store.list().into_iter().map(|a| a.id).collect();
        assert_eq!(ids, [b.id.clone(), c.id.clone()]);
        assert!(
            store
                .open_artifact(&a.id)
                .is_err_and(|e| matches!(e, StoreError::NotFound(_)))
        );
        let report = store.report();
        assert_eq!(
            (report.used_bytes, report.artifacts, report.evicted),
            (80, 2, 1)
        );
        // Larger than the whole budget: refused, nothing left behind, the
        // others kept.
        assert!(matches!(
            put(&store, "r", 4, 101),
            Err(StoreError::TooLarge {
                bytes: 101,
                budget: 100
            })
        ));
        assert_eq!(store.list().len(), 2);
        // A failed write leaves nothing.
        assert!(store.put(record("r", 5), |_| Err("no".to_owned())).is_err());
        let (read_back, mut file) = store.open_artifact(&c.id).unwrap();
        assert_eq!(read_back, c);
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut content).unwrap();
        assert_eq!(content.len(), 40);
        // Read back at start; strays and incomplete artifacts removed.
        std::fs::write(dir.path().join("x.data.partial"), b"half").unwrap();
        std::fs::write(dir.path().join("y.data"), b"no record").unwrap();
        drop(store);
        let again = Store::open(dir.path(), 100).unwrap();
        assert_eq!(
            again.list().into_iter().map(|a| a.id).collect::<Vec<_>>(),
            [b.id, c.id.clone()]
        );
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 5, "{names:?}");
        // One agent at a time.
        assert!(matches!(
            Store::open(dir.path(), 100),
            Err(StoreError::Locked { .. })
        ));
        // A smaller budget at start evicts at once.
        drop(again);
        let small = Store::open(dir.path(), 50).unwrap();
        assert_eq!(
            small.list().into_iter().map(|a| a.id).collect::<Vec<_>>(),
            [c.id]
        );
    }
}
