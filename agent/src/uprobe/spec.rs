//! `/v1/uprobe` and `/v1/symbols` requests: query → a validated
//! [`UprobeSpec`] or [`SymbolsSpec`]. [`super::decode`] turns the argument
//! types into BPF captures and captured bytes back into JSON values.

pub use super::args::{Abi, ArgSpec, Place, TYPES_HINT, ValueType, parse_arg};
use tracecar_api::quoted;
use tracecar_api::request::{SymbolsRequest, UprobeRequest};

use crate::params::{self, SpecError, number};
use crate::sys::events::MAX_ARGS;

/// Stacks with each event (`stack=user`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackSpec {
    /// How user stacks are walked.
    pub unwind: crate::stacks::Unwind,
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

/// What `aggregate=` makes of the calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregation {
    /// One JSON histogram of a value.
    Histogram(super::hist::Aggregate),
    /// The callers' stacks, weighted by a value, as a flamegraph.
    Flame,
}

impl Aggregation {
    fn parse(raw: &str) -> Option<Self> {
        match raw {
            "flame" => Some(Self::Flame),
            other => super::hist::Aggregate::parse(other).map(Self::Histogram),
        }
    }

    /// The name as the request spells it.
    pub fn name(self) -> String {
        match self {
            Self::Histogram(h) => h.name(),
            Self::Flame => "flame".to_owned(),
        }
    }
}

/// What `aggregate=` summarizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Of {
    /// Each call counts one (`aggregate=flame` only).
    Count,
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
    /// Return value type; adds a return probe.
    pub ret: Option<ValueType>,
    /// `ret=ret+OFF:TYPE`: read the value at the returned pointer plus
    /// this many bytes.
    pub ret_offset: Option<i32>,
    /// Stop after this long.
    pub seconds: u32,
    /// Stop after this many events.
    pub limit: Option<u32>,
    /// Allow uretprobes on Go binaries.
    pub force: bool,
    /// Calls recorded per second at most; the rest are counted.
    pub rate: u32,
    /// Return a histogram or a flamegraph instead of the event stream.
    pub aggregate: Option<(Aggregation, Of)>,
    /// Record the user stack with each event.
    pub stack: Option<StackSpec>,
    /// `argN`'s calling convention; `None`: chosen by the target.
    pub abi: Option<Abi>,
    /// Output format of `aggregate=flame`.
    pub format: crate::stacks::Format,
}

fn bad(message: impl Into<String>, hint: impl Into<String>) -> SpecError {
    SpecError::new(message, hint)
}

fn hex(raw: &str) -> Option<u64> {
    let digits = raw.strip_prefix("0x").or_else(|| raw.strip_prefix("0X"));
    match digits {
        Some(d) => u64::from_str_radix(d, 16).ok(),
        None => raw.parse().ok(),
    }
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

/// Validates a `/v1/symbols` request.
pub fn parse_symbols(query: &SymbolsRequest) -> Result<SymbolsSpec, SpecError> {
    let pid = params::required_pid(query.pid())?;
    let pattern = regex::Regex::new(query.r#match.as_deref().unwrap_or(".")).map_err(|e| {
        bad(
            format!("match is not a valid regular expression: {e}"),
            "e.g. match=^calc$ or match=Parse",
        )
    })?;
    Ok(SymbolsSpec {
        pid,
        pattern,
        module: query.module.clone(),
        limit: number(query.limit(), 1000, 1..=100_000)? as usize,
    })
}

/// Validates a `/v1/uprobe` request.
pub fn parse(query: &UprobeRequest) -> Result<UprobeSpec, SpecError> {
    let pid = params::one_pid(query.pid())?;
    let target = target(query, pid)?;
    let args = args(query)?;
    let (ret, ret_offset) = ret(query)?;
    let stack = stack(query)?;
    let abi = abi(query)?;
    let limit = params::optional_number(query.limit(), 1..=10_000_000)?;
    let force = params::boolean(query.force())?.unwrap_or(false);
    let aggregate = aggregate(query, &args, ret, ret_offset)?;
    let flame = matches!(aggregate, Some((Aggregation::Flame, _)));
    // A flamegraph of callers needs their stacks.
    let stack = match (stack, flame) {
        (None, true) => Some(StackSpec {
            unwind: crate::stacks::unwind_param(query.unwind())?,
        }),
        (stack, _) => stack,
    };
    let format = format(query, flame)?;
    Ok(UprobeSpec {
        target,
        pid,
        args,
        ret,
        ret_offset,
        seconds: params::number(query.seconds(), 10, 1..=3600)?,
        limit,
        force,
        rate: number(query.rate(), 100_000, 1..=100_000_000)?,
        aggregate,
        stack,
        abi,
        format,
    })
}

