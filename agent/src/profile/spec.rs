//! `/v1/profile` requests: query parameters → a validated [`ProfileSpec`].

use crate::api::query::{self, Query, SpecError, reject_unknown};

pub use crate::stacks::{Format, Unwind};

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

/// How each capture samples: the parameters `/v1/profile` and
/// `/v1/profile/trigger` share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sampling {
    /// Samples per second per CPU.
    pub hz: u32,
    /// Unwinding mode.
    pub unwind: Unwind,
    /// Kernel frames; `None` means "where kallsyms is readable".
    pub kernel: Option<bool>,
    /// Thread names as a root frame.
    pub threads: bool,
}

/// The query parameters [`Sampling`] reads.
pub const SAMPLING_PARAMETERS: [&str; 4] = ["hz", "unwind", "kernel", "threads"];

/// Parses `unwind=` (`/v1/profile` and probes with stacks).
pub fn unwind(query: &Query) -> Result<Unwind, SpecError> {
    let raw = query.get("unwind").map(String::as_str);
    Unwind::parse(raw).ok_or_else(|| {
        SpecError::new(
            format!("unwind={:?} is not supported", raw.unwrap_or_default()),
            "use auto, fp or dwarf",
        )
    })
}

/// Parses `hz`, `unwind`, `kernel` and `threads`.
pub fn sampling(query: &Query) -> Result<Sampling, SpecError> {
    let unwind = unwind(query)?;
    Ok(Sampling {
        hz: query::number(query, "hz", 99, 1..=1000)?,
        unwind,
        kernel: query::boolean(query, "kernel")?,
        threads: query::boolean(query, "threads")?.unwrap_or(false),
    })
}

impl ProfileSpec {
    /// A profile of `pids` for `seconds`, sampled as `sampling` says.
    pub fn new(pids: Option<Vec<u32>>, seconds: u32, sampling: Sampling, format: Format) -> Self {
        Self {
            pids,
            seconds,
            hz: sampling.hz,
            unwind: sampling.unwind,
            kernel: sampling.kernel,
            threads: sampling.threads,
            format,
        }
    }
}

/// Validates `/v1/profile` query parameters.
pub fn parse(query: &Query) -> Result<ProfileSpec, SpecError> {
    const KNOWN: [&str; 7] = [
        "pid", "seconds", "hz", "unwind", "kernel", "threads", "format",
    ];
    reject_unknown(query, &KNOWN)?;
    let format = match query.get("format") {
        None => Format::Svg,
        Some(f) => Format::parse(f).ok_or_else(|| {
            SpecError::new(
                format!("format={f:?} is not supported"),
                format!("use {}", Format::NAMES),
            )
        })?,
    };
    Ok(ProfileSpec::new(
        query::pids(query)?,
        query::seconds(query, 10, 1..=600)?,
        sampling(query)?,
        format,
    ))
}

/// A query map from pairs, for tests.
#[cfg(test)]
pub(crate) fn query_of(pairs: &[(&str, &str)]) -> Query {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Query {
        query_of(pairs)
    }

    #[test]
    fn defaults() {
        let spec = parse(&q(&[])).unwrap();
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
        .unwrap();
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
