//! JIT-compiled methods by name: the pure part. A runtime names each
//! compiled version of a method in its perf map (V8, HotSpot's `jcmd
//! Compiler.perfmap`, .NET with `PerfMapEnabled`) or in its method-load
//! events (.NET's runtime, through the diagnostic port); one method has
//! several versions when it is re-compiled (tiered compilation), each at
//! its own address. [`parse_name`] finds a method's identity and a
//! version's tier in such a name, and [`find`] picks the method a request
//! names, with every version of it.

use std::collections::BTreeMap;

/// Where a version was named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The process's `/tmp/perf-PID.map`.
    PerfMap,
    /// The .NET runtime's method table (rundown and method-load events).
    DotnetRuntime,
}

impl Source {
    /// Its name in summaries.
    pub fn name(self) -> &'static str {
        match self {
            Self::PerfMap => "perf-map",
            Self::DotnetRuntime => "dotnet-runtime",
        }
    }
}

/// One compiled version of a method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// Its first byte of code.
    pub start: u64,
    /// Bytes of code.
    pub size: u64,
    /// The name as the runtime wrote it.
    pub name: String,
    /// Its tier, where the runtime says (`QuickJitted`, `OptimizedTier1`,
    /// `optimized`, …).
    pub tier: Option<String>,
    /// Who named it.
    pub source: Source,
}

/// A method name taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodName {
    /// What identifies the method across its versions: the qualified name
    /// and the parameter list (or, for JavaScript, the source location).
    pub key: String,
    /// `Namespace.Type.Method`, with `::` written as `.`.
    pub qualified: String,
    /// The parameter list with its parentheses, or the JavaScript source
    /// location; may be empty.
    pub params: String,
    /// The version's tier, if the name carries it.
    pub tier: Option<String>,
}

/// V8's marks before a function name: how the code was compiled.
fn v8_tier(mark: char) -> Option<&'static str> {
    Some(match mark {
        '~' => "interpreted",
        '^' => "baseline",
        '+' => "maglev",
        '*' => "optimized",
        _ => return None,
    })
}

/// Takes a perf-map or runtime name apart:
/// - .NET perf maps: `int32 [App] Ns.Type::Method(int32)[QuickJitted]`;
/// - .NET runtime events: `Ns.Type.Method(int32)` (the tier comes apart);
/// - HotSpot: `int Work.work(int)`;
/// - V8: `JS:*work /app/x.js:2:14` (also `LazyCompile:`, `Function:`).
pub fn parse_name(raw: &str) -> MethodName {
    let raw = raw.trim();
    // V8: PREFIX:MARKname location
    if let Some((prefix, rest)) = raw.split_once(':')
        && matches!(prefix, "JS" | "LazyCompile" | "Function")
        && let Some(mark) = rest.chars().next()
        && let Some(tier) = v8_tier(mark)
    {
        let rest = &rest[mark.len_utf8()..];
        let (name, location) = rest.split_once(' ').unwrap_or((rest, ""));
        return MethodName {
            key: format!("{name} {location}").trim().to_owned(),
            qualified: name.to_owned(),
            params: location.to_owned(),
            tier: Some(tier.to_owned()),
        };
    }
    // .NET perf maps end with the tier in brackets.
    let (body, tier) = match raw.strip_suffix(']').and_then(|r| r.rsplit_once('[')) {
        Some((body, tier)) if !tier.is_empty() && tier.chars().all(char::is_alphanumeric) => {
            (body.trim_end(), Some(tier.to_owned()))
        }
        _ => (raw, None),
    };
    let (head, params) = match body.find('(') {
        Some(i) => (&body[..i], &body[i..]),
        None => (body, ""),
    };
    // The qualified name is the last word before the parameters: return
    // types, `instance` and `[module]` come before it.
    let qualified = head
        .split_whitespace()
        .next_back()
        .unwrap_or_default()
        .replace("::", ".");
    let params: String = params.split_whitespace().collect::<Vec<_>>().join(" ");
    MethodName {
        key: format!("{qualified}{params}"),
        qualified,
        params,
        tier,
    }
}

