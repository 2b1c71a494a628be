//! The agent's memory bound (`agent/src/memory.rs`), for real: the agent
//! runs in a memory cgroup of its own (cgroup v1's memory controller, as
//! on this machine), limited the way a sidecar is.

#![cfg(test)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Agent, compile_c, spawn_ready, status_kib};

const CGROUPS: &str = "/sys/fs/cgroup/memory";

/// A memory cgroup of the test's own, removed when dropped (after the
/// agents in it are gone: declare it before them).
struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    fn new(name: &str, limit: u64) -> Self {
        assert!(
            Path::new(CGROUPS).join("memory.limit_in_bytes").exists(),
            "{CGROUPS}: no cgroup v1 memory controller here"
        );
        let path = Path::new(CGROUPS).join(format!("tracecar-test-{name}-{}", std::process::id()));
        std::fs::create_dir(&path).unwrap();
        let cgroup = Self { path };
        cgroup.set_limit(limit);
        cgroup
    }

    fn set_limit(&self, bytes: u64) {
        std::fs::write(self.path.join("memory.limit_in_bytes"), bytes.to_string())
            .unwrap_or_else(|e| panic!("limit of {} to {bytes}: {e}", self.path.display()));
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path.join(name)).unwrap()
    }

    fn usage(&self) -> u64 {
        self.read("memory.usage_in_bytes").trim().parse().unwrap()
    }

    fn oom_kills(&self) -> u64 {
        self.read("memory.oom_control")
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .map_or(0, |v| v.trim().parse().unwrap())
    }

    /// An agent (without LTTng) started inside it, with `env` set.
    fn agent(&self, env: &str, log: &Path) -> Agent {
        let script = format!(
            "echo $$ > {}/cgroup.procs && export TRACECAR_NO_LTTNG=true {env} && exec \"$@\"",
            self.path.display()
        );
        Agent::start_under(&["sh", "-c", &script, "sh"], log)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for _ in 0..100 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{}: not removed", self.path.display());
    }
}

fn memory_report(agent: &Agent) -> serde_json::Value {
    let caps: serde_json::Value =
        serde_json::from_slice(&agent.get_ok("/v1/capabilities")).unwrap();
    caps["memory"].clone()
}

fn used(agent: &Agent) -> u64 {
    memory_report(agent)["used_bytes"].as_u64().unwrap()
}

#[test]
fn the_limit_is_read_and_new_work_is_refused_near_it() {
    common::privileged_test!();
    let dir = tempfile::tempdir().unwrap();
    let sleeper = common::spawn("sleep", &["600"]);
    let cgroup = Cgroup::new("admit", 1 << 30);

    // The cgroup's limit, read by the agent inside it.
    let agent = cgroup.agent("", &dir.path().join("agent.log"));
    let report = memory_report(&agent);
    assert_eq!(report["limit_bytes"], 1u64 << 30, "{report}");
    let from = report["limit_from"].as_str().unwrap();
    assert!(
        from.starts_with(&cgroup.path.display().to_string())
            && from.ends_with("memory.limit_in_bytes"),
        "{report}"
    );
    assert_eq!(report["ok"], true, "{report}");
    // What it counts is at least its own heap, and no more than the
    // cgroup holds.
    let own = common::status_kib(agent.process.pid(), "RssAnon") << 10;
    let counted = report["used_bytes"].as_u64().unwrap();
    assert!(
        counted >= own / 2 && counted <= cgroup.usage() + (4 << 20),
        "counted {counted}, agent's RssAnon {own}, cgroup {}",
        cgroup.usage()
    );
    assert_eq!(
        agent
            .get(&format!("/v1/profile?pid={}&seconds=1", sleeper.pid()))
            .0,
        200
    );
    drop(agent);

    // A configured limit (the Downward API's bytes) comes first; below
    // what the agent holds, nothing new starts: not a capture of any kind,
    // not a probe, not a listing of the pod's processes or symbols (each
    // reads every process's maps or a module's tables). Health and the
    // capabilities, which say why, still answer.
    let agent = cgroup.agent(
        "TRACECAR_MEMORY_LIMIT=1048576",
        &dir.path().join("tight.log"),
    );
    let report = memory_report(&agent);
    assert_eq!(report["limit_bytes"], 1u64 << 20, "{report}");
    assert_eq!(report["limit_from"], "--memory-limit", "{report}");
    assert_eq!(report["ok"], false, "{report}");
    for path in [
        format!("/v1/profile?pid={}&seconds=1", sleeper.pid()),
        format!("/v1/profile/trigger?pid={}&timeout=1", sleeper.pid()),
        format!(
            "/v1/uprobe?pid={}&symbol=nanosleep&seconds=1",
            sleeper.pid()
        ),
        format!("/v1/dump?pid={}", sleeper.pid()),
        "/v1/processes".to_owned(),
        format!("/v1/symbols?pid={}&match=nanosleep", sleeper.pid()),
    ] {
        let (code, body) = agent.get(&path);
        let body = String::from_utf8_lossy(&body);
        assert_eq!(code, 503, "{path}: {body}");
        assert!(
            body.contains("of its 1 MiB memory limit (from --memory-limit)")
                && body.contains("nothing new starts")
                && body.contains("resources.limits.memory"),
            "{path}: {body}"
        );
    }
    assert_eq!(agent.get("/healthz").0, 200);
    assert_eq!(agent.get("/v1/capabilities").0, 200);
    assert_eq!(cgroup.oom_kills(), 0);
}

