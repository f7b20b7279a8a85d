//! Avro datums (from a schema registry) as the JSON values the decoders
//! read: records as objects, a union as its branch's value, logical types
//! and Kafka Connect's semantic types (`connect.name`, as Confluent's and
//! Apicurio's Avro converters write them) as the same exact text the JSON
//! path gives: decimals as digits, dates, times and timestamps as ISO text,
//! bytes as `\x…` hex. No decimal ever passes through a float.
//!
//! `apache-avro` parses and checks the schema (names, defaults, logical
//! types); the datum is then read straight into JSON by the node list
//! below, built from the schema's JSON, because `apache-avro` keeps no
//! attributes on primitive types and `connect.name` sits on exactly those
//! (`{"type": "long", "connect.name": "io.debezium.time.MicroTimestamp"}`),
//! and because going through its own value tree costs as much again.
//! The tests write with `apache-avro`'s writer and read with this reader.

use super::logical::{self, Unit};
use serde_json::{Map, Number, Value};
use std::collections::HashMap;

/// One writer schema, ready to decode datums.
pub struct AvroSchema {
    nodes: Vec<Node>,
    root: usize,
}

impl std::fmt::Debug for AvroSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvroSchema")
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

/// One schema node: what its bytes are and what JSON they become.
#[derive(Debug, Clone)]
enum Node {
    Null,
    Boolean,
    Int(Ints),
    Long(Ints),
    Float,
    Double,
    Bytes(Bytes),
    /// `fixed` of this size.
    Fixed(usize, Bytes),
    Str(Strs),
    Enum(Vec<String>),
    /// Field names and schemas in order; Debezium's `VariableScaleDecimal`
    /// (`true`) becomes one decimal.
    Record(Vec<(String, usize)>, bool),
    Array(usize),
    Map(usize),
    Union(Vec<usize>),
}

#[derive(Debug, Clone, Copy)]
enum Ints {
    Plain,
    Date,
    Time(Unit),
    Timestamp(Unit),
}

#[derive(Debug, Clone, Copy)]
enum Bytes {
    Bytea,
    Decimal(i32),
    /// Avro 1.12's `uuid` on a 16-byte `fixed`.
    Uuid,
    /// Avro's `duration`: months, days, milliseconds.
    Duration,
}

#[derive(Debug, Clone, Copy)]
enum Strs {
    Plain,
    /// `io.debezium.data.Json`: the text parsed.
    Json,
}

/// Deeper nesting than this (a recursive schema) is refused, not followed
/// down the stack.
const MAX_DEPTH: usize = 128;

impl AvroSchema {
    /// Parses a schema as the registry holds it (JSON text).
    pub fn parse(text: &str) -> Result<AvroSchema, String> {
        let json: Value =
            serde_json::from_str(text).map_err(|e| format!("the schema is not JSON: {e}"))?;
        apache_avro::Schema::parse(&json).map_err(|e| e.to_string())?;
        let mut c = Compiler::default();
        let root = c.node(&json, None)?;
        Ok(AvroSchema {
            nodes: c.nodes,
            root,
        })
    }

    /// Decodes one datum (the bytes after the wire-format prefix).
    pub fn decode(&self, datum: &[u8]) -> Result<Value, String> {
        self.decode_marking(datum, &[super::debezium::UNAVAILABLE])
    }

    /// [`AvroSchema::decode`], a `bytes` value that is one of `unavailable`
    /// (Debezium's placeholder of a value it does not have, in a `bytea`
    /// column) given as that text, so the decoders see it as in JSON.
    pub fn decode_marking(&self, datum: &[u8], unavailable: &[&str]) -> Result<Value, String> {
        let mut r = Reader {
            buf: datum,
            at: 0,
            unavailable,
        };
        let value = self.read(self.root, &mut r, 0).map_err(|b| b.to_string())?;
        if r.at != datum.len() {
            return Err(format!(
                "{} bytes are left after the datum (written with another schema?)",
                datum.len() - r.at
            ));
        }
        Ok(value)
    }

