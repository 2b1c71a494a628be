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

fn agent_with(features: &str, caps: &[&str], log: &Path) -> Agent {
    Agent::start_under(
        &[
            "env",
            &format!("TRACECAR_FEATURES={features}"),
            "setpriv",
            &bounding_set(caps),
        ],
        log,
    )
}

/// Runs `works` with the feature's whole set, then with each capability
/// dropped; `works` says whether the feature did its job, and why not.
fn each_capability_is_needed(
    feature: Feature,
    works: impl Fn(&Agent) -> Result<(), String>,
) -> Vec<String> {
    let logs = tempfile::tempdir().unwrap();
    let set = feature.capabilities();
    let agent = agent_with(feature.as_str(), set, &logs.path().join("all.log"));
    if let Err(why) = works(&agent) {
        panic!("{} with {set:?} does not work: {why}", feature.as_str());
    }
    drop(agent);
    let mut failures = Vec::new();
    for dropped in set {
        let without: Vec<&str> = set.iter().copied().filter(|c| c != dropped).collect();
        let agent = agent_with(
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
    let Some(_serial) = begin("every_capability_of_profile_is_needed") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let app = app_of_another_user(dir.path(), "ratios.c");
    let pid = app.pid();
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
        // Outside the feature: 403.
        let (code, _) = agent.get(&format!("/v1/uprobe?pid={pid}&symbol=mid&limit=1"));
        if code != 403 {
            return Err(format!("/v1/uprobe answered {code}, not 403"));
        }
        Ok(())
    });
    eprintln!("{failures:#?}");
}

#[test]
fn every_capability_of_uprobe_is_needed() {
    let Some(_serial) = begin("every_capability_of_uprobe_is_needed") else {
        return;
    };
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
