//! The query-parameter parsers every endpoint's spec module shares: one
//! error type, one unknown-parameter check, and one parser each for a
//! number, a boolean, a PID, a PID list and a duration in seconds. A
//! parameter means the same, and fails the same way, on every endpoint.

use std::collections::HashMap;
use std::ops::RangeInclusive;

/// The query string as axum hands it over.
pub type Query = HashMap<String, String>;

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

/// Rejects query parameters not in `known`, listing the ones that are.
pub fn reject_unknown(query: &Query, known: &[&str]) -> Result<(), SpecError> {
    match query.keys().find(|k| !known.contains(&k.as_str())) {
        Some(unknown) => Err(SpecError::new(
            format!("unknown parameter {unknown:?}"),
            format!("parameters are {}", known.join(", ")),
        )),
        None => Ok(()),
    }
}

/// A whole-number parameter with a default and an allowed range.
pub fn number(
    query: &Query,
    key: &str,
    default: u32,
    range: RangeInclusive<u32>,
) -> Result<u32, SpecError> {
    match query.get(key) {
        None => Ok(default),
        Some(raw) => in_range(key, raw, &range, default),
    }
}

/// A whole-number parameter that may be absent.
pub fn optional_number(
    query: &Query,
    key: &str,
    range: RangeInclusive<u32>,
) -> Result<Option<u32>, SpecError> {
    query
        .get(key)
        .map(|raw| in_range(key, raw, &range, *range.start()))
        .transpose()
}

fn in_range(
    key: &str,
    raw: &str,
    range: &RangeInclusive<u32>,
    example: u32,
) -> Result<u32, SpecError> {
    let value: u32 = raw.parse().map_err(|_| {
        SpecError::new(
            format!("{key}={raw:?} is not a number"),
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
    Ok(value)
}

/// A duration in whole seconds (`seconds=`), with a default and a range.
pub fn seconds(query: &Query, default: u32, range: RangeInclusive<u32>) -> Result<u32, SpecError> {
    number(query, "seconds", default, range)
}

/// A boolean parameter: `true`/`false` or `1`/`0`; `None` when absent.
pub fn boolean(query: &Query, key: &str) -> Result<Option<bool>, SpecError> {
    match query.get(key).map(String::as_str) {
        None => Ok(None),
        Some("true" | "1") => Ok(Some(true)),
        Some("false" | "0") => Ok(Some(false)),
        Some(other) => Err(SpecError::new(
            format!("{key}={other:?} is not a boolean"),
            format!("use {key}=true or {key}=false"),
        )),
    }
}

/// A parameter that names one of `choices` (`(value, meaning, what it
/// parses to)`); the first choice when absent. The error lists every
/// value with its meaning.
pub fn one_of<T: Copy>(
    query: &Query,
    key: &str,
    choices: &[(&str, &str, T)],
) -> Result<T, SpecError> {
    let Some(raw) = query.get(key) else {
        return choices.first().map(|c| c.2).ok_or_else(|| {
            SpecError::new(
                format!("{key}= has no choices"),
                "this is a bug in the agent",
            )
        });
    };
    choices
        .iter()
        .find(|(name, _, _)| name == raw)
        .map(|c| c.2)
        .ok_or_else(|| {
            let listed: Vec<String> = choices
                .iter()
                .map(|(name, meaning, _)| format!("{key}={name} ({meaning})"))
                .collect();
            SpecError::new(
                format!("{key}={raw:?} is not supported"),
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
            format!("pid={raw:?} is not a PID or a comma list of PIDs"),
            PID_HINT,
        )),
    }
}

/// `pid=` as a list of PIDs; `None` when absent.
pub fn pids(query: &Query) -> Result<Option<Vec<u32>>, SpecError> {
    query.get("pid").map(|p| parse_pids(p)).transpose()
}

/// `pid=` naming exactly one process; `None` when absent.
pub fn one_pid(query: &Query) -> Result<Option<u32>, SpecError> {
    match pids(query)?.as_deref() {
        None => Ok(None),
        Some([one]) => Ok(Some(*one)),
        Some(_) => Err(SpecError::new(
            "pid takes one process here",
            format!("pass a single pid=P; {PID_HINT}"),
        )),
    }
}

/// `pid=` naming exactly one process, which this endpoint requires.
pub fn required_pid(query: &Query) -> Result<u32, SpecError> {
    one_pid(query)?.ok_or_else(|| {
        SpecError::new(
            "pid=P is required (one process)",
            format!("pass a single pid=P; {PID_HINT}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> Query {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn booleans_take_words_and_digits() {
        for (raw, want) in [("true", true), ("1", true), ("false", false), ("0", false)] {
            assert_eq!(boolean(&query(&[("k", raw)]), "k"), Ok(Some(want)));
        }
        assert_eq!(boolean(&query(&[]), "k"), Ok(None));
        let e = boolean(&query(&[("k", "yes")]), "k").unwrap_err();
        assert_eq!(e.hint, "use k=true or k=false");
    }

    #[test]
    fn pids_one_and_many() {
        assert_eq!(pids(&query(&[("pid", "7, 9")])), Ok(Some(vec![7, 9])));
        assert_eq!(one_pid(&query(&[("pid", "7")])), Ok(Some(7)));
        assert!(one_pid(&query(&[("pid", "7,9")])).is_err());
        assert_eq!(one_pid(&query(&[])), Ok(None));
        assert!(required_pid(&query(&[])).is_err());
        for bad in ["", "0", "x", "7,x"] {
            assert!(parse_pids(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn numbers_and_ranges() {
        assert_eq!(number(&query(&[]), "hz", 99, 1..=1000), Ok(99));
        assert_eq!(number(&query(&[("hz", "5")]), "hz", 99, 1..=1000), Ok(5));
        let e = number(&query(&[("hz", "0")]), "hz", 99, 1..=1000).unwrap_err();
        assert_eq!(e.hint, "hz must be between 1 and 1000");
        assert!(number(&query(&[("hz", "x")]), "hz", 99, 1..=1000).is_err());
        assert_eq!(seconds(&query(&[("seconds", "3")]), 10, 1..=60), Ok(3));
        assert_eq!(optional_number(&query(&[]), "limit", 1..=5), Ok(None));
    }

    #[test]
    fn choices_default_to_the_first_and_list_every_one() {
        let choices = [("json", "NDJSON", 1), ("ctf", "a trace", 2)];
        assert_eq!(one_of(&query(&[]), "format", &choices), Ok(1));
        assert_eq!(
            one_of(&query(&[("format", "ctf")]), "format", &choices),
            Ok(2)
        );
        let e = one_of(&query(&[("format", "xml")]), "format", &choices).unwrap_err();
        assert_eq!(e.message, "format=\"xml\" is not supported");
        assert_eq!(e.hint, "use format=json (NDJSON), format=ctf (a trace)");
    }

    #[test]
    fn unknown_parameters_list_the_known_ones() {
        let e = reject_unknown(&query(&[("sconds", "1")]), &["pid", "seconds"]).unwrap_err();
        assert_eq!(e.message, "unknown parameter \"sconds\"");
        assert_eq!(e.hint, "parameters are pid, seconds");
    }
}
