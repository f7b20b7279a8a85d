//! Values by their Kafka Connect schema, as the JsonConverter writes both
//! (`schemas.enable=true`, its default): `{"schema": …, "payload": …}`.
//!
//! Each field's schema has a `type` (int8 … int64, float32, float64,
//! boolean, string, bytes, array, map, struct) and may have a `name` (a
//! logical or semantic type) with `parameters`. The wire encodings of the
//! named types are turned into the text PostgreSQL casts exactly (see
//! [`logical`]); a value that does not match its schema is an error naming
//! the field.

use super::logical::{self, Unit};
use super::{DecodeError, kind};
use base64::Engine as _;
use serde_json::{Map, Value};

/// The `{"schema": …, "payload": …}` wrapper split into its schema (when
/// there is one) and its payload (`None` for a JSON null).
pub(super) fn split(v: Value) -> (Option<Value>, Option<Value>) {
    match v {
        Value::Null => (None, None),
        Value::Object(mut m) if m.contains_key("schema") && m.contains_key("payload") => {
            let schema = m.remove("schema").filter(|s| s.is_object());
            match m.remove("payload") {
                Some(Value::Null) | None => (schema, None),
                Some(p) => (schema, Some(p)),
            }
        }
        other => (None, Some(other)),
    }
}

/// The schema of field `name` of a struct schema.
pub(super) fn field<'s>(schema: &'s Value, name: &str) -> Option<&'s Value> {
    schema
        .get("fields")?
        .as_array()?
        .iter()
        .find(|f| f.get("field").and_then(Value::as_str) == Some(name))
}

/// Every value of `row` decoded by its field's schema in the struct schema
/// `schema`; `path` names the row in errors (`after`, `the key`).
pub(super) fn row(
    schema: &Value,
    row: Map<String, Value>,
    path: &str,
) -> Result<Map<String, Value>, DecodeError> {
    row.into_iter()
        .map(|(k, v)| {
            let v = match field(schema, &k) {
                Some(fs) => value(fs, v, &format!("{path}.{k}"))?,
                None => v,
            };
            Ok((k, v))
        })
        .collect()
}

/// Whether `schema` declares bytes (the placeholder of an unavailable bytes
/// value comes base64-encoded).
pub(super) fn is_bytes(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("bytes")
}

fn name_of(schema: &Value) -> &str {
    schema.get("name").and_then(Value::as_str).unwrap_or("")
}

/// `v` decoded by `schema`; `path` names it in errors.
pub(super) fn value(schema: &Value, v: Value, path: &str) -> Result<Value, DecodeError> {
    if v.is_null() {
        return Ok(v);
    }
    let text = |s: Option<String>, what: &str| {
        s.map(Value::String)
            .ok_or_else(|| mismatch(schema, path, &format!("{what} out of range")))
    };
    match name_of(schema) {
        "org.apache.kafka.connect.data.Decimal" => decimal(schema, &v, path),
        "io.debezium.data.VariableScaleDecimal" => variable_scale(schema, &v, path),
        "io.debezium.time.Date" | "org.apache.kafka.connect.data.Date" => {
            text(logical::date(int(schema, &v, path)?), "a date")
        }
        "io.debezium.time.Time" | "org.apache.kafka.connect.data.Time" => text(
            logical::time(int(schema, &v, path)?, Unit::Millis),
            "a time",
        ),
        "io.debezium.time.MicroTime" => text(
            logical::time(int(schema, &v, path)?, Unit::Micros),
            "a time",
        ),
        "io.debezium.time.NanoTime" => {
            text(logical::time(int(schema, &v, path)?, Unit::Nanos), "a time")
        }
        "io.debezium.time.Timestamp" | "org.apache.kafka.connect.data.Timestamp" => text(
            logical::timestamp(int(schema, &v, path)?, Unit::Millis),
            "a timestamp",
        ),
        "io.debezium.time.MicroTimestamp" => text(
            logical::timestamp(int(schema, &v, path)?, Unit::Micros),
            "a timestamp",
        ),
        "io.debezium.time.NanoTimestamp" => text(
            logical::timestamp(int(schema, &v, path)?, Unit::Nanos),
            "a timestamp",
        ),
        "io.debezium.data.Json" => match &v {
            Value::String(s) => serde_json::from_str(s).map_err(|e| {
                DecodeError(format!(
                    "`{path}` is declared io.debezium.data.Json but is not JSON text: {e}"
                ))
            }),
            _ => Err(mismatch(schema, path, &format!("found {}", kind(&v)))),
        },
        // ZonedTimestamp, ZonedTime, Uuid, the Iso* types of
        // time.precision.mode=isostring and other named strings stay text.
        _ => by_type(schema, v, path),
    }
}

