//! Debezium JSON as Debezium sends it by default (the JsonConverter with
//! its inline schema), and flattened by the ExtractNewRecordState transform,
//! run end to end by `pgchain run --until-drained` into `l0_upsert` tables
//! with typed columns, compared value by value with the source values the
//! fixtures encode (tests/fixtures/README.md).

mod common;

use common::{Kafka, TestDb, temp_dir};
use pgchain::kafka::Record;
use std::path::Path;
use std::process::{Command, Output};

const ENVELOPE: &str = "shop.public.payment";
const FLAT: &str = "flat.public.payment";
const FLAT_HEADERS: &str = "flat.inventory.customers";

const COLUMNS: &str = r#"{id: integer, amount: "numeric(12,2)", ratio: numeric, paid_on: date, paid_at: time, created: timestamp, updated: timestamptz, ref: uuid, doc: jsonb, blob: bytea, note: text}"#;

fn fixture(name: &str) -> Option<Vec<u8>> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/debezium")
            .join(name),
    )
    .ok()
}

/// The fixture message `name` on `topic`, with `headers`.
fn message(topic: &str, name: &str, headers: &[(&str, &[u8])]) -> Record {
    Record {
        topic: topic.to_string(),
        key: fixture(&format!("{name}.key.json")),
        value: fixture(&format!("{name}.value.json")),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), Some(v.to_vec())))
            .collect(),
    }
}

/// A project of the three pipelines; a short session timeout, so that a
/// second run takes the partitions without waiting long for the first.
fn project(label: &str) -> std::path::PathBuf {
    let dir = temp_dir(label);
    std::fs::create_dir_all(dir.join("sql/migrations")).unwrap();
    std::fs::write(
        dir.join("pipelines.yaml"),
        format!(
            "kafka:\n  brokers: ${{KAFKA_BROKERS}}\n  group_id: dbz\n  options:\n    session.timeout.ms: 6000\npostgres:\n  url: ${{DATABASE_URL}}\n\
             pipelines:\n\
             \x20 payment:\n    topic: {ENVELOPE}\n    format: debezium\n    chain: [l0.copy_payment, t.record]\n\
             \x20 flat_payment:\n    topic: {FLAT}\n    format: debezium-flat\n    tombstones: deliver\n    chain: [l0.copy_flat_payment, t.record]\n\
             \x20 flat_customers:\n    topic: {FLAT_HEADERS}\n    format: debezium-flat\n    chain: [t.record]\n\
             procedures:\n\
             \x20 l0.copy_payment:\n    template: l0_upsert\n    vars:\n      table: l0.payment\n      columns: {COLUMNS}\n      key: [id]\n\
             \x20 l0.copy_flat_payment:\n    template: l0_upsert\n    vars:\n      table: l0.flat_payment\n      columns: {COLUMNS}\n      key: [id]\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("sql/migrations/V1__record.sql"),
        "create schema t;\ncreate table t.seen (seq bigserial primary key, ev jsonb not null);\n\
         create procedure t.record(inout ev jsonb) language plpgsql as $$\n\
         begin insert into t.seen (ev) values (ev); end $$;\n",
    )
    .unwrap();
    dir
}

fn pgchain(dir: &Path, args: &[&str], db: &TestDb, kafka: &Kafka) -> String {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_pgchain"))
        .args(args)
        .arg("-c")
        .arg(dir.join("pipelines.yaml"))
        .env("DATABASE_URL", &db.url)
        .env("KAFKA_BROKERS", &kafka.brokers)
        .output()
        .expect("run pgchain");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "pgchain {args:?}: {text}");
    text
}

fn drain(dir: &Path, db: &TestDb, kafka: &Kafka) -> String {
    let out = pgchain(dir, &["run", "--until-drained"], db, kafka);
    assert!(!out.contains("dead-lettered"), "{out}");
    out
}

/// Asserts each `column = expected` on the row of `table` with id `id`,
/// showing the stored value of each column that differs.
async fn assert_row(db: &TestDb, table: &str, id: i32, expected: &[(&str, &str)]) {
    let mut wrong = Vec::new();
    for (col, want) in expected {
        let sql = format!(
            "select coalesce(({col} = {want})::text, 'null') || ' ' || coalesce({col}::text, 'null') from {table} where id = {id}"
        );
        let got = db.strings(&sql).await;
        match got.first() {
            Some(s) if s.starts_with("true ") => {}
            other => wrong.push(format!("{col}: want {want}, stored {other:?}")),
        }
    }
    assert!(wrong.is_empty(), "{table} id {id}:\n{}", wrong.join("\n"));
}