/// `symbol=`, `offset=` or `address=` (exactly one), with `module=`,
/// `binary=` and `pid=` as each needs them.
fn target(query: &UprobeRequest, pid: Option<u32>) -> Result<TargetSpec, SpecError> {
    let chosen: Vec<&str> = [query.symbol(), query.offset(), query.address()]
        .into_iter()
        .filter(|p| p.is_set())
        .map(|p| p.name)
        .collect();
    let target = match chosen.as_slice() {
        ["symbol"] => TargetSpec::Symbol {
            name: query.symbol.clone().unwrap_or_default(),
            module: query.module.clone(),
            binary: query.binary.clone(),
        },
        ["offset"] => {
            let raw = query.offset.as_deref().unwrap_or_default();
            TargetSpec::Offset {
                offset: hex(raw).ok_or_else(|| {
                    bad(
                        format!("offset={} is not a number", quoted(raw)),
                        "e.g. offset=0x1920",
                    )
                })?,
                binary: query.binary.clone().ok_or_else(|| {
                    bad(
                        "offset= needs binary=PATH",
                        "name the file the offset is in",
                    )
                })?,
            }
        }
        ["address"] => {
            let raw = query.address.as_deref().unwrap_or_default();
            if pid.is_none() {
                return Err(bad(
                    "address= needs pid=P",
                    "an address only means something in one process",
                ));
            }
            TargetSpec::Address(hex(raw).ok_or_else(|| {
                bad(
                    format!("address={} is not a number", quoted(raw)),
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
    Ok(target)
}

/// `args=`: the captures, at most [`MAX_ARGS`].
fn args(query: &UprobeRequest) -> Result<Vec<ArgSpec>, SpecError> {
    let args = match query.args.as_deref() {
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
    Ok(args)
}

/// `ret=TYPE` or `ret=ret+OFF:TYPE`: the return value's type, and the
/// offset read at when it is a pointer.
fn ret(query: &UprobeRequest) -> Result<(Option<ValueType>, Option<i32>), SpecError> {
    // Memory types are read at the returned pointer; `ret+OFF:TYPE` reads
    // at the returned pointer plus OFF (a field of a returned object).
    Ok(match query.ret.as_deref() {
        None => (None, None),
        Some(raw) => {
            let not_a_type = || {
                bad(
                    format!("ret={} is not TYPE or ret+OFF:TYPE", quoted(raw)),
                    TYPES_HINT,
                )
            };
            let (offset, ty) = match raw.strip_prefix("ret+") {
                Some(rest) => {
                    let (off, ty) = rest.split_once(':').ok_or_else(not_a_type)?;
                    (Some(off.parse::<i32>().map_err(|_| not_a_type())?), ty)
                }
                None => (None, raw),
            };
            (Some(ValueType::parse(ty).ok_or_else(not_a_type)?), offset)
        }
    })
}

/// `stack=user` with its `unwind=`; `unwind=` alone is refused unless a
/// flamegraph asks for stacks.
fn stack(query: &UprobeRequest) -> Result<Option<StackSpec>, SpecError> {
    let stack = match query.stack.as_deref() {
        None => None,
        Some("user") => Some(StackSpec {
            unwind: crate::stacks::unwind_param(query.unwind())?,
        }),
        Some("kernel" | "both") => {
            return Err(bad(
                "stack=kernel: a probe on user code fires in user mode, where there is no kernel stack (the kernel's walk at a uprobe or breakpoint returns no frames)",
                "use stack=user; kernel stacks are in /v1/profile (kernel=true)",
            ));
        }
        Some(other) => {
            return Err(bad(
                format!("stack={} is not supported", quoted(other)),
                "use stack=user",
            ));
        }
    };
    if query.unwind.is_some() && stack.is_none() && query.aggregate.as_deref() != Some("flame") {
        return Err(bad(
            "unwind= is for stacks",
            "add stack=user (or aggregate=flame)",
        ));
    }
    Ok(stack)
}

/// `abi=`: how arguments are passed, when not the platform's.
fn abi(query: &UprobeRequest) -> Result<Option<Abi>, SpecError> {
    Ok(match query.abi.as_deref() {
        None => None,
        Some(raw) => Some(Abi::parse(raw).ok_or_else(|| {
            bad(
                format!("abi={} is not supported", quoted(raw)),
                "use sysv (C, C++, Rust, .NET), java (HotSpot) or v8 (Node)",
            )
        })?),
    })
}

/// `aggregate=` with `of=`: a histogram or a flamegraph of callers, of a
/// captured number, the return value, the latency or the calls.
fn aggregate(
    query: &UprobeRequest,
    args: &[ArgSpec],
    ret: Option<ValueType>,
    ret_offset: Option<i32>,
) -> Result<Option<(Aggregation, Of)>, SpecError> {
    Ok(match (query.aggregate.as_deref(), query.of.as_deref()) {
        (None, None) => None,
        (Some(_), None) | (None, Some(_)) => {
            return Err(bad(
                "aggregate= and of= go together",
                "e.g. aggregate=log2&of=latency",
            ));
        }
        (Some(kind), Some(of)) => {
            let kind = Aggregation::parse(kind).ok_or_else(|| {
                bad(
                    format!("aggregate={}", quoted(kind)),
                    "use count, log2, linear:STEP or flame",
                )
            })?;
            let of = match of {
                "count" if kind == Aggregation::Flame => Of::Count,
                "count" => {
                    return Err(bad(
                        "of=count is for aggregate=flame",
                        "histograms count calls already: use of=argN, of=ret or of=latency",
                    ));
                }
                "ret" if ret.is_some_and(|t| !t.is_memory()) && ret_offset.is_none() => Of::Ret,
                "ret" if ret.is_some() => {
                    return Err(bad(
                        "of=ret needs a number, not text",
                        "use ret=int (or another number type)",
                    ));
                }
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
                            bad(
                                format!("of={}", quoted(other)),
                                "use of=argN, of=ret or of=latency",
                            )
                        })?;
                    let position = args
                        .iter()
                        .position(|a| {
                            a.arg_index() == Some(n) && a.deref.is_none() && !a.value.is_memory()
                        })
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
    })
}

/// `format=`, for flamegraphs only.
fn format(query: &UprobeRequest, flame: bool) -> Result<crate::stacks::Format, SpecError> {
    if query.format.is_some() && !flame {
        return Err(bad(
            "format= is for aggregate=flame",
            "events stream as NDJSON; add aggregate=flame&of=count for a flamegraph",
        ));
    }
    Ok(crate::stacks::format_param(query.format())?.unwrap_or(crate::stacks::Format::Svg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Result<UprobeSpec, SpecError> {
        params::from_pairs(pairs).and_then(|r| parse(&r))
    }

    #[test]
    fn stacks_flames_and_string_returns() {
        let spec = q(&[("symbol", "readline"), ("pid", "7"), ("ret", "str:80")]).unwrap();
        assert_eq!(spec.ret, Some(ValueType::Str(80)));
        let spec = q(&[
            ("symbol", "malloc"),
            ("pid", "7"),
            ("args", "u64"),
            ("aggregate", "flame"),
            ("of", "arg0"),
        ])
        .unwrap();
        // A flamegraph implies user stacks, walked as unwind= says.
        assert_eq!(
            spec.stack,
            Some(StackSpec {
                unwind: crate::stacks::Unwind::Auto
            })
        );
        assert_eq!(spec.aggregate.map(|a| a.1), Some(Of::Arg(0)));
        assert_eq!(spec.format, crate::stacks::Format::Svg);
        let spec = q(&[
            ("symbol", "calc"),
            ("pid", "7"),
            ("stack", "user"),
            ("unwind", "fp"),
            ("aggregate", "flame"),
            ("of", "count"),
            ("format", "pprof"),
            ("abi", "java"),
        ])
        .unwrap();
        assert_eq!(
            spec.stack.map(|s| s.unwind),
            Some(crate::stacks::Unwind::Fp)
        );
        assert_eq!(spec.format, crate::stacks::Format::Pprof);
        assert_eq!(spec.abi, Some(Abi::Java));
        let hint = q(&[("symbol", "calc"), ("pid", "7"), ("stack", "kernel")])
            .err()
            .map(|e| e.hint)
            .unwrap_or_default();
        assert!(hint.contains("stack=user"), "{hint}");
    }

    #[test]
    fn targets_are_exclusive_and_complete() {
        assert!(q(&[("symbol", "calc"), ("pid", "7")]).is_ok());
        assert!(q(&[("offset", "0x1920"), ("binary", "/app/x")]).is_ok());
        assert!(q(&[("address", "0x7f00"), ("pid", "7")]).is_ok());
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
            &[("symbol", "calc"), ("pid", "7"), ("ret", "float")],
            &[("symbol", "calc"), ("pid", "7"), ("stack", "kernel")],
            &[("symbol", "calc"), ("pid", "7"), ("stack", "both")],
            &[("symbol", "calc"), ("pid", "7"), ("stack", "yes")],
            &[("symbol", "calc"), ("pid", "7"), ("unwind", "dwarf")],
            &[("symbol", "calc"), ("pid", "7"), ("format", "svg")],
            &[("symbol", "calc"), ("pid", "7"), ("abi", "win64")],
            &[
                ("symbol", "calc"),
                ("pid", "7"),
                ("aggregate", "flame"),
                ("of", "count"),
                ("format", "png"),
            ],
            &[
                ("symbol", "calc"),
                ("pid", "7"),
                ("aggregate", "log2"),
                ("of", "count"),
            ],
            &[
                ("symbol", "calc"),
                ("pid", "7"),
                ("ret", "str"),
                ("aggregate", "log2"),
                ("of", "ret"),
            ],
            &[("symbol", "calc"), ("pid", "7"), ("seconds", "0")],
            &[
                ("symbol", "calc"),
                ("pid", "7"),
                ("args", "int,int,int,int,int,int,int"),
            ],
        ] {
            assert!(q(pairs).is_err(), "{pairs:?}");
        }
    }
}
