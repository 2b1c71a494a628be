//! `/v1/profile` requests: query parameters → a validated [`ProfileSpec`].

use std::collections::HashMap;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Interactive flamegraph (inferno).
    Svg,
    /// `comm;outer;…;leaf count` lines.
    Folded,
    /// gzipped `perftools.profiles.Profile`.
    Pprof,
    /// speedscope's JSON file format.
    Speedscope,
    /// Aggregated stacks and metadata.
    Json,
}

impl Format {
    fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "svg" => Self::Svg,
            "folded" => Self::Folded,
            "pprof" => Self::Pprof,
            "speedscope" => Self::Speedscope,
            "json" => Self::Json,
            _ => return None,
        })
    }

    /// The HTTP content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Svg => "image/svg+xml",
            Self::Folded => "text/plain; charset=utf-8",
            Self::Pprof => "application/octet-stream",
            Self::Speedscope | Self::Json => "application/json",
        }
    }
}

/// How user stacks are walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unwind {
    /// Frame pointers where that is all there is.
    Auto,
    /// The kernel's frame-pointer callchain.
    Fp,
    /// User stack copies unwound from `.eh_frame`.
    Dwarf,
}

/// A validated profile request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileSpec {
    /// Target PIDs; `None` means every process of the pod but the agent.
    pub pids: Option<Vec<u32>>,
    /// Capture length.
    pub seconds: u32,
    /// Samples per second per CPU.
    pub hz: u32,
    /// Unwinding mode.
    pub unwind: Unwind,
    /// Kernel frames; `None` means "where kallsyms is readable".
    pub kernel: Option<bool>,
    /// Thread names as a root frame.
    pub threads: bool,
    /// Output format.
    pub format: Format,
}

/// A request parameter is invalid.
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

fn bad(message: impl Into<String>, hint: impl Into<String>) -> SpecError {
    SpecError::new(message, hint)
}

/// Rejects query parameters not in `known`, listing the ones that are.
pub fn reject_unknown(query: &HashMap<String, String>, known: &[&str]) -> Result<(), SpecError> {
    match query.keys().find(|k| !known.contains(&k.as_str())) {
        Some(unknown) => Err(bad(
            format!("unknown parameter {unknown:?}"),
            format!("parameters are {}", known.join(", ")),
        )),
        None => Ok(()),
    }
}

/// A whole-number parameter with a default and an allowed range.
pub(crate) fn number(
    query: &HashMap<String, String>,
    key: &str,
    default: u32,
    range: std::ops::RangeInclusive<u32>,
) -> Result<u32, SpecError> {
    let Some(raw) = query.get(key) else {
        return Ok(default);
    };
    let value: u32 = raw.parse().map_err(|_| {
        bad(
            format!("{key}={raw:?} is not a number"),
            format!("use {key}={default}"),
        )
    })?;
    if !range.contains(&value) {
        return Err(bad(
            format!("{key}={value} is out of range"),
            format!(
                "{key} must be between {} and {}",
                range.start(),
                range.end()
            ),
        ));
    }
    Ok(value)
}

fn boolean(query: &HashMap<String, String>, key: &str) -> Result<Option<bool>, SpecError> {
    match query.get(key).map(String::as_str) {
        None => Ok(None),
        Some("true" | "1") => Ok(Some(true)),
        Some("false" | "0") => Ok(Some(false)),
        Some(other) => Err(bad(
            format!("{key}={other:?} is not a boolean"),
            format!("use {key}=true or {key}=false"),
        )),
    }
}

/// Parses a comma list of PIDs.
pub fn parse_pids(raw: &str) -> Result<Vec<u32>, SpecError> {
    let pids: Result<Vec<u32>, _> = raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse::<u32>)
        .collect();
    match pids {
        Ok(p) if !p.is_empty() && !p.contains(&0) => Ok(p),
        _ => Err(bad(
            format!("pid={raw:?} is not a PID or a comma list of PIDs"),
            "list the pod's processes with GET /v1/processes",
        )),
    }
}

/// Validates `/v1/profile` query parameters.
pub fn parse(query: &HashMap<String, String>) -> Result<ProfileSpec, SpecError> {
    const KNOWN: [&str; 7] = [
        "pid", "seconds", "hz", "unwind", "kernel", "threads", "format",
    ];
    reject_unknown(query, &KNOWN)?;
    let format = match query.get("format") {
        None => Format::Svg,
        Some(f) => Format::parse(f).ok_or_else(|| {
            bad(
                format!("format={f:?} is not supported"),
                "use svg, folded, pprof, speedscope or json",
            )
        })?,
    };
    let unwind = match query.get("unwind").map(String::as_str) {
        None | Some("auto") => Unwind::Auto,
        Some("fp") => Unwind::Fp,
        Some("dwarf") => Unwind::Dwarf,
        Some(other) => {
            return Err(bad(
                format!("unwind={other:?} is not supported"),
                "use auto, fp or dwarf",
            ));
        }
    };
    Ok(ProfileSpec {
        pids: query.get("pid").map(|p| parse_pids(p)).transpose()?,
        seconds: number(query, "seconds", 10, 1..=600)?,
        hz: number(query, "hz", 99, 1..=1000)?,
        unwind,
        kernel: boolean(query, "kernel")?,
        threads: boolean(query, "threads")?.unwrap_or(false),
        format,
    })
}

/// A query map from pairs, for tests.
#[cfg(test)]
pub(crate) fn query_of(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        query_of(pairs)
    }

    #[test]
    fn defaults() {
        let spec = parse(&q(&[])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec.pids, None);
        assert_eq!((spec.seconds, spec.hz), (10, 99));
        assert_eq!(spec.unwind, Unwind::Auto);
        assert_eq!(spec.kernel, None);
        assert!(!spec.threads);
        assert_eq!(spec.format, Format::Svg);
    }

    #[test]
    fn full_request() {
        let spec = parse(&q(&[
            ("pid", "7, 9"),
            ("seconds", "30"),
            ("hz", "999"),
            ("unwind", "fp"),
            ("kernel", "false"),
            ("threads", "true"),
            ("format", "pprof"),
        ]))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec.pids, Some(vec![7, 9]));
        assert_eq!((spec.seconds, spec.hz), (30, 999));
        assert_eq!(spec.kernel, Some(false));
        assert!(spec.threads);
        assert_eq!(spec.format, Format::Pprof);
    }

    #[test]
    fn bad_values_have_hints() {
        for pairs in [
            &[("seconds", "0")][..],
            &[("seconds", "601")],
            &[("hz", "1001")],
            &[("hz", "fast")],
            &[("format", "png")],
            &[("unwind", "lbr")],
            &[("pid", "abc")],
            &[("pid", "0")],
            &[("pid", "")],
            &[("kernel", "maybe")],
            &[("second", "5")],
        ] {
            let err = parse(&q(pairs))
                .err()
                .unwrap_or_else(|| panic!("{pairs:?} accepted"));
            assert!(!err.hint.is_empty(), "{pairs:?}");
        }
    }
}
