//! `/v1/dotnet/trace` requests: the provider list in dotnet-trace's syntax
//! (`Name[:Keywords[:Level[:key=value;…]]]`, comma-separated) with named
//! presets, the format and the duration.
//!
//! Decisions, where dotnet-trace leaves room:
//! - omitted or empty keywords mean all keywords (`0xffffffffffffffff`);
//!   keywords are hex, with or without `0x`;
//! - an omitted level is 5 (verbose); a level is 0–5 or its name
//!   (`logalways`, `critical`, `error`, `warning`, `informational`,
//!   `verbose`);
//! - a provider named twice (also through a preset) gets the union of
//!   the keywords and the highest level; two different filter strings for
//!   one provider are an error.

use super::ipc::ProviderConfig;
use crate::params::SpecError;

/// The runtime's own provider.
const RUNTIME: &str = super::metadata::RUNTIME;

/// Named presets: what each enables.
pub const PRESETS: &[(&str, &str)] = &[
    // GC keyword (0x1), informational: GCStart/GCEnd/GCHeapStats/…
    ("gc", "Microsoft-Windows-DotNETRuntime:0x1:4"),
    // Exception keyword (0x8000).
    ("exceptions", "Microsoft-Windows-DotNETRuntime:0x8000:4"),
    // JIT (0x10) and Loader (0x8) at verbose: MethodLoadVerbose with names.
    ("jit", "Microsoft-Windows-DotNETRuntime:0x18:5"),
    // Threading keyword (0x10000): thread-pool worker events.
    ("threadpool", "Microsoft-Windows-DotNETRuntime:0x10000:4"),
    // The sample profiler (a managed stack per thread every ms) and the
    // runtime keywords dotnet-trace's cpu-sampling profile enables.
    (
        "cpu-sampling",
        "Microsoft-DotNETCore-SampleProfiler:0:5,Microsoft-Windows-DotNETRuntime:0x14C14FCCBD:4",
    ),
];

/// The most providers one session enables.
pub const MAX_PROVIDERS: usize = 32;

