//! `/v1/uprobe` and `/v1/symbols` requests: query → a validated
//! [`UprobeSpec`] or [`SymbolsSpec`]. [`super::decode`] turns the argument
//! types into BPF captures and captured bytes back into JSON values.

use std::collections::HashMap;

use super::events::{ARG_BYTES, MAX_ARGS};
use crate::api::query::{self, SpecError, number, reject_unknown};

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
}

impl ValueType {
    fn parse(raw: &str) -> Option<Self> {
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
            ("str", None) => Self::Str(64),
            ("str", Some(n)) if (1..=ARG_BYTES as u16).contains(&n) => Self::Str(n),
            ("utf16", Some(n)) if (1..=ARG_BYTES as u16 / 2).contains(&n) => Self::Utf16(n),
            ("bytes", Some(n)) if (1..=ARG_BYTES as u16).contains(&n) => Self::Bytes(n),
            _ => return None,
        };
        Some(t)
    }

    /// Whether the value lives behind a pointer (must be read from memory).
    pub(super) fn is_memory(self) -> bool {
        matches!(self, Self::Str(_) | Self::Utf16(_) | Self::Bytes(_))
    }

    pub(super) fn width(self) -> u16 {
        match self {
            Self::Int(n) | Self::Uint(n) => u16::from(n),
            Self::Hex | Self::Ptr => 8,
            Self::Bool => 1,
            Self::Str(n) | Self::Bytes(n) => n,
            Self::Utf16(n) => n * 2,
        }
    }
}

/// One `args` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgSpec {
    /// Argument register 0..5.
    pub index: u8,
    /// Dereference the argument at this byte offset first.
    pub deref: Option<i32>,
    /// How to read and show it.
    pub value: ValueType,
}

/// What to attach to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    /// An ELF symbol, in `module` (a mapped module's name or path) or in
    /// `binary`, or in the process's executable.
    Symbol {
        /// The symbol, demangled names allowed.
        name: String,
        /// `module=`.
        module: Option<String>,
        /// `binary=`.
        binary: Option<String>,
    },
    /// A file offset in `binary`.
    Offset {
        /// The offset.
        offset: u64,
        /// The file.
        binary: String,
    },
    /// A virtual address in the process.
    Address(u64),
}

/// What `aggregate=` summarizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Of {
    /// The argument at this position in `args`.
    Arg(usize),
    /// The return value.
    Ret,
    /// Entry-to-return latency in nanoseconds.
    Latency,
}

/// A validated `/v1/uprobe` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UprobeSpec {
    /// What to attach to.
    pub target: TargetSpec,
    /// Only this process (PID in the pod).
    pub pid: Option<u32>,
    /// Arguments to capture.
    pub args: Vec<ArgSpec>,
    /// Return value type; adds a uretprobe.
    pub ret: Option<ValueType>,
    /// Stop after this long.
    pub seconds: u32,
    /// Stop after this many events.
    pub limit: Option<u32>,
    /// Allow uretprobes on Go binaries.
    pub force: bool,
    /// Calls recorded per second at most; the rest are counted.
    pub rate: u32,
    /// Return a histogram instead of the event stream.
    pub aggregate: Option<(super::hist::Aggregate, Of)>,
}

fn bad(message: impl Into<String>, hint: impl Into<String>) -> SpecError {
    SpecError::new(message, hint)
}

const TYPES_HINT: &str = "types: i8 i16 i32 i64 u8 u16 u32 u64 x64 ptr bool int long uint str[:MAXLEN] utf16:LEN bytes:LEN (LEN up to 128 bytes)";

fn hex(raw: &str) -> Option<u64> {
    let digits = raw.strip_prefix("0x").or_else(|| raw.strip_prefix("0X"));
    match digits {
        Some(d) => u64::from_str_radix(d, 16).ok(),
        None => raw.parse().ok(),
    }
}

/// Parses one `args` entry at list position `position`.
pub fn parse_arg(raw: &str, position: usize) -> Result<ArgSpec, SpecError> {
    let raw = raw.trim();
    let err = || {
        bad(
            format!("args entry {raw:?} is not TYPE, argN:TYPE or argN+OFF:TYPE"),
            TYPES_HINT,
        )
    };
    let (index, deref, ty) = match raw
        .strip_prefix("arg")
        .and_then(|rest| rest.split_once(':'))
    {
        Some((place, ty)) => {
            let (n, off) = match place.split_once('+') {
                Some((n, off)) => (n, Some(off.parse::<i32>().map_err(|_| err())?)),
                None => (place, None),
            };
            (n.parse::<u8>().map_err(|_| err())?, off, ty)
        }
        None => (u8::try_from(position).map_err(|_| err())?, None, raw),
    };
    if usize::from(index) >= MAX_ARGS {
        return Err(bad(
            format!("{raw:?}: only arg0..arg5 are in registers"),
            "use argN with N from 0 to 5",
        ));
    }
    let value = ValueType::parse(ty).ok_or_else(err)?;
    Ok(ArgSpec {
        index,
        deref,
        value,
    })
}

