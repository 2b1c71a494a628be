//! Helpers for the agent's privileged integration tests: the real binary on
//! a Unix socket in a temporary directory, driven with curl, against
//! workloads compiled or started by the tests.
#![allow(dead_code)]

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

/// Starts a privileged test named after the function it is in: returns
/// from it (a skip, with the reason printed) without root, else holds the
/// guard that keeps the binary's privileged tests one at a time until the
/// test ends.
macro_rules! privileged_test {
    () => {
        let Some(_serial) = $crate::common::begin($crate::common::test_name!()) else {
            return;
        };
    };
}
pub(crate) use privileged_test;

/// The name of the function it is in (a test's own name, for skips and
/// labels), without typing it again.
macro_rules! test_name {
    () => {{
        fn here() {}
        let path = std::any::type_name_of_val(&here);
        let path = path.strip_suffix("::here").unwrap_or(path);
        path.rsplit("::").next().unwrap_or(path)
    }};
}
pub(crate) use test_name;

/// A C workload of `tests/workloads`, compiled into a temporary directory
/// of its own (removed when `dir` is dropped): the one way tests build
/// their targets. `let Workload { dir, bin } = Workload::c("calls.c", &[]);`
pub struct Workload {
    /// The directory, for the binary and whatever else the test puts there.
    pub dir: tempfile::TempDir,
    /// The compiled binary.
    pub bin: PathBuf,
}

impl Workload {
    /// Compiles `source` with the tests' flags and `extra`.
    pub fn c(source: &str, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let bin = compile_c(dir.path(), source, extra);
        Self { dir, bin }
    }
}

/// Polls `cond` every 25 ms until it holds; fails the test after
/// `timeout`, naming `what`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Sends the signal `name` (`USR1`, `TERM`, …) to `pid`; fails the test
/// if `kill` does.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid}");
}

/// Fails the test unless the events' first arguments count up by one
/// (modulo 1000), as the workloads call their probed function.
pub fn assert_consecutive_args(events: &[serde_json::Value]) {
    let args: Vec<i64> = events
        .iter()
        .map(|e| e["args"][0].as_i64().expect("a numeric first argument"))
        .collect();
    assert!(
        args.windows(2).all(|w| w[1] == (w[0] + 1) % 1000),
        "consecutive arguments: {args:?}"
    );
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
        remove_runtime_leftovers(self.pid());
    }
}

