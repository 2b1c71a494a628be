//! The Rust mirror of `bpf/events.h`. Tests compile a C program against the
//! header and compare every size and offset, so the two cannot drift.

use std::mem::{offset_of, size_of};

/// Arguments captured at most.
pub const MAX_ARGS: usize = 6;
/// Bytes captured per dereferenced value at most.
pub const ARG_BYTES: usize = 128;
/// Capture slots: the arguments, then the return value.
pub const CAPTURES: usize = MAX_ARGS + 1;
/// The return value's capture slot.
pub const RET_CAPTURE: usize = MAX_ARGS;
/// Captured memory per record at most.
pub const DATA_BYTES: usize = CAPTURES * ARG_BYTES;
/// `struct tracecar_pending`: an entry waiting for its return.
pub const PENDING_BYTES: usize = size_of::<Event>() + DATA_BYTES;
/// User stack bytes copied per record at most.
pub const STACK_BYTES: u32 = 16384;

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

/// `enum tracecar_reg`: the registers a capture can name, by their
/// x86-64 names; argument N of the SysV convention is register N.
pub const REGISTERS: [&str; 17] = [
    "rdi", "rsi", "rdx", "rcx", "r8", "r9", "rax", "rbx", "rbp", "rsp", "r10", "r11", "r12", "r13",
    "r14", "r15", "rip",
];

/// The index of register `name` in [`REGISTERS`].
pub fn register(name: &str) -> Option<u8> {
    REGISTERS
        .iter()
        .position(|r| *r == name)
        .and_then(|i| u8::try_from(i).ok())
}

/// `struct tracecar_capture`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capture {
    /// A [`capture_kind`] value.
    pub kind: u8,
    /// A register index ([`REGISTERS`]).
    pub reg: u8,
    /// Bytes to read.
    pub len: u16,
    /// Added to the register before reading.
    pub offset: i32,
    /// Where the bytes go in the record's data.
    pub at: u16,
    /// Padding.
    pub pad: u16,
}

/// `struct tracecar_config`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Config {
    /// Device of the agent's PID namespace.
    pub pidns_dev: u64,
    /// Inode of the agent's PID namespace.
    pub pidns_ino: u64,
    /// Argument captures in use.
    pub nargs: u32,
    /// [`FLAG_PAIRED`], [`FLAG_STACK`].
    pub flags: u32,
    /// The argument captures, then the return value's.
    pub captures: [Capture; CAPTURES],
    /// Calls recorded per CPU per second; 0 means no limit.
    pub max_per_cpu_per_sec: u64,
    /// Only this process (pod PID); 0 means any.
    pub pid: u32,
    /// Bytes of captured memory per record.
    pub data_bytes: u32,
    /// User stack bytes to copy per record.
    pub stack_bytes: u32,
    /// Padding.
    pub pad: u32,
}

/// Config flag: a return probe is attached; events are sent on return.
pub const FLAG_PAIRED: u32 = 1;
/// Config flag: record the user stack with each event.
pub const FLAG_STACK: u32 = 2;
/// Event flag: the return value and latency are set.
pub const EVENT_HAS_RETURN: u32 = 1;
/// Event flag: the stack was taken where the function has no frame.
pub const EVENT_FRAMELESS: u32 = 2;
/// Event flag: the stack was taken just after the function returned.
pub const EVENT_AFTER_RETURN: u32 = 4;

/// Counter indices (`TRACECAR_COUNT_*`).
pub mod counter {
    /// Calls seen.
    pub const CALLS: u32 = 0;
    /// Records the ring buffer had no room for.
    pub const LOST: u32 = 1;
    /// Calls over the rate limit.
    pub const THROTTLED: u32 = 2;
    /// Returns whose entry was not recorded.
    pub const UNPAIRED: u32 = 3;
    /// How many there are.
    pub const COUNT: u32 = 4;
}