    fn read(&self, at: usize, r: &mut Reader<'_>, depth: usize) -> Result<Value, Bad> {
        if depth > MAX_DEPTH {
            return Err(Bad::new(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        Ok(match &self.nodes[at] {
            Node::Null => Value::Null,
            Node::Boolean => match r.byte()? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(Bad::new(format!("boolean byte {b}"))),
            },
            Node::Int(conv) => ints(*conv, i64::from(r.int()?))?,
            Node::Long(conv) => ints(*conv, r.long()?)?,
            Node::Float => {
                let f = f32::from_le_bytes(r.take(4)?.try_into().expect("4 bytes"));
                float(f64::from(f), f.to_string())
            }
            Node::Double => {
                let f = f64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"));
                float(f, f.to_string())
            }
            Node::Bytes(conv) => {
                let b = r.bytes()?;
                match r.unavailable.iter().find(|p| p.as_bytes() == b) {
                    Some(p) if matches!(conv, Bytes::Bytea) => Value::String(p.to_string()),
                    _ => bytes(*conv, b)?,
                }
            }
            Node::Fixed(size, conv) => {
                let b = r.take(*size)?;
                bytes(*conv, b)?
            }
            Node::Str(conv) => {
                let s = r.string()?;
                match conv {
                    Strs::Plain => Value::String(s.to_string()),
                    Strs::Json => serde_json::from_str(s)
                        .map_err(|e| Bad::new(format!("io.debezium.data.Json is not JSON: {e}")))?,
                }
            }
            Node::Enum(symbols) => {
                let i = r.long()?;
                let s = usize::try_from(i)
                    .ok()
                    .and_then(|i| symbols.get(i))
                    .ok_or_else(|| Bad::new(format!("enum index {i} is not in the schema")))?;
                Value::String(s.clone())
            }
            Node::Union(branches) => {
                let i = r.long()?;
                let b = usize::try_from(i)
                    .ok()
                    .and_then(|i| branches.get(i))
                    .ok_or_else(|| Bad::new(format!("union branch {i} is not in the schema")))?;
                return self.read(*b, r, depth + 1);
            }
            Node::Record(fields, variable_scale) => {
                let mut out = Map::new();
                for (name, node) in fields {
                    let v = self
                        .read(*node, r, depth + 1)
                        .map_err(|b| b.at(name.clone()))?;
                    out.insert(name.clone(), v);
                }
                if *variable_scale {
                    return variable_scale_decimal(&out);
                }
                Value::Object(out)
            }
            Node::Array(item) => {
                let mut out = Vec::new();
                while let Some(n) = r.block()? {
                    for _ in 0..n {
                        let v = self
                            .read(*item, r, depth + 1)
                            .map_err(|b| b.at(out.len().to_string()))?;
                        out.push(v);
                    }
                }
                Value::Array(out)
            }
            Node::Map(values) => {
                let mut out = Map::new();
                while let Some(n) = r.block()? {
                    for _ in 0..n {
                        let k = r.string()?.to_string();
                        let v = self
                            .read(*values, r, depth + 1)
                            .map_err(|b| b.at(k.clone()))?;
                        out.insert(k, v);
                    }
                }
                Value::Object(out)
            }
        })
    }
}

/// The datum's bytes, read front to back.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
    unavailable: &'a [&'a str],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Bad> {
        let left = self.buf.len() - self.at;
        if n > left {
            return Err(Bad::new(format!(
                "the datum ends early ({n} bytes needed at byte {}, {left} left)",
                self.at
            )));
        }
        let s = &self.buf[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, Bad> {
        Ok(self.take(1)?[0])
    }

    /// A zig-zag varint of at most 64 bits.
    fn long(&mut self) -> Result<i64, Bad> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok((v >> 1) as i64 ^ -((v & 1) as i64));
            }
        }
        Err(Bad::new("a varint longer than 64 bits".into()))
    }

    fn int(&mut self) -> Result<i32, Bad> {
        let v = self.long()?;
        i32::try_from(v).map_err(|_| Bad::new(format!("{v} does not fit an int")))
    }

    fn len(&mut self) -> Result<usize, Bad> {
        let n = self.long()?;
        usize::try_from(n).map_err(|_| Bad::new(format!("a negative length {n}")))
    }

    fn bytes(&mut self) -> Result<&'a [u8], Bad> {
        let n = self.len()?;
        self.take(n)
    }

    fn string(&mut self) -> Result<&'a str, Bad> {
        std::str::from_utf8(self.bytes()?)
            .map_err(|e| Bad::new(format!("a string that is not UTF-8: {e}")))
    }

    /// The item count of the next array or map block; None after the last.
    fn block(&mut self) -> Result<Option<u64>, Bad> {
        let n = self.long()?;
        if n == 0 {
            return Ok(None);
        }
        if n < 0 {
            // A negative count is followed by the block's size in bytes.
            self.long()?;
        }
        let n = n.unsigned_abs();
        // Every item takes a byte, but for empty ones (null, an empty
        // record): a count past what is left is refused, not allocated.
        let left = (self.buf.len() - self.at) as u64;
        if n > left + 1024 {
            return Err(Bad::new(format!("a block of {n} items in {left} bytes")));
        }
        Ok(Some(n))
    }
}

