//! Debezium JSON (JsonConverter), with or without `schemas.enable`.

use super::{
    Change, DecodeError, DecodeOptions, Decoded, connect, err, kind, object_or_null, scalar_text,
};
use crate::event::{Op, Source};
use serde_json::{Map, Value};

/// What Debezium sends for a value it does not have (an unchanged TOASTed
/// column), unless the connector sets `unavailable.value.placeholder`.
pub const UNAVAILABLE: &str = "__debezium_unavailable_value";

pub(super) fn decode(
    key: Option<Value>,
    value: Option<Value>,
    opts: &DecodeOptions,
) -> Result<Decoded, DecodeError> {
    let (key, schema, payload) = match open(key, value)? {
        Opened::Decided(d) => return Ok(d),
        Opened::Payload {
            key,
            schema,
            payload,
        } => (key, schema, payload),
    };
    let Value::Object(payload) = payload else {
        return err(format!(
            "the Debezium payload must be an object, found {}",
            kind(&payload)
        ));
    };
    let op = match payload.get("op") {
        Some(Value::String(op)) => match Op::of_letter(op) {
            Some(op) => op,
            None => return err(format!("unknown Debezium op `{op}`")),
        },
        Some(other) => {
            return err(format!(
                "the Debezium `op` must be a string (c, u, d, r or t), found {}: {other}",
                kind(other)
            ));
        }
        None => return err("the Debezium payload has no `op`"),
    };
    let before = object_or_null(payload.get("before"), "before")?;
    let after = object_or_null(payload.get("after"), "after")?;
    match op {
        Op::Create | Op::Read | Op::Update if after.is_none() => {
            return err(format!("op `{}` without an `after` row", op.as_str()));
        }
        _ => {}
    }
    let row_schema = |f: &str| schema.as_ref().and_then(|s| connect::field(s, f));
    let mut unchanged = Vec::new();
    let before = before
        .map(|r| typed_row(r, row_schema("before"), "before", opts, &mut Vec::new()))
        .transpose()?;
    let after = after
        .map(|r| typed_row(r, row_schema("after"), "after", opts, &mut unchanged))
        .transpose()?;
    let source = source(&payload);
    Ok(Decoded::Change(Change {
        op,
        key,
        before,
        after,
        source,
        unchanged,
    }))
}

/// A row without its unavailable values (their columns go to `unchanged`),
/// each other value decoded by its schema when the message has one.
pub(super) fn typed_row(
    mut row: Map<String, Value>,
    schema: Option<&Value>,
    path: &str,
    opts: &DecodeOptions,
    unchanged: &mut Vec<String>,
) -> Result<Map<String, Value>, DecodeError> {
    row.retain(|col, v| {
        let field = schema.and_then(|s| connect::field(s, col));
        // Without a schema a bytes column cannot be told apart: its base64
        // placeholder is taken as one too.
        let bytes = field.is_none_or(connect::is_bytes);
        let missing = opts.placeholders.both().any(|(text, b64)| {
            let is = |x: &Value| x.as_str() == Some(text) || (bytes && x.as_str() == Some(b64));
            match &*v {
                // An array column: Debezium sends a list of the placeholder.
                Value::Array(items) => items.len() == 1 && is(&items[0]),
                other => is(other),
            }
        });
        if missing {
            unchanged.push(col.clone());
        }
        !missing
    });
    match schema {
        Some(schema) => connect::row(schema, row, path),
        None => Ok(row),
    }
}

/// A Debezium message (enveloped or flattened) opened: its key and its
/// value's schema and payload, or what it is when there is no payload to
/// read (a tombstone, a null value).
pub(super) enum Opened {
    Decided(Decoded),
    Payload {
        key: Option<Map<String, Value>>,
        schema: Option<Value>,
        payload: Value,
    },
}

pub(super) fn open(key: Option<Value>, value: Option<Value>) -> Result<Opened, DecodeError> {
    let key = match key {
        Some(key) => message_key(key)?,
        None => None,
    };
    let (schema, payload) = match value {
        None => {
            return match key {
                Some(key) => Ok(Opened::Decided(Decoded::Tombstone { key })),
                None => err("the message has neither a key nor a value"),
            };
        }
        Some(value) => connect::split(value),
    };
    match (payload, key) {
        (Some(payload), key) => Ok(Opened::Payload {
            key,
            schema,
            payload,
        }),
        (None, Some(key)) => Ok(Opened::Decided(Decoded::NullValue { key })),
        (None, None) => err("the message has no key and its value is null"),
    }
}

/// The message key as a column map, unwrapping `{"schema":…,"payload":…}`
/// and decoding its values by that schema.
pub(super) fn message_key(key: Value) -> Result<Option<Map<String, Value>>, DecodeError> {
    match connect::split(key) {
        (_, None) => Ok(None),
        (Some(schema), Some(Value::Object(m))) => connect::row(&schema, m, "key").map(Some),
        (None, Some(Value::Object(m))) => Ok(Some(m)),
        (_, Some(other)) => err(format!(
            "the Debezium key must be an object, found {}",
            kind(&other)
        )),
    }
}

fn source(payload: &Map<String, Value>) -> Source {
    let src = payload.get("source").and_then(Value::as_object);
    let get = |f: &str| src.and_then(|s| scalar_text(s.get(f)));
    let system = get("name").unwrap_or_default();
    // PostgreSQL and Oracle name a schema; MySQL only a database.
    let schema = get("schema").or_else(|| get("db"));
    let ts_ms = src
        .and_then(|s| s.get("ts_ms"))
        .or_else(|| payload.get("ts_ms"))
        .and_then(Value::as_i64);
    let position = get("lsn")
        .or_else(|| get("scn"))
        .or_else(|| match (get("file"), get("pos")) {
            (Some(file), Some(pos)) => Some(format!("{file}:{pos}")),
            _ => None,
        });
    let mut extra = Map::new();
    // With provide.transaction.metadata: id, total_order, data_collection_order.
    if let Some(tx @ Value::Object(_)) = payload.get("transaction") {
        extra.insert("transaction".into(), tx.clone());
    }
    Source {
        system,
        schema,
        table: get("table"),
        ts_ms,
        position,
        extra,
    }
}

/// True when a Debezium JSON value carries its inline schema (the
/// JsonConverter's `schemas.enable=true`, its default).
pub fn has_inline_schema(value: &[u8]) -> bool {
    matches!(
        serde_json::from_slice::<Value>(value),
        Ok(Value::Object(m)) if m.contains_key("schema") && m.contains_key("payload")
    )
}

/// What Debezium sends, without the inline schema, for a column of
/// PostgreSQL type `sql_type` under its default settings when a cast of it
/// fails; and what fixes it besides the inline schema (`schemas.enable=true`,
/// which pgchain decodes), if anything.
pub fn schemaless_trouble(sql_type: &str) -> Option<(&'static str, Option<&'static str>)> {
    let t = sql_type.trim().to_lowercase();
    let base = t.split('(').next().unwrap_or("").trim();
    match base {
        "numeric" | "decimal" => Some((
            "base64 bytes (or a {scale, value} struct)",
            Some("decimal.handling.mode=string"),
        )),
        "date" => Some((
            "days since 1970-01-01",
            Some("time.precision.mode=isostring"),
        )),
        "time" | "time without time zone" => Some((
            "micro- or milliseconds since midnight",
            Some("time.precision.mode=isostring"),
        )),
        "timestamp" | "timestamp without time zone" => Some((
            "micro- or milliseconds since the epoch",
            Some("time.precision.mode=isostring"),
        )),
        "bytea" => Some(("base64 text", None)),
        _ => None,
    }
}
