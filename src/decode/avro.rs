//! Avro datums (from a schema registry) as the JSON values the decoders
//! read: records as objects, a union as its branch's value, logical types
//! and Kafka Connect's semantic types (`connect.name`, as Confluent's and
//! Apicurio's Avro converters write them) as the same exact text the JSON
//! path gives: decimals as digits, dates, times and timestamps as ISO text,
//! bytes as `\x…` hex. No decimal ever passes through a float.
//!
//! `apache-avro` reads the binary datum; the schema's JSON is walked once
//! more here because `apache-avro` keeps no attributes on primitive types,
//! and `connect.name` sits on exactly those (`{"type": "long",
//! "connect.name": "io.debezium.time.MicroTimestamp"}`).

use super::logical::{self, Unit};
use apache_avro::types::Value as Avro;
use serde_json::{Map, Number, Value};
use std::collections::HashMap;

/// One writer schema, ready to decode datums.
pub struct AvroSchema {
    reader: apache_avro::reader::datum::GenericDatumReader<'static>,
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

/// What a schema node turns its value into.
#[derive(Debug, Clone)]
enum Node {
    /// Null, boolean, float, double, enum: as they are.
    Plain,
    Int(Ints),
    Long(Ints),
    /// `bytes` or `fixed`.
    Bytes(Bytes),
    Str(Strs),
    /// The field schemas in order; Debezium's `VariableScaleDecimal`
    /// becomes one decimal.
    Record(Vec<usize>, bool),
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
}

#[derive(Debug, Clone, Copy)]
enum Strs {
    Plain,
    /// `io.debezium.data.Json`: the text parsed.
    Json,
}

impl AvroSchema {
    /// Parses a schema as the registry holds it (JSON text).
    pub fn parse(text: &str) -> Result<AvroSchema, String> {
        let json: Value =
            serde_json::from_str(text).map_err(|e| format!("the schema is not JSON: {e}"))?;
        let schema = apache_avro::Schema::parse(&json).map_err(|e| e.to_string())?;
        let mut c = Compiler::default();
        let root = c.node(&json, None)?;
        // Kept for the life of the process, like the cache that holds it:
        // the reader borrows it, and a registry's ids never change meaning.
        let schema: &'static apache_avro::Schema = Box::leak(Box::new(schema));
        let reader = apache_avro::reader::datum::GenericDatumReader::builder(schema)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(AvroSchema {
            reader,
            nodes: c.nodes,
            root,
        })
    }

    /// Decodes one datum (the bytes after the wire-format prefix).
    pub fn decode(&self, datum: &[u8]) -> Result<Value, String> {
        let mut rest = datum;
        let value = self
            .reader
            .read_value(&mut rest)
            .map_err(|e| e.to_string())?;
        if !rest.is_empty() {
            return Err(format!(
                "{} bytes are left after the datum (written with another schema?)",
                rest.len()
            ));
        }
        self.convert(self.root, value).map_err(|b| b.to_string())
    }

