//! Compiles the BPF programs in `bpf/` with Debian's clang-19.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join("..");
    let bpf = root.join("bpf");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default());
    for file in ["uprobe.bpf.c", "events.h"] {
        println!("cargo:rerun-if-changed={}", bpf.join(file).display());
    }
    println!("cargo:rerun-if-env-changed=TRACECAR_CLANG");
    let clang = std::env::var("TRACECAR_CLANG").unwrap_or_else(|_| "clang-19".to_owned());
    let status = Command::new(&clang)
        .args([
            "-O2",
            "-g",
            "-target",
            "bpf",
            "-D__TARGET_ARCH_x86",
            "-Wall",
            "-Werror",
        ])
        .arg("-I/usr/include/x86_64-linux-gnu")
        .arg(format!("-I{}", bpf.display()))
        .arg("-c")
        .arg(bpf.join("uprobe.bpf.c"))
        .arg("-o")
        .arg(out.join("uprobe.bpf.o"))
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "{clang} failed to compile bpf/uprobe.bpf.c ({s}); is libbpf-dev installed? (apt-get install libbpf-dev)"
        ),
        Err(e) => panic!(
            "cannot run {clang} ({e}): install it with `apt-get install clang-19 libbpf-dev` (or run scripts/deps.sh), or point TRACECAR_CLANG at a clang that targets BPF"
        ),
    }
}
