//! `/v1/dump` requests.

use tracecar_api::request::DumpRequest;

use crate::dotnet::ipc::DumpType;
use crate::params::{self, SpecError};

/// A validated `/v1/dump` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpSpec {
    /// The process.
    pub pid: u32,
    /// What the dump contains.
    pub kind: DumpType,
    /// The largest dump sent, in MiB.
    pub limit_mb: u32,
}

/// The kinds, by their query names.
pub const KINDS: &[(&str, DumpType)] = &[
    ("mini", DumpType::Mini),
    ("heap", DumpType::Heap),
    ("triage", DumpType::Triage),
    ("full", DumpType::Full),
];

/// The name of a kind.
pub fn kind_name(kind: DumpType) -> &'static str {
    KINDS
        .iter()
        .find(|(_, k)| *k == kind)
        .map_or("heap", |(n, _)| n)
}

/// Parses a `/v1/dump` query. `type` defaults to `heap` (what
/// `dotnet-dump analyze` needs to walk objects; dotnet-monitor's default).
pub fn parse(request: &DumpRequest) -> Result<DumpSpec, SpecError> {
    let pid = params::required_pid(request.pid())?;
    let kind = match request.r#type.as_deref() {
        None => DumpType::Heap,
        Some(raw) => KINDS
            .iter()
            .find(|(n, _)| *n == raw)
            .map(|(_, k)| *k)
            .ok_or_else(|| {
                SpecError::new(
                    format!("type={} is not a dump type", tracecar_api::quoted(raw)),
                    "type=mini, heap (the default), triage or full",
                )
            })?,
    };
    let limit_mb = params::number(request.limit_mb(), 4096, 1..=65536)?;
    Ok(DumpSpec {
        pid,
        kind,
        limit_mb,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Result<DumpSpec, SpecError> {
        params::from_pairs(pairs).and_then(|r| parse(&r))
    }

    #[test]
    fn dump_queries() {
        let s = q(&[("pid", "3")]).unwrap();
        assert_eq!((s.pid, s.kind, s.limit_mb), (3, DumpType::Heap, 4096));
        let f = q(&[("pid", "3"), ("type", "full"), ("limit_mb", "10")]).unwrap();
        assert_eq!((f.kind, f.limit_mb), (DumpType::Full, 10));
        assert_eq!(kind_name(DumpType::Triage), "triage");
        assert!(q(&[("pid", "3"), ("type", "huge")]).is_err());
        assert!(q(&[("type", "full")]).is_err());
        assert!(q(&[("pid", "3"), ("limit_mb", "0")]).is_err());
    }
}
