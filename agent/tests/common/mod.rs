//! Helpers for the agent's privileged integration tests: the real binary on
//! a Unix socket in a temporary directory, driven with curl, against
//! workloads compiled or started by the tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether privileged tests may run. Without root they skip with a printed
/// reason, unless `TRACECAR_REQUIRE_PRIVILEGED=1` makes that a failure.
pub fn privileged(test: &str) -> bool {
    let euid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                .and_then(|v| v.parse::<u32>().ok())
        })
        .unwrap_or(u32::MAX);
    if euid == 0 {
        return true;
    }
    let reason = format!("{test}: needs root for perf_event_open on other processes (euid {euid})");
    if std::env::var("TRACECAR_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("{reason}, and TRACECAR_REQUIRE_PRIVILEGED=1");
    }
    eprintln!("SKIPPED {reason}");
    false
}

/// Privileged tests measure CPU shares and count fds, so each test binary
/// runs them one at a time: hold this guard for the whole test.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Starts a privileged test: `None` (skip) without root, otherwise the
/// guard that keeps the binary's privileged tests one at a time.
pub fn begin(test: &str) -> Option<std::sync::MutexGuard<'static, ()>> {
    privileged(test).then(serial)
}

/// A child process killed when dropped.
pub struct Running {
    pub child: Child,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Compiles a workload from `tests/workloads/` with gcc.
pub fn compile_c(dir: &Path, source: &str, extra: &[&str]) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/workloads")
        .join(source);
    let out = dir.join(source.trim_end_matches(".c"));
    let status = Command::new("gcc")
        .args([
            "-O1",
            "-g",
            "-fno-omit-frame-pointer",
            "-mno-omit-leaf-frame-pointer",
        ])
        .args(extra)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .arg("-lpthread")
        .status()
        .expect("gcc runs");
    assert!(status.success(), "gcc failed for {source}");
    out
}

pub fn spawn(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Running {
    let child = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("workload starts");
    Running { child }
}

/// The agent binary serving on a socket in its own temporary directory.
pub struct Agent {
    pub socket: PathBuf,
    pub process: Running,
    _dir: tempfile::TempDir,
}

impl Agent {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("run/agent.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_tracecar-agent"))
            .args(["--log", "warn", "serve", "--socket"])
            .arg(&socket)
            .stdout(Stdio::null())
            .spawn()
            .expect("agent starts");
        let agent = Self {
            socket,
            process: Running { child },
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while agent.get("/healthz").0 != 200 {
            assert!(Instant::now() < deadline, "agent did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        agent
    }

    /// GET over the Unix socket with curl; returns status and body.
    pub fn get(&self, path: &str) -> (u16, Vec<u8>) {
        let output = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", "--unix-socket"])
            .arg(&self.socket)
            .arg(format!("http://localhost{path}"))
            .output()
            .expect("curl runs");
        let mut body = output.stdout;
        let split = body.iter().rposition(|b| *b == b'\n').unwrap_or(0);
        let code = String::from_utf8_lossy(&body[split..])
            .trim()
            .parse()
            .unwrap_or(0);
        body.truncate(split);
        (code, body)
    }

    pub fn get_ok(&self, path: &str) -> Vec<u8> {
        let (code, body) = self.get(path);
        assert_eq!(code, 200, "{path}: {}", String::from_utf8_lossy(&body));
        body
    }

    /// A curl that runs in the background (killed to simulate a client
    /// going away).
    pub fn get_in_background(&self, path: &str) -> Running {
        let child = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "--unix-socket"])
            .arg(&self.socket)
            .arg(format!("http://localhost{path}"))
            .spawn()
            .expect("curl runs");
        Running { child }
    }

    /// perf event fds the agent holds.
    pub fn perf_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.process.pid()))
            .map(|d| {
                d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                    .filter(|t| t.to_string_lossy().contains("perf_event"))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Waits until `cond` holds, up to `timeout`.
    pub fn wait_for(&self, timeout: Duration, cond: impl Fn(&Self) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if cond(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        cond(self)
    }
}

/// Parses folded output into (stack, count) pairs.
pub fn parse_folded(text: &str) -> Vec<(Vec<String>, u64)> {
    text.lines()
        .filter_map(|line| {
            let (stack, count) = line.rsplit_once(' ')?;
            Some((
                stack.split(';').map(str::to_owned).collect(),
                count.parse().ok()?,
            ))
        })
        .collect()
}

/// Samples whose leaf frame is `name`.
pub fn leaf_samples(folded: &[(Vec<String>, u64)], name: &str) -> u64 {
    folded
        .iter()
        .filter(|(s, _)| s.last().is_some_and(|f| f == name))
        .map(|(_, c)| c)
        .sum()
}

/// Samples whose stack contains `name` anywhere.
pub fn samples_with(folded: &[(Vec<String>, u64)], name: &str) -> u64 {
    folded
        .iter()
        .filter(|(s, _)| s.iter().any(|f| f.contains(name)))
        .map(|(_, c)| c)
        .sum()
}