fn spec_error(message: String) -> SpecError {
    SpecError::new(
        message,
        format!(
            "providers=Name[:Keywords[:Level[:key=value;…]]],… or a preset: {}",
            PRESETS
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
}

fn level(raw: &str) -> Option<u32> {
    match raw.to_ascii_lowercase().as_str() {
        "" => Some(5),
        "logalways" => Some(0),
        "critical" => Some(1),
        "error" => Some(2),
        "warning" => Some(3),
        "informational" => Some(4),
        "verbose" => Some(5),
        n => n.parse().ok().filter(|l| *l <= 5),
    }
}

fn keywords(raw: &str) -> Option<u64> {
    if raw.is_empty() {
        return Some(u64::MAX);
    }
    let digits = raw
        .strip_prefix("0x")
        .or_else(|| raw.strip_prefix("0X"))
        .unwrap_or(raw);
    u64::from_str_radix(digits, 16).ok()
}

/// Parses one `Name[:Keywords[:Level[:args]]]`.
fn provider(raw: &str) -> Result<ProviderConfig, SpecError> {
    let mut parts = raw.splitn(4, ':');
    let name = parts.next().unwrap_or_default().trim();
    if name.is_empty() {
        return Err(spec_error(format!("provider {raw:?} has no name")));
    }
    if name.len() > 256 || name.chars().any(|c| c.is_control() || c == '=') {
        return Err(spec_error(format!("{name:?} is not a provider name")));
    }
    let kw = parts.next().unwrap_or_default();
    let keywords =
        keywords(kw).ok_or_else(|| spec_error(format!("keywords {kw:?} of {name} are not hex")))?;
    let lv = parts.next().unwrap_or_default();
    let level =
        level(lv).ok_or_else(|| spec_error(format!("level {lv:?} of {name} is not 0-5")))?;
    let filter = parts.next().filter(|f| !f.is_empty()).map(str::to_string);
    if let Some(f) = &filter
        && (f.len() > 1024 || f.chars().any(char::is_control))
    {
        return Err(spec_error(format!("arguments {f:?} of {name}")));
    }
    Ok(ProviderConfig {
        name: name.to_string(),
        keywords,
        level,
        filter,
    })
}

/// Parses a provider list, expanding presets and merging duplicates.
pub fn parse_providers(raw: &str) -> Result<Vec<ProviderConfig>, SpecError> {
    let mut out: Vec<ProviderConfig> = Vec::new();
    let mut add = |p: ProviderConfig| -> Result<(), SpecError> {
        match out.iter_mut().find(|o| o.name == p.name) {
            Some(o) => {
                if o.filter.is_some() && p.filter.is_some() && o.filter != p.filter {
                    return Err(spec_error(format!(
                        "{} is named twice with different arguments",
                        p.name
                    )));
                }
                o.keywords |= p.keywords;
                o.level = o.level.max(p.level);
                o.filter = o.filter.take().or(p.filter);
            }
            None => out.push(p),
        }
        Ok(())
    };
    for item in raw.split(',').map(str::trim) {
        if item.is_empty() {
            continue;
        }
        match PRESETS.iter().find(|(n, _)| *n == item) {
            Some((_, expansion)) => {
                for p in expansion.split(',') {
                    add(provider(p)?)?;
                }
            }
            None => add(provider(item)?)?,
        }
    }
    if out.is_empty() {
        return Err(spec_error("providers= is empty".into()));
    }
    if out.len() > MAX_PROVIDERS {
        return Err(spec_error(format!(
            "{} providers; at most {MAX_PROVIDERS}",
            out.len()
        )));
    }
    Ok(out)
}

/// Whether a provider list enables the runtime's JIT/loader events, which
/// rundown completes.
pub fn enables_runtime(providers: &[ProviderConfig]) -> bool {
    providers.iter().any(|p| p.name == RUNTIME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotnet_trace_syntax() {
        let p = parse_providers("Tracecar-Sample,My-Source:0x30:informational:A=1;B=x y").unwrap();
        assert_eq!(
            p[0],
            ProviderConfig {
                name: "Tracecar-Sample".into(),
                keywords: u64::MAX,
                level: 5,
                filter: None,
            }
        );
        assert_eq!(p[1].keywords, 0x30);
        assert_eq!(p[1].level, 4);
        assert_eq!(p[1].filter.as_deref(), Some("A=1;B=x y"));
        let empty_keywords = parse_providers("P::2").unwrap();
        assert_eq!(
            (empty_keywords[0].keywords, empty_keywords[0].level),
            (u64::MAX, 2)
        );
        // A filter may contain colons.
        let colons = parse_providers("P:1:4:FilterSpecs=a:b").unwrap();
        assert_eq!(colons[0].filter.as_deref(), Some("FilterSpecs=a:b"));
    }

    #[test]
    fn presets_expand_and_duplicates_merge() {
        let p = parse_providers("gc,exceptions,Tracecar-Sample").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].name, RUNTIME);
        assert_eq!(p[0].keywords, 0x8001);
        assert_eq!(p[0].level, 4);
        let cpu = parse_providers("cpu-sampling,jit").unwrap();
        assert_eq!(cpu[0].name, "Microsoft-DotNETCore-SampleProfiler");
        assert_eq!(cpu[1].keywords, 0x14C14FCCBD | 0x18);
        assert_eq!(cpu[1].level, 5);
        assert!(enables_runtime(&cpu));
        assert!(!enables_runtime(
            &parse_providers("Tracecar-Sample").unwrap()
        ));
    }

    #[test]
    fn bad_providers_say_what_and_how() {
        for bad in [
            "",
            ",",
            ":1:4",
            "P:zz",
            "P:1:9",
            "P:1:loud",
            "P:1:4:a=1,P:1:4:a=2",
        ] {
            let e = parse_providers(bad).unwrap_err();
            assert!(e.hint.contains("gc, exceptions"), "{bad}: {e:?}");
        }
        let many: Vec<String> = (0..40).map(|i| format!("P{i}")).collect();
        assert!(parse_providers(&many.join(",")).is_err());
    }
}
