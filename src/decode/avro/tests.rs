use super::*;
use crate::samples::avro::{self as samples, Account, Change, Encoder};
use apache_avro::types::Value as Avro;
use serde_json::json;

fn schema() -> AvroSchema {
    AvroSchema::parse(samples::VALUE_SCHEMA).unwrap()
}

fn decode_change(change: &Change) -> Value {
    let bytes = Encoder::new().value(7, change);
    assert_eq!(crate::registry::wire_id(&bytes), Some(7));
    schema().decode(&bytes[5..]).unwrap()
}

#[test]
fn every_column_type_of_the_debezium_postgresql_schema_comes_out_as_exact_text() {
    let rows = samples::accounts(3);
    let v = decode_change(&Change {
        op: "c",
        before: None,
        after: Some(rows[0].clone()),
        ts_ms: 1_709_287_200_000,
        lsn: 24_023_128,
    });
    assert_eq!(
        v["after"],
        json!({
            "id": 1,
            "balance": "1234.57",
            "rate": "3.14159265358979323846",
            "born": "1990-05-17",
            "wake": "06:30:15.123456",
            "seen": "2024-02-29T23:59:59.999999",
            "at": "2024-03-01T10:00:00.5Z",
            "ref": "6f1c8d5e-0b7a-4c1e-9d2f-000000000001",
            "doc": serde_json::from_str::<Value>(r#"{"tags": ["a", "b"], "n": 12345678901234567890.5, "id": 1}"#).unwrap(),
            "photo": "\\xdeadbeef0001",
            "note": "héllo \"world\" 1"
        })
    );
    // The big number in the JSON column stays exact.
    assert_eq!(v["after"]["doc"]["n"].to_string(), "12345678901234567890.5");
    assert_eq!(v["before"], Value::Null);
    assert_eq!(v["op"], "c");
    assert_eq!(v["source"]["table"], "account");
    assert_eq!(v["source"]["lsn"], 24_023_128);
    assert_eq!(v["source"]["snapshot"], "false");
    assert_eq!(v["transaction"], Value::Null);
}

#[test]
fn negatives_pre_epoch_values_midnight_empty_values_and_nulls() {
    let rows = samples::accounts(3);
    let v = decode_change(&Change {
        op: "u",
        before: Some(rows[2].clone()),
        after: Some(rows[1].clone()),
        ts_ms: 1,
        lsn: 2,
    });
    assert_eq!(
        v["after"],
        json!({
            "id": 2, "balance": "-0.05", "rate": "-0.001", "born": "1969-12-31",
            "wake": "00:00:00", "seen": "1969-12-31T23:59:59.999999", "at": null,
            "ref": null, "doc": [], "photo": "\\x", "note": ""
        })
    );
    assert_eq!(
        v["before"],
        json!({
            "id": 3, "balance": null, "rate": null, "born": null, "wake": null,
            "seen": null, "at": null, "ref": null, "doc": null, "photo": null, "note": null
        })
    );
}

/// Avro's own logical types (not Connect's names): what other producers
/// write.
#[test]
fn avro_logical_types() {
    let text = r#"{"type": "record", "name": "r", "fields": [
        {"name": "d", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 3}},
        {"name": "f", "type": {"type": "fixed", "name": "f5", "size": 5, "logicalType": "decimal", "precision": 10, "scale": 1}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "tm", "type": {"type": "int", "logicalType": "time-millis"}},
        {"name": "tu", "type": {"type": "long", "logicalType": "time-micros"}},
        {"name": "sm", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "su", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "lm", "type": {"type": "long", "logicalType": "local-timestamp-millis"}},
        {"name": "lu", "type": {"type": "long", "logicalType": "local-timestamp-micros"}},
        {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "b", "type": "bytes"},
        {"name": "x", "type": "double"},
        {"name": "y", "type": "float"},
        {"name": "e", "type": {"type": "enum", "name": "color", "symbols": ["red", "green"]}},
        {"name": "m", "type": {"type": "map", "values": ["null", "long"]}},
        {"name": "a", "type": {"type": "array", "items": "f5"}}
    ]}"#;
    let schema = apache_avro::Schema::parse_str(text).unwrap();
    let dec = |b: Vec<u8>| Avro::Decimal(apache_avro::Decimal::from(b));
    let datum = Avro::Record(vec![
        ("d".into(), dec(samples::twos_complement(-123_456_789))),
        ("f".into(), dec(vec![0xff, 0xff, 0xff, 0xff, 0xfe])),
        ("day".into(), Avro::Date(19_000)),
        ("tm".into(), Avro::TimeMillis(45_296_789)),
        ("tu".into(), Avro::TimeMicros(45_296_789_012)),
        ("sm".into(), Avro::TimestampMillis(1_529_507_596_945)),
        ("su".into(), Avro::TimestampMicros(1_529_507_596_945_104)),
        ("lm".into(), Avro::LocalTimestampMillis(0)),
        ("lu".into(), Avro::LocalTimestampMicros(-1)),
        (
            "id".into(),
            Avro::Uuid("a1a2a3a4-b1b2-c1c2-d1d2-d3d4d5d6d7d8".parse().unwrap()),
        ),
        ("b".into(), Avro::Bytes(vec![1, 2, 255])),
        ("x".into(), Avro::Double(0.1)),
        ("y".into(), Avro::Float(f32::NAN)),
        ("e".into(), Avro::Enum(1, "green".into())),
        (
            "m".into(),
            Avro::Map([("k".to_string(), Avro::Union(1, Box::new(Avro::Long(5))))].into()),
        ),
        ("a".into(), Avro::Array(vec![dec(vec![0, 0, 0, 0, 15])])),
    ]);
    let bytes = apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
        .build()
        .unwrap()
        .write_value_to_vec(datum)
        .unwrap();
    let v = AvroSchema::parse(text).unwrap().decode(&bytes).unwrap();
    assert_eq!(
        v,
        json!({
            "d": "-123456.789", "f": "-0.2", "day": "2022-01-08", "tm": "12:34:56.789000",
            "tu": "12:34:56.789012", "sm": "2018-06-20T15:13:16.945000",
            "su": "2018-06-20T15:13:16.945104", "lm": "1970-01-01T00:00:00",
            "lu": "1969-12-31T23:59:59.999999", "id": "a1a2a3a4-b1b2-c1c2-d1d2-d3d4d5d6d7d8",
            "b": "\\x0102ff", "x": 0.1, "y": "NaN", "e": "green", "m": {"k": 5}, "a": ["1.5"]
        })
    );
    assert_eq!(v["x"].to_string(), "0.1");
}

