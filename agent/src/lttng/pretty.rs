//! One line of `babeltrace2 --clock-seconds --no-delta --names=all` → one
//! NDJSON event. babeltrace2 prints every scope as `name = value` with
//! structures in `{ }`, arrays as `[ [0] = v, … ]`, enumerations as
//! `( "LABEL" : container = N )` and C-escaped strings, one event per
//! line; this is a recursive-descent parser for exactly that.
//!
//! Typing: decimal integers become JSON numbers, floats become numbers
//! (NaN and infinities become strings), integers the tracer declared as
//! hexadecimal (pointers, usually) stay strings such as `"0x7FFD…"` so that
//! JavaScript readers don't round them, enumerations become
//! `{"label": "RED", "value": 0}`, and the hidden `_NAME_length` field of a
//! sequence is dropped (the array has its length).

use serde_json::{Map, Number, Value};

/// A line that is not in the expected shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot parse babeltrace2 output at byte {at}: {what}")]
pub struct PrettyError {
    /// Byte offset in the line.
    pub at: usize,
    /// What was expected.
    pub what: &'static str,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn error(&self, what: &'static str) -> PrettyError {
        PrettyError { at: self.at, what }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.at += 1;
        }
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_spaces();
        if self.bytes[self.at..].starts_with(token.as_bytes()) {
            self.at += token.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, token: &'static str) -> Result<(), PrettyError> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(self.error(token))
        }
    }

    /// A run of bytes up to a delimiter: names, numbers, bare words.
    fn bare(&mut self) -> &'a str {
        self.skip_spaces();
        let start = self.at;
        while let Some(b) = self.peek() {
            if matches!(b, b',' | b' ' | b'}' | b']' | b')') {
                break;
            }
            self.at += 1;
        }
        std::str::from_utf8(&self.bytes[start..self.at]).unwrap_or_default()
    }

    /// A key up to ` = `.
    fn key(&mut self) -> Result<&'a str, PrettyError> {
        self.skip_spaces();
        let start = self.at;
        while !self.bytes[self.at..].starts_with(b" = ") {
            if self.at >= self.bytes.len() {
                return Err(self.error("a `name = value` pair"));
            }
            self.at += 1;
        }
        let key = std::str::from_utf8(&self.bytes[start..self.at]).unwrap_or_default();
        self.at += 3;
        Ok(key)
    }

    fn string(&mut self) -> Result<String, PrettyError> {
        self.expect("\"")?;
        let mut out = Vec::new();
        loop {
            let Some(b) = self.peek() else {
                return Err(self.error("a closing quote"));
            };
            self.at += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let escaped = self.peek().ok_or_else(|| self.error("an escape"))?;
                    self.at += 1;
                    out.push(match escaped {
                        b'n' => b'\n',
                        b't' => b'\t',
                        b'r' => b'\r',
                        b'a' => 0x07,
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'v' => 0x0b,
                        b'e' => 0x1b,
                        b'0' => 0,
                        b'x' => {
                            let hex = self
                                .bytes
                                .get(self.at..self.at + 2)
                                .and_then(|h| std::str::from_utf8(h).ok())
                                .and_then(|h| u8::from_str_radix(h, 16).ok())
                                .ok_or_else(|| self.error("two hex digits after \\x"))?;
                            self.at += 2;
                            hex
                        }
                        other => other,
                    });
                }
                other => out.push(other),
            }
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    fn value(&mut self) -> Result<Value, PrettyError> {
        self.skip_spaces();
        match self.peek() {
            Some(b'{') => self.structure(),
            Some(b'[') => self.array(),
            Some(b'(') => self.enumeration(),
            Some(b'"') => self.string().map(Value::String),
            Some(_) => Ok(scalar(self.bare())),
            None => Err(self.error("a value")),
        }
    }

    fn structure(&mut self) -> Result<Value, PrettyError> {
        self.expect("{")?;
        let mut fields = Map::new();
        if self.eat("}") {
            return Ok(Value::Object(fields));
        }
        loop {
            let key = self.key()?.to_owned();
            let value = self.value()?;
            fields.insert(key, value);
            if self.eat(",") {
                continue;
            }
            self.expect("}")?;
            break;
        }
        drop_sequence_lengths(&mut fields);
        Ok(Value::Object(fields))
    }

    fn array(&mut self) -> Result<Value, PrettyError> {
        self.expect("[")?;
        let mut items = Vec::new();
        if self.eat("]") {
            return Ok(Value::Array(items));
        }
        loop {
            // `[i] = value`
            self.expect("[")?;
            self.bare();
            self.expect("]")?;
            self.expect("=")?;
            items.push(self.value()?);
            if self.eat(",") {
                continue;
            }
            self.expect("]")?;
            break;
        }
        Ok(Value::Array(items))
    }

    /// `( "LABEL" : container = N )`, `( { "A", "B" } : container = N )` or
    /// `( <unknown> : container = N )`.
    fn enumeration(&mut self) -> Result<Value, PrettyError> {
        self.expect("(")?;
        self.skip_spaces();
        let label = match self.peek() {
            Some(b'"') => Value::String(self.string()?),
            Some(b'{') => {
                self.expect("{")?;
                let mut labels = Vec::new();
                while !self.eat("}") {
                    labels.push(Value::String(self.string()?));
                    self.eat(",");
                }
                Value::Array(labels)
            }
            _ => {
                self.expect("<unknown>")?;
                Value::Null
            }
        };
        self.expect(":")?;
        self.expect("container")?;
        self.expect("=")?;
        let value = self.value()?;
        self.expect(")")?;
        let mut object = Map::new();
        object.insert("label".to_owned(), label);
        object.insert("value".to_owned(), value);
        Ok(Value::Object(object))
    }
}