/// `v` by the schema's plain `type`.
fn by_type(schema: &Value, v: Value, path: &str) -> Result<Value, DecodeError> {
    let ty = schema.get("type").and_then(Value::as_str).unwrap_or("");
    let wrong = |v: &Value| Err(mismatch(schema, path, &format!("found {}", kind(v))));
    match ty {
        "int8" | "int16" | "int32" | "int64" => match &v {
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(v),
            _ => wrong(&v),
        },
        "float32" | "float64" => match &v {
            Value::Number(_) => Ok(v),
            Value::String(s) if matches!(s.as_str(), "NaN" | "Infinity" | "-Infinity") => Ok(v),
            _ => wrong(&v),
        },
        "boolean" => match &v {
            Value::Bool(_) => Ok(v),
            _ => wrong(&v),
        },
        "string" => match &v {
            Value::String(_) => Ok(v),
            _ => wrong(&v),
        },
        "bytes" => Ok(Value::String(logical::bytea(&bytes(schema, &v, path)?))),
        "array" => match v {
            Value::Array(items) => {
                let Some(item_schema) = schema.get("items") else {
                    return Ok(Value::Array(items));
                };
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| value(item_schema, item, &format!("{path}[{i}]")))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Value::Array)
            }
            other => wrong(&other),
        },
        "map" => match v {
            // String keys: a JSON object; other keys: [[key, value], …].
            Value::Object(m) => {
                let Some(values) = schema.get("values") else {
                    return Ok(Value::Object(m));
                };
                m.into_iter()
                    .map(|(k, item)| {
                        let item = value(values, item, &format!("{path}.{k}"))?;
                        Ok((k, item))
                    })
                    .collect::<Result<Map<_, _>, _>>()
                    .map(Value::Object)
            }
            Value::Array(pairs) => Ok(Value::Array(pairs)),
            other => wrong(&other),
        },
        "struct" => match v {
            Value::Object(m) => row(schema, m, path).map(Value::Object),
            other => wrong(&other),
        },
        _ => Ok(v),
    }
}

fn mismatch(schema: &Value, path: &str, what: &str) -> DecodeError {
    let ty = schema.get("type").and_then(Value::as_str).unwrap_or("?");
    let declared = match name_of(schema) {
        "" => ty.to_string(),
        name => format!("{name} ({ty})"),
    };
    DecodeError(format!("`{path}` is declared {declared} but {what}"))
}

fn int(schema: &Value, v: &Value, path: &str) -> Result<i64, DecodeError> {
    v.as_i64()
        .ok_or_else(|| mismatch(schema, path, &format!("found {}", kind(v))))
}

/// Base64 bytes (the JsonConverter's encoding of `bytes`).
fn bytes(schema: &Value, v: &Value, path: &str) -> Result<Vec<u8>, DecodeError> {
    match v {
        Value::String(s) => base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|e| mismatch(schema, path, &format!("is not base64: {e}"))),
        other => Err(mismatch(schema, path, &format!("found {}", kind(other)))),
    }
}

