//! `tracecar-webhook inject` golden files. Regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p tracecar-webhook --test golden` and review
//! the diff.

#![cfg(test)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_owned()
}

fn check(input: &Path, golden_name: &str) {
    let output = Command::new(env!("CARGO_BIN_EXE_tracecar-webhook"))
        .args(["inject", "-f"])
        .arg(input)
        .output()
        .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let golden_dir = root().join("tests/golden");
    for (suffix, actual) in [("out.yaml", &output.stdout), ("stderr", &output.stderr)] {
        let path = golden_dir.join(format!("{golden_name}.{suffix}"));
        let actual = String::from_utf8_lossy(actual).replace(env!("CARGO_PKG_VERSION"), "VERSION");
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
        assert!(
            expected == actual,
            "{} differs from the output:\n{actual}",
            path.display()
        );
    }
}

#[test]
fn example_deployment() {
    check(
        &root().join("../manifests/examples/deployment.yaml"),
        "example-deployment",
    );
}

#[test]
fn example_job() {
    check(
        &root().join("../manifests/examples/job.yaml"),
        "example-job",
    );
}

#[test]
fn mixed_stream() {
    check(&root().join("tests/golden/mixed.yaml"), "mixed");
}

#[test]
fn stdin_is_accepted() {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_tracecar-webhook"))
        .args(["inject", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let input = std::fs::read(root().join("../manifests/examples/deployment.yaml")).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let expected =
        std::fs::read_to_string(root().join("tests/golden/example-deployment.out.yaml")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).replace(env!("CARGO_PKG_VERSION"), "VERSION"),
        expected
    );
}

#[test]
fn bad_input_exits_non_zero_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "kind: Pod\nspec: [unclosed\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tracecar-webhook"))
        .args(["inject", "-f"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("document 1: invalid YAML"));
    let missing = Command::new(env!("CARGO_BIN_EXE_tracecar-webhook"))
        .args(["inject", "-f", "/nonexistent.yaml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(64));
}

#[test]
fn bad_config_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "imagePullPolicy: Sometimes\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tracecar-webhook"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("imagePullPolicy"));
}
