//! The Rust mirror of `bpf/events.h`. Tests compile a C program against the
//! header and compare every size and offset, so the two cannot drift.

use std::mem::{offset_of, size_of};

/// Arguments captured at most.
pub const MAX_ARGS: usize = 6;
/// Bytes captured per dereferenced argument at most.
pub const ARG_BYTES: usize = 128;

/// `enum tracecar_capture_kind`.
pub mod capture_kind {
    /// Nothing.
    pub const NONE: u8 = 0;
    /// The register itself.
    pub const REG: u8 = 1;
    /// `len` bytes at register + offset.
    pub const DEREF: u8 = 2;
    /// A NUL-terminated string at register + offset, up to `len`.
    pub const STR: u8 = 3;
}

/// `struct tracecar_capture`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capture {
    /// A [`capture_kind`] value.
    pub kind: u8,
    /// Argument register index 0..5.
    pub reg: u8,
    /// Bytes to read.
    pub len: u16,
    /// Added to the register before reading.
    pub offset: i32,
}

/// `struct tracecar_config`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Config {
    /// Device of the agent's PID namespace.
    pub pidns_dev: u64,
    /// Inode of the agent's PID namespace.
    pub pidns_ino: u64,
    /// Captures in use.
    pub nargs: u32,
    /// [`FLAG_PAIRED`].
    pub flags: u32,
    /// The captures.
    pub args: [Capture; MAX_ARGS],
    /// Calls recorded per CPU per second; 0 means no limit.
    pub max_per_cpu_per_sec: u64,
}

/// Config flag: a uretprobe is attached; events are sent on return.
pub const FLAG_PAIRED: u32 = 1;
/// Event flag: the return value and latency are set.
pub const EVENT_HAS_RETURN: u32 = 1;

/// `struct tracecar_event`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// Entry time, `bpf_ktime_get_ns`.
    pub ts_ns: u64,
    /// Return time minus entry time.
    pub latency_ns: u64,
    /// Return value register.
    pub ret: u64,
    /// PID in the agent's namespace.
    pub pid: u32,
    /// TID in the agent's namespace.
    pub tid: u32,
    /// [`EVENT_HAS_RETURN`].
    pub flags: u32,
    /// Captures in use.
    pub nargs: u32,
    /// Thread name.
    pub comm: [u8; 16],
    /// Argument registers 0..5 at entry.
    pub regs: [u64; MAX_ARGS],
    /// What capture `i` read (DEREF/STR).
    pub data: [[u8; ARG_BYTES]; MAX_ARGS],
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

impl Event {
    /// Decodes a ring-buffer record; `None` if it is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < size_of::<Self>() {
            return None;
        }
        let mut regs = [0u64; MAX_ARGS];
        for (i, r) in regs.iter_mut().enumerate() {
            *r = u64_at(bytes, offset_of!(Self, regs) + i * 8)?;
        }
        let mut data = [[0u8; ARG_BYTES]; MAX_ARGS];
        for (i, d) in data.iter_mut().enumerate() {
            let at = offset_of!(Self, data) + i * ARG_BYTES;
            d.copy_from_slice(bytes.get(at..at + ARG_BYTES)?);
        }
        let mut comm = [0u8; 16];
        comm.copy_from_slice(bytes.get(offset_of!(Self, comm)..offset_of!(Self, comm) + 16)?);
        Some(Self {
            ts_ns: u64_at(bytes, offset_of!(Self, ts_ns))?,
            latency_ns: u64_at(bytes, offset_of!(Self, latency_ns))?,
            ret: u64_at(bytes, offset_of!(Self, ret))?,
            pid: u32_at(bytes, offset_of!(Self, pid))?,
            tid: u32_at(bytes, offset_of!(Self, tid))?,
            flags: u32_at(bytes, offset_of!(Self, flags))?,
            nargs: u32_at(bytes, offset_of!(Self, nargs))?,
            comm,
            regs,
            data,
        })
    }

    /// The thread name.
    pub fn comm(&self) -> String {
        let end = self.comm.iter().position(|b| *b == 0).unwrap_or(16);
        String::from_utf8_lossy(&self.comm[..end]).into_owned()
    }
}

