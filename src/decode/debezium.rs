//! Debezium JSON (JsonConverter), with or without `schemas.enable`.

use super::{Change, DecodeError, Decoded, err, kind, object_or_null, scalar_text};
use crate::event::{Op, Source};
use serde_json::{Map, Value};

pub(super) fn decode(key: Option<Value>, value: Option<Value>) -> Result<Decoded, DecodeError> {
    let key = match key {
        Some(key) => message_key(key)?,
        None => None,
    };
    let payload = match value {
        None => {
            return match key {
                Some(key) => Ok(Decoded::Tombstone { key }),
                None => err("the message has neither a key nor a value"),
            };
        }
        Some(value) => unwrap_payload(value),
    };
    let Some(payload) = payload else {
        return match key {
            Some(key) => Ok(Decoded::NullValue { key }),
            None => err("the message has no key and its value is null"),
        };
    };
    let Value::Object(payload) = payload else {
        return err(format!(
            "the Debezium payload must be an object, found {}",
            kind(&payload)
        ));
    };
    let op = match payload.get("op") {
        Some(Value::String(op)) => match op.as_str() {
            "c" => Op::Create,
            "u" => Op::Update,
            "d" => Op::Delete,
            "r" => Op::Read,
            "t" => Op::Truncate,
            other => return err(format!("unknown Debezium op `{other}`")),
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
    let source = source(&payload);
    Ok(Decoded::Change(Change {
        op,
        key,
        before,
        after,
        source,
        unchanged: Vec::new(),
    }))
}

/// The message key as a column map, unwrapping `{"schema":…,"payload":…}`.
fn message_key(key: Value) -> Result<Option<Map<String, Value>>, DecodeError> {
    match unwrap_payload(key) {
        None => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(other) => err(format!(
            "the Debezium key must be an object, found {}",
            kind(&other)
        )),
    }
}

fn unwrap_payload(v: Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::Object(mut m) if m.contains_key("schema") && m.contains_key("payload") => {
            match m.remove("payload") {
                Some(Value::Null) | None => None,
                Some(p) => Some(p),
            }
        }
        other => Some(other),
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
    Source {
        system,
        schema,
        table: get("table"),
        ts_ms,
        position,
        extra: Default::default(),
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