fn bytes(conv: Bytes, b: &[u8]) -> Result<Value, Bad> {
    Ok(Value::String(match conv {
        Bytes::Bytea => logical::bytea(b),
        Bytes::Decimal(scale) => logical::decimal(b, scale),
        Bytes::Uuid if b.len() == 16 => {
            let h = logical::bytea(b);
            let h = &h[2..];
            format!(
                "{}-{}-{}-{}-{}",
                &h[..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..]
            )
        }
        Bytes::Duration if b.len() == 12 => {
            let n = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
            // PostgreSQL's interval input.
            format!("{} months {} days {} milliseconds", n(0), n(4), n(8))
        }
        Bytes::Uuid | Bytes::Duration => {
            return Err(Bad::new(format!("a fixed of {} bytes", b.len())));
        }
    }))
}

/// Debezium's `VariableScaleDecimal`: `{scale: int, value: bytes}`, the
/// bytes already read as `\x…` text.
fn variable_scale_decimal(fields: &Map<String, Value>) -> Result<Value, Bad> {
    let scale = fields
        .get("scale")
        .and_then(Value::as_i64)
        .and_then(|s| i32::try_from(s).ok());
    let value = fields
        .get("value")
        .and_then(Value::as_str)
        .and_then(|h| h.strip_prefix("\\x"))
        .and_then(unhex);
    match (scale, value) {
        (Some(s), Some(b)) => Ok(Value::String(logical::decimal(&b, s))),
        _ => Err(Bad::new(
            "io.debezium.data.VariableScaleDecimal without an int `scale` and bytes `value`".into(),
        )),
    }
}

fn unhex(h: &str) -> Option<Vec<u8>> {
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
        .collect()
}

fn ints(conv: Ints, n: i64) -> Result<Value, Bad> {
    let text = match conv {
        Ints::Plain => return Ok(n.into()),
        Ints::Date => logical::date(n),
        Ints::Time(unit) => logical::time(n, unit),
        Ints::Timestamp(unit) => logical::timestamp(n, unit),
    };
    text.map(Value::String)
        .ok_or_else(|| Bad::new(format!("{n} is out of range for a {conv:?}").to_lowercase()))
}

/// A float as its shortest exact text; NaN and the infinities as the text
/// PostgreSQL's float types read (JSON has no number for them).
fn float(f: f64, text: String) -> Value {
    if f.is_nan() {
        return Value::String("NaN".into());
    }
    if f.is_infinite() {
        return Value::String(if f > 0.0 { "Infinity" } else { "-Infinity" }.into());
    }
    text.parse::<Number>()
        .map(Value::Number)
        .unwrap_or(Value::String(text))
}

/// A value that does not fit its schema, with where.
#[derive(Debug)]
struct Bad {
    /// Innermost first.
    path: Vec<String>,
    why: String,
}

impl Bad {
    fn new(why: String) -> Bad {
        Bad {
            path: Vec::new(),
            why,
        }
    }

