//! Captures: which register and which bytes the BPF program reads for
//! each argument and for the return value (from the spec and the calling
//! convention), and the typed JSON values of what it read.

use serde_json::Value;

use super::spec::{Abi, ArgSpec, Place, ValueType};
use crate::params::SpecError;
use crate::sys::events::{
    ARG_BYTES, CAPTURES, Capture, DATA_BYTES, MAX_ARGS, RET_CAPTURE, Record, capture_kind, register,
};

/// The argument registers of a calling convention, argument 0 first.
fn argument_register(abi: Abi, n: u8) -> Option<u8> {
    let names: [&str; MAX_ARGS] = match abi {
        Abi::Sysv => ["rdi", "rsi", "rdx", "rcx", "r8", "r9"],
        // HotSpot's j_rarg0..5 on x86-64.
        Abi::Java => ["rsi", "rdx", "rcx", "r8", "r9", "rdi"],
        Abi::V8 => return None,
    };
    register(names.get(usize::from(n))?)
}

/// Where a V8 argument is on entry: `[rsp + 16 + 8N]` (the return
/// address at `[rsp]`, the receiver at `[rsp + 8]`).
fn v8_slot(n: u8) -> i32 {
    16 + 8 * i32::from(n)
}

/// The BPF captures of one probe, and how many bytes of memory they read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Captures {
    /// One per argument, then the return value's.
    pub slots: [Capture; CAPTURES],
    /// Bytes of memory each record carries.
    pub data_bytes: u32,
}

/// Plans the captures of `args` (argument N as `abi` places it) and of
/// `ret`: the register for a number, else read at the returned pointer
/// (plus `ret_offset`).
pub fn plan(
    args: &[ArgSpec],
    ret: Option<ValueType>,
    ret_offset: Option<i32>,
    abi: Abi,
) -> Result<Captures, SpecError> {
    let mut slots = [Capture::default(); CAPTURES];
    let mut at: u16 = 0;
    let mut memory = |len: u16| -> u16 {
        let here = at;
        at += len;
        here
    };
    for (slot, arg) in slots.iter_mut().zip(args) {
        let (reg, deref) = match (arg.place, abi) {
            (Place::Reg(r), _) => (r, arg.deref),
            (Place::Arg(n), Abi::V8) => {
                if arg.deref.is_some() || arg.value.is_memory() {
                    return Err(SpecError::new(
                        format!(
                            "{}: V8 passes arguments on the stack, so a value behind one needs two reads",
                            arg.label()
                        ),
                        "read the argument itself (argN:smi, argN:x64), or give abi=sysv with a register",
                    ));
                }
                (register("rsp").unwrap_or(9), Some(v8_slot(n)))
            }
            (Place::Arg(n), abi) => (argument_register(abi, n).unwrap_or(n), arg.deref),
        };
        *slot = match (deref, arg.value) {
            (None, v) if !v.is_memory() => Capture {
                kind: capture_kind::REG,
                reg,
                ..Capture::default()
            },
            (offset, ValueType::Str(n)) => Capture {
                kind: capture_kind::STR,
                reg,
                len: n,
                offset: offset.unwrap_or(0),
                at: memory(n),
                pad: 0,
            },
            (offset, v) => Capture {
                kind: capture_kind::DEREF,
                reg,
                len: v.width(),
                offset: offset.unwrap_or(0),
                at: memory(v.width()),
                pad: 0,
            },
        };
    }
    let rax = register("rax").unwrap_or(6);
    slots[RET_CAPTURE] = match (ret, ret_offset) {
        (None, _) => Capture::default(),
        (Some(v), None) if !v.is_memory() => Capture {
            kind: capture_kind::REG,
            reg: rax,
            ..Capture::default()
        },
        (Some(ValueType::Str(n)), offset) => Capture {
            kind: capture_kind::STR,
            reg: rax,
            len: n,
            offset: offset.unwrap_or(0),
            at: memory(n),
            pad: 0,
        },
        (Some(v), offset) => Capture {
            kind: capture_kind::DEREF,
            reg: rax,
            len: v.width(),
            offset: offset.unwrap_or(0),
            at: memory(v.width()),
            pad: 0,
        },
    };
    debug_assert!(usize::from(at) <= DATA_BYTES);
    Ok(Captures {
        slots,
        data_bytes: u32::from(at),
    })
}

