//! Privileged tests that each capability of a feature's set is needed:
//! the agent runs as root with exactly the set (a `setpriv` bounding set,
//! as the `minimal` profile's `drop: [ALL]` + `add` leaves it), the
//! feature works; with one capability dropped, it fails. The app runs as
//! another user (uid 1000), as apps in pods do, from a binary deleted
//! after it started (replaced by a deploy).

#![cfg(test)]

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use tracecar_api::security::Feature;

/// `source` compiled, started as uid 1000, and its binary deleted.
fn app_of_another_user(dir: &Path, source: &str) -> Running {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = compile_c(dir, source, &[]);
    let child = Command::new("setpriv")
        .args(["--reuid", "1000", "--regid", "1000", "--clear-groups"])
        .arg(&bin)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let app = Running { child };
    wait_until_it_maps(app.pid(), bin.to_str().unwrap());
    std::fs::remove_file(&bin).unwrap();
    app
}

/// The agent for `features` with exactly `caps`, under `outer` (a command
/// that execs the rest, or nothing).
fn agent_with(outer: &[&str], features: &str, caps: &[&str], log: &Path) -> Agent {
    let features = format!("TRACECAR_FEATURES={features}");
    let bounding = bounding_set(caps);
    let mut wrapper: Vec<&str> = outer.to_vec();
    wrapper.extend(["env", &features, "setpriv", &bounding]);
    Agent::start_under(&wrapper, log)
}

/// Runs `works` with the feature's whole set, then with each capability
/// dropped; `works` says whether the feature did its job, and why not.
fn each_capability_is_needed(
    feature: Feature,
    works: impl Fn(&Agent) -> Result<(), String>,
) -> Vec<String> {
    each_capability_is_needed_under(&[], feature, works)
}

fn each_capability_is_needed_under(
    outer: &[&str],
    feature: Feature,
    works: impl Fn(&Agent) -> Result<(), String>,
) -> Vec<String> {
    let logs = tempfile::tempdir().unwrap();
    let set = feature.capabilities();
    let agent = agent_with(outer, feature.as_str(), set, &logs.path().join("all.log"));
    if let Err(why) = works(&agent) {
        panic!("{} with {set:?} does not work: {why}", feature.as_str());
    }
    drop(agent);
    let mut failures = Vec::new();
    for dropped in set {
        let without: Vec<&str> = set.iter().copied().filter(|c| c != dropped).collect();
        let agent = agent_with(
            outer,
            feature.as_str(),
            &without,
            &logs.path().join(format!("{dropped}.log")),
        );
        match works(&agent) {
            Ok(()) => panic!(
                "{} works without {dropped}: it is not needed, take it out of the set",
                feature.as_str()
            ),
            Err(why) => failures.push(format!("without {dropped}: {why}")),
        }
    }
    failures
}

#[test]
fn every_capability_of_profile_is_needed() {
    common::privileged_test!();
    let dir = tempfile::tempdir().unwrap();
    let app = app_of_another_user(dir.path(), "ratios.c");
    let pid = app.pid();
    let sleeper_dir = tempfile::tempdir().unwrap();
    let sleeper = app_of_another_user(sleeper_dir.path(), "offcpu.c");
    let failures = each_capability_is_needed(Feature::Profile, |agent| {
        let (code, body) = agent.get(&format!("/v1/profile?pid={pid}&seconds=1&format=folded"));
        let text = String::from_utf8_lossy(&body);
        if code != 200 {
            return Err(format!("{code}: {text}"));
        }
        // The feature's job: the app's own functions, named.
        if !text.contains("leaf_three") {
            return Err(format!(
                "leaf_three not named: {}",
                &text[..text.len().min(300)]
            ));
        }
        // And where the app's threads wait, named by the kernel function
        // (kernel symbols), not only by their state.
        let (code, body) = agent.get(&format!(
            "/v1/profile?pid={}&seconds=1&mode=offcpu&unwind=fp&kernel=false&format=folded",
            sleeper.pid()
        ));
        let text = String::from_utf8_lossy(&body);
        if code != 200 {
            return Err(format!("offcpu: {code}: {text}"));
        }
        if !text
            .lines()
            .any(|l| l.contains("sleep_loop;") && l.contains(";do_nanosleep "))
        {
            return Err(format!(
                "the sleeper's wait is not named do_nanosleep: {}",
                &text[..text.len().min(600)]
            ));
        }
        // Outside the feature: 403.
        let (code, _) = agent.get(&format!("/v1/uprobe?pid={pid}&symbol=mid&limit=1"));
        if code != 403 {
            return Err(format!("/v1/uprobe answered {code}, not 403"));
        }
        Ok(())
    });
    eprintln!("{failures:#?}");
}