/// A method a request names, with its versions (lowest address first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method {
    /// Its identity ([`MethodName::key`]).
    pub key: String,
    /// Its versions.
    pub versions: Vec<Version>,
}

/// Why a name picks no method.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FindError {
    /// Nothing matches.
    #[error("no compiled method matches {symbol:?}")]
    Unknown {
        /// The name asked for.
        symbol: String,
        /// Methods with the closest names.
        closest: Vec<String>,
    },
    /// Several methods match.
    #[error("{symbol:?} matches {} methods", candidates.len())]
    Ambiguous {
        /// The name asked for.
        symbol: String,
        /// What it matches (at most 10).
        candidates: Vec<String>,
    },
}

fn normalize(s: &str) -> String {
    s.trim().replace("::", ".")
}

/// Picks the one method `symbol` names among `versions`: an exact name
/// (with or without its parameter list), else a method name (the last
/// part of the qualified name, with or without parameters), else a
/// substring of the full name. Every version of that method comes with
/// it.
pub fn find(
    symbol: &str,
    versions: impl IntoIterator<Item = Version>,
) -> Result<Method, FindError> {
    let wanted = normalize(symbol);
    let mut methods: BTreeMap<String, (MethodName, Vec<Version>)> = BTreeMap::new();
    for version in versions {
        let name = parse_name(&version.name);
        if name.qualified.is_empty() {
            continue;
        }
        let entry = methods
            .entry(name.key.clone())
            .or_insert_with(|| (name, Vec::new()));
        if !entry.1.iter().any(|v| v.start == version.start) {
            entry.1.push(version);
        }
    }
    let short = |q: &str| q.rsplit('.').next().unwrap_or(q).to_owned();
    let levels: [&dyn Fn(&MethodName) -> bool; 3] = [
        &|n| wanted == n.key || wanted == n.qualified,
        &|n| {
            let method = short(&n.qualified);
            wanted == method || wanted == format!("{method}{}", n.params)
        },
        &|n| !wanted.is_empty() && n.key.contains(&wanted),
    ];
    for matches in levels {
        let hits: Vec<&String> = methods
            .iter()
            .filter(|(_, (name, _))| matches(name))
            .map(|(key, _)| key)
            .collect();
        match hits.as_slice() {
            [] => continue,
            [key] => {
                let key = (*key).clone();
                let mut versions = methods.remove(&key).map(|m| m.1).unwrap_or_default();
                versions.sort_by_key(|v| v.start);
                return Ok(Method { key, versions });
            }
            many => {
                return Err(FindError::Ambiguous {
                    symbol: symbol.to_owned(),
                    candidates: many.iter().take(10).map(|k| (*k).clone()).collect(),
                });
            }
        }
    }
    let mut scored: Vec<(usize, &String)> = methods
        .keys()
        .map(|k| {
            let name = &methods[k].0;
            let d = strsim::levenshtein(&short(&name.qualified), &short(&wanted))
                .min(strsim::levenshtein(k, &wanted));
            (d, k)
        })
        .collect();
    scored.sort();
    Err(FindError::Unknown {
        symbol: symbol.to_owned(),
        closest: scored.into_iter().take(5).map(|(_, k)| k.clone()).collect(),
    })
}