    fn at(mut self, part: String) -> Bad {
        self.path.push(part);
        self
    }
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            return f.write_str(&self.why);
        }
        let path: Vec<&str> = self.path.iter().rev().map(String::as_str).collect();
        write!(f, "`{}`: {}", path.join("."), self.why)
    }
}

/// Builds the node list of a schema, named types resolved.
#[derive(Default)]
struct Compiler {
    nodes: Vec<Node>,
    names: HashMap<String, usize>,
}

impl Compiler {
    fn push(&mut self, n: Node) -> usize {
        self.nodes.push(n);
        self.nodes.len() - 1
    }

    fn node(&mut self, json: &Value, ns: Option<&str>) -> Result<usize, String> {
        match json {
            Value::String(name) => self.named(name, ns),
            Value::Array(branches) => {
                let nodes = branches
                    .iter()
                    .map(|b| self.node(b, ns))
                    .collect::<Result<_, _>>()?;
                Ok(self.push(Node::Union(nodes)))
            }
            Value::Object(o) => self.complex(o, ns),
            other => Err(format!("not a schema: {other}")),
        }
    }

    /// A primitive type's name, or a named type defined earlier.
    fn named(&mut self, name: &str, ns: Option<&str>) -> Result<usize, String> {
        let node = match name {
            "null" => Node::Null,
            "boolean" => Node::Boolean,
            "float" => Node::Float,
            "double" => Node::Double,
            "int" => Node::Int(Ints::Plain),
            "long" => Node::Long(Ints::Plain),
            "bytes" => Node::Bytes(Bytes::Bytea),
            "string" => Node::Str(Strs::Plain),
            _ => {
                let full = full_name(name, ns);
                return self
                    .names
                    .get(&full)
                    .or_else(|| self.names.get(name))
                    .copied()
                    .ok_or_else(|| format!("unknown type `{name}`"));
            }
        };
        Ok(self.push(node))
    }

    fn complex(&mut self, o: &Map<String, Value>, ns: Option<&str>) -> Result<usize, String> {
        let ty = o.get("type").ok_or("a schema object without `type`")?;
        let Value::String(ty) = ty else {
            // {"type": {...}} or {"type": [...]}: the inner schema.
            return self.node(ty, ns);
        };
        let connect = o.get("connect.name").and_then(Value::as_str).unwrap_or("");
        let logical = o.get("logicalType").and_then(Value::as_str).unwrap_or("");
        let node = match ty.as_str() {
            "int" | "long" => {
                let conv = int_conv(connect, logical);
                if ty == "int" {
                    Node::Int(conv)
                } else {
                    Node::Long(conv)
                }
            }
            "bytes" => Node::Bytes(bytes_conv(o, connect, logical)),
            "string" => Node::Str(if connect == "io.debezium.data.Json" {
                Strs::Json
            } else {
                Strs::Plain
            }),
            "fixed" => {
                let size = o
                    .get("size")
                    .and_then(Value::as_u64)
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or("a fixed schema without `size`")?;
                let conv = match logical {
                    "uuid" => Bytes::Uuid,
                    "duration" => Bytes::Duration,
                    _ => bytes_conv(o, connect, logical),
                };
                let at = self.push(Node::Fixed(size, conv));
                self.define(o, ns, at);
                return Ok(at);
            }
            "enum" => {
                let symbols = o
                    .get("symbols")
                    .and_then(Value::as_array)
                    .ok_or("an enum schema without `symbols`")?
                    .iter()
                    .map(|s| s.as_str().unwrap_or_default().to_string())
                    .collect();
                let at = self.push(Node::Enum(symbols));
                self.define(o, ns, at);
                return Ok(at);
            }
            "array" => {
                let items = o.get("items").ok_or("an array schema without `items`")?;
                let item = self.node(items, ns)?;
                Node::Array(item)
            }
            "map" => {
                let values = o.get("values").ok_or("a map schema without `values`")?;
                let v = self.node(values, ns)?;
                Node::Map(v)
            }
            "record" | "error" => {
                // Defined before its fields, which may name it.
                let at = self.push(Node::Null);
                let own = self.define(o, ns, at);
                let inner = own.as_deref().or(ns);
                let fields = o
                    .get("fields")
                    .and_then(Value::as_array)
                    .ok_or("a record schema without `fields`")?;
                let mut nodes = Vec::with_capacity(fields.len());
                for f in fields {
                    let name = f
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or("a record field without `name`")?;
                    let t = f.get("type").ok_or("a record field without `type`")?;
                    nodes.push((name.to_string(), self.node(t, inner)?));
                }
                self.nodes[at] =
                    Node::Record(nodes, connect == "io.debezium.data.VariableScaleDecimal");
                return Ok(at);
            }
            _ => return self.named(ty, ns),
        };
        Ok(self.push(node))
    }

