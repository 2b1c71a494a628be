//! The values a probe reads: `args=` entries (an argument of the calling
//! convention, or a register, possibly behind a pointer) and their types,
//! shared by `args=` and `ret=`. Pure parsing; [`super::decode`] turns
//! them into BPF captures and captured bytes back into JSON values.

use crate::params::SpecError;
use crate::sys::events::{ARG_BYTES, MAX_ARGS};

/// A value type for `args` and `ret`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    /// Signed integer of this many bytes.
    Int(u8),
    /// Unsigned integer of this many bytes.
    Uint(u8),
    /// 64-bit value as hex.
    Hex,
    /// Pointer, as hex.
    Ptr,
    /// Non-zero is true.
    Bool,
    /// NUL-terminated string, at most this many bytes.
    Str(u16),
    /// UTF-16LE text of this many code units.
    Utf16(u16),
    /// Raw bytes, as hex.
    Bytes(u16),
    /// A V8 small integer as Node stores it on x86-64 (no pointer
    /// compression): 64 bits, the value in the upper half, tag bit 0 clear.
    Smi,
}

impl ValueType {
    /// Parses a type name (`int`, `str:32`, `utf16:64`, …).
    pub fn parse(raw: &str) -> Option<Self> {
        let (name, len) = match raw.split_once(':') {
            Some((n, l)) => (n, Some(l.parse::<u16>().ok()?)),
            None => (raw, None),
        };
        let t = match (name, len) {
            ("i8", None) => Self::Int(1),
            ("i16", None) => Self::Int(2),
            ("i32" | "int", None) => Self::Int(4),
            ("i64" | "long", None) => Self::Int(8),
            ("u8", None) => Self::Uint(1),
            ("u16", None) => Self::Uint(2),
            ("u32" | "uint", None) => Self::Uint(4),
            ("u64", None) => Self::Uint(8),
            ("x64", None) => Self::Hex,
            ("ptr", None) => Self::Ptr,
            ("bool", None) => Self::Bool,
            ("smi", None) => Self::Smi,
            ("str", None) => Self::Str(64),
            ("str", Some(n)) if (1..=ARG_BYTES as u16).contains(&n) => Self::Str(n),
            ("utf16", Some(n)) if (1..=ARG_BYTES as u16 / 2).contains(&n) => Self::Utf16(n),
            ("bytes", Some(n)) if (1..=ARG_BYTES as u16).contains(&n) => Self::Bytes(n),
            _ => return None,
        };
        Some(t)
    }

    /// Whether the value lives behind a pointer (must be read from memory).
    pub fn is_memory(self) -> bool {
        matches!(self, Self::Str(_) | Self::Utf16(_) | Self::Bytes(_))
    }

    pub fn width(self) -> u16 {
        match self {
            Self::Int(n) | Self::Uint(n) => u16::from(n),
            Self::Hex | Self::Ptr | Self::Smi => 8,
            Self::Bool => 1,
            Self::Str(n) | Self::Bytes(n) => n,
            Self::Utf16(n) => n * 2,
        }
    }
}

/// Where an `args` entry's value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Argument N of the calling convention ([`Abi`]).
    Arg(u8),
    /// A register by index ([`crate::sys::events::REGISTERS`]).
    Reg(u8),
}

/// One `args` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgSpec {
    /// Where the value is.
    pub place: Place,
    /// Dereference it at this byte offset first.
    pub deref: Option<i32>,
    /// How to read and show it.
    pub value: ValueType,
}

impl ArgSpec {
    /// The argument number, for `argN` places.
    pub fn arg_index(&self) -> Option<u8> {
        match self.place {
            Place::Arg(n) => Some(n),
            Place::Reg(_) => None,
        }
    }

    /// How the request names it (`arg1`, `rsp+16`).
    pub fn label(&self) -> String {
        let base = match self.place {
            Place::Arg(n) => format!("arg{n}"),
            Place::Reg(r) => crate::sys::events::REGISTERS
                .get(usize::from(r))
                .copied()
                .unwrap_or("?")
                .to_owned(),
        };
        match self.deref {
            Some(off) => format!("{base}+{off}"),
            None => base,
        }
    }
}

/// Which calling convention `argN` follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abi {
    /// x86-64 System V: rdi, rsi, rdx, rcx, r8, r9 (C, C++, Rust, Go's
    /// cgo, .NET's JIT code on Linux, with `this` first).
    Sysv,
    /// HotSpot's compiled Java code: rsi, rdx, rcx, r8, r9, rdi (`this`
    /// first for instance methods).
    Java,
    /// V8's JavaScript code: every argument on the stack, argument N at
    /// `[rsp + 16 + 8N]` on entry (the receiver at `[rsp + 8]`).
    V8,
}

