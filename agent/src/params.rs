//! The parameter parsers every endpoint's spec module shares: one error
//! type, the decoding of a query string into its typed request
//! (`tracecar_api::request`), and one parser each for a number, a boolean,
//! a choice and a PID or PID list. A parameter means the same, and fails
//! the same way, on every endpoint.

use std::ops::RangeInclusive;

use tracecar_api::quoted;
pub use tracecar_api::request::Param;
use tracecar_api::request::{DecodeError, Request};

/// A request parameter is invalid (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SpecError {
    /// What is wrong.
    pub message: String,
    /// What to send instead.
    pub hint: String,
}

impl SpecError {
    /// An error with what is wrong and what to send instead.
    pub fn new(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: hint.into(),
        }
    }
}

/// Where to find PIDs, in every PID error's hint.
const PID_HINT: &str = "list the pod's processes with GET /v1/processes";

/// Reads a query string into the endpoint's request, refusing names it
/// does not take (the hint lists those it does) and names given twice.
pub fn decode<R: Request>(raw: Option<&str>) -> Result<R, SpecError> {
    tracecar_api::request::decode(raw.unwrap_or_default()).map_err(|e| {
        let hint = match &e {
            DecodeError::Unknown { known, .. } => format!("parameters are {}", known.join(", ")),
            DecodeError::Repeated { name } => format!("send {name}= once"),
            DecodeError::Malformed(_) => "send name=value pairs joined by &".to_owned(),
        };
        SpecError::new(e.to_string(), hint)
    })
}

/// A whole-number parameter with a default and an allowed range.
pub fn number(
    param: Param<'_>,
    default: u32,
    range: RangeInclusive<u32>,
) -> Result<u32, SpecError> {
    Ok(in_range(param, &range, default)?.unwrap_or(default))
}

/// A whole-number parameter that may be absent.
pub fn optional_number(
    param: Param<'_>,
    range: RangeInclusive<u32>,
) -> Result<Option<u32>, SpecError> {
    in_range(param, &range, *range.start())
}

/// The parameter's number, if sent; the error's hint shows `example`.
fn in_range(
    param: Param<'_>,
    range: &RangeInclusive<u32>,
    example: u32,
) -> Result<Option<u32>, SpecError> {
    let Some(raw) = param.value else {
        return Ok(None);
    };
    let key = param.name;
    let value: u32 = raw.parse().map_err(|_| {
        SpecError::new(
            format!("{key}={} is not a number", quoted(raw)),
            format!("use {key}={example}"),
        )
    })?;
    if !range.contains(&value) {
        return Err(SpecError::new(
            format!("{key}={value} is out of range"),
            format!(
                "{key} must be between {} and {}",
                range.start(),
                range.end()
            ),
        ));
    }
    Ok(Some(value))
}

/// A boolean parameter: `true`/`false` or `1`/`0`; `None` when absent.
pub fn boolean(param: Param<'_>) -> Result<Option<bool>, SpecError> {
    let key = param.name;
    match param.value {
        None => Ok(None),
        Some("true" | "1") => Ok(Some(true)),
        Some("false" | "0") => Ok(Some(false)),
        Some(other) => Err(SpecError::new(
            format!("{key}={} is not a boolean", quoted(other)),
            format!("use {key}=true or {key}=false"),
        )),
    }
}

/// A parameter that names one of `choices` (`(value, meaning, what it
/// parses to)`); the first choice when absent. The error lists every
/// value with its meaning.
pub fn one_of<T: Copy>(param: Param<'_>, choices: &[(&str, &str, T)]) -> Result<T, SpecError> {
    let key = param.name;
    let Some(raw) = param.value else {
        return choices.first().map(|c| c.2).ok_or_else(|| {
            SpecError::new(
                format!("{key}= has no choices"),
                "this is a bug in the agent",
            )
        });
    };
    choices
        .iter()
        .find(|(name, _, _)| *name == raw)
        .map(|c| c.2)
        .ok_or_else(|| {
            let listed: Vec<String> = choices
                .iter()
                .map(|(name, meaning, _)| format!("{key}={name} ({meaning})"))
                .collect();
            SpecError::new(
                format!("{key}={} is not supported", quoted(raw)),
                format!("use {}", listed.join(", ")),
            )
        })
}

/// Parses a PID or a comma list of PIDs.
pub fn parse_pids(raw: &str) -> Result<Vec<u32>, SpecError> {
    let pids: Result<Vec<u32>, _> = raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse::<u32>)
        .collect();
    match pids {
        Ok(p) if !p.is_empty() && !p.contains(&0) => Ok(p),
        _ => Err(SpecError::new(
            format!("pid={} is not a PID or a comma list of PIDs", quoted(raw)),
            PID_HINT,
        )),
    }
}

/// `pid=` as a list of PIDs; `None` when absent.
pub fn pids(pid: Param<'_>) -> Result<Option<Vec<u32>>, SpecError> {
    pid.value.map(parse_pids).transpose()
}