/// Off-CPU and wall profiles are part of `profile`: they need nothing more
/// than CPU profiles (the tracepoint under tracefs, its rings, `/proc`'s
/// syscall and wchan of threads blocked at the start); each capability of
/// the set is shown needed by `every_capability_of_profile_is_needed`.
#[test]
fn offcpu_and_wall_need_nothing_beyond_the_profile_set() {
    common::privileged_test!();
    let dir = tempfile::tempdir().unwrap();
    let app = app_of_another_user(dir.path(), "offcpu.c");
    let pid = app.pid();
    let logs = tempfile::tempdir().unwrap();
    let agent = agent_with(
        &[],
        Feature::Profile.as_str(),
        Feature::Profile.capabilities(),
        &logs.path().join("agent.log"),
    );
    for query in [
        "mode=offcpu&unwind=fp",
        "mode=offcpu&unwind=dwarf",
        "mode=wall&unwind=auto",
    ] {
        let (code, body) = agent.get(&format!(
            "/v1/profile?pid={pid}&seconds=1&{query}&kernel=false&format=folded"
        ));
        let text = String::from_utf8_lossy(&body);
        assert_eq!(code, 200, "{query}: {text}");
        // Its own functions, and what they wait in.
        for needle in ["sleep_loop", "nanosleep", "stuck_forever", "pipe_read"] {
            assert!(text.contains(needle), "{query}: no {needle} in {text}");
        }
    }
}

#[test]
fn every_capability_of_uprobe_is_needed() {
    common::privileged_test!();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // Probes need the binary on disk (the kernel attaches to its inode).
    let bin = compile_c(dir.path(), "calls.c", &[]);
    let child = Command::new("setpriv")
        .args(["--reuid", "1000", "--regid", "1000", "--clear-groups"])
        .arg(&bin)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let app = Running { child };
    let pid = app.pid();
    wait_until_it_maps(pid, bin.to_str().unwrap());
    let failures = each_capability_is_needed(Feature::Uprobe, |agent| {
        let (code, body) = agent.get(&format!(
            "/v1/uprobe?pid={pid}&symbol=calc&args=int&ret=int&limit=5"
        ));
        let text = String::from_utf8_lossy(&body);
        if code != 200 {
            return Err(format!("{code}: {text}"));
        }
        let (events, summary) = probe_lines(&body);
        if events.len() != 5 {
            return Err(format!("{} events: {summary}", events.len()));
        }
        Ok(())
    });
    eprintln!("{failures:#?}");
}

#[test]
fn every_capability_of_dotnet_is_needed() {
    common::privileged_test!();
    let app = spawn_dotnet_as(Some(1000), &["spin"], &[]);
    let pid = app.pid();
    let failures = each_capability_is_needed(Feature::Dotnet, |agent| {
        let (code, body) = agent.get(&format!("/v1/dotnet/counters?pid={pid}&seconds=1"));
        let text = String::from_utf8_lossy(&body);
        if code != 200 || !text.contains("System.Runtime") {
            return Err(format!("{code}: {}", &text[..text.len().min(300)]));
        }
        Ok(())
    });
    eprintln!("{failures:#?}");
}