/// `struct tracecar_event`: the fixed head of a record.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Event {
    /// Entry time, `bpf_ktime_get_ns`.
    pub ts_ns: u64,
    /// Return time minus entry time.
    pub latency_ns: u64,
    /// Return value register.
    pub ret: u64,
    /// Where the record was made (entry, ret instruction, return address).
    pub ip: u64,
    /// Its stack pointer.
    pub sp: u64,
    /// Its frame pointer.
    pub bp: u64,
    /// The word at `sp`.
    pub top: u64,
    /// The register of each capture.
    pub values: [u64; CAPTURES],
    /// PID in the agent's namespace.
    pub pid: u32,
    /// TID in the agent's namespace.
    pub tid: u32,
    /// `EVENT_*` flags.
    pub flags: u32,
    /// Captures in use.
    pub nargs: u16,
    /// Frame-pointer frames after the data.
    pub nframes: u16,
    /// Captured memory after the head.
    pub data_bytes: u32,
    /// Stack copy after the frames.
    pub stack_bytes: u32,
    /// Thread name.
    pub comm: [u8; 16],
}

/// One decoded record: the head and the variable parts after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// The fixed head.
    pub head: Event,
    /// Captured memory (captures find theirs at their `at`).
    pub data: &'a [u8],
    /// The frame-pointer chain: the IP, then return addresses.
    pub frames: Vec<u64>,
    /// The user stack copied from `sp` up.
    pub stack: &'a [u8],
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

impl Event {
    /// Decodes a record head; `None` if it is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < size_of::<Self>() {
            return None;
        }
        let mut values = [0u64; CAPTURES];
        for (i, v) in values.iter_mut().enumerate() {
            *v = u64_at(bytes, offset_of!(Self, values) + i * 8)?;
        }
        let mut comm = [0u8; 16];
        comm.copy_from_slice(bytes.get(offset_of!(Self, comm)..offset_of!(Self, comm) + 16)?);
        Some(Self {
            ts_ns: u64_at(bytes, offset_of!(Self, ts_ns))?,
            latency_ns: u64_at(bytes, offset_of!(Self, latency_ns))?,
            ret: u64_at(bytes, offset_of!(Self, ret))?,
            ip: u64_at(bytes, offset_of!(Self, ip))?,
            sp: u64_at(bytes, offset_of!(Self, sp))?,
            bp: u64_at(bytes, offset_of!(Self, bp))?,
            top: u64_at(bytes, offset_of!(Self, top))?,
            values,
            pid: u32_at(bytes, offset_of!(Self, pid))?,
            tid: u32_at(bytes, offset_of!(Self, tid))?,
            flags: u32_at(bytes, offset_of!(Self, flags))?,
            nargs: u16_at(bytes, offset_of!(Self, nargs))?,
            nframes: u16_at(bytes, offset_of!(Self, nframes))?,
            data_bytes: u32_at(bytes, offset_of!(Self, data_bytes))?,
            stack_bytes: u32_at(bytes, offset_of!(Self, stack_bytes))?,
            comm,
        })
    }

    /// The thread name.
    pub fn comm(&self) -> String {
        let end = self.comm.iter().position(|b| *b == 0).unwrap_or(16);
        String::from_utf8_lossy(&self.comm[..end]).into_owned()
    }
}

impl<'a> Record<'a> {
    /// Decodes a ring-buffer record; `None` if it is shorter than its head
    /// says.
    pub fn from_bytes(bytes: &'a [u8]) -> Option<Self> {
        let head = Event::from_bytes(bytes)?;
        let mut at = size_of::<Event>();
        let data = bytes.get(at..at + head.data_bytes as usize)?;
        at += head.data_bytes as usize;
        let frames = (0..usize::from(head.nframes))
            .map(|i| u64_at(bytes, at + i * 8))
            .collect::<Option<Vec<u64>>>()?;
        at += usize::from(head.nframes) * 8;
        let stack = bytes.get(at..at + head.stack_bytes as usize)?;
        Some(Self {
            head,
            data,
            frames,
            stack,
        })
    }

