//! Retention deleting events before they were applied, while pgchain runs
//! and before it starts: `kafka.on_gap: stop` (the default) stops the
//! partition with the range named; `skip` records the range, counts it and
//! goes on. librdkafka's mock broker keeps about 5 MB per partition, so
//! 100 KB events make its retention delete the oldest ones.

mod common;

use common::{Kafka, TEST_STEPS, TestDb, config, record, start};
use pgchain::kafka::Record;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::json;
use std::time::{Duration, Instant};

/// `n` Debezium creates of about 100 KB each, ids from `first`.
fn big_events(topic: &str, first: i64, n: i64) -> Vec<Record> {
    let pad = "x".repeat(100_000);
    (first..first + n)
        .map(|id| {
            let value = json!({"op": "c", "before": null, "after": {"id": id, "pad": pad},
                               "source": {"table": "item", "ts_ms": id}});
            record(
                topic,
                Some(&json!({"id": id}).to_string()),
                Some(&value.to_string()),
            )
        })
        .collect()
}

/// (log start, log end) of partition 0.
async fn watermarks(kafka: &Kafka, topic: &str) -> (i64, i64) {
    let (brokers, topic) = (kafka.brokers.clone(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .unwrap();
        c.fetch_watermarks(&topic, 0, Duration::from_secs(10))
            .unwrap()
    })
    .await
    .unwrap()
}

/// A pipeline through `t.gate` (blocks while the test holds advisory lock
/// 4242) and `t.record`. The consumer queues at most 1 KB ahead, so what
/// is produced while the gate is shut stays in the log, not in pgchain.
fn gated(on_gap: &str) -> String {
    format!(
        "kafka:\n  brokers: {{brokers}}\n  group_id: g1\n  on_gap: {on_gap}\n  options:\n    session.timeout.ms: 6000\n    queued.max.messages.kbytes: 1\n\
         postgres:\n  url: {{url}}\n  pool_size: 4\n\
         monitoring:\n  listen: 127.0.0.1:0\n\
         pipelines:\n  p:\n    topic: items\n    chain: [t.gate, t.record]\n"
    )
}

const GATE: &str = "create procedure t.gate(inout ev jsonb) language plpgsql as $$
begin
  perform pg_advisory_lock_shared(4242);
  perform pg_advisory_unlock_shared(4242);
end $$;";