fn bytes_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A value of `ty` from its little-endian `bytes` (register or memory).
fn scalar(ty: ValueType, bytes: &[u8]) -> Value {
    let mut buf = [0u8; 8];
    let n = usize::from(ty.width()).min(8).min(bytes.len());
    buf[..n].copy_from_slice(&bytes[..n]);
    let raw = u64::from_le_bytes(buf);
    match ty {
        ValueType::Int(w) => {
            let shift = 64 - u32::from(w) * 8;
            Value::from(((raw << shift) as i64) >> shift)
        }
        ValueType::Uint(_) => Value::from(raw),
        ValueType::Hex | ValueType::Ptr => Value::from(format!("{raw:#x}")),
        ValueType::Bool => Value::from(raw & 0xff != 0),
        // Tag bit 0 clear: a small integer in the upper 32 bits; set: a
        // pointer to a heap object (a string, a double, an object), which
        // has no integer value.
        ValueType::Smi if raw & 1 == 0 => Value::from((raw as i64) >> 32),
        ValueType::Smi => Value::Null,
        _ => Value::Null,
    }
}

/// Decodes a register value as `ty`.
pub fn decode_register(ty: ValueType, reg: u64) -> Value {
    scalar(ty, &reg.to_le_bytes())
}

/// Decodes memory a capture read as `ty`.
fn decode_memory(ty: ValueType, data: &[u8]) -> Value {
    match ty {
        ValueType::Str(_) => {
            let end = data.iter().position(|b| *b == 0).unwrap_or(data.len());
            Value::from(String::from_utf8_lossy(&data[..end]).into_owned())
        }
        ValueType::Utf16(n) => {
            let units: Vec<u16> = data
                .chunks_exact(2)
                .take(usize::from(n))
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|u| *u != 0)
                .collect();
            Value::from(String::from_utf16_lossy(&units))
        }
        ValueType::Bytes(n) => Value::from(bytes_hex(
            &data[..usize::from(n).min(ARG_BYTES).min(data.len())],
        )),
        v => scalar(v, data),
    }
}