#[test]
fn bytes_that_do_not_match_the_schema_are_refused_with_where() {
    let s = schema();
    let good = Encoder::new().value(
        1,
        &Change {
            op: "c",
            before: None,
            after: Some(samples::accounts(1)[0].clone()),
            ts_ms: 1,
            lsn: 1,
        },
    );
    // Cut short.
    assert!(s.decode(&good[5..good.len() - 3]).is_err());
    // Trailing bytes: written with another schema.
    let mut longer = good[5..].to_vec();
    longer.extend([2, 4]);
    assert_eq!(
        s.decode(&longer).unwrap_err(),
        "2 bytes are left after the datum (written with another schema?)"
    );
    // A JSON column whose text is not JSON names the column.
    let bad = Account {
        id: 9,
        doc: Some("{not json".into()),
        ..Account::default()
    };
    let bytes = Encoder::new().value(
        1,
        &Change {
            op: "c",
            before: None,
            after: Some(bad),
            ts_ms: 1,
            lsn: 1,
        },
    );
    let e = s.decode(&bytes[5..]).unwrap_err();
    assert!(
        e.starts_with("`after.doc`: io.debezium.data.Json is not JSON"),
        "{e}"
    );
    // A date out of range names the column too.
    let far = Account {
        id: 9,
        born: Some(i32::MAX),
        ..Account::default()
    };
    let bytes = Encoder::new().value(
        1,
        &Change {
            op: "c",
            before: None,
            after: Some(far),
            ts_ms: 1,
            lsn: 1,
        },
    );
    let e = s.decode(&bytes[5..]).unwrap_err();
    assert!(
        e.starts_with("`after.born`: 2147483647 is out of range"),
        "{e}"
    );
}

#[test]
fn key_schema() {
    let key = Encoder::new().key(3, 42);
    assert_eq!(&key[..5], &[0, 0, 0, 0, 3]);
    let s = AvroSchema::parse(samples::KEY_SCHEMA).unwrap();
    assert_eq!(s.decode(&key[5..]).unwrap(), json!({"id": 42}));
}

