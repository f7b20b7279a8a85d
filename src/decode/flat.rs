//! Debezium's flattened rows: the output of the ExtractNewRecordState
//! transform (the "event flattening" SMT), with or without the inline
//! schema.
//!
//! The value is the row's new state. Fields the transform adds
//! (`add.fields`) start with `__`: `__op`, `__table`, `__schema`, `__db`,
//! `__lsn`, `__scn`, `__source_ts_ms`, …; `delete.handling.mode=rewrite`
//! adds `__deleted: "true"` to a delete, whose row is then the old state.
//! With `add.headers` the same names come as Kafka headers.

use super::debezium::{Opened, open, typed_row};
use super::{Change, DecodeError, DecodeOptions, Decoded, err, kind, scalar_text};
use crate::event::{Op, Source};
use serde_json::{Map, Value};

pub(super) fn decode(
    key: Option<Value>,
    value: Option<Value>,
    headers: &Map<String, Value>,
    opts: &DecodeOptions,
) -> Result<Decoded, DecodeError> {
    let (key, schema, row) = match open(key, value)? {
        Opened::Decided(d) => return Ok(d),
        Opened::Payload {
            key,
            schema,
            payload,
        } => (key, schema, payload),
    };
    let Value::Object(mut row) = row else {
        return err(format!(
            "a flattened Debezium row must be an object, found {}",
            kind(&row)
        ));
    };
    let names: Vec<String> = row
        .keys()
        .filter(|k| k.starts_with("__"))
        .cloned()
        .collect();
    let mut added = Map::new();
    for name in names {
        if let Some(v) = row.remove(&name) {
            added.insert(name, v);
        }
    }
    let meta = |f: &str| scalar_text(added.get(f)).or_else(|| header_text(headers.get(f)));
    let op = match meta("__op").as_deref() {
        None => None,
        Some(letter) => match Op::of_letter(letter) {
            Some(op) => Some(op),
            None => return err(format!("unknown Debezium op `{letter}` in `__op`")),
        },
    };
    let deleted = match meta("__deleted").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return err(format!(
                "`__deleted` must be \"true\" or \"false\", found `{other}`"
            ));
        }
    };
    // Without `__op` a row is a state of unknown kind of change.
    let op = if deleted {
        Op::Delete
    } else {
        op.unwrap_or(Op::Read)
    };
    let mut unchanged = Vec::new();
    let row = typed_row(row, schema.as_ref(), "the row", opts, &mut unchanged)?;
    let (before, after) = match op {
        Op::Delete => {
            unchanged.clear();
            (Some(row).filter(|r| !r.is_empty()), None)
        }
        Op::Truncate => (None, None),
        _ => (None, Some(row)),
    };
    let ts_ms = |f: &str| meta(f).and_then(|t| t.parse::<i64>().ok());
    let mut extra = Map::new();
    if !added.is_empty() {
        extra.insert("added".into(), Value::Object(added.clone()));
    }
    let source = Source {
        system: meta("__name").unwrap_or_default(),
        schema: meta("__schema").or_else(|| meta("__db")),
        table: meta("__table"),
        ts_ms: ts_ms("__source_ts_ms").or_else(|| ts_ms("__ts_ms")),
        position: meta("__lsn").or_else(|| meta("__scn")),
        extra,
    };
    Ok(Decoded::Change(Change {
        op,
        key,
        before,
        after,
        source,
        unchanged,
    }))
}

/// A header's value as text: Connect's default header converter writes
/// text as is; a JSON header converter quotes it (or wraps it with its
/// schema).
fn header_text(v: Option<&Value>) -> Option<String> {
    let text = match v? {
        Value::Array(all) => all.last()?.as_str()?,
        other => other.as_str()?,
    };
    match serde_json::from_str::<Value>(text) {
        Ok(Value::String(s)) => Some(s),
        Ok(Value::Object(m)) if m.contains_key("payload") => scalar_text(m.get("payload")),
        _ => Some(text.to_string()),
    }
}