/// What the source row holds after the create (Debezium's PostgreSQL
/// connector docs: numeric(12,2) as Decimal, numeric as
/// VariableScaleDecimal, date as days, time and timestamp in microseconds,
/// timestamptz as ISO text in UTC, uuid and jsonb as text, bytea as bytes).
const CREATED: &[(&str, &str)] = &[
    ("amount", "'1234.56'::numeric(12,2)"),
    ("ratio", "'3.14159'::numeric"),
    ("paid_on", "'2024-06-10'::date"),
    ("paid_at", "'12:34:56.789012'::time"),
    ("created", "'2024-06-10 06:52:25.123456'::timestamp"),
    ("updated", "'2024-06-10 06:52:25.123456+00'::timestamptz"),
    ("ref", "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid"),
    (
        "doc",
        r#"'{"tier": "gold", "tags": ["a", "b"], "limit": 1000.50}'::jsonb"#,
    ),
    ("blob", r"'\xdeadbeef'::bytea"),
    ("note", "'first note, long enough to be TOASTed'"),
];

#[tokio::test(flavor = "multi_thread")]
async fn debezium_with_its_schema_lands_typed_and_toasted_columns_stay() {
    let db = TestDb::empty("dbz_types").await;
    let kafka = Kafka::new(&[(ENVELOPE, 1), (FLAT, 1), (FLAT_HEADERS, 1)]);
    let dir = project("dbz-types");
    pgchain(&dir, &["render"], &db, &kafka);
    pgchain(&dir, &["migrate"], &db, &kafka);
    kafka
        .produce(vec![
            message(
                ENVELOPE,
                "pg_types_create",
                &[("trace", b"t-1"), ("raw", &[0xff, 0x00])],
            ),
            message(ENVELOPE, "pg_types_update_toast", &[]),
            message(ENVELOPE, "pg_types_double_millis", &[]),
            message(ENVELOPE, "pg_types_connect_string", &[]),
            message(ENVELOPE, "pg_types_nano", &[]),
        ])
        .await;
    drain(&dir, &db, &kafka);
    // The other connector settings and precisions, each its own row.
    let same = |except: &[&str]| -> Vec<(&'static str, &'static str)> {
        CREATED
            .iter()
            .filter(|(c, _)| !except.contains(c))
            .copied()
            .collect()
    };
    // decimal.handling.mode=double; time(3), timestamp(3): milliseconds.
    let mut double_millis = same(&["paid_at", "created"]);
    double_millis.extend([
        ("paid_at", "'12:34:56.789'::time"),
        ("created", "'2024-06-10 06:52:25.123'::timestamp"),
    ]);
    assert_row(&db, "l0.payment", 3, &double_millis).await;
    // time.precision.mode=connect, decimal.handling.mode=string.
    assert_row(&db, "l0.payment", 4, &double_millis).await;
    // Nanoseconds, to the microsecond PostgreSQL keeps.
    assert_row(&db, "l0.payment", 5, &same(&[])).await;
    // The create, then the update: amount and doc changed, the TOASTed note
    // and blob came as the placeholder and keep their stored values.
    let mut after_update: Vec<(&str, &str)> = CREATED
        .iter()
        .filter(|(c, _)| !matches!(*c, "amount" | "doc"))
        .copied()
        .collect();
    after_update.push(("amount", "'99.99'::numeric(12,2)"));
    after_update.push(("doc", r#"'"just a string"'::jsonb"#));
    assert_row(&db, "l0.payment", 1, &after_update).await;
    // The steps saw the transaction block, the headers and what was unchanged.
    let seen = db
        .strings(
            "select concat_ws(' ', ev->>'op', ev->'source'->'transaction'->>'id', ev->'source'->'transaction'->>'total_order',
                    ev->'source'->'transaction'->>'data_collection_order', ev->'headers'->>'trace',
                    ev->'headers'->'raw'->>'base64', ev->'unchanged') from t.seen order by seq",
        )
        .await;
    assert_eq!(
        seen[..2],
        [
            "c 781:24023128 1 1 t-1 /wA=",
            r#"u 782:24023200 1 1 ["blob", "note"]"#
        ]
    );

    // A later real value replaces the kept one.
    kafka
        .produce(vec![message(ENVELOPE, "pg_types_update_text", &[])])
        .await;
    drain(&dir, &db, &kafka);
    assert_row(
        &db,
        "l0.payment",
        1,
        &[
            ("note", "'second note'"),
            ("blob", r"'\x0001'::bytea"),
            ("amount", "'99.99'::numeric(12,2)"),
            ("_source_ts_ms", "1718002500000"),
            ("_source_position", "'24023300'"),
        ],
    )
    .await;
    // What the step saw is the text PostgreSQL casts: a local ISO timestamp.
    assert_eq!(
        db.i64("select count(*) from t.seen where ev->>'op' = 'c' and ev->'key'->>'id' = '1' and ev->'after'->>'created' = '2024-06-10T06:52:25.123456'")
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn flattened_debezium_creates_updates_deletes_and_tombstones() {
    let db = TestDb::empty("dbz_flat").await;
    let kafka = Kafka::new(&[(ENVELOPE, 1), (FLAT, 1), (FLAT_HEADERS, 1)]);
    let dir = project("dbz-flat");
    pgchain(&dir, &["render"], &db, &kafka);
    pgchain(&dir, &["migrate"], &db, &kafka);
    kafka
        .produce(vec![
            message(FLAT, "flat_create", &[]),
            message(FLAT, "flat_update", &[]),
            // add.headers instead of add.fields.
            message(
                FLAT_HEADERS,
                "flat_plain",
                &[
                    ("__op", b"c"),
                    ("__db", b"inventory"),
                    ("__table", b"customers"),
                    ("__source_ts_ms", b"1718002345123"),
                    ("__lsn", b"24023128"),
                ],
            ),
        ])
        .await;
    drain(&dir, &db, &kafka);
    let mut updated: Vec<(&str, &str)> = CREATED
        .iter()
        .filter(|(c, _)| !matches!(*c, "amount" | "doc" | "note"))
        .copied()
        .collect();
    updated.extend([
        ("amount", "'99.99'::numeric(12,2)"),
        ("doc", r#"'{"tier": "gold"}'::jsonb"#),
        // The update sent the placeholder: the created value stands.
        ("note", "'flat note'"),
        // __source_ts_ms is the event's source.ts_ms, as the stale guard reads it.
        ("_source_ts_ms", "1718002400000"),
        ("_source_position", "'24023200'"),
    ]);
    assert_row(&db, "l0.flat_payment", 2, &updated).await;
    let headers = db
        .strings(
            "select concat_ws(' ', ev->>'op', ev->'source'->>'schema', ev->'source'->>'table', ev->'source'->>'ts_ms',
                    ev->'source'->>'position', ev->'headers'->>'__op', ev->'after'->>'first_name', ev->'after' ? '__op')
               from t.seen where ev->'kafka'->>'topic' = 'flat.inventory.customers'",
        )
        .await;
    assert_eq!(
        headers,
        ["c inventory customers 1718002345123 24023128 c Anne f"]
    );

    // The rewritten delete removes the row; the tombstone after it runs as a
    // delete with the key only.
    kafka
        .produce(vec![
            message(FLAT, "flat_delete_rewrite", &[]),
            message(FLAT, "flat_tombstone", &[]),
        ])
        .await;
    drain(&dir, &db, &kafka);
    assert_eq!(db.i64("select count(*) from l0.flat_payment").await, 0);
    let deletes = db
        .strings(
            "select concat_ws(' ', ev->>'op', ev->'key'->>'id', ev->'before'->>'amount', jsonb_typeof(ev->'after'))
               from t.seen where ev->'kafka'->>'topic' = 'flat.public.payment' order by seq",
        )
        .await;
    assert_eq!(
        deletes,
        ["c 2 object", "u 2 object", "d 2 99.99 null", "d 2 null"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_dead_letter_keeps_its_headers() {
    let db = TestDb::empty("dbz_replay").await;
    let kafka = Kafka::new(&[(ENVELOPE, 1), (FLAT, 1), (FLAT_HEADERS, 1)]);
    let dir = project("dbz-replay");
    // The customers pipeline fails until t.open has a row.
    let yaml = std::fs::read_to_string(dir.join("pipelines.yaml")).unwrap();
    std::fs::write(
        dir.join("pipelines.yaml"),
        yaml.replace("    chain: [t.record]\n", "    chain: [t.gate, t.record]\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("sql/migrations/V2__gate.sql"),
        "create table t.open (ok boolean);\n\
         create procedure t.gate(inout ev jsonb) language plpgsql as $$\n\
         begin if not exists (select from t.open) then raise exception 'closed'; end if; end $$;\n",
    )
    .unwrap();
    pgchain(&dir, &["render"], &db, &kafka);
    pgchain(&dir, &["migrate"], &db, &kafka);
    kafka
        .produce(vec![message(
            FLAT_HEADERS,
            "flat_plain",
            &[("__op", b"u"), ("__table", b"customers")],
        )])
        .await;
    let out = pgchain(&dir, &["run", "--until-drained"], &db, &kafka);
    assert!(out.contains("dead-lettered"), "{out}");
    assert_eq!(db.i64("select count(*) from t.seen").await, 0);
    db.exec("insert into t.open values (true)").await;
    pgchain(&dir, &["dlq", "replay", "--all"], &db, &kafka);
    assert_eq!(
        db.strings(
            "select concat_ws(' ', ev->>'op', ev->'source'->>'table', ev->'headers'->>'__op') from t.seen"
        )
        .await,
        ["u customers u"]
    );
}
