//! The decoders and the router fed with mutated real messages (the Debezium
//! and GoldenGate fixtures in tests/fixtures, whose sources its README
//! names): whatever the bytes, routing never panics, and every message is
//! either an event (with a key object and Kafka coordinates), a skip with a
//! reason, or rejected with a reason naming what is wrong. Nothing is lost
//! silently: a message that is neither an event nor a rejection is a
//! tombstone the pipeline skips, and says so.
//!
//! `PROPTEST_CASES=20000 cargo test --test fuzz_decoders` fuzzes longer.

use pgchain::config::Config;
use pgchain::route::{Message, Routed, Router};
use proptest::prelude::*;
use std::path::Path;

fn fixture(path: &str) -> Option<Vec<u8>> {
    std::fs::read(format!(
        "{}/tests/fixtures/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .ok()
}

/// (topic, key, value) of one message.
type Seed = (&'static str, Option<Vec<u8>>, Option<Vec<u8>>);

/// Every fixture message.
fn seeds() -> Vec<Seed> {
    let mut out = Vec::new();
    for name in [
        "pg_create_envelope",
        "pg_update_plain",
        "pg_delete_plain",
        "pg_delete_tombstone",
        "pg_snapshot_read",
        "pg_truncate",
        "oracle_create_envelope",
        "oracle_update_plain",
        "oracle_delete_plain",
        "pg_types_create",
        "pg_types_update_toast",
        "pg_types_update_text",
    ] {
        out.push((
            "dbz",
            fixture(&format!("debezium/{name}.key.json")),
            fixture(&format!("debezium/{name}.value.json")),
        ));
    }
    for name in [
        "flat_create",
        "flat_update",
        "flat_delete_rewrite",
        "flat_tombstone",
        "flat_plain",
    ] {
        out.push((
            "flat",
            fixture(&format!("debezium/{name}.key.json")),
            fixture(&format!("debezium/{name}.value.json")),
        ));
    }
    for name in ["insert", "update", "delete", "truncate", "insert_no_pk"] {
        out.push((
            "ogg",
            fixture(&format!("ogg/{name}.key.txt")),
            fixture(&format!("ogg/{name}.value.json")),
        ));
    }
    out.push((
        "rows",
        Some(br#"{"id": 7}"#.to_vec()),
        Some(br#"{"id": 7, "name": "Kim", "amount": 12.50}"#.to_vec()),
    ));
    out
}

fn router() -> Router {
    let yaml = "kafka:\n  brokers: k\npipelines:\n\
                \x20 dbz:\n    topic: dbz\n    tombstones: deliver\n    chain: [a.b]\n\
                \x20 flat:\n    topic: flat\n    format: debezium-flat\n    key: [id]\n    tombstones: deliver\n    chain: [a.b]\n\
                \x20 ogg:\n    topic: ogg\n    format: ogg\n    chain: [a.b]\n\
                \x20 rows:\n    topic: rows\n    format: json\n    key: [id]\n    chain: [a.b]\n";
    Router::new(&Config::from_text(yaml, Path::new("fuzz.yaml"), |_| None).expect("config"))
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
    /// Replaces a span with a JSON token that often changes a value's type.
    Splice(usize, usize, &'static str),
}

fn edit() -> impl Strategy<Value = Edit> {
    let token = prop::sample::select(vec![
        "null",
        "1",
        "-0",
        "1e400",
        "\"\"",
        "\"\\u0000\"",
        "[]",
        "{}",
        "true",
        "\"op\"",
        "\"d\"",
        "\"c\"",
        "\"u\"",
        "\"before\"",
        "\"after\"",
        "\"payload\"",
        "\"schema\"",
        "\"op_type\"",
        "123456789012345678901234567890",
        "\"\\ud800\"",
        "\u{fffd}",
        "\u{0}",
    ]);
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<usize>(), 1usize..40).prop_map(|(i, n)| Edit::Delete(i, n)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), 1usize..24, token).prop_map(|(i, n, t)| Edit::Splice(i, n, t)),
    ]
}

fn apply(bytes: &mut Vec<u8>, e: &Edit) {
    let len = bytes.len();
    let at = |i: usize| if len == 0 { 0 } else { i % (len + 1) };
    match e {
        Edit::Flip(i, b) if len > 0 => bytes[i % len] ^= b | 1,
        Edit::Flip(..) => {}
        Edit::Insert(i, b) => {
            let i = at(*i);
            bytes.splice(i..i, b.iter().copied());
        }
        Edit::Delete(i, n) => {
            let i = at(*i);
            let end = (i + n).min(len);
            bytes.drain(i..end);
        }
        Edit::Truncate(i) => bytes.truncate(at(*i)),
        Edit::Splice(i, n, t) => {
            let i = at(*i);
            let end = (i + n).min(len);
            bytes.splice(i..end, t.bytes());
        }
    }
}

/// Which part of the message an edit hits: the key, the value, or it drops one.
#[derive(Debug, Clone)]
enum Part {
    Key(Edit),
    Value(Edit),
    DropKey,
    DropValue,
}

fn part() -> impl Strategy<Value = Part> {
    prop_oneof![
        4 => edit().prop_map(Part::Key),
        12 => edit().prop_map(Part::Value),
        1 => Just(Part::DropKey),
        1 => Just(Part::DropValue),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, .. ProptestConfig::default() })]

    #[test]
    fn a_mutated_real_message_is_decoded_skipped_or_rejected_with_a_reason(
        seed in any::<prop::sample::Index>(),
        parts in prop::collection::vec(part(), 1..6),
    ) {
        let seeds = seeds();
        let (topic, key, value) = seed.get(&seeds).clone();
        let (mut key, mut value) = (key, value);
        for p in &parts {
            match p {
                Part::Key(e) => apply(key.get_or_insert_with(Vec::new), e),
                Part::Value(e) => apply(value.get_or_insert_with(Vec::new), e),
                Part::DropKey => key = None,
                Part::DropValue => value = None,
            }
        }
        let msg = Message {
            topic,
            partition: 3,
            offset: 42,
            timestamp: Some(1),
            key: key.as_deref(),
            value: value.as_deref(),
            headers: &[],
        };
        match router().route(&msg) {
            Ok(Routed::Event(ev, route)) => {
                prop_assert_eq!(&ev.kafka.topic, topic);
                prop_assert_eq!((ev.kafka.partition, ev.kafka.offset), (3, 42));
                prop_assert_eq!(&route.pipeline, topic);
                // Truncate is the one change without a key.
                prop_assert!(!ev.key.is_empty() || ev.op == pgchain::event::Op::Truncate, "{:?}", ev);
                // What the step receives is JSON PostgreSQL can parse back.
                let json = serde_json::to_string(&ev).expect("an event serialises");
                prop_assert!(serde_json::from_str::<serde_json::Value>(&json).is_ok());
            }
            Ok(Routed::Skip { reason, .. }) => {
                prop_assert!(!reason.to_string().is_empty());
            }
            Err(e) => {
                let why = e.to_string();
                prop_assert!(why.len() > "undecodable message: ".len(), "{}", why);
            }
        }
    }
}

#[test]
fn every_seed_routes_as_its_fixture_says() {
    let r = router();
    let mut events = 0;
    for (topic, key, value) in seeds() {
        let msg = Message {
            topic,
            partition: 0,
            offset: 0,
            timestamp: None,
            key: key.as_deref(),
            value: value.as_deref(),
            headers: &[],
        };
        match r.route(&msg) {
            Ok(Routed::Event(..)) => events += 1,
            Ok(Routed::Skip { .. }) => panic!("{topic}: skipped"),
            // GoldenGate without primary-key columns and without `key:`.
            Err(e) => assert_eq!(
                (topic, e.to_string().as_str()),
                (
                    "ogg",
                    "undecodable message: the message carries no key; set `key:` on pipeline `ogg`"
                )
            ),
        }
    }
    // Every other seed is an event (the Debezium tombstone a delete: `deliver`).
    assert_eq!(events, seeds().len() - 1);
}
