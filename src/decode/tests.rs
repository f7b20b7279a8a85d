//! Decoders against the documented message shapes in tests/fixtures.

use super::*;
use crate::config::Format;
use serde_json::json;

fn fixture(path: &str) -> Option<Vec<u8>> {
    let full = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(full).ok()
}

fn debezium(name: &str) -> Result<Decoded, DecodeError> {
    let key = fixture(&format!("debezium/{name}.key.json"));
    let value = fixture(&format!("debezium/{name}.value.json"));
    decode(
        Format::Debezium,
        key.as_deref(),
        value.as_deref(),
        &DecodeOptions::default(),
    )
}

fn ogg(name: &str) -> Result<Decoded, DecodeError> {
    let value = fixture(&format!("ogg/{name}.value.json")).expect("fixture");
    decode(Format::Ogg, None, Some(&value), &DecodeOptions::default())
}

fn change(d: Result<Decoded, DecodeError>) -> Change {
    match d.expect("decodes") {
        Decoded::Change(c) => c,
        other => panic!("expected a change, got {other:?}"),
    }
}

fn obj(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    v.as_object().unwrap().clone()
}

#[test]
fn debezium_postgres_with_and_without_envelope() {
    let c = change(debezium("pg_create_envelope"));
    assert_eq!(c.op, Op::Create);
    assert_eq!(c.key, Some(obj(json!({"id": 1001}))));
    assert_eq!(c.before, None);
    assert_eq!(c.after.unwrap()["phone"], "010-1234-5678");
    assert_eq!(c.source.system, "pgserver");
    assert_eq!(c.source.schema.as_deref(), Some("public"));
    assert_eq!(c.source.table.as_deref(), Some("customer"));
    assert_eq!(c.source.ts_ms, Some(1718002345123));
    assert_eq!(c.source.position.as_deref(), Some("24023128"));

    let u = change(debezium("pg_update_plain"));
    assert_eq!(u.op, Op::Update);
    assert_eq!(u.before.unwrap()["phone"], "010-1234-5678");
    assert_eq!(u.after.unwrap()["phone"], "010-9876-5432");

    let d = change(debezium("pg_delete_plain"));
    assert_eq!((d.op, d.after), (Op::Delete, None));
    assert_eq!(d.key, Some(obj(json!({"id": 1002}))));

    let r = change(debezium("pg_snapshot_read"));
    assert_eq!(r.op, Op::Read);
}

