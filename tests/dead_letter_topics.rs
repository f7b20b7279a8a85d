//! The dead-letter topics at start-up (`dead_letters.create_topics`), on
//! librdkafka's mock cluster. The mock answers no CreateTopics request and
//! names no controller, so what is exercised here is the check before it:
//! it must create nothing itself (a broker that creates topics on first use
//! would give the default partition count), leave an existing topic alone,
//! not hold up the start, and leave the topic to the dead-letter producer,
//! which still delivers. What CreateTopics asks for is tested in
//! `src/dead_letter.rs`.

mod common;

use common::*;
use pgchain::kafka::Record;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Every topic of the cluster with its partition count (asking for all
/// topics creates none).
async fn topics(kafka: &Kafka) -> HashMap<String, usize> {
    let brokers = kafka.brokers.clone();
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .unwrap();
        let md = c.fetch_metadata(None, Duration::from_secs(10)).unwrap();
        md.topics()
            .iter()
            .map(|t| (t.name().to_string(), t.partitions().len()))
            .collect()
    })
    .await
    .unwrap()
}

fn change(topic: &str, id: i64, poison: bool) -> Record {
    let value = json!({"op": "u", "after": {"id": id, "version": 1, "poison": poison},
                       "source": {"table": "item", "ts_ms": 1}});
    record(
        topic,
        Some(&json!({"id": id}).to_string()),
        Some(&value.to_string()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_up_check_creates_no_topic_leaves_existing_ones_alone_and_loses_no_dead_letter() {
    let db = TestDb::new("dlqtopics").await;
    db.exec(TEST_STEPS).await;
    let kafka = Kafka::new(&[("items", 2), ("orders", 3), ("orders.dlq", 3)]);
    let before = topics(&kafka).await;
    let text = format!(
        "kafka:\n  brokers: {}\n  group_id: g1\n  options:\n    session.timeout.ms: 6000\n\
         postgres:\n  url: {}\n  pool_size: 4\n\
         pipelines:\n\
         \x20 items:\n    topic: items\n    chain: [t.poison, t.record]\n    retries: {{data: {{attempts: 1}}}}\n\
         \x20 orders:\n    topic: orders\n    chain: [t.record]\n",
        kafka.brokers, db.url
    );
    let dir = temp_dir("dlqtopics");
    let path = dir.join("p.yaml");
    std::fs::write(&path, text).unwrap();
    let log = dir.join("run.log");

    let started = Instant::now();
    let child = spawn_run(&path, &log, "info");
    let said = log_says(&log, "consuming", Duration::from_secs(30)).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the dead-letter topic check held the start up for {took:?}:\n{said}"
    );
    assert_eq!(
        topics(&kafka).await,
        before,
        "the check created no topic and changed none"
    );
    let warning = said
        .lines()
        .find(|l| l.contains("cannot create dead-letter topic"))
        .unwrap_or_else(|| panic!("no warning for items.dlq:\n{said}"));
    assert!(warning.contains("items.dlq"), "{warning}");
    assert!(
        warning.contains("the brokers name no controller among them")
            && warning.contains("with its default partition count"),
        "{warning}"
    );
    assert_eq!(
        said.matches("cannot create dead-letter topic").count(),
        1,
        "orders.dlq exists and is left alone:\n{said}"
    );
    assert!(!said.contains("created dead-letter topic"), "{said}");

    // The dead-letter producer still delivers: the broker creates the topic.
    kafka
        .produce(vec![change("items", 1, true), change("items", 2, false)])
        .await;
    wait_for_count(
        &db,
        "the dead letter published",
        "select count(*) from pgchain.dead_letters where published_at is not null",
        1,
    )
    .await;
    wait_for_count(
        &db,
        "the next event applied",
        "select count(*) from t.seen",
        1,
    )
    .await;
    let after = topics(&kafka).await;
    assert!(after.contains_key("items.dlq"), "{after:?}");
    assert_eq!(after["orders.dlq"], 3);

    sigterm(child).await;
}
