//! RFC 6902 `add` operations with escaped pointers.

use super::error::InjectError;
use json_patch::{AddOperation, Patch, PatchOperation};
use jsonptr::PointerBuf;
use serde::Serialize;
use serde_json::Value;

pub(super) fn json<T: Serialize>(what: &'static str, value: &T) -> Result<Value, InjectError> {
    serde_json::to_value(value).map_err(|source| InjectError::Serialize { what, source })
}

pub(super) fn to_values<T: Serialize>(
    what: &'static str,
    items: &[T],
) -> Result<Vec<Value>, InjectError> {
    items.iter().map(|item| json(what, item)).collect()
}

/// Accumulates `add` operations with properly escaped pointers.
#[derive(Default)]
pub(super) struct PatchBuilder {
    pub(super) ops: Vec<PatchOperation>,
}

impl PatchBuilder {
    pub(super) fn add(&mut self, tokens: &[&str], value: Value) {
        self.ops.push(PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(tokens.iter().copied()),
            value,
        }));
    }

    /// Appends `items` to the array at `tokens`, creating the array when
    /// it does not `exist` yet.
    pub(super) fn append_all(&mut self, tokens: &[&str], exists: bool, items: Vec<Value>) {
        if items.is_empty() {
            return;
        }
        if exists {
            for item in items {
                self.add(&[tokens, &["-"]].concat(), item);
            }
        } else {
            self.add(tokens, Value::Array(items));
        }
    }

    pub(super) fn finish(self) -> Patch {
        Patch(self.ops)
    }
}
