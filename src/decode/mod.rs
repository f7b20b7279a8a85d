//! Decoding Kafka messages into [`ChangeEvent`]s.
//!
//! One decoder per CDC format: Debezium JSON (with or without the
//! `schema`/`payload` wrapper, whose schema decodes each value), Debezium's
//! flattened rows (the ExtractNewRecordState transform), Oracle GoldenGate's
//! op-modelled JSON, and plain JSON rows with configured key columns.
//! Decoders see only the message's key, value and headers; the Kafka
//! coordinates and pipeline name are filled in by the caller.

pub mod avro;
mod connect;
pub mod debezium;
mod flat;
mod json;
pub mod logical;
pub mod ogg;

use crate::config::Format;
use crate::event::{Op, Source};
use serde_json::{Map, Value};

/// What a decoder makes of one message, before routing.
#[derive(Debug, Clone, PartialEq)]
// Returned once per message and matched at once: boxing the change would
// cost an allocation per event for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Decoded {
    Change(Change),
    /// A Kafka tombstone (null value) that follows a delete for compaction.
    Tombstone {
        key: Map<String, Value>,
    },
    /// A value that is JSON `null`, or a `{"schema": …, "payload": null}`
    /// envelope: not a Kafka tombstone (those have no value at all), but
    /// handled as one, and counted and logged apart.
    NullValue {
        key: Map<String, Value>,
    },
}

/// A decoded change without Kafka coordinates and pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub op: Op,
    /// `None` when the message does not carry its key; the router then takes
    /// it from the row with the pipeline's `key:` columns.
    pub key: Option<Map<String, Value>>,
    pub before: Option<Map<String, Value>>,
    pub after: Option<Map<String, Value>>,
    pub source: Source,
    /// Columns of `after` whose value the source did not send.
    pub unchanged: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct DecodeError(pub String);

pub(crate) fn err<T>(msg: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError(msg.into()))
}

/// Settings a decoder needs from the pipeline that consumes a topic.
#[derive(Debug, Clone, Default)]
pub struct DecodeOptions {
    /// Key columns of plain JSON rows.
    pub key_fields: Vec<String>,
    /// GoldenGate's `op_type` codes and the zone of its `op_ts`.
    pub ogg: ogg::Settings,
    /// What stands for an unavailable (unchanged TOASTed) value.
    pub placeholders: Placeholders,
}

/// Debezium's placeholders of unavailable values: its default and the
/// connector's `unavailable.value.placeholder` when it sets one, each as
/// text and as base64 (how a bytes column carries it); made once per topic.
#[derive(Debug, Clone)]
pub struct Placeholders(Vec<(String, String)>);

impl Placeholders {
    pub fn new(configured: Option<&str>) -> Placeholders {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        Placeholders(
            std::iter::once(UNAVAILABLE)
                .chain(configured)
                .map(|p| (p.to_string(), b64(p)))
                .collect(),
        )
    }

    /// Each placeholder as (text, base64).
    pub fn both(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(t, b)| (t.as_str(), b.as_str()))
    }

    /// Each placeholder as text.
    pub fn texts(&self) -> Vec<&str> {
        self.0.iter().map(|(t, _)| t.as_str()).collect()
    }
}

impl Default for Placeholders {
    fn default() -> Self {
        Placeholders::new(None)
    }
}

pub use debezium::UNAVAILABLE;

/// Kafka headers as the steps see them (`ev.headers`): text where UTF-8,
/// `{"base64": "…"}` where not, `null` for a null header; a name repeated
/// holds the list of its values in order.
pub fn headers_json(headers: &[(&str, Option<&[u8]>)]) -> Map<String, Value> {
    use base64::Engine as _;
    let mut out = Map::new();
    for (name, value) in headers {
        let v = match value {
            None => Value::Null,
            Some(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => Value::String(text.to_string()),
                Err(_) => {
                    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
                    serde_json::json!({ "base64": b64 })
                }
            },
        };
        let repeated = headers.iter().filter(|(n, _)| n == name).count() > 1;
        match out.get_mut(*name) {
            Some(Value::Array(all)) if repeated => all.push(v),
            _ if repeated => {
                out.insert(name.to_string(), Value::Array(vec![v]));
            }
            _ => {
                out.insert(name.to_string(), v);
            }
        }
    }
    out
}

/// Decodes a message whose key and value are JSON text (a key is parsed
/// only by the formats that read it).
pub fn decode(
    format: Format,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    opts: &DecodeOptions,
) -> Result<Decoded, DecodeError> {
    decode_with_headers(format, key, value, &Map::new(), opts)
}

/// [`decode`] of a message with headers (see [`headers_json`]), which the
/// flattened Debezium format reads its `__op`, `__table`, … from when the
/// row does not carry them.
pub fn decode_with_headers(
    format: Format,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &Map<String, Value>,
    opts: &DecodeOptions,
) -> Result<Decoded, DecodeError> {
    let key = || key.map(|k| parse_json(k, "the message key")).transpose();
    let value = value
        .map(|v| parse_json(v, "the message value"))
        .transpose();
    match format {
        Format::Debezium => {
            let key = key()?;
            debezium::decode(key, value?, opts)
        }
        Format::DebeziumFlat => {
            let key = key()?;
            flat::decode(key, value?, headers, opts)
        }
        Format::Ogg => ogg::decode(value?, &opts.ogg),
        Format::Json => {
            let value = value?;
            let key = if value.is_none() { key()? } else { None };
            json::decode(key, value, opts)
        }
    }
}

/// Decodes a message whose key and value are already JSON values (decoded
/// from another encoding, such as Avro): `None` is an absent key or value
/// (a Kafka tombstone), `Some(Value::Null)` a JSON `null`.
pub fn decode_values(
    format: Format,
    key: Option<Value>,
    value: Option<Value>,
    opts: &DecodeOptions,
) -> Result<Decoded, DecodeError> {
    decode_values_with_headers(format, key, value, &Map::new(), opts)
}

/// [`decode_values`] of a message with headers (see [`headers_json`]).
pub fn decode_values_with_headers(
    format: Format,
    key: Option<Value>,
    value: Option<Value>,
    headers: &Map<String, Value>,
    opts: &DecodeOptions,
) -> Result<Decoded, DecodeError> {
    match format {
        Format::Debezium => debezium::decode(key, value, opts),
        Format::DebeziumFlat => flat::decode(key, value, headers, opts),
        Format::Ogg => ogg::decode(value, &opts.ogg),
        Format::Json => json::decode(key, value, opts),
    }
}

pub(crate) fn parse_json(bytes: &[u8], what: &str) -> Result<Value, DecodeError> {
    serde_json::from_slice(bytes).map_err(|e| DecodeError(format!("{what} is not valid JSON: {e}")))
}

/// A JSON object or null; anything else is an error naming `field`.
pub(crate) fn object_or_null(
    v: Option<&Value>,
    field: &str,
) -> Result<Option<Map<String, Value>>, DecodeError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m.clone())),
        Some(other) => err(format!(
            "`{field}` must be an object or null, found {}",
            kind(other)
        )),
    }
}

/// Picks `fields` out of a row, failing when one is missing.
pub(crate) fn key_from_row(
    row: &Map<String, Value>,
    fields: &[String],
) -> Result<Map<String, Value>, DecodeError> {
    let mut key = Map::new();
    for f in fields {
        match row.get(f) {
            Some(v) => {
                key.insert(f.clone(), v.clone());
            }
            None => return err(format!("key column `{f}` is missing from the row")),
        }
    }
    Ok(key)
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A JSON scalar as text (positions come as numbers or strings).
pub(crate) fn scalar_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests;
