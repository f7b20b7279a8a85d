//! Plain JSON rows: the value is the row's current state, the key columns
//! come from the pipeline's `key:`; a null value deletes the row whose key is
//! in the message key.

use super::{Change, DecodeError, DecodeOptions, Decoded, err, key_from_row, kind};
use crate::event::{Op, Source};
use serde_json::Value;

pub(super) fn decode(
    key: Option<Value>,
    value: Option<Value>,
    opts: &DecodeOptions,
) -> Result<Decoded, DecodeError> {
    let source = Source {
        system: String::new(),
        schema: None,
        table: None,
        ts_ms: None,
        position: None,
        extra: Default::default(),
    };
    match value {
        Some(value) => {
            let row = match value {
                Value::Object(row) => row,
                other => {
                    return err(format!(
                        "a JSON row must be an object, found {}",
                        kind(&other)
                    ));
                }
            };
            let key = key_from_row(&row, &opts.key_fields)?;
            Ok(Decoded::Change(Change {
                op: Op::Read,
                key: Some(key),
                before: None,
                after: Some(row),
                source,
                unchanged: Vec::new(),
            }))
        }
        None => {
            let Some(key) = key else {
                return err("the message has neither a key nor a value");
            };
            let key = match key {
                Value::Object(k) => key_from_row(&k, &opts.key_fields)?,
                // A bare scalar key stands for a single key column.
                scalar
                    if opts.key_fields.len() == 1 && !scalar.is_object() && !scalar.is_array() =>
                {
                    let mut k = serde_json::Map::new();
                    k.insert(opts.key_fields[0].clone(), scalar);
                    k
                }
                other => {
                    return err(format!(
                        "the message key must be an object, found {}",
                        kind(&other)
                    ));
                }
            };
            Ok(Decoded::Change(Change {
                op: Op::Delete,
                key: Some(key),
                before: None,
                after: None,
                source,
                unchanged: Vec::new(),
            }))
        }
    }
}