/// A struct's name, size and `(field, offset)` pairs.
pub type StructLayout = (&'static str, usize, Vec<(&'static str, usize)>);

/// The layout of every mirrored struct, for the test against the C header.
pub fn layout() -> Vec<StructLayout> {
    vec![
        (
            "tracecar_capture",
            size_of::<Capture>(),
            vec![
                ("kind", offset_of!(Capture, kind)),
                ("reg", offset_of!(Capture, reg)),
                ("len", offset_of!(Capture, len)),
                ("offset", offset_of!(Capture, offset)),
            ],
        ),
        (
            "tracecar_config",
            size_of::<Config>(),
            vec![
                ("pidns_dev", offset_of!(Config, pidns_dev)),
                ("pidns_ino", offset_of!(Config, pidns_ino)),
                ("nargs", offset_of!(Config, nargs)),
                ("flags", offset_of!(Config, flags)),
                ("args", offset_of!(Config, args)),
                (
                    "max_per_cpu_per_sec",
                    offset_of!(Config, max_per_cpu_per_sec),
                ),
            ],
        ),
        (
            "tracecar_event",
            size_of::<Event>(),
            vec![
                ("ts_ns", offset_of!(Event, ts_ns)),
                ("latency_ns", offset_of!(Event, latency_ns)),
                ("ret", offset_of!(Event, ret)),
                ("pid", offset_of!(Event, pid)),
                ("tid", offset_of!(Event, tid)),
                ("flags", offset_of!(Event, flags)),
                ("nargs", offset_of!(Event, nargs)),
                ("comm", offset_of!(Event, comm)),
                ("regs", offset_of!(Event, regs)),
                ("data", offset_of!(Event, data)),
            ],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compiles a C program that prints the header's sizes and offsets and
    /// compares them with the Rust mirror.
    #[test]
    fn layout_matches_the_c_header() {
        let header = concat!(env!("CARGO_MANIFEST_DIR"), "/../bpf/events.h");
        let mut c = format!(
            "#include <stdio.h>\n#include <stddef.h>\n#include <linux/types.h>\n#include \"{header}\"\nint main(void) {{\n"
        );
        for (name, _, fields) in layout() {
            c.push_str(&format!(
                "printf(\"{name} %zu\\n\", sizeof(struct {name}));\n"
            ));
            for (field, _) in fields {
                c.push_str(&format!(
                    "printf(\"{name}.{field} %zu\\n\", offsetof(struct {name}, {field}));\n"
                ));
            }
        }
        c.push_str("return 0; }\n");
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("layout.c");
        let bin = dir.path().join("layout");
        std::fs::write(&src, c).unwrap();
        let status = std::process::Command::new("gcc")
            .arg("-o")
            .arg(&bin)
            .arg(&src)
            .status()
            .expect("gcc runs");
        assert!(status.success());
        let output = std::process::Command::new(&bin).output().unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let mut expected = String::new();
        for (name, size, fields) in layout() {
            expected.push_str(&format!("{name} {size}\n"));
            for (field, offset) in fields {
                expected.push_str(&format!("{name}.{field} {offset}\n"));
            }
        }
        assert_eq!(text, expected);
    }

    #[test]
    fn short_records_are_rejected() {
        assert!(Event::from_bytes(&[0u8; 16]).is_none());
        let mut bytes = vec![0u8; size_of::<Event>()];
        bytes[offset_of!(Event, ret)..offset_of!(Event, ret) + 8]
            .copy_from_slice(&42u64.to_le_bytes());
        bytes[offset_of!(Event, comm)..offset_of!(Event, comm) + 4].copy_from_slice(b"calc");
        let e = Event::from_bytes(&bytes).unwrap_or_else(|| panic!("decodes"));
        assert_eq!(e.ret, 42);
        assert_eq!(e.comm(), "calc");
    }
}