/// Removes what a killed runtime leaves in /tmp under its pid: perf maps
/// and jitdumps (Node's `--perf-basic-prof`, .NET's `PerfMapEnabled`), and
/// the .NET diagnostic socket and debugger pipes, which a runtime removes
/// only when it exits on its own. A suite that leaves them fills /tmp run
/// after run.
pub fn remove_runtime_leftovers(pid: u32) {
    let exact = [
        format!("perf-{pid}.map"),
        format!("perfinfo-{pid}.map"),
        format!("jit-{pid}.dump"),
    ];
    let prefixes = [
        format!("dotnet-diagnostic-{pid}-"),
        format!("clr-debug-pipe-{pid}-"),
    ];
    let Ok(dir) = std::fs::read_dir("/tmp") else {
        return;
    };
    for entry in dir.filter_map(Result::ok) {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if exact.iter().any(|e| *e == name) || prefixes.iter().any(|p| name.starts_with(p.as_str()))
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// A field of `/proc/PID/status`, trimmed (`""` when absent).
pub fn status_field(pid: u32, name: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or("")
        .trim()
        .to_owned()
}

/// A memory field of `/proc/PID/status` (`VmHWM`, `RssAnon`), in KiB.
pub fn status_kib(pid: u32, name: &str) -> u64 {
    let field = status_field(pid, name);
    field
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{name} of {pid}: {field:?}"))
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

/// Starts `program` with `args` and waits for the line "ready" it prints
/// once it is set up.
pub fn spawn_ready(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Running {
    use std::io::BufRead as _;
    let mut child = Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("workload starts");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    Running { child }
}

/// `node` with `args`, in a directory of its own: `--perf-basic-prof`
/// writes `isolate-*-v8.log` files into the working directory. The
/// directory lives as long as the process.
pub struct Node {
    pub running: Running,
    _cwd: tempfile::TempDir,
}

impl Node {
    pub fn pid(&self) -> u32 {
        self.running.pid()
    }
}

pub fn spawn_node(args: &[&str]) -> Node {
    let cwd = tempfile::tempdir().unwrap();
    let child = Command::new("node")
        .args(args)
        .current_dir(cwd.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("node starts");
    Node {
        running: Running { child },
        _cwd: cwd,
    }
}

/// Compiles `tests/workloads/tp_app.c` with its LTTng tracepoint provider
/// generated by lttng-gen-tp.
pub fn compile_tp_app(dir: &Path) -> PathBuf {
    let workloads = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/workloads");
    std::fs::copy(workloads.join("tp_app.tp"), dir.join("tp_app.tp")).unwrap();
    let status = Command::new("lttng-gen-tp")
        .current_dir(dir)
        .args(["tp_app.tp", "-o", "tp_app.h", "-o", "tp_app.c"])
        .status()
        .expect("lttng-gen-tp runs (apt install lttng-tools liblttng-ust-dev)");
    assert!(status.success(), "lttng-gen-tp failed");
    let out = dir.join("tp_app");
    let status = Command::new("gcc")
        .args(["-O2", "-I"])
        .arg(dir)
        .arg("-o")
        .arg(&out)
        .arg(workloads.join("tp_app.c"))
        .arg(dir.join("tp_app.c"))
        .args(["-llttng-ust", "-ldl"])
        .status()
        .expect("gcc runs");
    assert!(status.success(), "gcc failed for tp_app");
    out
}

/// The agent binary serving on a socket in its own temporary directory.
pub struct Agent {
    pub socket: PathBuf,
    pub process: Running,
    /// Where its LTTng sessions write traces.
    pub traces: PathBuf,
    /// Where it writes core files taken with ptrace.
    pub dumps: PathBuf,
    _dir: tempfile::TempDir,
}

/// Stops the agent and the daemons it started (lttng-sessiond, relayd).
/// The agent dies by SIGKILL, and its daemons get SIGTERM from the
/// parent-death signal; a daemon still starting up can survive that and
/// hold `/var/run/lttng`'s lock, so that the next test's agent finds an
/// "external" daemon. Each runs in a process group of its own, killed
/// here.
impl Drop for Agent {
    fn drop(&mut self) {
        let agent = self.process.pid().to_string();
        let children: Vec<String> = std::fs::read_dir("/proc")
            .map(|d| {
                d.filter_map(|e| {
                    let pid = e.ok()?.file_name().into_string().ok()?;
                    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                    let ppid = stat.rsplit_once(") ")?.1.split(' ').nth(1)?;
                    (ppid == agent).then_some(pid)
                })
                .collect()
            })
            .unwrap_or_default();
        let _ = self.process.child.kill();
        let _ = self.process.child.wait();
        for pid in children {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// GET `url` with curl and `args`: the status (0 when nothing answered)
/// and the body.
pub fn curl(args: &[&str], url: &str) -> (u16, Vec<u8>) {
    let output = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
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

impl Agent {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let traces = dir.path().join("traces");
        Self::start_in(dir, traces)
    }

    /// An agent whose LTTng traces go to `traces` (which may outlive it).
    pub fn start_with_traces(traces: &Path) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), traces.to_owned())
    }

    /// An agent started through `wrapper` (a command that ends by running
    /// its arguments, e.g. `unshare … sh -c '…; exec "$@"'`), with its
    /// stderr (the log) in `log`.
    pub fn start_under(wrapper: &[&str], log: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let traces = dir.path().join("traces");
        let mut command = Command::new(wrapper[0]);
        command
            .args(&wrapper[1..])
            .arg(env!("CARGO_BIN_EXE_tracecar-agent"))
            .stderr(std::fs::File::create(log).unwrap());
        Self::start_command(command, dir, traces)
    }

    fn start_in(dir: tempfile::TempDir, traces: PathBuf) -> Self {
        let command = Command::new(env!("CARGO_BIN_EXE_tracecar-agent"));
        Self::start_command(command, dir, traces)
    }

    fn start_command(mut command: Command, dir: tempfile::TempDir, traces: PathBuf) -> Self {
        let socket = dir.path().join("run/agent.sock");
        let dumps = dir.path().join("dumps");
        let child = command
            .args(["--log", "warn", "serve", "--socket"])
            .arg(&socket)
            .arg("--lttng-trace-dir")
            .arg(&traces)
            .arg("--dump-dir")
            .arg(&dumps)
            .arg("--artifact-dir")
            .arg(dir.path().join("artifacts"))
            .stdout(Stdio::null())
            .spawn()
            .expect("agent starts");
        let agent = Self {
            socket,
            process: Running { child },
            traces,
            dumps,
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
        self.curl(path, &[])
    }

    /// `method` (`POST`, `DELETE`) with `body`; returns status and body.
    pub fn send(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let file = tempfile::NamedTempFile::new().expect("a temporary file");
        std::fs::write(file.path(), body).expect("the body is written");
        let data = format!("@{}", file.path().display());
        self.curl(path, &["-X", method, "--data-binary", &data])
    }

    /// GET, giving up after `timeout` (status 0 then): for requests that
    /// must not hang.
    pub fn get_within(&self, path: &str, timeout: Duration) -> (u16, Vec<u8>) {
        self.curl(path, &["--max-time", &timeout.as_secs_f64().to_string()])
    }

    fn curl(&self, path: &str, extra: &[&str]) -> (u16, Vec<u8>) {
        let socket = self.socket.to_string_lossy();
        let mut args = extra.to_vec();
        args.extend(["--unix-socket", &socket]);
        curl(&args, &format!("http://localhost{path}"))
    }

    pub fn get_ok(&self, path: &str) -> Vec<u8> {
        let (code, body) = self.get(path);
        assert_eq!(code, 200, "{path}: {}", String::from_utf8_lossy(&body));
        body
    }

    /// `pid`'s entry in `/v1/processes`; fails the test when it is not
    /// listed.
    pub fn process(&self, pid: u32) -> serde_json::Value {
        let processes: serde_json::Value =
            serde_json::from_slice(&self.get_ok("/v1/processes")).expect("the listing is JSON");
        processes
            .as_array()
            .expect("the listing is an array")
            .iter()
            .find(|p| p["pid"] == pid)
            .unwrap_or_else(|| panic!("pid {pid} is not listed: {processes}"))
            .clone()
    }

    /// A dump of `pid` of `kind` written to `dir/core.KIND`; fails the
    /// test unless the agent answers 200.
    pub fn dump_to(&self, dir: &Path, pid: u32, kind: &str) -> PathBuf {
        let core = dir.join(format!("core.{kind}"));
        let (code, body) = self.get(&format!("/v1/dump?pid={pid}&type={kind}"));
        assert_eq!(
            code,
            200,
            "{kind}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
        std::fs::write(&core, &body).expect("the core file is written");
        core
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

    /// A GET that streams in the background, its headers to `DIR/NAME.h`
    /// and its body to `DIR/NAME`; returns once the agent answered 200
    /// (for a probe: once it is attached), with the client and the body's
    /// path.
    pub fn stream_attached(&self, path: &str, dir: &Path, name: &str) -> (Running, PathBuf) {
        let out = dir.join(name);
        let headers = dir.join(format!("{name}.h"));
        let child = Command::new("curl")
            .args(["-s", "-o"])
            .arg(&out)
            .arg("-D")
            .arg(&headers)
            .arg("--unix-socket")
            .arg(&self.socket)
            .arg(format!("http://localhost{path}"))
            .spawn()
            .expect("curl runs");
        let client = Running { child };
        assert!(
            self.wait_for(Duration::from_secs(20), |_| {
                std::fs::read_to_string(&headers).is_ok_and(|h| h.starts_with("HTTP/1.1 200"))
            }),
            "{path}: no 200 answer: {}",
            std::fs::read_to_string(&out).unwrap_or_default()
        );
        (client, out)
    }

    /// BPF objects (programs, maps, links) and perf events the agent
    /// holds.
    pub fn kernel_fds(&self) -> usize {
        kernel_fds(self.process.pid())
    }

    /// Waits (5 s at most) until the agent holds no BPF object or perf
    /// event: what every probe must leave when its client goes away.
    pub fn assert_released(&self) {
        assert!(
            self.wait_for(Duration::from_secs(5), |a| a.kernel_fds() == 0),
            "{} BPF/perf fds left after the client went away",
            self.kernel_fds()
        );
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

    /// The agent's `lttng_sessiond` status from `/v1/capabilities`.
    pub fn sessiond(&self) -> serde_json::Value {
        let body = self.get_ok("/v1/capabilities");
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["lttng_sessiond"].clone()
    }

    /// Waits until the agent has a session daemon. A test that follows
    /// another one can find the previous agent's daemon still holding the
    /// lock for a moment; the agent then retries with back-off.
    pub fn wait_sessiond(&self) {
        assert!(
            self.wait_for(Duration::from_secs(15), |a| a.sessiond()["running"] == true),
            "no lttng-sessiond after 15 s: {}",
            self.sessiond()
        );
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

/// BPF objects and perf events process `pid` holds.
pub fn kernel_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|t| {
                    let t = t.to_string_lossy();
                    t.contains("bpf") || t.contains("perf_event")
                })
                .count()
        })
        .unwrap_or(0)
}

/// A probe's NDJSON answer: its events, and its summary.
pub fn probe_lines(body: &[u8]) -> (Vec<serde_json::Value>, serde_json::Value) {
    let mut all = ndjson(body);
    let summary = all.pop().expect("a summary line");
    (all, summary["summary"].clone())
}

/// Whether `dir` is empty (or does not exist).
pub fn dir_is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none())
}

/// `readelf -n` of a core file, which readelf must accept.
pub fn readelf_notes(core: &Path) -> String {
    let out = Command::new("readelf")
        .arg("-n")
        .arg(core)
        .output()
        .expect("readelf runs");
    assert!(out.status.success(), "readelf refuses {}", core.display());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Compiles `tests/workloads/NAME.java` into `dir` with javac.
pub fn compile_java(dir: &Path, name: &str) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/workloads")
        .join(format!("{name}.java"));
    let status = Command::new("javac")
        .arg("-d")
        .arg(dir)
        .arg(source)
        .status()
        .expect("javac runs");
    assert!(status.success(), "javac failed for {name}.java");
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

/// Which .NET the tests run the sample app on (`TRACECAR_DOTNET`, set by
/// `make unit` for each run of the .NET tests): a framework-dependent app
/// on 3.1.23 (the default), 8.0.4 or 10.0.0, or `single-file`, the app run
/// inside a single-file, self-contained .NET 10 executable through a
/// startup hook (no libcoreclr.so there). `scripts/deps.sh test` unpacks
/// them all into /var/cache/tracecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dotnet {
    /// A framework-dependent app on this `Microsoft.NETCore.App` version.
    Framework(&'static str),
    /// Inside the single-file .NET 10 app.
    SingleFile,
}

impl Dotnet {
    /// The flavor `TRACECAR_DOTNET` names (`3.1`, `8`, `10`,
    /// `single-file`); 3.1 when unset.
    pub fn chosen() -> Self {
        match std::env::var("TRACECAR_DOTNET").as_deref() {
            Err(_) | Ok("" | "3.1") => Self::Framework("3.1.23"),
            Ok("8") => Self::Framework("8.0.4"),
            Ok("10") => Self::Framework("10.0.0"),
            Ok("single-file") => Self::SingleFile,
            Ok(other) => panic!("TRACECAR_DOTNET={other:?}: use 3.1, 8, 10 or single-file"),
        }
    }

    /// The runtime's version, as the runtime reports it (`None` for the
    /// single-file app, whose patch version is its own).
    pub fn version(self) -> Option<&'static str> {
        match self {
            Self::Framework(version) => Some(version),
            Self::SingleFile => None,
        }
    }

    /// Whether the runtime is a `libcoreclr.so` of its own (not linked
    /// into the executable).
    pub fn maps_libcoreclr(self) -> bool {
        matches!(self, Self::Framework(_))
    }

    /// Whether the runtime answers `ProcessInfo2` (.NET 5 and later).
    pub fn has_process_info2(self) -> bool {
        self != Self::Framework("3.1.23")
    }
}

/// The runtime directory `scripts/deps.sh` unpacks for the chosen .NET
/// (`TRACECAR_DOTNET_ROOT` overrides a framework's).
pub fn dotnet_root() -> PathBuf {
    let root = match Dotnet::chosen() {
        Dotnet::Framework(version) => std::env::var_os("TRACECAR_DOTNET_ROOT")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(format!("/var/cache/tracecar/dotnet-{version}"))),
        Dotnet::SingleFile => PathBuf::from("/var/cache/tracecar/dotnet-single-file-10"),
    };
    assert!(
        root.is_dir(),
        "no .NET runtime at {}: run scripts/deps.sh test",
        root.display()
    );
    root
}

/// The .NET sample app (`tests/dotnet-app/App.cs`) compiled with mcs for
/// the chosen .NET; `Hook.dll` is beside it. The build lands in a /tmp
/// directory named by a hash of its sources and the runtime version, so
/// runs reuse it and the suite leaves one directory per source version,
/// not one per test binary.
pub fn dotnet_app() -> PathBuf {
    use std::hash::{Hash as _, Hasher as _};
    static APP: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    APP.get_or_init(|| {
        let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/dotnet-app");
        let version = Dotnet::chosen().version().unwrap_or("10.0.0");
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        version.hash(&mut hasher);
        for name in ["build.sh", "App.cs", "Hook.cs"] {
            std::fs::read(sources.join(name))
                .expect("tests/dotnet-app is readable")
                .hash(&mut hasher);
        }
        let dir = PathBuf::from(format!("/tmp/tracecar-dotnet-app-{:016x}", hasher.finish()));
        if !dir.join("App.runtimeconfig.json").is_file() {
            // Built beside, then renamed: a concurrent test binary sees
            // either no directory or a whole one.
            let building = tempfile::Builder::new()
                .prefix("tracecar-dotnet-app-building")
                .tempdir()
                .unwrap();
            // The build the image uses too: App.dll and its runtimeconfig.
            let status = Command::new("bash")
                .arg(sources.join("build.sh"))
                .arg(building.path())
                .arg(version)
                .stdout(Stdio::null())
                .status()
                .expect("bash runs");
            assert!(
                status.success(),
                "tests/dotnet-app/build.sh failed (apt install mono-mcs)"
            );
            // An app run as another user reads it.
            std::fs::set_permissions(
                building.path(),
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )
            .unwrap();
            if std::fs::rename(building.path(), &dir).is_err() {
                assert!(
                    dir.join("App.runtimeconfig.json").is_file(),
                    "{} could not be built",
                    dir.display()
                );
            }
        }
        dir.join("App.dll")
    })
    .clone()
}

/// The .NET sample app; killed when dropped, and what the killed runtime
/// leaves in /tmp removed (see [`Running`]).
pub struct DotnetApp {
    running: Running,
    stdin: Option<std::process::ChildStdin>,
}

impl DotnetApp {
    pub fn pid(&self) -> u32 {
        self.running.pid()
    }

    /// Writes a line to the app's stdin (`seed` mode goes fast on one).
    pub fn send_line(&mut self) {
        use std::io::Write as _;
        if let Some(stdin) = &mut self.stdin {
            stdin.write_all(b"go\n").expect("the app reads its stdin");
            stdin.flush().expect("the app reads its stdin");
        }
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let _ = self.running.child.kill();
        let _ = self.running.child.wait();
    }
}

/// Starts the .NET sample app with `args` and extra environment, and
/// waits until its diagnostic socket exists.
pub fn spawn_dotnet(args: &[&str], env: &[(&str, &str)]) -> DotnetApp {
    spawn_dotnet_as(None, args, env)
}

/// [`spawn_dotnet`] as the user and group `uid` (like an app container
/// with `runAsUser`), when given.
pub fn spawn_dotnet_as(uid: Option<u32>, args: &[&str], env: &[(&str, &str)]) -> DotnetApp {
    use std::os::unix::process::CommandExt as _;
    let root = dotnet_root();
    let app = dotnet_app();
    let mut command = match Dotnet::chosen() {
        Dotnet::Framework(_) => {
            let mut command = Command::new(root.join("dotnet"));
            command.arg(&app).args(args).env("DOTNET_ROOT", &root);
            command
        }
        Dotnet::SingleFile => {
            let mut command = Command::new(root.join("officeagent-mcp"));
            command
                .env("DOTNET_STARTUP_HOOKS", app.with_file_name("Hook.dll"))
                .env("TRACECAR_HOOK_APP", &app)
                .env("TRACECAR_HOOK_ARGS", args.join(" "));
            command
        }
    };
    if let Some(uid) = uid {
        command.uid(uid).gid(uid);
    }
    let mut child = command
        .env("DOTNET_SYSTEM_GLOBALIZATION_INVARIANT", "1")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dotnet starts");
    let stdin = child.stdin.take();
    let running = Running { child };
    let prefix = format!("dotnet-diagnostic-{}-", running.pid());
    let disabled = env
        .iter()
        .any(|(k, v)| k.ends_with("EnableDiagnostics") && *v == "0");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let maps =
            std::fs::read_to_string(format!("/proc/{}/maps", running.pid())).unwrap_or_default();
        let socket = std::fs::read_dir("/tmp")
            .map(|d| {
                d.filter_map(Result::ok)
                    .any(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            })
            .unwrap_or(false);
        // Managed code runs once the app's assembly is mapped.
        if (socket || disabled) && maps.contains("App.dll") {
            break;
        }
        assert!(Instant::now() < deadline, "the .NET app did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    DotnetApp { running, stdin }
}

/// NDJSON lines as JSON values.
pub fn ndjson(body: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(body)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// `program args…` in a mount namespace of its own with a private /tmp.
pub fn with_private_tmp(program: &str, args: &[&str]) -> Command {
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs tmpfs /tmp && exec \"$@\"")
        .arg("sh")
        .arg(program)
        .args(args);
    command
}

/// Waits until `pid` (unshare, then sh, then the workload, all by exec)
/// maps `what`.
pub fn wait_until_it_maps(pid: u32, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|m| m.contains(what)) {
        assert!(Instant::now() < deadline, "pid {pid} never mapped {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `setpriv`'s argument that leaves root exactly `caps` (names as
/// Kubernetes spells them: `SYS_PTRACE`).
pub fn bounding_set(caps: &[&str]) -> String {
    let caps: Vec<String> = caps
        .iter()
        .map(|c| format!("+{}", c.to_lowercase()))
        .collect();
    if caps.is_empty() {
        return "--bounding-set=-all".to_owned();
    }
    format!("--bounding-set=-all,{}", caps.join(","))
}

/// Programs named tracecar_* loaded anywhere in the kernel, per bpftool.
pub fn tracecar_programs() -> usize {
    let out = Command::new("bpftool")
        .args(["prog", "show"])
        .output()
        .expect("bpftool (Debian package bpftool) is installed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("name tracecar_"))
        .count()
}

/// LTTng sessions named tracecar-* the session daemon lists.
pub fn tracecar_sessions() -> usize {
    let out = Command::new("lttng")
        .args(["--no-sessiond", "--mi", "xml", "list"])
        .stderr(Stdio::null())
        .output()
        .expect("lttng runs");
    String::from_utf8_lossy(&out.stdout)
        .matches("<name>tracecar-")
        .count()
}

/// Whether an ELF file has a full symbol table (`.symtab`), not only its
/// dynamic exports.
pub fn elf_has_symtab(elf: &[u8]) -> bool {
    use object::{Object as _, ObjectSection as _};
    object::File::parse(elf).is_ok_and(|file| {
        file.sections()
            .any(|s| s.name().is_ok_and(|n| n == ".symtab"))
    })
}

/// Decodes a gzipped pprof profile with protoc against pprof's own
/// `profile.proto`.
pub fn decode_pprof(dir: &Path, gz: &[u8]) -> String {
    use std::io::{Read as _, Write as _};
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut raw)
        .unwrap();
    let proto_dir = "/usr/share/gocode/src/github.com/google/pprof/proto";
    let mut child = Command::new("protoc")
        .args([
            &format!("--proto_path={proto_dir}"),
            "--decode=perftools.profiles.Profile",
            "profile.proto",
        ])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("protoc runs");
    child.stdin.take().unwrap().write_all(&raw).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "protoc could not decode the profile");
    String::from_utf8(out.stdout).unwrap()
}

/// A TCP port nobody listens on now (the kernel's pick, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits, 10 s at most, until something listens on 127.0.0.1:`port`.
pub fn wait_listening(port: u16) {
    wait_until(
        Duration::from_secs(10),
        &format!("a listener on {port}"),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
}