/// Dumps of both kinds: a native process by ptrace, and a .NET one by its
/// runtime's diagnostic port (SETUID and SETGID are for that one).
#[test]
fn every_capability_of_dump_is_needed() {
    common::privileged_test!();
    let dir = tempfile::tempdir().unwrap();
    let native = app_of_another_user(dir.path(), "dump_app.c");
    let dotnet = spawn_dotnet_as(Some(1000), &["spin"], &[]);
    let failures = each_capability_is_needed(Feature::Dump, |agent| {
        for (what, pid) in [("native", native.pid()), (".NET", dotnet.pid())] {
            let (code, body) = agent.get(&format!("/v1/dump?pid={pid}&type=mini"));
            if code != 200 || !body.starts_with(b"\x7fELF") {
                return Err(format!(
                    "{what}: {code}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(300)])
                ));
            }
        }
        Ok(())
    });
    eprintln!("{failures:#?}");
}

/// LTTng as Kubernetes sets it up: /var/run/lttng a root-owned emptyDir
/// with mode 0777, and an app of uid 1000 with LTTng-UST that started
/// before the daemon (it created the wait shared memory, which the daemon
/// must take over for the app to register). The feature works when the
/// app's events are recorded.
#[test]
fn every_capability_of_lttng_is_needed() {
    common::privileged_test!();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let app = compile_tp_app(dir.path());
    let rundir = dir.path().join("rundir");
    std::fs::create_dir(&rundir).unwrap();
    std::fs::set_permissions(&rundir, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::create_dir_all("/run/lttng").unwrap();
    // The app emits 1000 events/s once it gets SIGUSR1; the agent starts
    // once the app's wait shared memory exists.
    let script = "mount --bind \"$0\" /run/lttng && mount -t tmpfs -o mode=1777 tmpfs /dev/shm \
        && { setpriv --reuid 1000 --regid 1000 --clear-groups \"$1\" 100000000 1000 & } \
        && while [ ! -e /dev/shm/lttng-ust-wait-8 ]; do sleep 0.05; done \
        && shift && exec \"$@\"";
    let rundir = rundir.display().to_string();
    let app = app.display().to_string();
    let outer = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        &rundir,
        &app,
    ];
    let failures = each_capability_is_needed_under(&outer, Feature::Lttng, |agent| {
        agent.wait_for(std::time::Duration::from_secs(15), |a| {
            a.sessiond()["running"] == true
        });
        // The app was forked by the shell that became the agent.
        let agent_pid = agent.process.pid().to_string();
        let emitter = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .find(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                    stat.contains("(tp_app)")
                        && stat
                            .rsplit_once(") ")
                            .and_then(|(_, r)| r.split(' ').nth(1))
                            == Some(agent_pid.as_str())
                })
            })
            .ok_or("no tp_app")?;
        let _ = Command::new("kill")
            .args(["-USR1", &emitter.to_string()])
            .status();
        let (code, body) = agent.get(&format!(
            "/v1/lttng/record?events=tracecar_test:*&pid={emitter}&seconds=2&format=json"
        ));
        let _ = Command::new("kill")
            .args(["-KILL", &emitter.to_string()])
            .status();
        let (events, summary) = ndjson_summary(&body);
        if code != 200 || events == 0 {
            return Err(format!(
                "{code}: {events} events: {summary}; daemon: {}",
                agent.sessiond()
            ));
        }
        Ok(())
    });
    eprintln!("{failures:#?}");
}

/// Events and the summary of an NDJSON answer.
fn ndjson_summary(body: &[u8]) -> (usize, String) {
    let lines: Vec<serde_json::Value> = body
        .split(|b| *b == b'\n')
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect();
    let summary = lines
        .iter()
        .find(|l| l.get("summary").is_some())
        .map_or_else(
            || String::from_utf8_lossy(body).into_owned(),
            ToString::to_string,
        );
    let events = lines.iter().filter(|l| l.get("event").is_some()).count();
    (events, summary)
}
