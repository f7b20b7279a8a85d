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
fn goldengate_missing_columns_tokens_custom_codes_and_local_op_ts() {
    // Flagged missing and no before image: the stored values stand.
    let u = change(ogg("update_missing"));
    assert_eq!(u.op, Op::Update);
    assert_eq!(u.unchanged, vec!["CITY".to_string(), "STATE".to_string()]);
    assert_eq!(
        u.after,
        Some(obj(
            json!({"CUST_CODE": "JANE", "NAME": "JANE'S FLOWER SHOP"})
        ))
    );
    assert_eq!(u.source.extra["tokens"]["R"], "AADPkvAAEAAEqL2AAA");
    assert_eq!(u.source.extra["current_ts"], "2024-06-10T16:16:07.104002");

    // A before image supplies what `after` leaves out: nothing is unchanged.
    let mut with_before: serde_json::Value =
        serde_json::from_slice(&fixture("ogg/update_missing.value.json").unwrap()).unwrap();
    with_before["before"] =
        json!({"CUST_CODE": "JANE", "NAME": "JANE'S", "CITY": "DENVER", "STATE": "CO"});
    let u = change(decode(
        Format::Ogg,
        None,
        Some(with_before.to_string().as_bytes()),
        &DecodeOptions::default(),
    ));
    assert!(u.unchanged.is_empty());
    assert_eq!(u.after.unwrap()["CITY"], "DENVER");

    // The handler's own op-type keys and local time.
    let value = fixture("ogg/insert_custom_codes.value.json").unwrap();
    let e = decode(Format::Ogg, None, Some(&value), &DecodeOptions::default()).unwrap_err();
    assert!(e.0.contains("unknown GoldenGate op_type `INSERT`"), "{e}");
    assert!(e.0.contains("ogg.op_types"), "{e}");
    let options = crate::config::OggOptions {
        op_types: crate::config::OpTypes {
            insert: "INSERT".into(),
            update: "UPDATE".into(),
            delete: "DELETE".into(),
            truncate: "TRUNCATE".into(),
        },
        op_ts_zone: "America/Los_Angeles".into(),
    };
    let opts = DecodeOptions {
        ogg: ogg::Settings::of(Some(&options)),
        ..DecodeOptions::default()
    };
    let i = change(decode(Format::Ogg, None, Some(&value), &opts));
    assert_eq!(i.op, Op::Create);
    // 09:15:42 in Los Angeles in June is 16:15:42 UTC.
    assert_eq!(i.source.ts_ms, Some(1718036142000));
}