#[test]
fn blocks_with_sizes_fixed_uuids_durations_and_recursion_limits() {
    // An array written in one block with a negative count and its size in
    // bytes (what writers that can skip blocks do): -2 items, 2 bytes, 1, -1.
    let s = AvroSchema::parse(r#"{"type": "array", "items": "long"}"#).unwrap();
    assert_eq!(s.decode(&[3, 4, 2, 1, 0]).unwrap(), json!([1, -1]));
    // A block claiming more items than bytes is refused, not allocated.
    let e = s.decode(&[0xfe, 0xff, 0xff, 0xff, 0x0f]).unwrap_err();
    assert!(e.starts_with("a block of "), "{e}");
    let s = AvroSchema::parse(
        r#"{"type": "record", "name": "r", "fields": [
            {"name": "u", "type": {"type": "fixed", "name": "u16", "size": 16, "logicalType": "uuid"}},
            {"name": "d", "type": {"type": "fixed", "name": "d12", "size": 12, "logicalType": "duration"}}]}"#,
    )
    .unwrap();
    let mut datum: Vec<u8> = (0u8..16).collect();
    datum.extend([1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0]);
    assert_eq!(
        s.decode(&datum).unwrap(),
        json!({"u": "00010203-0405-0607-0809-0a0b0c0d0e0f", "d": "1 months 2 days 3 milliseconds"})
    );
    // A recursive schema nests as deep as the data says, up to a limit.
    let s = AvroSchema::parse(
        r#"{"type": "record", "name": "node", "fields": [
            {"name": "v", "type": "int"}, {"name": "next", "type": ["null", "node"]}]}"#,
    )
    .unwrap();
    assert_eq!(
        s.decode(&[2, 2, 4, 0]).unwrap(),
        json!({"v": 1, "next": {"v": 2, "next": null}})
    );
    let deep: Vec<u8> = std::iter::repeat_n([2u8, 2], 200)
        .flatten()
        .chain([2, 0])
        .collect();
    let e = s.decode(&deep).unwrap_err();
    assert!(e.ends_with("nested deeper than 128 levels"), "{e}");
    // Not UTF-8, a bad boolean, a union branch past the schema's.
    let s = AvroSchema::parse(r#"["null", "string", "boolean"]"#).unwrap();
    assert!(s.decode(&[2, 2, 0xff]).unwrap_err().contains("not UTF-8"));
    assert_eq!(s.decode(&[4, 7]).unwrap_err(), "boolean byte 7");
    assert_eq!(
        s.decode(&[6]).unwrap_err(),
        "union branch 3 is not in the schema"
    );
    // A schema Avro itself refuses.
    assert!(
        AvroSchema::parse(
            r#"{"type": "record", "name": "r", "fields": [{"name": "a", "type": "nope"}]}"#
        )
        .is_err()
    );
}

/// `v` with two digits after the point, by integer arithmetic.
fn cents(v: i128) -> String {
    let sign = if v < 0 { "-" } else { "" };
    let a = v.unsigned_abs();
    format!("{sign}{}.{:02}", a / 100, a % 100)
}

proptest::proptest! {
    #[test]
    fn any_row_written_by_apache_avro_reads_back_exact(
        balance in -(10i128.pow(12) - 1)..10i128.pow(12),
        scale in 0i32..30,
        unscaled in proptest::num::i128::ANY,
        born in -700_000i32..2_900_000,
        wake in 0i64..86_400_000_000,
        seen in -62_135_596_800_000_000i64..253_402_300_799_999_999,
        note in ".*",
        photo in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
    ) {
        let row = Account {
            id: 1,
            balance: Some(balance),
            rate: Some((scale, unscaled)),
            born: Some(born),
            wake: Some(wake),
            seen: Some(seen),
            note: Some(note.clone()),
            photo: Some(photo.clone()),
            ..Account::default()
        };
        let v = decode_change(&Change { op: "r", before: None, after: Some(row), ts_ms: 1, lsn: 1 });
        let after = &v["after"];
        proptest::prop_assert_eq!(after["balance"].as_str().unwrap(), cents(balance));
        proptest::prop_assert_eq!(
            after["rate"].as_str().unwrap(),
            logical::decimal(&samples::twos_complement(unscaled), scale)
        );
        proptest::prop_assert_eq!(after["born"].as_str().unwrap(), logical::date(i64::from(born)).unwrap());
        proptest::prop_assert_eq!(after["wake"].as_str().unwrap(), logical::time(wake, Unit::Micros).unwrap());
        proptest::prop_assert_eq!(after["seen"].as_str().unwrap(), logical::timestamp(seen, Unit::Micros).unwrap());
        proptest::prop_assert_eq!(after["note"].as_str().unwrap(), note.as_str());
        proptest::prop_assert_eq!(after["photo"].as_str().unwrap(), logical::bytea(&photo));
    }
}