#[test]
fn a_profile_outgrowing_the_limit_stops_with_an_error_instead_of_an_oom_kill() {
    let test = common::test_name!();
    let Some(_serial) = common::begin(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let deep = spawn_ready(compile_c(dir.path(), "deep_stacks.c", &[]), &[]);
    // Nearly every sample a new stack: the agent's memory grows about
    // 2 MB/s at 1000 Hz on two CPUs. Without kernel frames, so that the
    // growth is the stacks' alone.
    let profile = format!(
        "/v1/profile?pid={}&seconds=60&hz=1000&kernel=false&format=folded",
        deep.pid()
    );
    let warm = format!("/v1/profile?pid={}&seconds=1&kernel=false", deep.pid());

    // The limit: room for what the agent holds after a first profile,
    // below the admission mark, plus about 16 MiB of growth before the
    // stop mark; the cgroup's other charges (kernel memory, page cache)
    // fit in the 15% above the stop mark.
    let limit_for = |cgroup: &Cgroup, agent: &Agent| {
        agent.get_ok(&warm);
        let (held, charged) = (used(agent), cgroup.usage());
        let limit = (held * 100 / 55)
            .max(held + (24 << 20))
            .max((charged.saturating_sub(held)) * 8);
        eprintln!(
            "agent holds {} MiB, cgroup charged {} MiB: limit {} MiB",
            held >> 20,
            charged >> 20,
            limit >> 20
        );
        limit
    };

    // The control: with the bound lifted (a configured limit far above
    // the cgroup's), the same profile gets the agent OOM-killed.
    {
        let cgroup = Cgroup::new("unbounded", 1 << 30);
        let agent = cgroup.agent(
            "TRACECAR_MEMORY_LIMIT=1Ti",
            &dir.path().join("unbounded.log"),
        );
        let limit = limit_for(&cgroup, &agent);
        cgroup.set_limit(limit);
        let (code, _) = agent.get(&profile);
        assert_eq!(code, 0, "the unbounded agent answered");
        assert!(cgroup.oom_kills() >= 1, "no OOM kill without the bound");
    }

    let cgroup = Cgroup::new("bounded", 1 << 30);
    let mut agent = cgroup.agent("", &dir.path().join("agent.log"));
    let limit = limit_for(&cgroup, &agent);
    cgroup.set_limit(limit);
    let started = Instant::now();
    let (code, body) = agent.get(&profile);
    let took = started.elapsed();
    let body = String::from_utf8_lossy(&body);
    assert_eq!(code, 503, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    let message = error["error"].as_str().unwrap();
    eprintln!("{message} ({:.1} s)", took.as_secs_f64());
    assert!(
        message.starts_with("the profile stopped after ")
            && message.contains(" s of 60 s, with ")
            && message.contains("distinct stacks")
            && message.contains(&format!("MiB of its {} MiB memory limit", limit >> 20))
            && message.contains("85% or more"),
        "{message}"
    );
    assert!(
        error["hint"].as_str().unwrap().contains("lower hz"),
        "{body}"
    );
    assert!(took < Duration::from_secs(50), "{:?}", took);
    assert_eq!(cgroup.oom_kills(), 0, "the agent was OOM-killed");
    assert_eq!(agent.get("/healthz").0, 200);
    assert!(agent.process.child.try_wait().unwrap().is_none());

    // Its stacks were freed and given back: below the admission mark
    // again, the next profile runs, and no perf event is left open.
    let deadline = Instant::now() + Duration::from_secs(10);
    while used(&agent) * 100 >= limit * 70 {
        assert!(
            Instant::now() < deadline,
            "the agent still holds {} MiB of {} MiB",
            used(&agent) >> 20,
            limit >> 20
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    agent.get_ok(&format!(
        "/v1/profile?pid={}&seconds=1&kernel=false&format=folded",
        deep.pid()
    ));
    assert_eq!(agent.perf_fds(), 0);
    assert_eq!(cgroup.oom_kills(), 0);

    // Rendering is reserved for while the capture runs: whatever the
    // format, a profile either completes or stops with the error, and the
    // agent is never OOM-killed (SVG and JSON take 8 to 16 times what
    // folded does per frame).
    for format in ["svg", "json", "speedscope", "pprof"] {
        let (code, body) = agent.get(&format!(
            "/v1/profile?pid={}&seconds=5&hz=1000&kernel=false&format={format}",
            deep.pid()
        ));
        let body = String::from_utf8_lossy(&body[..body.len().min(400)]).into_owned();
        eprintln!("{format}: {code} {}", if code == 200 { "" } else { &body });
        assert!(
            code == 200 || (code == 503 && body.contains("rendering this profile needs about")),
            "{format}: {code} {body}"
        );
        assert_eq!(cgroup.oom_kills(), 0, "{format}: the agent was OOM-killed");
    }
    assert_eq!(agent.get("/healthz").0, 200);
}

/// What an app plants to make the agent read a lot, as the issue measured
/// it: a running 1,000 MiB sparse copy of `sleep`, a 256 MiB perf map, and
/// a process with 65,000 mappings of a file with a 4 KiB path. Listing the
/// pod and reading symbols in a 256 MiB memory cgroup: every answer comes,
/// with 0 OOM kills, and the agent's peak stays far below the limit.
#[test]
fn listing_and_symbols_next_to_huge_app_files_stay_within_256_mib() {
    let test = common::test_name!();
    let Some(_serial) = common::begin(test) else {
        return;
    };
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    // A 1,000 MiB executable: sleep, and then zeros (sparse).
    let sparse = dir.path().join("sleep-1000m");
    std::fs::copy("/bin/sleep", &sparse).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&sparse)
        .unwrap()
        .set_len(1000 << 20)
        .unwrap();
    let big = common::spawn(&sparse, &["600"]);
    common::wait_until_it_maps(big.pid(), "sleep-1000m");
    // Its perf map: 256 MiB of entries (about 5.5 million).
    let map = format!("/tmp/perf-{}.map", big.pid());
    {
        use std::io::Write as _;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&map).unwrap());
        let mut written = 0usize;
        let mut i = 0u64;
        while written < 256 << 20 {
            let line = format!(
                "{:x} 40 LazyCompile:*planted_{i} /app/x.js:1\n",
                0x7e00_0000_0000u64 + i * 0x40
            );
            out.write_all(line.as_bytes()).unwrap();
            written += line.len();
            i += 1;
        }
    }
    struct Remove(String);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _map = Remove(map);
    // A file with a 4 KiB path, mapped 65,000 times.
    let mut long = dir.path().to_path_buf();
    for i in 0..16 {
        long.push(format!("{i:02}{}", "d".repeat(250)));
    }
    std::fs::create_dir_all(&long).unwrap();
    let page = long.join("page");
    std::fs::write(&page, [0u8; 4096]).unwrap();
    let mappings = spawn_ready(
        compile_c(dir.path(), "many_mappings.c", &[]),
        &[page.to_str().unwrap(), "65000"],
    );

    let cgroup = Cgroup::new("hostile-files", 256 << 20);
    let agent = cgroup.agent("", &dir.path().join("agent.log"));
    let (code, body) = agent.get_within("/v1/processes", Duration::from_secs(60));
    let body = String::from_utf8_lossy(&body);
    assert_eq!(code, 200, "{body}");
    let processes: serde_json::Value = serde_json::from_str(&body).unwrap();
    for pid in [big.pid(), mappings.pid()] {
        assert!(
            processes
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["pid"] == pid),
            "{pid} is listed"
        );
    }
    // Symbols of the process with the huge map: the index stops at its
    // limit and says so.
    let (code, body) = agent.get_within(
        &format!("/v1/symbols?pid={}&match=planted_1$", big.pid()),
        Duration::from_secs(120),
    );
    let body = String::from_utf8_lossy(&body);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("read no further"), "{body}");
    // And of the one with 65,000 mappings: refused, not read whole.
    let (code, body) = agent.get_within(
        &format!("/v1/symbols?pid={}&match=main", mappings.pid()),
        Duration::from_secs(60),
    );
    assert_eq!(code, 404, "{}", String::from_utf8_lossy(&body));
    let peak = cgroup
        .read("memory.max_usage_in_bytes")
        .trim()
        .parse::<u64>()
        .unwrap();
    let agent_peak = status_kib(agent.process.pid(), "VmHWM") << 10;
    eprintln!(
        "cgroup peak {} MiB, agent VmHWM {} MiB, OOM kills {}",
        peak >> 20,
        agent_peak >> 20,
        cgroup.oom_kills()
    );
    assert_eq!(cgroup.oom_kills(), 0, "the agent was OOM-killed");
    assert!(
        agent_peak < 128 << 20,
        "the agent's peak RSS: {} MiB",
        agent_peak >> 20
    );
    assert_eq!(agent.get("/healthz").0, 200);
}
