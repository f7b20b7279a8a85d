//! Oracle GoldenGate's JSON formatter as its handler settings write it, end
//! to end through `pgchain run --until-drained` into `l0_upsert` tables:
//! missing columns keep the stored value, a primary-key update moves the
//! row, the handler's own op-type keys, and `op_ts` in local time
//! (fixtures: tests/fixtures/ogg, described in tests/fixtures/README.md).

mod common;

use common::{Kafka, TestDb, temp_dir};
use pgchain::kafka::Record;
use std::path::Path;
use std::process::Command;

const DEFAULT: &str = "ogg.qasource.tcustmer";
const CUSTOM: &str = "ogg.custom.tcustmer";

fn record(topic: &str, name: &str) -> Record {
    let value = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/ogg")
            .join(format!("{name}.value.json")),
    )
    .unwrap();
    Record {
        topic: topic.to_string(),
        key: None,
        value: Some(value),
        headers: Vec::new(),
    }
}

fn pgchain(dir: &Path, args: &[&str], db: &TestDb, kafka: &Kafka) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_pgchain"))
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

#[tokio::test(flavor = "multi_thread")]
async fn goldengate_missing_columns_key_changes_own_codes_and_local_time() {
    let db = TestDb::empty("ogg_e2e").await;
    let kafka = Kafka::new(&[(DEFAULT, 1), (CUSTOM, 1)]);
    let dir = temp_dir("ogg-e2e");
    std::fs::create_dir_all(dir.join("sql/migrations")).unwrap();
    let copy = |name: &str, table: &str| {
        format!(
            "\x20 {name}:\n    template: l0_upsert\n    vars:\n      table: {table}\n      columns: {{cust_code: text, name: text, city: text, state: text}}\n      key: [cust_code]\n      fields: {{cust_code: CUST_CODE, name: NAME, city: CITY, state: STATE}}\n"
        )
    };
    std::fs::write(
        dir.join("pipelines.yaml"),
        format!(
            "kafka:\n  brokers: ${{KAFKA_BROKERS}}\n  group_id: ogg\n  options:\n    session.timeout.ms: 6000\npostgres:\n  url: ${{DATABASE_URL}}\n\
             pipelines:\n\
             \x20 tcustmer:\n    topic: {DEFAULT}\n    format: ogg\n    chain: [l0.copy_tcustmer]\n\
             \x20 tcustmer_custom:\n    topic: {CUSTOM}\n    format: ogg\n    chain: [l0.copy_tcustmer_custom]\n\
             \x20   ogg:\n      op_types: {{insert: INSERT, update: UPDATE, delete: DELETE, truncate: TRUNCATE}}\n      op_ts_zone: America/Los_Angeles\n\
             procedures:\n{}{}",
            copy("l0.copy_tcustmer", "l0.tcustmer"),
            copy("l0.copy_tcustmer_custom", "l0.tcustmer_custom")
        ),
    )
    .unwrap();
    pgchain(&dir, &["render"], &db, &kafka);
    pgchain(&dir, &["migrate"], &db, &kafka);

    // A compressed update with its before image, then one whose CITY and
    // STATE are flagged missing and which has none.
    kafka
        .produce(vec![
            record(DEFAULT, "update"),
            record(DEFAULT, "update_missing"),
            record(CUSTOM, "insert_custom_codes"),
        ])
        .await;
    let out = pgchain(&dir, &["run", "--until-drained"], &db, &kafka);
    assert!(!out.contains("dead-lettered"), "{out}");
    assert_eq!(
        db.strings("select concat_ws('|', cust_code, name, city, state) from l0.tcustmer")
            .await,
        vec!["JANE|JANE'S FLOWER SHOP|BOULDER|CO"],
        "the missing CITY and STATE keep what the first update stored"
    );
    // The handler's own op-type key, and op_ts 09:15:42 in Los Angeles.
    assert_eq!(
        db.strings("select concat_ws('|', cust_code, name, _source_ts_ms) from l0.tcustmer_custom")
            .await,
        vec!["ANNA|ANNA'S ANTIQUES|1718036142000"]
    );

    // The key changes from JANE to JANET: one row, under the new key.
    kafka.produce(vec![record(DEFAULT, "update_pk")]).await;
    let out = pgchain(&dir, &["run", "--until-drained"], &db, &kafka);
    assert!(!out.contains("dead-lettered"), "{out}");
    assert_eq!(
        db.strings("select concat_ws('|', cust_code, name, city, state) from l0.tcustmer")
            .await,
        vec!["JANET|JANE'S BLOOMS|BOULDER|CO"]
    );
}