    /// Registers a named type; returns its namespace.
    fn define(&mut self, o: &Map<String, Value>, ns: Option<&str>, at: usize) -> Option<String> {
        let name = o.get("name").and_then(Value::as_str)?;
        let own_ns = o.get("namespace").and_then(Value::as_str).or(ns);
        let full = if name.contains('.') {
            name.to_string()
        } else {
            full_name(name, own_ns)
        };
        let space = full.rsplit_once('.').map(|(s, _)| s.to_string());
        self.names.insert(full, at);
        space
    }
}

fn full_name(name: &str, ns: Option<&str>) -> String {
    match ns {
        Some(ns) if !ns.is_empty() && !name.contains('.') => format!("{ns}.{name}"),
        _ => name.to_string(),
    }
}

/// Kafka Connect's and Debezium's semantic types on `int`/`long`, then
/// Avro's logical types.
fn int_conv(connect: &str, logical: &str) -> Ints {
    match connect {
        "io.debezium.time.Date" | "org.apache.kafka.connect.data.Date" => return Ints::Date,
        "io.debezium.time.Time" | "org.apache.kafka.connect.data.Time" => {
            return Ints::Time(Unit::Millis);
        }
        "io.debezium.time.MicroTime" => return Ints::Time(Unit::Micros),
        "io.debezium.time.NanoTime" => return Ints::Time(Unit::Nanos),
        "io.debezium.time.Timestamp" | "org.apache.kafka.connect.data.Timestamp" => {
            return Ints::Timestamp(Unit::Millis);
        }
        "io.debezium.time.MicroTimestamp" => return Ints::Timestamp(Unit::Micros),
        "io.debezium.time.NanoTimestamp" => return Ints::Timestamp(Unit::Nanos),
        _ => {}
    }
    match logical {
        "date" => Ints::Date,
        "time-millis" => Ints::Time(Unit::Millis),
        "time-micros" => Ints::Time(Unit::Micros),
        "timestamp-millis" | "local-timestamp-millis" => Ints::Timestamp(Unit::Millis),
        "timestamp-micros" | "local-timestamp-micros" => Ints::Timestamp(Unit::Micros),
        "timestamp-nanos" | "local-timestamp-nanos" => Ints::Timestamp(Unit::Nanos),
        _ => Ints::Plain,
    }
}

/// A decimal's scale: Connect's `connect.parameters.scale` (a string), or
/// Avro's `scale` (a number, 0 when absent).
fn bytes_conv(o: &Map<String, Value>, connect: &str, logical: &str) -> Bytes {
    if connect == "org.apache.kafka.connect.data.Decimal" {
        let scale = o
            .get("connect.parameters")
            .and_then(|p| p.get("scale"))
            .and_then(|s| match s {
                Value::String(s) => s.parse().ok(),
                other => other.as_i64().and_then(|n| i32::try_from(n).ok()),
            })
            .or_else(|| avro_scale(o));
        return Bytes::Decimal(scale.unwrap_or(0));
    }
    if logical == "decimal" {
        return Bytes::Decimal(avro_scale(o).unwrap_or(0));
    }
    Bytes::Bytea
}

fn avro_scale(o: &Map<String, Value>) -> Option<i32> {
    o.get("scale")
        .and_then(Value::as_i64)
        .and_then(|n| i32::try_from(n).ok())
}

// The tests encode with the sample events of feature `tools`.
#[cfg(all(test, feature = "tools"))]
mod tests;