/// Drops `_NAME_length` when `NAME` is a field: LTTng's hidden length of
/// a sequence.
fn drop_sequence_lengths(fields: &mut Map<String, Value>) {
    let hidden: Vec<String> = fields
        .keys()
        .filter(|k| {
            k.strip_prefix('_')
                .and_then(|k| k.strip_suffix("_length"))
                .is_some_and(|name| fields.contains_key(name))
        })
        .cloned()
        .collect();
    for key in hidden {
        fields.remove(&key);
    }
}

/// A bare token: an integer, a float, a hex integer (kept as a string), or
/// a word.
fn scalar(token: &str) -> Value {
    if token.starts_with("0x") || token.starts_with("0b") {
        return Value::String(token.to_owned());
    }
    if let Ok(n) = token.parse::<i64>() {
        return Value::Number(n.into());
    }
    if let Ok(n) = token.parse::<u64>() {
        return Value::Number(n.into());
    }
    if let Some(n) = token.parse::<f64>().ok().and_then(Number::from_f64) {
        return Value::Number(n);
    }
    Value::String(token.to_owned())
}

/// `1795702915.954804063` → nanoseconds since the epoch.
fn timestamp_ns(raw: &str) -> Option<u64> {
    let (seconds, fraction) = raw.split_once('.').unwrap_or((raw, "0"));
    if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let scale = 10u64.pow(9 - fraction.len() as u32);
    seconds
        .parse::<u64>()
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(fraction.parse::<u64>().ok()? * scale)
}