/// Runs pgchain with the gate shut on offset 0, then produces enough for
/// retention to delete what pgchain has not fetched yet, then opens the
/// gate. Returns the running dispatcher and the log start after the cut.
async fn retention_cuts_in_while_running(
    db: &TestDb,
    kafka: &Kafka,
    on_gap: &str,
) -> (common::Running, i64) {
    db.exec(TEST_STEPS).await;
    db.exec(GATE).await;
    let gate = db.client().await;
    gate.batch_execute("select pg_advisory_lock(4242)")
        .await
        .unwrap();
    kafka.produce(big_events("items", 0, 1)).await;
    let run = start(config(&gated(on_gap), kafka, db));
    // pgchain holds offset 0 at the gate.
    let started = Instant::now();
    while db
        .i64(
            "select count(*) from pg_locks
              where locktype = 'advisory' and not granted and objid = 4242
                and database = (select oid from pg_database where datname = current_database())",
        )
        .await
        == 0
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "offset 0 never reached the gate"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kafka.produce(big_events("items", 1, 100)).await;
    let (low, high) = watermarks(kafka, "items").await;
    assert_eq!(high, 101);
    assert!(
        low > 20,
        "retention deleted the oldest events: log {low}..{high}"
    );
    gate.batch_execute("select pg_advisory_unlock(4242)")
        .await
        .unwrap();
    (run, low)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gap_while_running_stops_the_partition_with_the_range_named() {
    let db = TestDb::new("gap_stop").await;
    let kafka = Kafka::new(&[("items", 1)]);
    let (run, low) = retention_cuts_in_while_running(&db, &kafka, "stop").await;
    run.until("the partition to stop", |s| !s.stuck.is_empty())
        .await;
    let snap = run.stop().await;
    let applied = db
        .applied("g1", "items", 0)
        .await
        .expect("offset 0 applied");
    let why = &snap.stuck[&("items".to_string(), 0)];
    assert!(
        why.starts_with(&format!(
            "offsets {} to {} ({} events) were deleted by retention before pgchain applied them",
            applied + 1,
            low - 1,
            low - 1 - applied
        )),
        "{why}"
    );
    // Nothing after the gap was applied, nothing was recorded as skipped.
    assert_eq!(
        db.i64("select max(kafka_offset) from t.seen").await,
        applied
    );
    assert_eq!(db.i64("select count(*) from t.seen").await, applied + 1);
    assert_eq!(
        db.i64("select count(*) from pgchain.skipped_offsets").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gap_while_running_with_on_gap_skip_is_recorded_counted_and_passed() {
    let db = TestDb::new("gap_skip").await;
    let kafka = Kafka::new(&[("items", 1)]);
    let (run, low) = retention_cuts_in_while_running(&db, &kafka, "skip").await;
    run.drained(&kafka, &["items"]).await;
    let addr = run.http_addr().expect("monitoring listens");
    let page = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let snap = run.stop().await;
    assert!(snap.stuck.is_empty(), "{:?}", snap.stuck);
    let gap = db
        .strings(
            "select concat_ws(' ', group_id, topic, partition, from_offset, to_offset, reason)
               from pgchain.skipped_offsets",
        )
        .await;
    assert_eq!(gap.len(), 1, "{gap:?}");
    let from: i64 = gap[0].split(' ').nth(3).unwrap().parse().unwrap();
    assert!(from >= 1, "{gap:?}");
    assert!(
        gap[0].starts_with(&format!(
            "g1 items 0 {from} {} deleted by retention",
            low - 1
        )),
        "{gap:?}"
    );
    let skipped = (low - from) as u64;
    assert_eq!(
        snap.skipped_offsets[&("items".to_string(), 0)],
        skipped,
        "counted"
    );
    let counted =
        format!("pgchain_offsets_skipped_total{{topic=\"items\",partition=\"0\"}} {skipped}");
    assert!(page.lines().any(|l| l == counted), "{counted} in\n{page}");
    // Everything before the gap and everything after it applied once.
    assert_eq!(
        db.i64("select count(distinct kafka_offset) from t.seen")
            .await,
        db.i64("select count(*) from t.seen").await
    );
    assert_eq!(
        db.strings(
            "select kafka_offset::text from t.seen where kafka_offset >= $$from$$ and kafka_offset < $$low$$"
                .replace("$$from$$", &from.to_string())
                .replace("$$low$$", &low.to_string())
                .as_str()
        )
        .await,
        Vec::<String>::new()
    );
    assert_eq!(
        db.i64("select count(*) from t.seen").await,
        from + (101 - low)
    );
    assert_eq!(db.applied("g1", "items", 0).await, Some(100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gap_at_start_is_stopped_by_default_and_skipped_with_on_gap_skip() {
    let db = TestDb::new("gap_start").await;
    db.exec(TEST_STEPS).await;
    db.exec(GATE).await;
    let kafka = Kafka::new(&[("items", 1)]);
    kafka.produce(big_events("items", 0, 100)).await;
    let (low, high) = watermarks(&kafka, "items").await;
    assert!(low > 20, "log {low}..{high}");
    // This database applied offsets up to 4; retention took 5..low-1 since.
    db.exec("insert into pgchain.offsets (group_id, topic, partition, applied_through) values ('g1', 'items', 0, 4)")
        .await;

    let run = start(config(&gated("stop"), &kafka, &db));
    run.until("the partition to stop", |s| !s.stuck.is_empty())
        .await;
    let snap = run.stop().await;
    let why = &snap.stuck[&("items".to_string(), 0)];
    assert!(
        why.starts_with(&format!("offsets 5 to {}", low - 1)),
        "{why}"
    );
    assert_eq!(db.i64("select count(*) from t.seen").await, 0);

    let run = start(config(&gated("skip"), &kafka, &db));
    run.drained(&kafka, &["items"]).await;
    let snap = run.stop().await;
    assert!(snap.stuck.is_empty(), "{:?}", snap.stuck);
    assert_eq!(
        db.strings("select concat_ws(' ', from_offset, to_offset) from pgchain.skipped_offsets")
            .await,
        [format!("5 {}", low - 1)]
    );
    assert_eq!(
        snap.skipped_offsets[&("items".to_string(), 0)],
        (low - 5) as u64
    );
    assert_eq!(db.i64("select count(*) from t.seen").await, high - low);
    assert_eq!(db.i64("select min(kafka_offset) from t.seen").await, low);
    assert_eq!(db.applied("g1", "items", 0).await, Some(high - 1));
}