/// `pid=` naming exactly one process; `None` when absent.
pub fn one_pid(pid: Param<'_>) -> Result<Option<u32>, SpecError> {
    match pids(pid)?.as_deref() {
        None => Ok(None),
        Some([one]) => Ok(Some(*one)),
        Some(_) => Err(SpecError::new(
            "pid takes one process here",
            format!("pass a single pid=P; {PID_HINT}"),
        )),
    }
}

/// `pid=` naming exactly one process, which this endpoint requires.
pub fn required_pid(pid: Param<'_>) -> Result<u32, SpecError> {
    one_pid(pid)?.ok_or_else(|| {
        SpecError::new(
            "pid=P is required (one process)",
            format!("pass a single pid=P; {PID_HINT}"),
        )
    })
}

/// A request from `(name, value)` pairs, encoded and decoded as the
/// plugin and the agent do: a rule's action parameters, and tests.
pub(crate) fn from_pairs<R: Request>(pairs: &[(&str, &str)]) -> Result<R, SpecError> {
    let raw: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", tracecar_api::request::encode(v)))
        .collect();
    decode(Some(&raw.join("&")))
}

#[cfg(test)]
mod tests {
    use tracecar_api::request::DumpRequest;

    use super::*;

    fn p<'a>(name: &'static str, value: Option<&'a str>) -> Param<'a> {
        Param::new(name, value)
    }

    #[test]
    fn booleans_take_words_and_digits() {
        for (raw, want) in [("true", true), ("1", true), ("false", false), ("0", false)] {
            assert_eq!(boolean(p("k", Some(raw))), Ok(Some(want)));
        }
        assert_eq!(boolean(p("k", None)), Ok(None));
        let e = boolean(p("k", Some("yes"))).unwrap_err();
        assert_eq!(e.hint, "use k=true or k=false");
    }

    #[test]
    fn pids_one_and_many() {
        assert_eq!(pids(p("pid", Some("7, 9"))), Ok(Some(vec![7, 9])));
        assert_eq!(one_pid(p("pid", Some("7"))), Ok(Some(7)));
        assert!(one_pid(p("pid", Some("7,9"))).is_err());
        assert_eq!(one_pid(p("pid", None)), Ok(None));
        assert!(required_pid(p("pid", None)).is_err());
        for bad in ["", "0", "x", "7,x"] {
            assert!(parse_pids(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn numbers_and_ranges() {
        assert_eq!(number(p("hz", None), 99, 1..=1000), Ok(99));
        assert_eq!(number(p("hz", Some("5")), 99, 1..=1000), Ok(5));
        let e = number(p("hz", Some("0")), 99, 1..=1000).unwrap_err();
        assert_eq!(e.hint, "hz must be between 1 and 1000");
        let e = number(p("hz", Some("x")), 99, 1..=1000).unwrap_err();
        assert_eq!(e.message, "hz=\"x\" is not a number");
        assert_eq!(e.hint, "use hz=99");
        assert_eq!(optional_number(p("limit", None), 1..=5), Ok(None));
        assert_eq!(optional_number(p("limit", Some("5")), 1..=5), Ok(Some(5)));
    }

    #[test]
    fn choices_default_to_the_first_and_list_every_one() {
        let choices = [("json", "NDJSON", 1), ("ctf", "a trace", 2)];
        assert_eq!(one_of(p("format", None), &choices), Ok(1));
        assert_eq!(one_of(p("format", Some("ctf")), &choices), Ok(2));
        let e = one_of(p("format", Some("xml")), &choices).unwrap_err();
        assert_eq!(e.message, "format=\"xml\" is not supported");
        assert_eq!(e.hint, "use format=json (NDJSON), format=ctf (a trace)");
    }

    #[test]
    fn unknown_and_repeated_parameters_are_refused() {
        let e = decode::<DumpRequest>(Some("pid=1&sconds=1")).unwrap_err();
        assert_eq!(e.message, "unknown parameter \"sconds\"");
        assert_eq!(e.hint, "parameters are pid, type, limit_mb");
        let e = decode::<DumpRequest>(Some("pid=1&pid=2")).unwrap_err();
        assert_eq!(e.message, "pid= is given more than once");
        assert_eq!(e.hint, "send pid= once");
        let dump = decode::<DumpRequest>(None).unwrap();
        assert_eq!(dump, DumpRequest::default());
    }

    #[test]
    fn values_someone_else_chose_are_quoted_short() {
        let long = "9".repeat(100_000);
        for e in [
            number(p("hz", Some(&long)), 1, 1..=2).unwrap_err(),
            boolean(p("k", Some(&long))).unwrap_err(),
            parse_pids(&long).unwrap_err(),
        ] {
            assert!(e.message.len() < 200, "{}", e.message);
        }
    }
}