/// One event line → `{ts_ns, event, pid, tid, procname, cpu, fields}`.
pub fn event(line: &str) -> Result<Value, PrettyError> {
    let mut cursor = Cursor {
        bytes: line.trim_end().as_bytes(),
        at: 0,
    };
    let mut scopes = Map::new();
    loop {
        let key = cursor.key()?.to_owned();
        let value = match key.as_str() {
            // Bare words at the top level.
            "timestamp" | "trace:hostname" | "name" => Value::String(cursor.bare().to_owned()),
            _ => cursor.value()?,
        };
        scopes.insert(key, value);
        if !cursor.eat(",") {
            break;
        }
    }
    if cursor.at < cursor.bytes.len() {
        return Err(cursor.error("the end of the line"));
    }
    let ts_ns = scopes
        .get("timestamp")
        .and_then(Value::as_str)
        .and_then(timestamp_ns)
        .ok_or(PrettyError {
            at: 0,
            what: "a timestamp in seconds",
        })?;
    let context = scopes.get("stream.event.context");
    let from_context = |name: &str| context.and_then(|c| c.get(name)).cloned();
    let mut out = Map::new();
    out.insert("ts_ns".to_owned(), ts_ns.into());
    out.insert(
        "event".to_owned(),
        scopes.get("name").cloned().unwrap_or(Value::Null),
    );
    out.insert(
        "pid".to_owned(),
        from_context("vpid").unwrap_or(Value::Null),
    );
    out.insert(
        "tid".to_owned(),
        from_context("vtid").unwrap_or(Value::Null),
    );
    out.insert(
        "procname".to_owned(),
        from_context("procname").unwrap_or(Value::Null),
    );
    out.insert(
        "cpu".to_owned(),
        scopes
            .get("stream.packet.context")
            .and_then(|c| c.get("cpu_id"))
            .cloned()
            .unwrap_or(Value::Null),
    );
    out.insert(
        "fields".to_owned(),
        scopes
            .remove("event.fields")
            .unwrap_or_else(|| Value::Object(Map::new())),
    );
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Printed by babeltrace2 2.0.4 for a provider with every field kind.
    const RICH: &str = r#"timestamp = 1795702915.954811614, trace:hostname = vm, name = rich:ev, stream.packet.context = { cpu_id = 1 }, stream.event.context = { vpid = 4194, vtid = 4195, procname = "richapp" }, event.fields = { i = 1, neg = -1, d = 1.5, s = "tab\there \"q\" \\ é\x01 end", arr = [ [0] = 1, [1] = 2, [2] = 3 ], _seq_length = 1, seq = [ [0] = 1 ], empty = [ ], p = 0x7FFFCC5CEC94, color = ( "GREEN" : container = 1 ), txt = "tab\t", big = 18446744073709551615, nan = -nan, nested = { a = { } } }"#;

    #[test]
    fn every_field_kind_is_typed() {
        let event = event(RICH).expect("parses");
        assert_eq!(
            event,
            json!({
                "ts_ns": 1_795_702_915_954_811_614_u64,
                "event": "rich:ev",
                "pid": 4194,
                "tid": 4195,
                "procname": "richapp",
                "cpu": 1,
                "fields": {
                    "i": 1,
                    "neg": -1,
                    "d": 1.5,
                    "s": "tab\there \"q\" \\ é\u{1} end",
                    "arr": [1, 2, 3],
                    "seq": [1],
                    "empty": [],
                    "p": "0x7FFFCC5CEC94",
                    "color": {"label": "GREEN", "value": 1},
                    "txt": "tab\t",
                    "big": 18_446_744_073_709_551_615_u64,
                    "nan": "-nan",
                    "nested": {"a": {}},
                }
            })
        );
    }

    #[test]
    fn enumerations_with_many_or_no_labels() {
        let line = r#"timestamp = 1.5, name = a:b, event.fields = { both = ( { "A", "B" } : container = 3 ), none = ( <unknown> : container = 9 ) }"#;
        let event = event(line).expect("parses");
        assert_eq!(event["ts_ns"], 1_500_000_000);
        assert_eq!(
            event["fields"],
            json!({
                "both": {"label": ["A", "B"], "value": 3},
                "none": {"label": null, "value": 9},
            })
        );
        assert_eq!(event["pid"], Value::Null);
    }

    #[test]
    fn malformed_lines_are_errors() {
        for line in [
            "",
            "WARNING: Tracer discarded 3 events",
            r#"timestamp = 1.0, name = a:b, event.fields = { s = "open }"#,
            r#"timestamp = 1.0, name = a:b, event.fields = { a = [ [0] = 1 }"#,
            r#"timestamp = x, name = a:b"#,
            r#"timestamp = 1.0, name = a:b, event.fields = { s = "\x4" }"#,
        ] {
            assert!(event(line).is_err(), "{line}");
        }
    }

    #[test]
    fn timestamps_keep_every_nanosecond() {
        assert_eq!(timestamp_ns("12.000000001"), Some(12_000_000_001));
        assert_eq!(timestamp_ns("12.5"), Some(12_500_000_000));
        assert_eq!(timestamp_ns("12"), Some(12_000_000_000));
        assert_eq!(timestamp_ns("12.0000000001"), None);
        assert_eq!(timestamp_ns("-1.0"), None);
    }
}