proptest::proptest! {
    /// Whatever the bytes, decoding ends in a value or an error, never a
    /// panic or an allocation the bytes do not pay for.
    #[test]
    fn any_bytes_decode_or_fail_cleanly(
        bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
    ) {
        let _ = schema().decode(&bytes);
        let s = AvroSchema::parse(
            r#"{"type": "record", "name": "r", "fields": [
                {"name": "a", "type": {"type": "array", "items": ["null", "double", {"type": "map", "values": "float"}]}},
                {"name": "u", "type": {"type": "fixed", "name": "u", "size": 16, "logicalType": "uuid"}},
                {"name": "e", "type": {"type": "enum", "name": "e", "symbols": ["x"]}},
                {"name": "n", "type": ["null", "r"]}]}"#,
        )
        .unwrap();
        let _ = s.decode(&bytes);
    }
}

/// Debezium's placeholder of a value it does not have (an unchanged TOASTed
/// column) arrives in a `bytea` column as the placeholder's bytes: it reaches
/// the Debezium decoder as the text, which lists the column as unchanged.
#[test]
fn an_unavailable_bytea_value_is_listed_unchanged_not_stored() {
    let row = Account {
        id: 4,
        photo: Some(crate::decode::debezium::UNAVAILABLE.as_bytes().to_vec()),
        note: Some("__custom_placeholder".into()),
        doc: Some("{}".into()),
        ..Account::default()
    };
    let bytes = Encoder::new().value(
        1,
        &Change {
            op: "u",
            before: None,
            after: Some(row),
            ts_ms: 1,
            lsn: 1,
        },
    );
    let value = schema().decode(&bytes[5..]).unwrap();
    assert_eq!(value["after"]["photo"], "__debezium_unavailable_value");
    let opts = crate::decode::DecodeOptions {
        placeholders: crate::decode::Placeholders::new(Some("__custom_placeholder")),
        ..Default::default()
    };
    let crate::decode::Decoded::Change(c) = crate::decode::decode_values(
        crate::config::Format::Debezium,
        Some(json!({"id": 4})),
        Some(value),
        &opts,
    )
    .unwrap() else {
        panic!("a change")
    };
    let mut unchanged = c.unchanged.clone();
    unchanged.sort();
    assert_eq!(unchanged, ["note", "photo"]);
    let after = c.after.unwrap();
    assert!(!after.contains_key("photo") && !after.contains_key("note"));
    assert_eq!(after["doc"], json!({}));
    // Other bytes stay hex.
    let other = schema()
        .decode_marking(&bytes[5..], &["something else"])
        .unwrap();
    assert!(
        other["after"]["photo"]
            .as_str()
            .unwrap()
            .starts_with("\\x5f5f")
    );
}

/// The same change as Debezium JSON with the inline schema and as Avro
/// decodes to the same event: the same text for every type.
#[test]
fn avro_and_json_with_the_inline_schema_give_the_same_change() {
    let opts = crate::decode::DecodeOptions::default();
    for (i, row) in samples::accounts(3).into_iter().enumerate() {
        let change = Change {
            op: "u",
            before: Some(samples::accounts(3)[(i + 1) % 3].clone()),
            after: Some(row.clone()),
            ts_ms: 1_709_287_200_000,
            lsn: 24_023_128,
        };
        let json = samples::json_with_schema(&change).to_string();
        let key = format!(r#"{{"id": {}}}"#, row.id);
        let from_json = crate::decode::decode(
            crate::config::Format::Debezium,
            Some(key.as_bytes()),
            Some(json.as_bytes()),
            &opts,
        )
        .unwrap();
        let enc = Encoder::new();
        let avro_key = enc.key(1, row.id);
        let avro_value = enc.value(2, &change);
        let key_value = AvroSchema::parse(samples::KEY_SCHEMA)
            .unwrap()
            .decode(&avro_key[5..])
            .unwrap();
        let from_avro = crate::decode::decode_values(
            crate::config::Format::Debezium,
            Some(key_value),
            Some(schema().decode(&avro_value[5..]).unwrap()),
            &opts,
        )
        .unwrap();
        assert_eq!(from_avro, from_json, "row {}", row.id);
    }
}