impl Abi {
    /// Parses an `abi=` value.
    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "sysv" => Self::Sysv,
            "java" => Self::Java,
            "v8" => Self::V8,
            _ => return None,
        })
    }

    /// Its name in requests and summaries.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sysv => "sysv",
            Self::Java => "java",
            Self::V8 => "v8",
        }
    }
}

/// Every type, for hints.
pub const TYPES_HINT: &str = "types: i8 i16 i32 i64 u8 u16 u32 u64 x64 ptr bool int long uint smi str[:MAXLEN] utf16:LEN bytes:LEN (LEN up to 128 bytes)";

/// Parses one `args` entry at list position `position`: `TYPE` (the
/// argument at that position), `argN:TYPE`, `argN+OFF:TYPE`, `REG:TYPE`
/// or `REG+OFF:TYPE` (a register by its x86-64 name: `rsi`, `rsp+16`).
pub fn parse_arg(raw: &str, position: usize) -> Result<ArgSpec, SpecError> {
    let raw = raw.trim();
    let err = || {
        SpecError::new(
            format!(
                "args entry {raw:?} is not TYPE, argN:TYPE, argN+OFF:TYPE, REG:TYPE or REG+OFF:TYPE"
            ),
            TYPES_HINT,
        )
    };
    // The type may itself hold a ':' (str:32), so split at the first one
    // after a place, if there is a place.
    let (place, deref, ty) = match raw.split_once(':') {
        Some((head, ty)) if head.starts_with("arg") || head.starts_with('r') => {
            let (name, off) = match head.split_once('+') {
                Some((name, off)) => (name, Some(off.parse::<i32>().map_err(|_| err())?)),
                None => (head, None),
            };
            let place = match name.strip_prefix("arg") {
                Some(n) => Place::Arg(n.parse::<u8>().map_err(|_| err())?),
                None => Place::Reg(crate::sys::events::register(name).ok_or_else(|| {
                    SpecError::new(
                        format!("{name:?} is not a register"),
                        format!("registers: {}", crate::sys::events::REGISTERS.join(" ")),
                    )
                })?),
            };
            (place, off, ty)
        }
        _ => (
            Place::Arg(u8::try_from(position).map_err(|_| err())?),
            None,
            raw,
        ),
    };
    if let Place::Arg(index) = place
        && usize::from(index) >= MAX_ARGS
    {
        return Err(SpecError::new(
            format!("{raw:?}: only arg0..arg5 are in registers"),
            "use argN with N from 0 to 5, or a register or stack slot such as rsp+16:i64",
        ));
    }
    let value = ValueType::parse(ty).ok_or_else(err)?;
    Ok(ArgSpec {
        place,
        deref,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arg_forms() {
        assert_eq!(
            parse_arg("int", 0).ok(),
            Some(ArgSpec {
                place: Place::Arg(0),
                deref: None,
                value: ValueType::Int(4)
            })
        );
        assert_eq!(
            parse_arg("u64", 2).ok().map(|a| a.place),
            Some(Place::Arg(2))
        );
        assert_eq!(
            parse_arg("arg1+8:u32", 0).ok(),
            Some(ArgSpec {
                place: Place::Arg(1),
                deref: Some(8),
                value: ValueType::Uint(4)
            })
        );
        assert_eq!(
            parse_arg("arg1+12:utf16:64", 1).ok(),
            Some(ArgSpec {
                place: Place::Arg(1),
                deref: Some(12),
                value: ValueType::Utf16(64)
            })
        );
        assert_eq!(
            parse_arg("arg0:str:32", 0).ok().map(|a| a.value),
            Some(ValueType::Str(32))
        );
        assert_eq!(
            parse_arg("str:32", 0).ok().map(|a| (a.place, a.value)),
            Some((Place::Arg(0), ValueType::Str(32)))
        );
        assert_eq!(
            parse_arg("utf16:8", 3).ok().map(|a| (a.place, a.value)),
            Some((Place::Arg(3), ValueType::Utf16(8)))
        );
        // Registers by name, and stack slots through rsp.
        assert_eq!(
            parse_arg("rsi:int", 0).ok().map(|a| (a.place, a.deref)),
            Some((Place::Reg(1), None))
        );
        let slot = parse_arg("rsp+16:smi", 0).unwrap();
        assert_eq!(
            (slot.place, slot.deref, slot.value),
            (Place::Reg(9), Some(16), ValueType::Smi)
        );
        assert_eq!(slot.label(), "rsp+16");
        assert_eq!(
            parse_arg("arg2+-8:i64", 0).ok().map(|a| a.deref),
            Some(Some(-8))
        );
        for bad in [
            "float",
            "arg9:int",
            "argx:int",
            "str:0",
            "utf16:65",
            "bytes:999",
            "arg1+z:int",
            "rzz:int",
            "eax:int",
        ] {
            assert!(parse_arg(bad, 0).is_err(), "{bad}");
        }
    }
}
