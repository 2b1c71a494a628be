//! A counters snapshot in the Prometheus text exposition format.

use std::collections::BTreeMap;

use tracecar_api::dotnet::CounterSnapshot;

/// A Prometheus metric name: `provider_counter` in lowercase, with every
/// other character an underscore.
pub fn metric_name(provider: &str, counter: &str) -> String {
    let raw = format!("{provider}_{counter}").to_ascii_lowercase();
    let mut out: String = raw
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// A Prometheus label name from a metric's tag: `[a-zA-Z0-9_]`, and the
/// labels the exposition sets itself left to them.
fn label_name(tag: &str) -> String {
    let mut out: String = tag
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.is_empty()
        || out.starts_with(|c: char| c.is_ascii_digit())
        || matches!(out.as_str(), "pid" | "provider" | "quantile")
        || out.starts_with("__")
    {
        out.insert_str(0, "tag_");
    }
    out
}

/// A label value, escaped.
fn label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A snapshot in the Prometheus text exposition format. Every value is a
/// gauge: a mean, the increment over the interval, a last value; a
/// histogram is its quantiles (label `quantile`) with `_count` and `_sum`
/// over the interval. A metric's tags are labels. Series of one metric
/// name are grouped under one `# TYPE`, as the format requires.
pub fn prometheus(snapshot: &CounterSnapshot) -> String {
    // Metric name → (help, lines).
    let mut families: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    let interval = snapshot.interval_s;
    for (provider, counters) in &snapshot.counters {
        for (key, v) in counters {
            let name = key.split('{').next().unwrap_or(key);
            let metric = metric_name(provider, name);
            let what = match v.kind.as_str() {
                "sum" => format!("increment over {interval}s"),
                "mean" => format!("mean over {interval}s"),
                "histogram" => format!("quantiles over {interval}s"),
                _ => "last value".to_string(),
            };
            let unit = if v.unit.is_empty() {
                String::new()
            } else {
                format!(", {}", v.unit)
            };
            let help = |text: String| text.replace('\\', "\\\\").replace('\n', " ");
            let mut labels = format!(
                "pid=\"{}\",provider=\"{}\"",
                snapshot.pid,
                label_value(provider)
            );
            for (tag, value) in &v.tags {
                labels.push_str(&format!(",{}=\"{}\"", label_name(tag), label_value(value)));
            }
            let mut line = |family: String, help: String, line: String| {
                families
                    .entry(family)
                    .or_insert_with(|| (help, Vec::new()))
                    .1
                    .push(line);
            };
            if v.kind == "histogram" {
                for (quantile, value) in &v.quantiles {
                    line(
                        metric.clone(),
                        help(format!("{} ({what}{unit})", v.display)),
                        format!(
                            "{metric}{{{labels},quantile=\"{}\"}} {value}",
                            label_value(quantile)
                        ),
                    );
                }
                line(
                    format!("{metric}_count"),
                    help(format!("{} (measurements over {interval}s)", v.display)),
                    format!("{metric}_count{{{labels}}} {}", v.count.unwrap_or(0)),
                );
                line(
                    format!("{metric}_sum"),
                    help(format!("{} (sum over {interval}s{unit})", v.display)),
                    format!("{metric}_sum{{{labels}}} {}", v.sum.unwrap_or(0.0)),
                );
            } else {
                line(
                    metric.clone(),
                    help(format!("{} ({what}{unit})", v.display)),
                    format!("{metric}{{{labels}}} {}", v.value),
                );
            }
        }
    }
    let mut out = String::new();
    for (metric, (help, lines)) in families {
        out.push_str(&format!("# HELP {metric} {help}\n# TYPE {metric} gauge\n"));
        for line in lines {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}