#[test]
fn debezium_tombstone_and_truncate() {
    assert_eq!(
        debezium("pg_delete_tombstone").unwrap(),
        Decoded::Tombstone {
            key: obj(json!({"id": 1002}))
        }
    );
    // A JSON null value, bare or in the JsonConverter's envelope, is not a
    // Kafka tombstone: said apart.
    for value in [
        &b"null"[..],
        br#"{"schema": {"type": "struct"}, "payload": null}"#,
    ] {
        assert_eq!(
            decode(
                Format::Debezium,
                Some(br#"{"id": 7}"#),
                Some(value),
                &DecodeOptions::default()
            ),
            Ok(Decoded::NullValue {
                key: obj(json!({"id": 7}))
            })
        );
    }
    let t = change(debezium("pg_truncate"));
    assert_eq!(
        (t.op, t.key, t.before, t.after),
        (Op::Truncate, None, None, None)
    );
    assert_eq!(t.source.table.as_deref(), Some("customer"));
}

#[test]
fn debezium_oracle_flavour() {
    let c = change(debezium("oracle_create_envelope"));
    assert_eq!(c.op, Op::Create);
    assert_eq!(c.key, Some(obj(json!({"ID": 1004}))));
    assert!(c.source.position.is_some(), "the SCN is the position");
    assert_eq!(c.source.table.as_deref(), Some("CUSTOMERS"));
    let u = change(debezium("oracle_update_plain"));
    assert_eq!(u.after.unwrap()["EMAIL"], "sujin.choi@example.co.kr");
    let d = change(debezium("oracle_delete_plain"));
    assert_eq!((d.op, d.key), (Op::Delete, Some(obj(json!({"ID": 1005})))));
}

#[test]
fn goldengate_op_modelled() {
    let i = change(ogg("insert"));
    assert_eq!(i.op, Op::Create);
    assert_eq!(i.key, Some(obj(json!({"CUST_CODE": "WILL"}))));
    assert_eq!(i.source.schema.as_deref(), Some("QASOURCE"));
    assert_eq!(i.source.table.as_deref(), Some("TCUSTMER"));
    assert_eq!(i.source.ts_ms, Some(1718003742000));
    assert_eq!(i.source.position.as_deref(), Some("00000000030000001532"));

    // A compressed update: columns missing from `after` are unchanged.
    let u = change(ogg("update"));
    let after = u.after.unwrap();
    assert_eq!(after["CITY"], "BOULDER");
    assert_eq!(after["NAME"], "JANE'S FLOWER SHOP");

    let d = change(ogg("delete"));
    assert_eq!(
        (d.op, d.key),
        (Op::Delete, Some(obj(json!({"CUST_CODE": "DAVE"}))))
    );

    let t = change(ogg("truncate"));
    assert_eq!((t.op, t.key), (Op::Truncate, None));

    // Without primary_keys the router takes the key from `key:`.
    assert_eq!(change(ogg("insert_no_pk")).key, None);
}

#[test]
fn plain_json_rows_and_deletes() {
    let opts = DecodeOptions {
        key_fields: vec!["id".into()],
        ..Default::default()
    };
    let c = change(decode(
        Format::Json,
        None,
        Some(br#"{"id": 7, "name": "x"}"#),
        &opts,
    ));
    assert_eq!((c.op, c.key), (Op::Read, Some(obj(json!({"id": 7})))));
    let d = change(decode(Format::Json, Some(b"7"), None, &opts));
    assert_eq!((d.op, d.key), (Op::Delete, Some(obj(json!({"id": 7})))));
    let e = decode(Format::Json, None, Some(br#"{"name": "x"}"#), &opts).unwrap_err();
    assert_eq!(e.0, "key column `id` is missing from the row");
}

#[test]
fn undecodable_messages_say_why() {
    let opts = DecodeOptions::default();
    type Case = (
        Format,
        Option<&'static [u8]>,
        Option<&'static [u8]>,
        &'static str,
    );
    let cases: &[Case] = &[
        (
            Format::Debezium,
            None,
            Some(b"{not json"),
            "the message value is not valid JSON: key must be a string at line 1 column 2",
        ),
        (
            Format::Debezium,
            None,
            Some(br#"{"op":"x","after":{}}"#),
            "unknown Debezium op `x`",
        ),
        (
            Format::Debezium,
            None,
            Some(br#"{"after":{}}"#),
            "the Debezium payload has no `op`",
        ),
        (
            Format::Debezium,
            None,
            Some(br#"{"op":1,"after":{}}"#),
            "the Debezium `op` must be a string (c, u, d, r or t), found a number: 1",
        ),
        (
            Format::Debezium,
            None,
            Some(br#"{"op":"c","after":null}"#),
            "op `c` without an `after` row",
        ),
        (
            Format::Debezium,
            None,
            None,
            "the message has neither a key nor a value",
        ),
        (
            Format::Debezium,
            Some(b"[1]"),
            Some(br#"{"op":"c","after":{}}"#),
            "the Debezium key must be an object, found an array",
        ),
        (
            Format::Ogg,
            None,
            Some(br#"{"table":"A.B","op_type":"Z"}"#),
            "unknown GoldenGate op_type `Z`",
        ),
        (
            Format::Ogg,
            None,
            Some(br#"{"op_type":"I","after":{}}"#),
            "the GoldenGate record has no `table`",
        ),
        (
            Format::Ogg,
            None,
            None,
            "the GoldenGate message has no value",
        ),
    ];
    for (format, key, value, want) in cases {
        let got = decode(*format, *key, *value, &opts).unwrap_err();
        assert_eq!(got.0, *want);
    }
}
