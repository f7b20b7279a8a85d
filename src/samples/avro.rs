//! Debezium change events of one PostgreSQL table as the Avro converter
//! writes them for a Confluent schema registry (wire format: magic byte 0,
//! the 4-byte big-endian schema id, the Avro datum), encoded with
//! `apache-avro`'s writer from the schemas in `tests/fixtures/avro`; and
//! the same events as Debezium JSON with the inline schema, to compare.
//!
//! The table: `public.account (id int primary key, balance numeric(12,2),
//! rate numeric, born date, wake time, seen timestamp, at timestamptz,
//! ref uuid, doc jsonb, photo bytea, note text)`.

use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use apache_avro::writer::datum::GenericDatumWriter;
use serde_json::{Value, json};

/// The key schema (Debezium's `…Key` record), as the registry holds it.
pub const KEY_SCHEMA: &str = include_str!("../../tests/fixtures/avro/pg_account.key.avsc");
/// The value schema (Debezium's `…Envelope` record).
pub const VALUE_SCHEMA: &str = include_str!("../../tests/fixtures/avro/pg_account.value.avsc");

/// One row of `public.account`, in the encodings Debezium uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Account {
    pub id: i32,
    /// `numeric(12,2)`: the unscaled value (12345 is 123.45).
    pub balance: Option<i128>,
    /// `numeric`: (scale, unscaled value).
    pub rate: Option<(i32, i128)>,
    /// `date`: days since 1970-01-01.
    pub born: Option<i32>,
    /// `time`: microseconds since midnight.
    pub wake: Option<i64>,
    /// `timestamp`: microseconds since the epoch.
    pub seen: Option<i64>,
    /// `timestamptz`: ISO-8601 text in UTC.
    pub at: Option<String>,
    pub r#ref: Option<String>,
    /// `jsonb` as text.
    pub doc: Option<String>,
    pub photo: Option<Vec<u8>>,
    pub note: Option<String>,
}

/// A change of one row: `op` is c, u, d or r.
#[derive(Debug, Clone)]
pub struct Change {
    pub op: &'static str,
    pub before: Option<Account>,
    pub after: Option<Account>,
    pub ts_ms: i64,
    pub lsn: i64,
}

/// Encodes key and value datums; the schema ids go into the prefixes.
pub struct Encoder {
    key: Schema,
    value: Schema,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder::new()
    }
}

impl Encoder {
    pub fn new() -> Encoder {
        Encoder {
            key: Schema::parse_str(KEY_SCHEMA).expect("key schema"),
            value: Schema::parse_str(VALUE_SCHEMA).expect("value schema"),
        }
    }

    /// The Kafka key: the row's id under schema `key_id`.
    pub fn key(&self, key_id: u32, id: i32) -> Vec<u8> {
        let datum = Avro::Record(vec![("id".into(), Avro::Int(id))]);
        wire(key_id, &write(&self.key, datum))
    }

    /// The Kafka value of `change` under schema `value_id`.
    pub fn value(&self, value_id: u32, change: &Change) -> Vec<u8> {
        let row = |a: &Option<Account>| match a {
            None => Avro::Union(0, Box::new(Avro::Null)),
            Some(a) => Avro::Union(1, Box::new(account(a))),
        };
        let source = Avro::Record(vec![
            ("version".into(), Avro::String("3.0.0.Final".into())),
            ("connector".into(), Avro::String("postgresql".into())),
            ("name".into(), Avro::String("pgserver".into())),
            ("ts_ms".into(), Avro::Long(change.ts_ms)),
            (
                "snapshot".into(),
                Avro::Union(0, Box::new(Avro::String("false".into()))),
            ),
            ("db".into(), Avro::String("appdb".into())),
            ("sequence".into(), null()),
            ("ts_us".into(), some(Avro::Long(change.ts_ms * 1000))),
            ("ts_ns".into(), some(Avro::Long(change.ts_ms * 1_000_000))),
            ("schema".into(), Avro::String("public".into())),
            ("table".into(), Avro::String("account".into())),
            ("txId".into(), some(Avro::Long(780))),
            ("lsn".into(), some(Avro::Long(change.lsn))),
            ("xmin".into(), null()),
        ]);
        let datum = Avro::Record(vec![
            ("before".into(), row(&change.before)),
            ("after".into(), row(&change.after)),
            ("source".into(), source),
            ("transaction".into(), null()),
            ("op".into(), Avro::String(change.op.into())),
            ("ts_ms".into(), some(Avro::Long(change.ts_ms + 5))),
            ("ts_us".into(), null()),
            ("ts_ns".into(), null()),
        ]);
        wire(value_id, &write(&self.value, datum))
    }
}