/// Decodes capture `i` of `record` as `ty`.
pub fn decode_capture(ty: ValueType, capture: &Capture, record: &Record<'_>, i: usize) -> Value {
    if capture.kind == capture_kind::REG {
        decode_register(ty, record.head.values.get(i).copied().unwrap_or(0))
    } else {
        decode_memory(ty, record.captured(capture))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arg(raw: &str, i: usize) -> ArgSpec {
        super::super::spec::parse_arg(raw, i).unwrap_or_else(|e| panic!("{raw}: {e:?}"))
    }

    #[test]
    fn decoding() {
        assert_eq!(
            decode_register(ValueType::Int(4), 0xffff_ffff),
            Value::from(-1)
        );
        assert_eq!(decode_register(ValueType::Int(1), 0x80), Value::from(-128));
        assert_eq!(
            decode_register(ValueType::Uint(2), 0x1_0005),
            Value::from(5)
        );
        assert_eq!(
            decode_register(ValueType::Ptr, 0x7f00),
            Value::from("0x7f00")
        );
        assert_eq!(decode_register(ValueType::Bool, 2), Value::from(true));
        // V8 small integers: the value in the upper half; heap objects
        // (tag bit set) have none.
        assert_eq!(
            decode_register(ValueType::Smi, 0x1da_0000_0000),
            Value::from(474)
        );
        assert_eq!(
            decode_register(ValueType::Smi, 0xffff_fffe_0000_0000),
            Value::from(-2)
        );
        assert_eq!(
            decode_register(ValueType::Smi, 0x1369_8570_1191),
            Value::Null
        );
        assert_eq!(
            decode_memory(ValueType::Utf16(8), &[0xe9, 0, b'a', 0, 0, 0, b'z', 0]),
            Value::from("\u{e9}a")
        );
        assert_eq!(
            decode_memory(ValueType::Str(8), b"hi\0junk"),
            Value::from("hi")
        );
        assert_eq!(
            decode_memory(ValueType::Bytes(2), &[0xab, 0xcd, 0xef]),
            Value::from("abcd")
        );
    }

    #[test]
    fn captures_follow_the_calling_convention() {
        let args = [arg("arg1+8:u32", 0), arg("str:16", 1), arg("int", 2)];
        let sysv = plan(&args, None, None, Abi::Sysv).unwrap();
        let c = sysv.slots;
        assert_eq!(
            (c[0].kind, c[0].reg, c[0].len, c[0].offset, c[0].at),
            (capture_kind::DEREF, 1, 4, 8, 0)
        );
        assert_eq!(
            (c[1].kind, c[1].reg, c[1].len, c[1].at),
            (capture_kind::STR, 1, 16, 4)
        );
        assert_eq!((c[2].kind, c[2].reg), (capture_kind::REG, 2));
        assert_eq!(c[3].kind, capture_kind::NONE);
        assert_eq!(c[RET_CAPTURE].kind, capture_kind::NONE);
        assert_eq!(sysv.data_bytes, 20);
        // HotSpot: argument 0 in rsi, 1 in rdx.
        let java = plan(&[arg("int", 0), arg("int", 1)], None, None, Abi::Java).unwrap();
        assert_eq!((java.slots[0].reg, java.slots[1].reg), (1, 2));
        // V8: arguments on the stack, read as 8-byte slots.
        let v8 = plan(&[arg("smi", 0), arg("arg2:smi", 1)], None, None, Abi::V8).unwrap();
        assert_eq!(
            (
                v8.slots[0].kind,
                v8.slots[0].reg,
                v8.slots[0].offset,
                v8.slots[0].len
            ),
            (capture_kind::DEREF, 9, 16, 8)
        );
        assert_eq!(v8.slots[1].offset, 32);
        assert_eq!(v8.data_bytes, 16);
        assert!(plan(&[arg("arg0+8:u32", 0)], None, None, Abi::V8).is_err());
        assert!(plan(&[arg("str", 0)], None, None, Abi::V8).is_err());
        // Registers by name are where they are, whatever the convention.
        assert_eq!(
            plan(&[arg("rsp+16:i64", 0)], None, None, Abi::Java)
                .unwrap()
                .slots[0]
                .offset,
            16
        );
    }

    #[test]
    fn returned_strings_are_read_at_the_returned_pointer() {
        let c = plan(&[arg("int", 0)], Some(ValueType::Str(32)), None, Abi::Sysv).unwrap();
        let ret = c.slots[RET_CAPTURE];
        assert_eq!(
            (ret.kind, ret.reg, ret.len, ret.at),
            (capture_kind::STR, 6, 32, 0)
        );
        assert_eq!(c.data_bytes, 32);
        let c = plan(&[], Some(ValueType::Int(4)), None, Abi::Sysv).unwrap();
        assert_eq!(
            (c.slots[RET_CAPTURE].kind, c.data_bytes),
            (capture_kind::REG, 0)
        );
        // A field of the returned object: a .NET string's characters.
        let c = plan(&[], Some(ValueType::Utf16(8)), Some(12), Abi::Sysv).unwrap();
        let ret = c.slots[RET_CAPTURE];
        assert_eq!(
            (ret.kind, ret.offset, ret.len),
            (capture_kind::DEREF, 12, 16)
        );
        let c = plan(&[], Some(ValueType::Int(4)), Some(8), Abi::Sysv).unwrap();
        assert_eq!(
            (c.slots[RET_CAPTURE].kind, c.slots[RET_CAPTURE].len),
            (capture_kind::DEREF, 4)
        );
    }
}
