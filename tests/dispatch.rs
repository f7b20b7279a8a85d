//! End to end through the dispatcher: real PostgreSQL, librdkafka's mock
//! brokers. Each test has its own database and cluster.

mod common;

use common::{Kafka, TEST_STEPS, TestDb, committed, config, record, start};
use pgchain::kafka::Record;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::json;

fn fixture(path: &str) -> Option<String> {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .ok()
}

fn debezium_fixture(topic: &str, name: &str) -> Record {
    let key = fixture(&format!("debezium/{name}.key.json"));
    let value = fixture(&format!("debezium/{name}.value.json"));
    record(topic, key.as_deref(), value.as_deref())
}

/// One pipeline reading `topic` into `chain`. Sessions are short because the
/// mock broker waits a departed member's session out before rebalancing.
fn one_pipeline(topic: &str, format: &str, chain: &str, extra: &str) -> String {
    format!(
        "kafka:\n  brokers: {{brokers}}\n  group_id: g1\n  options:\n    session.timeout.ms: 6000\npostgres:\n  url: {{url}}\n  pool_size: 4\n\
         pipelines:\n  p:\n    topic: {topic}\n    format: {format}\n{extra}    chain: [{chain}]\n"
    )
}

/// `n` versions of each of `keys` keys, round-robin, as Debezium updates.
fn versions(topic: &str, keys: usize, n: usize) -> Vec<Record> {
    let mut out = Vec::new();
    for v in 1..=n {
        for k in 0..keys {
            let after = json!({"id": k, "version": v, "poison": false});
            let value = json!({"op": if v == 1 { "c" } else { "u" }, "before": null, "after": after,
                               "source": {"name": "src", "schema": "public", "table": "item", "ts_ms": v}});
            out.push(record(
                topic,
                Some(&json!({"id": k}).to_string()),
                Some(&value.to_string()),
            ));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn debezium_events_run_their_chain_end_to_end() {
    let db = TestDb::new("dbz").await;
    db.exec(TEST_STEPS).await;
    let topic = "pgserver.public.customer";
    let kafka = Kafka::new(&[(topic, 1)]);
    kafka
        .produce(vec![
            debezium_fixture(topic, "pg_snapshot_read"),
            debezium_fixture(topic, "pg_create_envelope"),
            debezium_fixture(topic, "pg_update_plain"),
            debezium_fixture(topic, "pg_delete_plain"),
            debezium_fixture(topic, "pg_delete_tombstone"),
        ])
        .await;
    let run = start(config(
        &one_pipeline(topic, "debezium", "t.record", "    system: shop\n"),
        &kafka,
        &db,
    ));
    run.drained(&kafka, &[topic]).await;
    let snap = run.stop().await;

    assert_eq!(snap.pipelines["p"].applied, 4);
    assert_eq!(snap.pipelines["p"].tombstones, 1);
    let seen = db
        .strings("select concat_ws(' ', kafka_offset, op, key, ev->'source'->>'system', ev->'source'->>'table', ev->>'pipeline') from t.seen order by seq")
        .await;
    assert_eq!(
        seen,
        [
            r#"0 r {"id": 1000} shop customer p"#,
            r#"1 c {"id": 1001} shop customer p"#,
            r#"2 u {"id": 1001} shop customer p"#,
            r#"3 d {"id": 1002} shop customer p"#,
        ]
    );
    let state = db
        .strings("select after->>'phone' from t.state order by key")
        .await;
    assert_eq!(state, ["010-3456-7890", "010-9876-5432"]);
    // The tombstone ran nothing, but the ledger moves past it: it ends the
    // partition, and the lag `status` shows must reach 0.
    assert_eq!(db.applied("g1", topic, 0).await, Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn goldengate_events_run_their_chain_end_to_end() {
    let db = TestDb::new("ogg").await;
    db.exec(TEST_STEPS).await;
    let topic = "ogg.qasource";
    let kafka = Kafka::new(&[(topic, 1)]);
    let ogg = |n: &str| {
        record(
            topic,
            fixture("ogg/insert.key.txt").as_deref(),
            fixture(&format!("ogg/{n}.value.json")).as_deref(),
        )
    };
    kafka
        .produce(vec![
            ogg("insert"),
            ogg("insert_no_pk"),
            ogg("update"),
            ogg("delete"),
        ])
        .await;
    let yaml = one_pipeline(
        topic,
        "ogg",
        "t.record",
        "    table: qasource.tcustmer\n    key: [CUST_CODE]\n",
    );
    let run = start(config(&yaml, &kafka, &db));
    run.drained(&kafka, &[topic]).await;
    run.stop().await;

    let seen = db.strings("select concat_ws(' ', op, key, after->>'CITY', ev->'source'->>'ts_ms') from t.seen order by seq").await;
    assert_eq!(
        seen,
        [
            r#"c {"CUST_CODE": "WILL"} SEATTLE 1718003742000"#,
            r#"c {"CUST_CODE": "MINA"} PORTLAND 1718003749000"#,
            r#"u {"CUST_CODE": "JANE"} BOULDER 1718003765000"#,
            r#"d {"CUST_CODE": "DAVE"} 1718003851000"#,
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_step_leaves_no_trace_and_its_event_is_dead_lettered() {
    let db = TestDb::new("atomic").await;
    db.exec(TEST_STEPS).await;
    let (bad, good) = ("orders.bad", "orders.good");
    let kafka = Kafka::new(&[(bad, 1), (good, 1)]);
    let mut records = versions(bad, 1, 3);
    let poison = json!({"op": "c", "after": {"id": 9, "version": 1, "poison": true}, "source": {"table": "item"}});
    records.insert(
        2,
        record(bad, Some(r#"{"id": 9}"#), Some(&poison.to_string())),
    );
    records.extend(versions(good, 2, 5));
    kafka.produce(records).await;
    let yaml = format!(
        "kafka:\n  brokers: {{brokers}}\n  group_id: g1\npostgres:\n  url: {{url}}\n\
         pipelines:\n  bad:\n    topic: {bad}\n    chain: [t.step1, t.step2, t.poison]\n    retries: {{data: {{attempts: 3, backoff: 10ms}}}}\n  good:\n    topic: {good}\n    chain: [t.record]\n"
    );
    let run = start(config(&yaml, &kafka, &db));
    run.drained(&kafka, &[bad, good]).await;
    let snap = run.stop().await;

    assert!(snap.stuck.is_empty(), "{:?}", snap.stuck);
    assert_eq!(snap.pipelines["bad"].dead_lettered, 1);
    assert_eq!(snap.pipelines["bad"].applied, 3);
    // Offsets 0, 1 and 3 ran all three steps; offset 2 (the poison) left
    // nothing of steps 1 and 2, in any of its three attempts.
    let log = db
        .strings("select step || '@' || kafka_offset from t.log order by kafka_offset, step")
        .await;
    assert_eq!(
        log,
        [
            "step1@0", "step2@0", "step1@1", "step2@1", "step1@3", "step2@3"
        ]
    );
    let dead = db
        .strings(
            "select concat_ws(' | ', status, error_class, pipeline, topic || '/' || partition || '@' || kafka_offset,
                    failing_step, sqlstate, error_message, attempts)
               from pgchain.dead_letters",
        )
        .await;
    assert_eq!(
        dead,
        [format!(
            "dead | data | bad | {bad}/0@2 | t.poison | P0001 | poisoned row {{\"id\": 9}}; detail: test poison | 3"
        )]
    );
    assert_eq!(db.applied("g1", bad, 0).await, Some(3));
    // The other partition kept flowing.
    assert_eq!(db.i64("select count(*) from t.seen").await, 10);
}

/// Rewinds the group's committed offsets to the start, as if the commits were
/// lost: joins the group, takes its partitions and commits offset 0.
async fn forget_commits(kafka: &Kafka, group: &str, topic: &str, partitions: i32) {
    let (brokers, group, topic) = (kafka.brokers.clone(), group.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            // The mock broker waits a session out after a member leaves.
            .set("session.timeout.ms", "6000")
            .create()
            .unwrap();
        c.subscribe(&[&topic]).unwrap();
        let start = std::time::Instant::now();
        while c.assignment().unwrap().count() < partitions as usize {
            assert!(start.elapsed().as_secs() < 90, "no assignment");
            c.poll(std::time::Duration::from_millis(100));
        }
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(&topic, p, Offset::Offset(0))
                .unwrap();
        }
        c.commit(&tpl, CommitMode::Sync).unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_kafka_commit_applies_nothing_twice() {
    let db = TestDb::new("redeliver").await;
    db.exec(TEST_STEPS).await;
    let topic = "items";
    let kafka = Kafka::new(&[(topic, 2)]);
    kafka.produce(versions(topic, 10, 10)).await;
    let yaml = one_pipeline(topic, "debezium", "t.record", "");
    let run = start(config(&yaml, &kafka, &db));
    run.drained(&kafka, &[topic]).await;
    assert_eq!(run.stop().await.pipelines["p"].applied, 100);
    let before = db
        .strings("select key::text || after::text from t.state order by key")
        .await;

    forget_commits(&kafka, "g1", topic, 2).await;
    assert_eq!(committed(&kafka, "g1", topic).await, Some(0));
    kafka.produce(versions(topic, 10, 1)).await; // ten more (version 1 again) after the replayed ones
    let run = start(config(&yaml, &kafka, &db));
    run.drained(&kafka, &[topic]).await;
    let snap = run.stop().await;

    assert_eq!(snap.pipelines["p"].applied, 10, "only the new events ran");
    assert_eq!(
        db.i64("select count(*) from t.seen").await,
        110,
        "each offset ran once"
    );
    assert_eq!(
        db.i64(
            "select count(*) from (select distinct topic, partition, kafka_offset from t.seen) x"
        )
        .await,
        110
    );
    let after = db
        .strings("select key::text || after::text from t.state order by key")
        .await;
    assert_eq!(after.len(), before.len());
    assert!(
        after.iter().all(|s| s.contains(r#""version": 1"#)),
        "the new events are the latest: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_ledger_skips_an_offset_it_already_applied() {
    let db = TestDb::new("ledger").await;
    db.exec(TEST_STEPS).await;
    let kafka = Kafka::new(&[("items", 1)]);
    let config = config(
        &one_pipeline("items", "debezium", "t.record", ""),
        &kafka,
        &db,
    );
    let router = pgchain::route::Router::new(&config);
    let pool = pgchain::db::pool(&db.url, 2).unwrap();
    let value = json!({"op": "c", "after": {"id": 1, "version": 1}, "source": {"table": "item"}})
        .to_string();
    let msg = pgchain::route::Message {
        topic: "items",
        partition: 0,
        offset: 41,
        timestamp: None,
        key: Some(br#"{"id":1}"#),
        value: Some(value.as_bytes()),
        headers: &[],
    };
    let pgchain::route::Routed::Event(ev, route) = router.route(&msg).unwrap() else {
        panic!("routed")
    };
    use pgchain::chain::{Outcome, apply_once};
    assert_eq!(
        apply_once(&pool, "g1", &ev, &route).await.unwrap().outcome,
        Outcome::Applied
    );
    assert_eq!(
        apply_once(&pool, "g1", &ev, &route).await.unwrap().outcome,
        Outcome::Skipped
    );
    let mut older = ev.clone();
    older.kafka.offset = 40;
    assert_eq!(
        apply_once(&pool, "g1", &older, &route)
            .await
            .unwrap()
            .outcome,
        Outcome::Skipped
    );
    // Another consumer group has a ledger of its own.
    assert_eq!(
        apply_once(&pool, "g2", &ev, &route).await.unwrap().outcome,
        Outcome::Applied
    );
    assert_eq!(db.i64("select count(*) from t.seen").await, 2);

    // A batch skips what the ledger holds and moves it to its last offset.
    let evs: Vec<_> = (40..=43)
        .map(|o| {
            let mut e = (*ev).clone();
            e.kafka.offset = o;
            e
        })
        .collect();
    let batch: Vec<_> = evs.iter().map(|e| (e, route.as_ref())).collect();
    let ran = pgchain::chain::apply_batch_once(&pool, "g1", &batch)
        .await
        .unwrap();
    let outcomes: Vec<Outcome> = ran.iter().map(|r| r.outcome).collect();
    assert_eq!(
        ran.iter().map(|r| r.step_ms.len()).collect::<Vec<_>>(),
        [0, 0, 1, 1],
        "one timing per step that ran"
    );
    assert_eq!(
        outcomes,
        [
            Outcome::Skipped,
            Outcome::Skipped,
            Outcome::Applied,
            Outcome::Applied
        ]
    );
    assert_eq!(db.applied("g1", "items", 0).await, Some(43));
    let offsets = db
        .strings("select kafka_offset::text from t.seen order by seq")
        .await;
    assert_eq!(offsets, ["41", "41", "42", "43"]);
    let again = pgchain::chain::apply_batch_once(&pool, "g1", &batch)
        .await
        .unwrap();
    assert!(
        again.iter().all(|o| o.outcome == Outcome::Skipped),
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn updates_of_a_key_land_in_order_and_partitions_run_concurrently() {
    let db = TestDb::new("order").await;
    db.exec(TEST_STEPS).await;
    let topic = "items";
    let kafka = Kafka::new(&[(topic, 3)]);
    kafka.produce(versions(topic, 12, 8)).await;
    let run = start(config(
        &one_pipeline(topic, "debezium", "t.slow, t.record", ""),
        &kafka,
        &db,
    ));
    run.drained(&kafka, &[topic]).await;
    run.stop().await;

    // Per key, versions were applied 1, 2, … 8 in that order.
    let out_of_order = db
        .i64("select count(*) from (select (after->>'version')::int v,
                lag((after->>'version')::int) over (partition by key order by seq) prev from t.seen) x
              where v <> prev + 1")
        .await;
    assert_eq!(out_of_order, 0);
    assert_eq!(
        db.i64("select count(*) from t.state where version = 8")
            .await,
        12
    );
    // Some event of one partition started while one of another was running.
    let overlaps = db
        .i64(
            "select count(*) from t.seen a join t.seen b on a.partition < b.partition
               and b.started between a.started and a.started + interval '50 ms'",
        )
        .await;
    assert!(overlaps > 0, "partitions never ran at the same time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_mid_burst_then_restart_equals_an_uninterrupted_run() {
    let db = TestDb::new("restart").await;
    db.exec(TEST_STEPS).await;
    let topic = "items";
    let kafka = Kafka::new(&[(topic, 3)]);
    kafka.produce(versions(topic, 30, 20)).await;
    // 5 ms per event, so the stop lands in the middle of the burst.
    let yaml = one_pipeline(topic, "debezium", "t.pause, t.record", "");

    let first = start(config(&yaml, &kafka, &db));
    first
        .until("a part of the burst", |s| {
            s.pipelines.get("p").is_some_and(|c| c.applied >= 100)
        })
        .await;
    let done_first = first.stop().await.pipelines["p"].applied;
    assert!(done_first < 600, "the burst was interrupted");

    let second = start(config(&yaml, &kafka, &db));
    second.drained(&kafka, &[topic]).await;
    let done_second = second.stop().await.pipelines["p"].applied;

    assert_eq!(done_first + done_second, 600);
    assert_eq!(db.i64("select count(*) from t.seen").await, 600);
    assert_eq!(
        db.i64("select count(*) from t.state where version = 20")
            .await,
        30
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_in_one_group_share_partitions_without_duplicates() {
    let db = TestDb::new("group").await;
    db.exec(TEST_STEPS).await;
    let topic = "items";
    let kafka = Kafka::new(&[(topic, 4)]);
    kafka.produce(versions(topic, 40, 10)).await;
    let yaml = one_pipeline(topic, "debezium", "t.slow, t.record", "");
    let a = start(config(&yaml, &kafka, &db));
    a.until("the first instance to start", |s| {
        s.pipelines.get("p").is_some_and(|c| c.applied >= 20)
    })
    .await;
    // A second instance joins mid-stream: partitions move while chains run.
    let b = start(config(&yaml, &kafka, &db));
    let start = std::time::Instant::now();
    while db
        .i64("select count(distinct (partition, kafka_offset)) from t.seen")
        .await
        < 400
    {
        assert!(start.elapsed().as_secs() < 90, "not all events applied");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (sa, sb) = (a.stop().await, b.stop().await);
    let (applied_a, applied_b) = (
        sa.pipelines["p"].applied,
        sb.pipelines.get("p").map_or(0, |c| c.applied),
    );
    assert!(applied_b > 0, "the second instance took partitions");
    assert_eq!(
        applied_a + applied_b,
        400,
        "each event applied by exactly one instance"
    );
    assert_eq!(
        db.i64("select count(*) from t.seen").await,
        400,
        "nothing ran twice"
    );
    assert_eq!(
        db.i64("select count(*) from t.state where version = 10")
            .await,
        40
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_step_can_end_the_chain_early() {
    let db = TestDb::new("filter").await;
    db.exec(TEST_STEPS).await;
    let kafka = Kafka::new(&[("items", 1)]);
    kafka.produce(versions("items", 1, 6)).await;
    // One transaction per event: the path every failed batch falls back to.
    let yaml = one_pipeline("items", "debezium", "t.only_even, t.record", "")
        .replace("pool_size: 4", "pool_size: 4\n  max_batch: 1");
    let run = start(config(&yaml, &kafka, &db));
    run.drained(&kafka, &["items"]).await;
    let snap = run.stop().await;
    assert_eq!(
        (snap.pipelines["p"].applied, snap.pipelines["p"].filtered),
        (3, 3)
    );
    assert_eq!(
        db.strings("select after->>'version' from t.seen order by seq")
            .await,
        ["2", "4", "6"]
    );
    assert_eq!(
        db.applied("g1", "items", 0).await,
        Some(5),
        "filtered offsets count as applied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_undecodable_message_is_dead_lettered_at_once_and_names_why() {
    let db = TestDb::new("undecodable").await;
    db.exec(TEST_STEPS).await;
    let kafka = Kafka::new(&[("items", 1)]);
    let mut records = versions("items", 1, 2);
    records.push(record("items", Some(r#"{"id":0}"#), Some("{oops")));
    records.extend(versions("items", 1, 1));
    kafka.produce(records).await;
    let run = start(config(
        &one_pipeline("items", "debezium", "t.record", ""),
        &kafka,
        &db,
    ));
    run.drained(&kafka, &["items"]).await;
    let snap = run.stop().await;
    assert!(snap.stuck.is_empty(), "{:?}", snap.stuck);
    let dead = db
        .strings(
            "select concat_ws(' | ', status, error_class, pipeline, kafka_offset, attempts, error_message)
               from pgchain.dead_letters",
        )
        .await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0].starts_with(
            "dead | undecodable | p | 2 | 1 | undecodable message: the message value is not valid JSON"
        ),
        "{dead:?}"
    );
    assert_eq!(db.i64("select count(*) from t.seen").await, 3);
    assert_eq!(db.applied("g1", "items", 0).await, Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn json_null_values_are_counted_apart_from_tombstones() {
    let db = TestDb::new("nulls").await;
    db.exec(TEST_STEPS).await;
    let kafka = Kafka::new(&[("items", 1)]);
    kafka
        .produce(vec![
            record("items", Some(r#"{"id": 1}"#), Some("null")),
            record(
                "items",
                Some(r#"{"id": 2}"#),
                Some(r#"{"schema": {"type": "struct"}, "payload": null}"#),
            ),
            record("items", Some(r#"{"id": 3}"#), None),
            versions("items", 1, 1).remove(0),
        ])
        .await;
    let run = start(config(
        &one_pipeline("items", "debezium", "t.record", ""),
        &kafka,
        &db,
    ));
    run.drained(&kafka, &["items"]).await;
    let snap = run.stop().await;
    let p = &snap.pipelines["p"];
    assert_eq!((p.null_values, p.tombstones, p.applied), (2, 1, 1));
    assert_eq!(db.i64("select count(*) from t.seen").await, 1);
    assert_eq!(db.i64("select count(*) from pgchain.dead_letters").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn numbers_reach_the_step_with_every_digit_as_sent() {
    let db = TestDb::new("digits").await;
    db.exec(TEST_STEPS).await;
    let kafka = Kafka::new(&[("items", 1)]);
    // Two keys that one f64 cannot tell apart, a decimal longer than an
    // f64 holds, and a number beyond its range that jsonb (numeric) takes.
    let change = |id: &str, amount: &str| {
        let key = format!(r#"{{"id": {id}}}"#);
        let value = format!(
            r#"{{"op": "c", "after": {{"id": {id}, "amount": {amount}, "big": 1e400, "small": -0.000000000000000000000000000001}}, "source": {{"table": "item"}}}}"#
        );
        record("items", Some(&key), Some(&value))
    };
    kafka
        .produce(vec![
            change("123456789012345678901234567890", "0.1234567890123456789"),
            change("123456789012345678901234567891", "12345678901234567.25"),
        ])
        .await;
    let run = start(config(
        &one_pipeline("items", "debezium", "t.record", ""),
        &kafka,
        &db,
    ));
    run.drained(&kafka, &["items"]).await;
    let snap = run.stop().await;
    assert!(snap.stuck.is_empty(), "{:?}", snap.stuck);
    assert_eq!(
        db.i64("select count(*) from pgchain.dead_letters").await,
        0,
        "nothing dead-lettered"
    );
    assert_eq!(
        db.strings(
            "select concat_ws(' ', key->>'id', after->>'amount', after->>'small',
                              (after->'big')::numeric = 1e400)
               from t.state order by key->>'id'"
        )
        .await,
        [
            "123456789012345678901234567890 0.1234567890123456789 -0.000000000000000000000000000001 t",
            "123456789012345678901234567891 12345678901234567.25 -0.000000000000000000000000000001 t",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ledger_ahead_of_the_log_stops_the_partition_instead_of_skipping() {
    let db = TestDb::new("misfit").await;
    db.exec(TEST_STEPS).await;
    let kafka = Kafka::new(&[("items", 2)]);
    kafka.produce(versions("items", 4, 3)).await;
    // As if the topic had been recreated: the ledger remembers offset 500.
    db.exec("insert into pgchain.offsets (group_id, topic, partition, applied_through) values ('g1', 'items', 0, 500)")
        .await;
    let run = start(config(
        &one_pipeline("items", "debezium", "t.record", ""),
        &kafka,
        &db,
    ));
    run.until("partition 0 to stop", |s| !s.stuck.is_empty())
        .await;
    run.until("partition 1 to drain", |s| {
        s.next_offsets.contains_key(&("items".to_string(), 1))
    })
    .await;
    let snap = run.stop().await;
    let why = &snap.stuck[&("items".to_string(), 0)];
    assert!(
        why.contains("offset 500 is applied, but the partition ends at"),
        "{why}"
    );
    assert!(why.contains("was the topic recreated?"), "{why}");
    assert_eq!(
        db.i64("select count(*) from t.seen where partition = 0")
            .await,
        0
    );
    assert!(
        db.i64("select count(*) from t.seen where partition = 1")
            .await
            > 0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rejected_kafka_option_never_shows_its_value() {
    let db = TestDb::new("secret").await;
    let kafka = Kafka::new(&[("items", 1)]);
    let yaml = one_pipeline("items", "debezium", "t.record", "").replace(
        "    session.timeout.ms: 6000\n",
        "    session.timeout.ms: hunter2-secret\n",
    );
    let dispatcher = pgchain::dispatcher::Dispatcher::new(config(&yaml, &kafka, &db)).unwrap();
    let err = dispatcher.run(async {}).await.unwrap_err().to_string();
    assert!(
        err.starts_with("kafka option `session.timeout.ms`: "),
        "{err}"
    );
    assert!(err.ends_with("(in test.yaml)"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_customer_example_runs_end_to_end() {
    let db = TestDb::new("customer").await;
    let topics = [
        "sales.public.customer",
        "options.public.member",
        "crm.contact",
    ];
    let kafka = Kafka::new(&[(topics[0], 3), (topics[1], 3), (topics[2], 3)]);
    let records = pgchain::samples::sample_events(90);
    // The rows alive at the end: the last event of each key is not a delete.
    let mut alive = std::collections::HashMap::new();
    for r in records.iter().filter(|r| r.value.is_some()) {
        let v = String::from_utf8_lossy(r.value.as_deref().unwrap());
        let gone = v.contains(r#""op":"d""#) || v.contains(r#""op_type":"D""#);
        alive.insert((r.topic.clone(), r.key.clone()), !gone);
    }
    let alive = alive.values().filter(|a| **a).count() as i64;
    kafka.produce(records).await;
    let config = common::example_config(&kafka, &db);
    let run = start(config);
    run.drained(&kafka, &topics).await;
    let snap = run.stop().await;
    assert!(snap.stuck.is_empty(), "{:?}", snap.stuck);

    let union = db.i64("select count(*) from l1.member_union").await;
    assert_eq!(union, alive, "every source row not deleted, once");
    for (system, table) in [
        ("sales", "l0.sales_customer"),
        ("options", "l0.options_member"),
        ("crm", "l0.crm_contact"),
    ] {
        let l0 = db.i64(&format!("select count(*) from {table}")).await;
        let l1 = db
            .i64(&format!(
                "select count(*) from l1.member_union where system = '{system}'"
            ))
            .await;
        assert_eq!(l0, l1, "{system}: L0 and L1 agree");
    }
    assert_eq!(
        db.i64("select count(*) from l1.member_union where phone !~ '^\\+8210\\d{8}$' and phone <> '+8215881234'")
            .await,
        0,
        "mobile phones in E.164"
    );
    assert_eq!(
        db.i64("select count(*) from l1.member_union where email <> lower(btrim(email))")
            .await,
        0
    );
    assert_eq!(
        db.i64(
            "select count(*) from l1.member_union where system = 'crm' and name !~ '^\\S+ \\S+$'"
        )
        .await,
        0,
        "CRM names joined from last and first name"
    );
    // Identity: every union record linked, one active golden record per cluster.
    assert_eq!(db.i64("select count(*) from idr.records").await, union);
    assert_eq!(
        db.i64("select count(distinct cluster_id) from idr.records")
            .await,
        db.i64("select count(*) from l2.customer where status = 'active'")
            .await
    );
    assert_eq!(
        db.i64("select count(*) from idr.records r left join l2.customer c on c.customer_id = r.cluster_id and c.status = 'active' where c.customer_id is null").await,
        0
    );
}