/// Confluent's wire format: magic byte 0, the schema id, the payload.
pub fn wire(schema_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(0);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn write(schema: &Schema, datum: Avro) -> Vec<u8> {
    GenericDatumWriter::builder(schema)
        .build()
        .expect("writer")
        .write_value_to_vec(datum)
        .expect("the sample fits its schema")
}

fn null() -> Avro {
    Avro::Union(0, Box::new(Avro::Null))
}

fn some(v: Avro) -> Avro {
    Avro::Union(1, Box::new(v))
}

fn opt<T>(v: &Option<T>, f: impl Fn(&T) -> Avro) -> Avro {
    v.as_ref().map(|v| some(f(v))).unwrap_or_else(null)
}

fn account(a: &Account) -> Avro {
    Avro::Record(vec![
        ("id".into(), Avro::Int(a.id)),
        (
            "balance".into(),
            opt(&a.balance, |v| {
                Avro::Decimal(apache_avro::Decimal::from(twos_complement(*v)))
            }),
        ),
        (
            "rate".into(),
            opt(&a.rate, |(scale, v)| {
                Avro::Record(vec![
                    ("scale".into(), Avro::Int(*scale)),
                    ("value".into(), Avro::Bytes(twos_complement(*v))),
                ])
            }),
        ),
        ("born".into(), opt(&a.born, |d| Avro::Int(*d))),
        ("wake".into(), opt(&a.wake, |t| Avro::Long(*t))),
        ("seen".into(), opt(&a.seen, |t| Avro::Long(*t))),
        ("at".into(), opt(&a.at, |s| Avro::String(s.clone()))),
        ("ref".into(), opt(&a.r#ref, |s| Avro::String(s.clone()))),
        ("doc".into(), opt(&a.doc, |s| Avro::String(s.clone()))),
        ("photo".into(), opt(&a.photo, |b| Avro::Bytes(b.clone()))),
        ("note".into(), opt(&a.note, |s| Avro::String(s.clone()))),
    ])
}

pub use crate::decode::logical::twos_complement;

/// The rows the tests and the benchmark send: every type with a value, its
/// edges (negative, before the epoch, midnight), and nulls.
pub fn accounts(n: usize) -> Vec<Account> {
    (0..n as i32)
        .map(|i| {
            let id = i + 1;
            match id % 3 {
                1 => Account {
                    id,
                    balance: Some(123_456 + i128::from(id)),
                    rate: Some((20, 314_159_265_358_979_323_846)),
                    born: Some(7_440 + id),
                    wake: Some(23_415_123_456),
                    seen: Some(1_709_251_199_999_999),
                    at: Some("2024-03-01T10:00:00.5Z".into()),
                    r#ref: Some(format!("6f1c8d5e-0b7a-4c1e-9d2f-{id:012x}")),
                    doc: Some(format!(
                        r#"{{"tags": ["a", "b"], "n": 12345678901234567890.5, "id": {id}}}"#
                    )),
                    photo: Some(vec![0xde, 0xad, 0xbe, 0xef, 0x00, id as u8]),
                    note: Some(format!("héllo \"world\" {id}")),
                },
                2 => Account {
                    id,
                    balance: Some(-5),
                    rate: Some((3, -1)),
                    born: Some(-1),
                    wake: Some(0),
                    seen: Some(-1),
                    at: None,
                    r#ref: None,
                    doc: Some("[]".into()),
                    photo: Some(Vec::new()),
                    note: Some(String::new()),
                },
                _ => Account {
                    id,
                    ..Account::default()
                },
            }
        })
        .collect()
}

/// `account` as Debezium's JsonConverter writes it with the inline schema
/// (`schemas.enable=true`): decimals base64, dates and times as counts.
pub fn json_with_schema(change: &Change) -> Value {
    let opt = |t: &str, name: Option<&str>, field: &str, params: Option<Value>| {
        let mut f = json!({"type": t, "optional": true, "field": field});
        if let Some(n) = name {
            f["name"] = json!(n);
            f["version"] = json!(1);
        }
        if let Some(p) = params {
            f["parameters"] = p;
        }
        f
    };
    let row_fields = json!([
        {"type": "int32", "optional": false, "field": "id"},
        opt("bytes", Some("org.apache.kafka.connect.data.Decimal"), "balance",
            Some(json!({"scale": "2", "connect.decimal.precision": "12"}))),
        {"type": "struct", "fields": [
            {"type": "int32", "optional": false, "field": "scale"},
            {"type": "bytes", "optional": false, "field": "value"}],
         "optional": true, "name": "io.debezium.data.VariableScaleDecimal", "version": 1,
         "doc": "Variable scaled decimal", "field": "rate"},
        opt("int32", Some("io.debezium.time.Date"), "born", None),
        opt("int64", Some("io.debezium.time.MicroTime"), "wake", None),
        opt("int64", Some("io.debezium.time.MicroTimestamp"), "seen", None),
        opt("string", Some("io.debezium.time.ZonedTimestamp"), "at", None),
        opt("string", Some("io.debezium.data.Uuid"), "ref", None),
        opt("string", Some("io.debezium.data.Json"), "doc", None),
        opt("bytes", None, "photo", None),
        opt("string", None, "note", None),
    ]);
    let row_schema = |field: &str| {
        json!({"type": "struct", "fields": row_fields, "optional": true,
               "name": "pgserver.public.account.Value", "field": field})
    };
    let schema = json!({
        "type": "struct",
        "fields": [
            row_schema("before"),
            row_schema("after"),
            {"type": "struct", "fields": [
                {"type": "string", "optional": false, "field": "version"},
                {"type": "string", "optional": false, "field": "connector"},
                {"type": "string", "optional": false, "field": "name"},
                {"type": "int64", "optional": false, "field": "ts_ms"},
                {"type": "string", "optional": true, "name": "io.debezium.data.Enum", "version": 1,
                 "parameters": {"allowed": "true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"},
                 "default": "false", "field": "snapshot"},
                {"type": "string", "optional": false, "field": "db"},
                {"type": "string", "optional": true, "field": "sequence"},
                {"type": "int64", "optional": true, "field": "ts_us"},
                {"type": "int64", "optional": true, "field": "ts_ns"},
                {"type": "string", "optional": false, "field": "schema"},
                {"type": "string", "optional": false, "field": "table"},
                {"type": "int64", "optional": true, "field": "txId"},
                {"type": "int64", "optional": true, "field": "lsn"},
                {"type": "int64", "optional": true, "field": "xmin"}],
             "optional": false, "name": "io.debezium.connector.postgresql.Source", "field": "source"},
            {"type": "struct", "fields": [
                {"type": "string", "optional": false, "field": "id"},
                {"type": "int64", "optional": false, "field": "total_order"},
                {"type": "int64", "optional": false, "field": "data_collection_order"}],
             "optional": true, "name": "event.block", "version": 1, "field": "transaction"},
            {"type": "string", "optional": false, "field": "op"},
            {"type": "int64", "optional": true, "field": "ts_ms"},
            {"type": "int64", "optional": true, "field": "ts_us"},
            {"type": "int64", "optional": true, "field": "ts_ns"}
        ],
        "optional": false,
        "name": "pgserver.public.account.Envelope",
        "version": 2
    });
    let row = |a: &Option<Account>| match a {
        None => Value::Null,
        Some(a) => json!({
            "id": a.id,
            "balance": a.balance.map(|v| base64(&twos_complement(v))),
            "rate": a.rate.map(|(s, v)| json!({"scale": s, "value": base64(&twos_complement(v))})),
            "born": a.born,
            "wake": a.wake,
            "seen": a.seen,
            "at": a.at,
            "ref": a.r#ref,
            "doc": a.doc,
            "photo": a.photo.as_ref().map(|b| base64(b)),
            "note": a.note,
        }),
    };
    json!({
        "schema": schema,
        "payload": {
            "before": row(&change.before),
            "after": row(&change.after),
            "source": {"version": "3.0.0.Final", "connector": "postgresql", "name": "pgserver",
                       "ts_ms": change.ts_ms, "snapshot": "false", "db": "appdb", "sequence": null,
                       "ts_us": change.ts_ms * 1000, "ts_ns": change.ts_ms * 1_000_000,
                       "schema": "public", "table": "account", "txId": 780, "lsn": change.lsn,
                       "xmin": null},
            "transaction": null,
            "op": change.op,
            "ts_ms": change.ts_ms + 5,
            "ts_us": null,
            "ts_ns": null
        }
    })
}

/// Standard base64 with padding (what the JsonConverter writes for bytes).
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