/// A validated `/v1/symbols` request.
#[derive(Debug, Clone)]
pub struct SymbolsSpec {
    /// The process whose functions are listed.
    pub pid: u32,
    /// Names must match this.
    pub pattern: regex::Regex,
    /// Only this module (basename as mapped, e.g. `libc.so.6`).
    pub module: Option<String>,
    /// At most this many, in address order.
    pub limit: usize,
}

/// Validates `/v1/symbols` query parameters.
pub fn parse_symbols(query: &HashMap<String, String>) -> Result<SymbolsSpec, SpecError> {
    reject_unknown(query, &["pid", "match", "module", "limit"])?;
    let pid = query::required_pid(query)?;
    let pattern =
        regex::Regex::new(query.get("match").map_or(".", String::as_str)).map_err(|e| {
            bad(
                format!("match is not a valid regular expression: {e}"),
                "e.g. match=^calc$ or match=Parse",
            )
        })?;
    Ok(SymbolsSpec {
        pid,
        pattern,
        module: query.get("module").cloned(),
        limit: number(query, "limit", 1000, 1..=100_000)? as usize,
    })
}

/// Validates `/v1/uprobe` query parameters.
pub fn parse(query: &HashMap<String, String>) -> Result<UprobeSpec, SpecError> {
    const KNOWN: [&str; 14] = [
        "symbol",
        "offset",
        "address",
        "binary",
        "module",
        "pid",
        "args",
        "ret",
        "seconds",
        "limit",
        "force",
        "rate",
        "aggregate",
        "of",
    ];
    reject_unknown(query, &KNOWN)?;
    let pid = query::one_pid(query)?;
    let chosen: Vec<&str> = ["symbol", "offset", "address"]
        .into_iter()
        .filter(|k| query.contains_key(*k))
        .collect();
    let target = match chosen.as_slice() {
        ["symbol"] => TargetSpec::Symbol {
            name: query.get("symbol").cloned().unwrap_or_default(),
            module: query.get("module").cloned(),
            binary: query.get("binary").cloned(),
        },
        ["offset"] => {
            let raw = query.get("offset").map_or("", String::as_str);
            TargetSpec::Offset {
                offset: hex(raw).ok_or_else(|| {
                    bad(
                        format!("offset={raw:?} is not a number"),
                        "e.g. offset=0x1920",
                    )
                })?,
                binary: query.get("binary").cloned().ok_or_else(|| {
                    bad(
                        "offset= needs binary=PATH",
                        "name the file the offset is in",
                    )
                })?,
            }
        }
        ["address"] => {
            let raw = query.get("address").map_or("", String::as_str);
            if pid.is_none() {
                return Err(bad(
                    "address= needs pid=P",
                    "an address only means something in one process",
                ));
            }
            TargetSpec::Address(hex(raw).ok_or_else(|| {
                bad(
                    format!("address={raw:?} is not a number"),
                    "e.g. address=0x7f3a10001920",
                )
            })?)
        }
        _ => {
            return Err(bad(
                "give exactly one of symbol=, offset= or address=",
                "e.g. symbol=calc&pid=7, offset=0x1920&binary=/app/server, address=0x7f…&pid=7",
            ));
        }
    };
    if let TargetSpec::Symbol {
        name,
        module,
        binary,
    } = &target
    {
        if name.is_empty() {
            return Err(bad(
                "symbol= is empty",
                "find names with /v1/symbols?pid=P&match=…",
            ));
        }
        if module.is_some() && binary.is_some() {
            return Err(bad(
                "give module= or binary=, not both",
                "module names a mapped library, binary a file",
            ));
        }
        if pid.is_none() && binary.is_none() {
            return Err(bad(
                "symbol= without pid= needs binary=PATH",
                "or pass pid=P to use the process's executable",
            ));
        }
    }
    let args = match query.get("args") {
        None => Vec::new(),
        Some(list) => list
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .enumerate()
            .map(|(i, a)| parse_arg(a, i))
            .collect::<Result<Vec<_>, _>>()?,
    };
    if args.len() > MAX_ARGS {
        return Err(bad(format!("{} args requested", args.len()), "at most 6"));
    }
    let ret = match query.get("ret") {
        None => None,
        Some(raw) => match ValueType::parse(raw) {
            Some(t) if !t.is_memory() => Some(t),
            Some(_) => {
                return Err(bad(
                    format!("ret={raw}: only register types can be read on return"),
                    "use ret=ptr and read it with args on the next call, or a scalar type",
                ));
            }
            None => return Err(bad(format!("ret={raw:?} is not a type"), TYPES_HINT)),
        },
    };
    let limit = query::optional_number(query, "limit", 1..=10_000_000)?;
    let force = query::boolean(query, "force")?.unwrap_or(false);
    let aggregate = match (query.get("aggregate"), query.get("of")) {
        (None, None) => None,
        (Some(_), None) | (None, Some(_)) => {
            return Err(bad(
                "aggregate= and of= go together",
                "e.g. aggregate=log2&of=latency",
            ));
        }
        (Some(kind), Some(of)) => {
            let kind = super::hist::Aggregate::parse(kind).ok_or_else(|| {
                bad(
                    format!("aggregate={kind:?}"),
                    "use count, log2 or linear:STEP",
                )
            })?;
            let of = match of.as_str() {
                "ret" if ret.is_some() => Of::Ret,
                "latency" if ret.is_some() => Of::Latency,
                "ret" | "latency" => {
                    return Err(bad(
                        format!("of={of} needs ret=TYPE"),
                        "add ret=int (or another type)",
                    ));
                }
                other => {
                    let n: u8 = other
                        .strip_prefix("arg")
                        .and_then(|n| n.parse().ok())
                        .ok_or_else(|| {
                            bad(format!("of={other:?}"), "use of=argN, of=ret or of=latency")
                        })?;
                    let position = args
                        .iter()
                        .position(|a| a.index == n && a.deref.is_none() && !a.value.is_memory())
                        .ok_or_else(|| {
                            bad(
                                format!("of=arg{n} is not a captured number"),
                                format!("add arg{n}:TYPE to args="),
                            )
                        })?;
                    Of::Arg(position)
                }
            };
            Some((kind, of))
        }
    };
    Ok(UprobeSpec {
        target,
        pid,
        args,
        ret,
        seconds: query::seconds(query, 10, 1..=3600)?,
        limit,
        force,
        rate: number(query, "rate", 100_000, 1..=100_000_000)?,
        aggregate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::spec::query_of as q;

    #[test]
    fn arg_forms() {
        assert_eq!(
            parse_arg("int", 0).ok(),
            Some(ArgSpec {
                index: 0,
                deref: None,
                value: ValueType::Int(4)
            })
        );
        assert_eq!(parse_arg("u64", 2).ok().map(|a| a.index), Some(2));
        assert_eq!(
            parse_arg("arg1+8:u32", 0).ok(),
            Some(ArgSpec {
                index: 1,
                deref: Some(8),
                value: ValueType::Uint(4)
            })
        );
        assert_eq!(
            parse_arg("arg1+12:utf16:64", 1).ok(),
            Some(ArgSpec {
                index: 1,
                deref: Some(12),
                value: ValueType::Utf16(64)
            })
        );
        assert_eq!(
            parse_arg("arg0:str:32", 0).ok().map(|a| a.value),
            Some(ValueType::Str(32))
        );
        assert_eq!(
            parse_arg("utf16:8", 3).ok().map(|a| (a.index, a.value)),
            Some((3, ValueType::Utf16(8)))
        );
        for bad in [
            "float",
            "arg9:int",
            "argx:int",
            "str:0",
            "utf16:65",
            "bytes:999",
            "arg1+z:int",
        ] {
            assert!(parse_arg(bad, 0).is_err(), "{bad}");
        }
    }

    #[test]
    fn targets_are_exclusive_and_complete() {
        assert!(parse(&q(&[("symbol", "calc"), ("pid", "7")])).is_ok());
        assert!(parse(&q(&[("offset", "0x1920"), ("binary", "/app/x")])).is_ok());
        assert!(parse(&q(&[("address", "0x7f00"), ("pid", "7")])).is_ok());
        for pairs in [
            &[][..],
            &[("symbol", "calc"), ("offset", "0x10"), ("pid", "7")],
            &[("offset", "0x10")],
            &[("address", "0x10")],
            &[("symbol", "calc")],
            &[
                ("symbol", "calc"),
                ("pid", "7"),
                ("module", "a"),
                ("binary", "b"),
            ],
            &[("symbol", "calc"), ("pid", "7"), ("ret", "str")],
            &[("symbol", "calc"), ("pid", "7"), ("ret", "float")],
            &[("symbol", "calc"), ("pid", "7"), ("seconds", "0")],
            &[
                ("symbol", "calc"),
                ("pid", "7"),
                ("args", "int,int,int,int,int,int,int"),
            ],
        ] {
            assert!(parse(&q(pairs)).is_err(), "{pairs:?}");
        }
    }
}
