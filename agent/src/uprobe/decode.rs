//! Decoding probe captures: which bytes the BPF program copies for each
//! argument (from the spec), and the typed JSON values of what it copied.

use serde_json::Value;

use super::events::{ARG_BYTES, Capture, Event, MAX_ARGS, capture_kind};
use super::spec::{ArgSpec, ValueType};

/// The BPF captures for `args`, in order.
pub fn captures(args: &[ArgSpec]) -> [Capture; MAX_ARGS] {
    let mut out = [Capture::default(); MAX_ARGS];
    for (slot, arg) in out.iter_mut().zip(args) {
        *slot = match (arg.deref, arg.value) {
            (None, v) if !v.is_memory() => Capture {
                kind: capture_kind::REG,
                reg: arg.index,
                len: 0,
                offset: 0,
            },
            (offset, ValueType::Str(n)) => Capture {
                kind: capture_kind::STR,
                reg: arg.index,
                len: n,
                offset: offset.unwrap_or(0),
            },
            (offset, v) => Capture {
                kind: capture_kind::DEREF,
                reg: arg.index,
                len: v.width(),
                offset: offset.unwrap_or(0),
            },
        };
    }
    out
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
        _ => Value::Null,
    }
}

/// Decodes a register value as `ty`.
pub fn decode_register(ty: ValueType, reg: u64) -> Value {
    scalar(ty, &reg.to_le_bytes())
}

/// Decodes argument `i` of `event` per `arg`.
pub fn decode_arg(arg: &ArgSpec, event: &Event, i: usize) -> Value {
    let data = &event.data[i];
    match (arg.deref, arg.value) {
        (None, v) if !v.is_memory() => decode_register(v, event.regs[usize::from(arg.index)]),
        (_, ValueType::Str(_)) => {
            let end = data.iter().position(|b| *b == 0).unwrap_or(data.len());
            Value::from(String::from_utf8_lossy(&data[..end]).into_owned())
        }
        (_, ValueType::Utf16(n)) => {
            let units: Vec<u16> = data
                .chunks_exact(2)
                .take(usize::from(n))
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|u| *u != 0)
                .collect();
            Value::from(String::from_utf16_lossy(&units))
        }
        (_, ValueType::Bytes(n)) => Value::from(bytes_hex(&data[..usize::from(n).min(ARG_BYTES)])),
        (_, v) => scalar(v, data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let caps = captures(&[
            ArgSpec {
                index: 1,
                deref: Some(8),
                value: ValueType::Uint(4),
            },
            ArgSpec {
                index: 0,
                deref: None,
                value: ValueType::Str(16),
            },
        ]);
        assert_eq!(
            (caps[0].kind, caps[0].reg, caps[0].len, caps[0].offset),
            (capture_kind::DEREF, 1, 4, 8)
        );
        assert_eq!((caps[1].kind, caps[1].len), (capture_kind::STR, 16));
        assert_eq!(caps[2].kind, capture_kind::NONE);
    }
}
