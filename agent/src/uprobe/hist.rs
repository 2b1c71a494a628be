//! In-agent aggregation for `aggregate=`, like bpftrace's `count()`,
//! `hist()` and `lhist()`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// How to aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    /// Calls per distinct value.
    Count,
    /// Power-of-two buckets.
    Log2,
    /// Buckets of this width.
    Linear(u64),
}

impl Aggregate {
    /// The name as the request spells it.
    pub fn name(self) -> String {
        match self {
            Self::Count => "count".to_owned(),
            Self::Log2 => "log2".to_owned(),
            Self::Linear(step) => format!("linear:{step}"),
        }
    }

    /// Parses `count`, `log2` or `linear:STEP`.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "count" => Some(Self::Count),
            "log2" => Some(Self::Log2),
            _ => {
                let step: u64 = raw.strip_prefix("linear:")?.parse().ok()?;
                (step > 0).then_some(Self::Linear(step))
            }
        }
    }
}

/// A histogram being filled.
#[derive(Debug, Clone)]
pub struct Histogram {
    kind: Aggregate,
    /// Bucket key (lower bound; for log2 the bucket index) → count.
    buckets: BTreeMap<i64, u64>,
    total: u64,
}

impl Histogram {
    /// An empty histogram.
    pub fn new(kind: Aggregate) -> Self {
        Self {
            kind,
            buckets: BTreeMap::new(),
            total: 0,
        }
    }

    /// Adds one value.
    pub fn add(&mut self, value: i64) {
        let key = match self.kind {
            Aggregate::Count => value,
            // -1 for negatives, 0 for zero, k for [2^(k-1), 2^k).
            Aggregate::Log2 if value < 0 => -1,
            Aggregate::Log2 => i64::from(64 - (value as u64).leading_zeros()),
            Aggregate::Linear(step) => value.div_euclid(step as i64) * step as i64,
        };
        *self.buckets.entry(key).or_insert(0) += 1;
        self.total += 1;
    }

    /// The result document.
    pub fn to_json(&self) -> Value {
        let buckets: Vec<Value> = match self.kind {
            Aggregate::Count => {
                let mut by_count: Vec<(&i64, &u64)> = self.buckets.iter().collect();
                by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
                by_count
                    .into_iter()
                    .take(100)
                    .map(|(v, c)| json!({"value": v, "count": c}))
                    .collect()
            }
            Aggregate::Log2 => self
                .buckets
                .iter()
                .map(|(k, c)| match *k {
                    -1 => json!({"low": null, "high": 0, "count": c}),
                    0 => json!({"low": 0, "high": 1, "count": c}),
                    k => json!({"low": 1u64 << (k - 1), "high": 1u128 << k, "count": c}),
                })
                .collect(),
            Aggregate::Linear(step) => self
                .buckets
                .iter()
                .map(|(low, c)| json!({"low": low, "high": low + step as i64, "count": c}))
                .collect(),
        };
        json!({"count": self.total, "buckets": buckets})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(h: &Histogram) -> Vec<u64> {
        h.to_json()["buckets"]
            .as_array()
            .map(|b| b.iter().filter_map(|x| x["count"].as_u64()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn log2_buckets_like_bpftrace() {
        let mut h = Histogram::new(Aggregate::Log2);
        for v in 0..1000 {
            h.add(v);
        }
        // [0,1) [1,2) [2,4) [4,8) … [512,1024)
        assert_eq!(counts(&h), vec![1, 1, 2, 4, 8, 16, 32, 64, 128, 256, 488]);
        let doc = h.to_json();
        assert_eq!(doc["buckets"][10]["low"], 512);
        assert_eq!(doc["buckets"][10]["high"], 1024);
        h.add(-5);
        assert_eq!(h.to_json()["buckets"][0]["high"], 0);
    }

    #[test]
    fn linear_and_count() {
        let mut h = Histogram::new(Aggregate::Linear(100));
        for v in 0..1000 {
            h.add(v);
        }
        assert_eq!(counts(&h), vec![100; 10]);
        let mut c = Histogram::new(Aggregate::Count);
        for v in [3, 1, 3, 3, 1, 7] {
            c.add(v);
        }
        assert_eq!(c.to_json()["buckets"][0], json!({"value": 3, "count": 3}));
        assert_eq!(c.to_json()["count"], 6);
        assert!(Aggregate::parse("linear:0").is_none());
        assert_eq!(Aggregate::parse("linear:5"), Some(Aggregate::Linear(5)));
    }
}