#[test]
fn plain_json_rows_and_deletes() {
    let opts = DecodeOptions {
        key_fields: vec!["id".into()],
        ..DecodeOptions::default()
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
            "unknown GoldenGate op_type `Z` (this pipeline reads I insert, U update, D delete, T truncate: `ogg.op_types`)",
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

fn flat(name: &str, headers: &[(&str, Option<&[u8]>)]) -> Result<Decoded, DecodeError> {
    let key = fixture(&format!("debezium/{name}.key.json"));
    let value = fixture(&format!("debezium/{name}.value.json"));
    decode_with_headers(
        Format::DebeziumFlat,
        key.as_deref(),
        value.as_deref(),
        &headers_json(headers),
        &DecodeOptions::default(),
    )
}

/// The PostgreSQL connector's default encodings (decimal.handling.mode=precise,
/// time.precision.mode=adaptive) of one row, as the JsonConverter writes
/// them with its schema.
#[test]
fn debezium_values_are_decoded_by_their_inline_schema() {
    let c = change(debezium("pg_types_create"));
    assert_eq!(c.key, Some(obj(json!({"id": 1}))));
    let after = serde_json::Value::Object(c.after.unwrap());
    let want: serde_json::Value = serde_json::from_str(
        r#"{"id": 1, "amount": "1234.56", "ratio": "3.14159", "paid_on": "2024-06-10",
            "paid_at": "12:34:56.789012", "created": "2024-06-10T06:52:25.123456",
            "updated": "2024-06-10T06:52:25.123456Z", "ref": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "doc": {"tier": "gold", "tags": ["a", "b"], "limit": 1000.50},
            "blob": "\\xdeadbeef", "note": "first note, long enough to be TOASTed"}"#,
    )
    .unwrap();
    assert_eq!(after, want);
    assert!(c.unchanged.is_empty());
    assert_eq!(
        c.source.extra["transaction"],
        json!({"id": "781:24023128", "total_order": 1, "data_collection_order": 1})
    );
    assert_eq!(c.source.position.as_deref(), Some("24023128"));
}

#[test]
fn unavailable_values_are_listed_as_unchanged_not_passed_on() {
    let u = change(debezium("pg_types_update_toast"));
    let after = u.after.unwrap();
    // The text column's placeholder and the bytea column's (base64).
    assert_eq!(u.unchanged, ["blob", "note"]);
    assert!(!after.contains_key("note") && !after.contains_key("blob"));
    assert_eq!(after["amount"], "99.99");
    assert_eq!(after["doc"], "just a string");
    // A placeholder of the connector's own.
    let value = br#"{"op": "u", "after": {"id": 1, "note": "<toasted>", "other": "__debezium_unavailable_value"}}"#;
    let opts = DecodeOptions {
        placeholders: Placeholders::new(Some("<toasted>")),
        ..Default::default()
    };
    let c = change(decode(
        Format::Debezium,
        Some(br#"{"id": 1}"#),
        Some(value),
        &opts,
    ));
    assert_eq!(c.unchanged, ["note", "other"]);
    assert_eq!(
        serde_json::Value::Object(c.after.unwrap()),
        json!({"id": 1})
    );
}

#[test]
fn a_value_against_its_schema_is_undecodable_naming_the_field() {
    let text = String::from_utf8(fixture("debezium/pg_types_create.value.json").unwrap()).unwrap();
    let bad = text.replace(r#""amount": "AeJA""#, r#""amount": "AeJA!""#);
    assert_ne!(bad, text);
    let e = decode(
        Format::Debezium,
        None,
        Some(bad.as_bytes()),
        &DecodeOptions::default(),
    )
    .unwrap_err();
    assert!(
        e.0.starts_with("`after.amount` is declared org.apache.kafka.connect.data.Decimal (bytes) but is not base64"),
        "{e}"
    );
    let bad = text.replace(r#""paid_on": 19884"#, r#""paid_on": "2024-06-10""#);
    let e = decode(
        Format::Debezium,
        None,
        Some(bad.as_bytes()),
        &DecodeOptions::default(),
    )
    .unwrap_err();
    assert_eq!(
        e.0,
        "`after.paid_on` is declared io.debezium.time.Date (int32) but found a string"
    );
}

#[test]
fn flattened_rows_creates_updates_rewritten_deletes_and_tombstones() {
    let c = change(flat("flat_create", &[]));
    assert_eq!(
        (c.op, c.key.clone()),
        (Op::Create, Some(obj(json!({"id": 2}))))
    );
    let after = c.after.unwrap();
    assert_eq!(after["amount"], "1234.56");
    assert_eq!(after["paid_on"], "2024-06-10");
    assert!(!after.keys().any(|k| k.starts_with("__")), "{after:?}");
    assert_eq!(c.source.table.as_deref(), Some("payment"));
    assert_eq!(c.source.ts_ms, Some(1718002345123));
    assert_eq!(c.source.position.as_deref(), Some("24023128"));
    assert_eq!(c.source.extra["added"]["__op"], "c");

    let u = change(flat("flat_update", &[]));
    assert_eq!((u.op, u.unchanged), (Op::Update, vec!["note".to_string()]));

    let d = change(flat("flat_delete_rewrite", &[]));
    assert_eq!((d.op, d.after), (Op::Delete, None));
    let before = d.before.unwrap();
    assert_eq!(
        (before["id"].clone(), before["amount"].clone()),
        (json!(2), json!("99.99"))
    );

    assert_eq!(
        flat("flat_tombstone", &[]).unwrap(),
        Decoded::Tombstone {
            key: obj(json!({"id": 2}))
        }
    );

    // add.headers: the same fields as Kafka headers.
    let headers: &[(&str, Option<&[u8]>)] = &[
        ("__op", Some(b"u")),
        ("__table", Some(b"customers")),
        ("__db", Some(b"inventory")),
        ("__source_ts_ms", Some(b"1718002345123")),
        ("__lsn", Some(b"24023128")),
    ];
    let h = change(flat("flat_plain", headers));
    assert_eq!(h.op, Op::Update);
    assert_eq!(
        (h.source.schema.as_deref(), h.source.table.as_deref()),
        (Some("inventory"), Some("customers"))
    );
    assert_eq!(h.source.ts_ms, Some(1718002345123));
    assert_eq!(h.after.unwrap()["first_name"], "Anne");
    // Without any: a row state.
    assert_eq!(change(flat("flat_plain", &[])).op, Op::Read);
}

#[test]
fn headers_are_text_or_base64() {
    let h = headers_json(&[
        ("trace", Some(b"abc")),
        ("raw", Some(&[0xff, 0x00])),
        ("none", None),
        ("twice", Some(b"1")),
        ("twice", Some(b"2")),
    ]);
    assert_eq!(
        serde_json::Value::Object(h),
        json!({"trace": "abc", "raw": {"base64": "/wA="}, "none": null, "twice": ["1", "2"]})
    );
}