    fn convert(&self, at: usize, v: Avro) -> Result<Value, Bad> {
        let node = &self.nodes[at];
        Ok(match (node, v) {
            (_, Avro::Null) => Value::Null,
            (Node::Union(branches), Avro::Union(i, inner)) => {
                let b = *branches
                    .get(i as usize)
                    .ok_or_else(|| Bad::new(format!("union branch {i} is not in the schema")))?;
                return self.convert(b, *inner);
            }
            (_, Avro::Union(_, inner)) => return self.convert(at, *inner),
            (_, Avro::Boolean(b)) => Value::Bool(b),
            (Node::Int(conv) | Node::Long(conv), Avro::Int(n)) => ints(*conv, i64::from(n))?,
            (Node::Int(conv) | Node::Long(conv), Avro::Long(n)) => ints(*conv, n)?,
            (_, Avro::Int(n)) => n.into(),
            (_, Avro::Long(n)) => n.into(),
            (_, Avro::Float(f)) => float(f64::from(f), f.to_string()),
            (_, Avro::Double(f)) => float(f, f.to_string()),
            (Node::Bytes(Bytes::Decimal(scale)), Avro::Bytes(b) | Avro::Fixed(_, b)) => {
                Value::String(logical::decimal(&b, *scale))
            }
            (_, Avro::Bytes(b) | Avro::Fixed(_, b)) => Value::String(logical::bytea(&b)),
            (Node::Bytes(Bytes::Decimal(scale)), Avro::Decimal(d)) => {
                let b = Vec::<u8>::try_from(&d).map_err(|e| Bad::new(e.to_string()))?;
                Value::String(logical::decimal(&b, *scale))
            }
            (_, Avro::Decimal(_)) => return Err(Bad::new("a decimal without a scale".into())),
            (_, Avro::BigDecimal(d)) => Value::String(d.to_string()),
            (Node::Str(Strs::Json), Avro::String(s)) => serde_json::from_str(&s)
                .map_err(|e| Bad::new(format!("io.debezium.data.Json is not JSON: {e}")))?,
            (_, Avro::String(s)) => Value::String(s),
            (_, Avro::Enum(_, s)) => Value::String(s),
            (_, Avro::Uuid(u)) => Value::String(u.to_string()),
            (Node::Array(item), Avro::Array(items)) => Value::Array(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| self.convert(*item, v).map_err(|b| b.at(i.to_string())))
                    .collect::<Result<_, _>>()?,
            ),
            (Node::Map(values), Avro::Map(m)) => {
                let mut out = Map::with_capacity(m.len());
                for (k, v) in m {
                    let v = self.convert(*values, v).map_err(|b| b.at(k.clone()))?;
                    out.insert(k, v);
                }
                Value::Object(out)
            }
            (Node::Record(_, true), Avro::Record(fields)) => variable_scale(fields)?,
            (Node::Record(nodes, false), Avro::Record(fields)) => {
                let mut out = Map::with_capacity(fields.len());
                for ((name, v), node) in fields.into_iter().zip(nodes) {
                    let v = self.convert(*node, v).map_err(|b| b.at(name.clone()))?;
                    out.insert(name, v);
                }
                Value::Object(out)
            }
            (_, Avro::Date(d)) => ints(Ints::Date, i64::from(d))?,
            (_, Avro::TimeMillis(t)) => ints(Ints::Time(Unit::Millis), i64::from(t))?,
            (_, Avro::TimeMicros(t)) => ints(Ints::Time(Unit::Micros), t)?,
            (_, Avro::TimestampMillis(t) | Avro::LocalTimestampMillis(t)) => {
                ints(Ints::Timestamp(Unit::Millis), t)?
            }
            (_, Avro::TimestampMicros(t) | Avro::LocalTimestampMicros(t)) => {
                ints(Ints::Timestamp(Unit::Micros), t)?
            }
            (_, Avro::TimestampNanos(t) | Avro::LocalTimestampNanos(t)) => {
                ints(Ints::Timestamp(Unit::Nanos), t)?
            }
            (_, Avro::Duration(d)) => {
                let (m, days, ms) = (
                    u32::from(d.months()),
                    u32::from(d.days()),
                    u32::from(d.millis()),
                );
                // PostgreSQL's interval input.
                Value::String(format!("{m} months {days} days {ms} milliseconds"))
            }
            (_, v) => {
                return Err(Bad::new(format!(
                    "a value of kind {:?} where the schema has another type",
                    std::mem::discriminant(&v)
                )));
            }
        })
    }
}

/// Debezium's `VariableScaleDecimal`: `{scale: int, value: bytes}`.
fn variable_scale(fields: Vec<(String, Avro)>) -> Result<Value, Bad> {
    let mut scale = None;
    let mut value = None;
    for (name, v) in fields {
        match (name.as_str(), v) {
            ("scale", Avro::Int(s)) => scale = Some(s),
            ("value", Avro::Bytes(b)) => value = Some(b),
            _ => {}
        }
    }
    match (scale, value) {
        (Some(s), Some(b)) => Ok(Value::String(logical::decimal(&b, s))),
        _ => Err(Bad::new(
            "io.debezium.data.VariableScaleDecimal without an int `scale` and bytes `value`".into(),
        )),
    }
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
            "null" | "boolean" | "float" | "double" => Node::Plain,
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
                let n = Node::Bytes(bytes_conv(o, connect, logical));
                let at = self.push(n);
                self.define(o, ns, at);
                return Ok(at);
            }
            "enum" => {
                let at = self.push(Node::Plain);
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
                let at = self.push(Node::Plain);
                let own = self.define(o, ns, at);
                let inner = own.as_deref().or(ns);
                let fields = o
                    .get("fields")
                    .and_then(Value::as_array)
                    .ok_or("a record schema without `fields`")?;
                let mut nodes = Vec::with_capacity(fields.len());
                for f in fields {
                    let t = f.get("type").ok_or("a record field without `type`")?;
                    nodes.push(self.node(t, inner)?);
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