    /// The bytes capture `capture` read.
    pub fn captured(&self, capture: &Capture) -> &'a [u8] {
        let at = usize::from(capture.at);
        self.data
            .get(at..at + usize::from(capture.len))
            .unwrap_or_default()
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
                ("at", offset_of!(Capture, at)),
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
                ("captures", offset_of!(Config, captures)),
                (
                    "max_per_cpu_per_sec",
                    offset_of!(Config, max_per_cpu_per_sec),
                ),
                ("pid", offset_of!(Config, pid)),
                ("data_bytes", offset_of!(Config, data_bytes)),
                ("stack_bytes", offset_of!(Config, stack_bytes)),
            ],
        ),
        (
            "tracecar_event",
            size_of::<Event>(),
            vec![
                ("ts_ns", offset_of!(Event, ts_ns)),
                ("latency_ns", offset_of!(Event, latency_ns)),
                ("ret", offset_of!(Event, ret)),
                ("ip", offset_of!(Event, ip)),
                ("sp", offset_of!(Event, sp)),
                ("bp", offset_of!(Event, bp)),
                ("top", offset_of!(Event, top)),
                ("values", offset_of!(Event, values)),
                ("pid", offset_of!(Event, pid)),
                ("tid", offset_of!(Event, tid)),
                ("flags", offset_of!(Event, flags)),
                ("nargs", offset_of!(Event, nargs)),
                ("nframes", offset_of!(Event, nframes)),
                ("data_bytes", offset_of!(Event, data_bytes)),
                ("stack_bytes", offset_of!(Event, stack_bytes)),
                ("comm", offset_of!(Event, comm)),
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
        c.push_str("printf(\"MAX_ARGS %d ARG_BYTES %d CAPTURES %d DATA %d STACK %d REGS %d\\n\", TRACECAR_MAX_ARGS, TRACECAR_ARG_BYTES, TRACECAR_CAPTURES, TRACECAR_DATA_BYTES, TRACECAR_STACK_BYTES, TRACECAR_REGS);\n");
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
        expected.push_str(&format!(
            "MAX_ARGS {MAX_ARGS} ARG_BYTES {ARG_BYTES} CAPTURES {CAPTURES} DATA {DATA_BYTES} STACK {STACK_BYTES} REGS {}\n",
            REGISTERS.len()
        ));
        assert_eq!(text, expected);
    }

    fn head_bytes(head: &Event) -> Vec<u8> {
        let mut bytes = vec![0u8; size_of::<Event>()];
        let mut put = |at: usize, v: &[u8]| bytes[at..at + v.len()].copy_from_slice(v);
        put(offset_of!(Event, ret), &head.ret.to_le_bytes());
        put(offset_of!(Event, ip), &head.ip.to_le_bytes());
        put(offset_of!(Event, nframes), &head.nframes.to_le_bytes());
        put(
            offset_of!(Event, data_bytes),
            &head.data_bytes.to_le_bytes(),
        );
        put(
            offset_of!(Event, stack_bytes),
            &head.stack_bytes.to_le_bytes(),
        );
        put(offset_of!(Event, comm), &head.comm);
        bytes
    }

    #[test]
    fn records_are_split_into_their_parts() {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"calc");
        let head = Event {
            ret: 42,
            ip: 0x1000,
            nframes: 2,
            data_bytes: 4,
            stack_bytes: 3,
            comm,
            ..Event::default()
        };
        let mut bytes = head_bytes(&head);
        bytes.extend_from_slice(b"abcd");
        bytes.extend_from_slice(&0x1000u64.to_le_bytes());
        bytes.extend_from_slice(&0x2000u64.to_le_bytes());
        bytes.extend_from_slice(&[7, 8, 9]);
        let record = Record::from_bytes(&bytes).unwrap_or_else(|| panic!("decodes"));
        assert_eq!(record.head.ret, 42);
        assert_eq!(record.head.comm(), "calc");
        assert_eq!(record.data, b"abcd");
        assert_eq!(record.frames, vec![0x1000, 0x2000]);
        assert_eq!(record.stack, &[7, 8, 9]);
        let capture = Capture {
            at: 1,
            len: 2,
            ..Capture::default()
        };
        assert_eq!(record.captured(&capture), b"bc");
        // A record shorter than its head says is refused, not read past.
        assert!(Record::from_bytes(&bytes[..bytes.len() - 1]).is_none());
        assert!(Event::from_bytes(&[0u8; 16]).is_none());
    }

    #[test]
    fn registers_by_name() {
        assert_eq!(register("rdi"), Some(0));
        assert_eq!(register("r9"), Some(5));
        assert_eq!(register("rsp"), Some(9));
        assert_eq!(register("eax"), None);
    }
}