/// The new versions of `key` among `versions` (not yet in `known`).
pub fn new_versions<'a>(
    key: &'a str,
    versions: impl IntoIterator<Item = Version> + 'a,
    known: &'a std::collections::BTreeSet<u64>,
) -> impl Iterator<Item = Version> + 'a {
    versions
        .into_iter()
        .filter(move |v| !known.contains(&v.start) && parse_name(&v.name).key == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(start: u64, name: &str) -> Version {
        Version {
            start,
            size: 0x40,
            name: name.to_owned(),
            tier: parse_name(name).tier,
            source: Source::PerfMap,
        }
    }

    #[test]
    fn names_from_every_runtime() {
        let dotnet = parse_name(
            "instance int32 [App] Tracecar.Sample.Seed.FibonacciProvider::calculateFibonacciValue(int32)[OptimizedTier1]",
        );
        assert_eq!(
            dotnet.qualified,
            "Tracecar.Sample.Seed.FibonacciProvider.calculateFibonacciValue"
        );
        assert_eq!(dotnet.params, "(int32)");
        assert_eq!(dotnet.tier.as_deref(), Some("OptimizedTier1"));
        // The runtime's own name for it has the same identity.
        assert_eq!(
            parse_name("Tracecar.Sample.Seed.FibonacciProvider.calculateFibonacciValue(int32)").key,
            dotnet.key
        );
        let java = parse_name("int Work.work(int)");
        assert_eq!(
            (java.qualified.as_str(), java.params.as_str()),
            ("Work.work", "(int)")
        );
        assert_eq!(java.tier, None);
        let js = parse_name("JS:*work /tmp/g.js:2:14");
        assert_eq!(js.qualified, "work");
        assert_eq!(js.key, "work /tmp/g.js:2:14");
        assert_eq!(js.tier.as_deref(), Some("optimized"));
        assert_eq!(
            parse_name("JS:~work /tmp/g.js:2:14").key,
            js.key,
            "one function across tiers"
        );
        assert_eq!(
            parse_name("LazyCompile:^fib /a.js:1").tier.as_deref(),
            Some("baseline")
        );
        // A C++-ish name with spaces in its parameters.
        assert_eq!(
            parse_name("void ns::f(int, char const*)").key,
            "ns.f(int, char const*)"
        );
    }

    #[test]
    fn a_method_is_found_with_all_its_versions() {
        let map = [
            v(
                0x3000,
                "int32 [App] Shop.Cart::Total(int32)[OptimizedTier1]",
            ),
            v(0x1000, "int32 [App] Shop.Cart::Total(int32)[QuickJitted]"),
            v(
                0x2000,
                "void [App] Shop.Cart::Add(class Shop.Item)[QuickJitted]",
            ),
            v(0x4000, "int32 [App] Shop.Order::Total(int32)[QuickJitted]"),
        ];
        for symbol in [
            "Shop.Cart.Total",
            "Shop.Cart::Total",
            "Shop.Cart.Total(int32)",
            "Cart.Total",
        ] {
            let method = find(symbol, map.clone()).unwrap_or_else(|e| panic!("{symbol}: {e}"));
            assert_eq!(method.key, "Shop.Cart.Total(int32)", "{symbol}");
            let starts: Vec<u64> = method.versions.iter().map(|v| v.start).collect();
            assert_eq!(starts, vec![0x1000, 0x3000], "{symbol}");
        }
        // By method name, when only one method has it.
        assert_eq!(find("Add", map.clone()).map(|m| m.versions.len()), Ok(1));
        // Two methods are called Total: the request must say which.
        match find("Total", map.clone()) {
            Err(FindError::Ambiguous { candidates, .. }) => assert_eq!(
                candidates,
                vec!["Shop.Cart.Total(int32)", "Shop.Order.Total(int32)"]
            ),
            other => panic!("{other:?}"),
        }
        match find("Totl", map) {
            Err(FindError::Unknown { closest, .. }) => {
                assert!(closest[0].contains("Total"), "{closest:?}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn new_versions_are_those_not_probed_yet() {
        let key = parse_name("JS:~work /a.js:1:1").key;
        let known = std::collections::BTreeSet::from([0x1000]);
        let all = [
            v(0x1000, "JS:~work /a.js:1:1"),
            v(0x2000, "JS:*work /a.js:1:1"),
            v(0x3000, "JS:*other /a.js:9:1"),
        ];
        let new: Vec<u64> = new_versions(&key, all, &known).map(|v| v.start).collect();
        assert_eq!(new, vec![0x2000]);
    }
}