/// Connect's `Decimal`: base64 of the unscaled two's complement bytes, the
/// scale in the schema's parameters (a number when the converter writes
/// `decimal.format=NUMERIC`).
fn decimal(schema: &Value, v: &Value, path: &str) -> Result<Value, DecodeError> {
    if let Value::Number(n) = v {
        return Ok(Value::String(n.to_string()));
    }
    let scale = schema
        .get("parameters")
        .and_then(|p| p.get("scale"))
        .and_then(|s| match s {
            Value::String(s) => s.parse::<i32>().ok(),
            other => other.as_i64().and_then(|n| i32::try_from(n).ok()),
        })
        .ok_or_else(|| mismatch(schema, path, "its schema has no `scale` parameter"))?;
    Ok(Value::String(logical::decimal(
        &bytes(schema, v, path)?,
        scale,
    )))
}

/// Debezium's `VariableScaleDecimal`: `{"scale": n, "value": base64}`.
fn variable_scale(schema: &Value, v: &Value, path: &str) -> Result<Value, DecodeError> {
    let scale = v
        .get("scale")
        .and_then(Value::as_i64)
        .and_then(|s| i32::try_from(s).ok());
    match (scale, v.get("value")) {
        (Some(scale), Some(value @ Value::String(_))) => Ok(Value::String(logical::decimal(
            &bytes(schema, value, &format!("{path}.value"))?,
            scale,
        ))),
        _ => Err(mismatch(
            schema,
            path,
            &format!(
                "is not {{\"scale\": integer, \"value\": base64}}; found {}",
                kind(v)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dec(schema: Value, v: Value) -> Result<Value, DecodeError> {
        value(&schema, v, "after.c")
    }

    #[test]
    fn semantic_types_become_text_postgresql_casts() {
        let cases = [
            // numeric(12,2) 1234.56: unscaled 123456 = 0x01E240.
            (
                json!({"type": "bytes", "name": "org.apache.kafka.connect.data.Decimal", "version": 1,
                       "parameters": {"scale": "2", "connect.decimal.precision": "12"}}),
                json!("AeJA"),
                json!("1234.56"),
            ),
            (
                json!({"type": "struct", "name": "io.debezium.data.VariableScaleDecimal",
                       "fields": [{"type": "int32", "field": "scale"}, {"type": "bytes", "field": "value"}]}),
                json!({"scale": 3, "value": "+/s="}),
                json!("-1.029"),
            ),
            (
                json!({"type": "int32", "name": "io.debezium.time.Date", "version": 1}),
                json!(19_000),
                json!("2022-01-08"),
            ),
            (
                json!({"type": "int32", "name": "org.apache.kafka.connect.data.Date", "version": 1}),
                json!(-1),
                json!("1969-12-31"),
            ),
            (
                json!({"type": "int32", "name": "io.debezium.time.Time"}),
                json!(45_296_789),
                json!("12:34:56.789000"),
            ),
            (
                json!({"type": "int32", "name": "org.apache.kafka.connect.data.Time"}),
                json!(45_296_000),
                json!("12:34:56"),
            ),
            (
                json!({"type": "int64", "name": "io.debezium.time.MicroTime"}),
                json!(45_296_789_012i64),
                json!("12:34:56.789012"),
            ),
            (
                json!({"type": "int64", "name": "io.debezium.time.NanoTime"}),
                json!(45_296_789_012_345i64),
                json!("12:34:56.789012"),
            ),
            (
                json!({"type": "int64", "name": "io.debezium.time.Timestamp"}),
                json!(1_529_507_596_945i64),
                json!("2018-06-20T15:13:16.945000"),
            ),
            (
                json!({"type": "int64", "name": "org.apache.kafka.connect.data.Timestamp"}),
                json!(1_529_507_596_000i64),
                json!("2018-06-20T15:13:16"),
            ),
            (
                json!({"type": "int64", "name": "io.debezium.time.MicroTimestamp"}),
                json!(1_529_507_596_945_104i64),
                json!("2018-06-20T15:13:16.945104"),
            ),
            (
                json!({"type": "int64", "name": "io.debezium.time.NanoTimestamp"}),
                json!(1_529_507_596_945_104_123i64),
                json!("2018-06-20T15:13:16.945104"),
            ),
            (
                json!({"type": "string", "name": "io.debezium.time.ZonedTimestamp"}),
                json!("2018-06-20T13:13:16.945104Z"),
                json!("2018-06-20T13:13:16.945104Z"),
            ),
            (
                json!({"type": "string", "name": "io.debezium.data.Uuid"}),
                json!("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
                json!("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            ),
            (
                json!({"type": "string", "name": "io.debezium.data.Json"}),
                json!("{\"a\": [1, 2.50]}"),
                // Parsed exactly: 2.50 stays 2.50.
                serde_json::from_str(r#"{"a": [1, 2.50]}"#).unwrap(),
            ),
            (
                json!({"type": "string", "name": "io.debezium.data.Json"}),
                json!("\"just text\""),
                json!("just text"),
            ),
            (json!({"type": "bytes"}), json!("3q0A"), json!("\\xdead00")),
            (
                json!({"type": "array", "items": {"type": "int32", "name": "io.debezium.time.Date"}}),
                json!([0, null, 1]),
                json!(["1970-01-01", null, "1970-01-02"]),
            ),
            // decimal.handling.mode=double and string: plain types, kept.
            (json!({"type": "float64"}), json!(1234.56), json!(1234.56)),
            (
                json!({"type": "string"}),
                json!("1234.56"),
                json!("1234.56"),
            ),
            (json!({"type": "int32"}), json!(null), json!(null)),
        ];
        for (schema, wire, want) in cases {
            assert_eq!(dec(schema.clone(), wire).unwrap(), want, "{schema}");
        }
        // Digits beyond a double's precision survive.
        let big = serde_json::from_str::<Value>("12345678901234567890.123456789").unwrap();
        let got = dec(
            json!({"type": "bytes", "name": "org.apache.kafka.connect.data.Decimal", "parameters": {"scale": "9"}}),
            big,
        );
        assert_eq!(got.unwrap(), json!("12345678901234567890.123456789"));
    }

    #[test]
    fn a_value_against_its_schema_is_an_error_naming_the_field() {
        let cases = [
            (
                json!({"type": "bytes", "name": "org.apache.kafka.connect.data.Decimal", "parameters": {"scale": "2"}}),
                json!("not base64!"),
                "`after.c` is declared org.apache.kafka.connect.data.Decimal (bytes) but is not base64: Invalid symbol 32, offset 3.",
            ),
            (
                json!({"type": "int32"}),
                json!("12"),
                "`after.c` is declared int32 but found a string",
            ),
            (
                json!({"type": "int32", "name": "io.debezium.time.Date"}),
                json!("2022-01-08"),
                "`after.c` is declared io.debezium.time.Date (int32) but found a string",
            ),
            (
                json!({"type": "int64", "name": "io.debezium.time.MicroTime"}),
                json!(-5),
                "`after.c` is declared io.debezium.time.MicroTime (int64) but a time out of range",
            ),
            (
                json!({"type": "string", "name": "io.debezium.data.Json"}),
                json!("{"),
                "`after.c` is declared io.debezium.data.Json but is not JSON text: EOF while parsing an object at line 1 column 1",
            ),
            (
                json!({"type": "struct", "name": "io.debezium.data.VariableScaleDecimal"}),
                json!({"value": "AQ=="}),
                "`after.c` is declared io.debezium.data.VariableScaleDecimal (struct) but is not {\"scale\": integer, \"value\": base64}; found an object",
            ),
            (
                json!({"type": "array", "items": {"type": "int32"}}),
                json!([1, "x"]),
                "`after.c[1]` is declared int32 but found a string",
            ),
        ];
        for (schema, wire, want) in cases {
            assert_eq!(dec(schema, wire).unwrap_err().0, want);
        }
    }
}
