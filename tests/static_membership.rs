//! Static membership (`kafka.instance_id`): the `run` consumer joins its
//! group with librdkafka's `group.instance.id`.
//!
//! librdkafka's mock group coordinator (classic protocol) reads the
//! GroupInstanceId of a JoinGroup but finds members by member id only: a
//! restarted instance joins as a new member beside its dead self, so the
//! mock cannot show a restart getting its partitions back before the
//! session timeout. What is tested here is that the id reaches the
//! consumer, and only the consumer, and that a static member consumes.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

fn event(id: i64) -> pgchain::kafka::Record {
    let value = json!({"op": "c", "after": {"id": id, "version": 1},
                       "source": {"table": "item", "ts_ms": 1}});
    record(
        "items",
        Some(&json!({"id": id}).to_string()),
        Some(&value.to_string()),
    )
}

/// The librdkafka configuration lines that set `group.instance.id`.
fn instance_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("group.instance.id = "))
        .map(|l| l.rsplit("group.instance.id = ").next().unwrap().to_string())
        .collect()
}

async fn run_with(db: &TestDb, kafka: &Kafka, label: &str, instance: &str) -> String {
    let text = format!(
        "kafka:\n  brokers: {}\n  group_id: g-{label}\n{instance}  options:\n    session.timeout.ms: 6000\n    debug: conf\n\
         postgres:\n  url: {}\n  pool_size: 2\n\
         pipelines:\n  items:\n    topic: items\n    chain: [t.record]\n",
        kafka.brokers, db.url
    );
    let dir = temp_dir(label);
    let path = dir.join("p.yaml");
    std::fs::write(&path, text).unwrap();
    let log = dir.join("run.log");
    // librdkafka's `debug: conf` lists each client's configuration.
    let child = spawn_run(&path, &log, "info,librdkafka=debug");
    log_says(&log, "consuming", Duration::from_secs(30)).await;
    wait_for_count(db, "both events applied", "select count(*) from t.seen", 2).await;
    sigterm(child).await;
    std::fs::read_to_string(&log).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_instance_id_reaches_the_consumer_only_and_the_static_member_consumes() {
    let kafka = Kafka::new(&[("items", 1)]);
    kafka.produce(vec![event(1), event(2)]).await;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();

    let db = TestDb::new("static").await;
    db.exec(TEST_STEPS).await;
    let log = run_with(
        &db,
        &kafka,
        "static",
        "  instance_id: \"pgchain-{hostname}-a\"\n",
    )
    .await;
    assert_eq!(
        instance_lines(&log),
        [format!("pgchain-{host}-a")],
        "one client, the consumer, has the id:\n{log}"
    );
    assert!(log.contains("static member of the consumer group"), "{log}");

    let db = TestDb::new("dynamic").await;
    db.exec(TEST_STEPS).await;
    let log = run_with(&db, &kafka, "dynamic", "").await;
    assert_eq!(
        instance_lines(&log),
        Vec::<String>::new(),
        "off by default:\n{log}"
    );
    assert!(!log.contains("static member"), "{log}");
}
