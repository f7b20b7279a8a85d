//! Failure handling against the real PostgreSQL and librdkafka's mock
//! cluster: dead letters byte for byte, parking behind a missing dependency,
//! the database going away, broker errors, replay and discard from the
//! command line, and a crash before the offset commit.

mod common;

use common::proxy::Proxy;
use common::*;
use pgchain::kafka::Record;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::types::RDKafkaApiKey;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::json;
use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A Debezium change of `{"id": id}` with `after`.
fn change(topic: &str, id: i64, after: serde_json::Value) -> Record {
    let value = json!({"op": "u", "after": after, "source": {"table": "item", "ts_ms": 1}});
    record(
        topic,
        Some(&json!({"id": id}).to_string()),
        Some(&value.to_string()),
    )
}

fn version(topic: &str, id: i64, v: i64) -> Record {
    change(topic, id, json!({"id": id, "version": v, "poison": false}))
}

fn yaml(topic: &str, chain: &str, extra: &str) -> String {
    format!(
        "kafka:\n  brokers: {{brokers}}\n  group_id: g1\n  options:\n    session.timeout.ms: 6000\n\
         postgres:\n  url: {{url}}\n  pool_size: 4\n\
         pipelines:\n  items:\n    topic: {topic}\n    chain: [{chain}]\n    tombstones: deliver\n\
         \x20   retries: {{data: {{attempts: 3, backoff: 10ms}}, transient: {{backoff: 50ms, max_backoff: 1s}}}}\n{extra}"
    )
}

/// Every record now in `topic` (all partitions), in partition and offset order.
async fn read_topic(kafka: &Kafka, topic: &str) -> Vec<OwnedMessage> {
    let brokers = kafka.brokers.clone();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "reader")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let md = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        let mut expected = 0;
        for p in md.topics()[0].partitions() {
            let (low, high) = consumer
                .fetch_watermarks(&topic, p.id(), Duration::from_secs(10))
                .unwrap();
            expected += high - low;
            tpl.add_partition_offset(&topic, p.id(), Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let mut out = Vec::new();
        let start = Instant::now();
        while (out.len() as i64) < expected {
            assert!(start.elapsed() < Duration::from_secs(30), "reading {topic}");
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                out.push(m.detach());
            }
        }
        out.sort_by_key(|m| (m.partition(), m.offset()));
        out
    })
    .await
    .unwrap()
}

fn headers(m: &OwnedMessage) -> Vec<(String, Option<Vec<u8>>)> {
    m.headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default()
}

fn header<'m>(hs: &'m [(String, Option<Vec<u8>>)], name: &str) -> Option<&'m str> {
    hs.iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.as_deref())
        .map(|v| std::str::from_utf8(v).unwrap())
}

async fn wait_for(db: &TestDb, what: &str, sql: &str, want: i64) {
    let start = Instant::now();
    loop {
        let got = db.i64(sql).await;
        if got == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "timed out waiting for {what}: {got} ≠ {want}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

const REFUSE_DELETES: &str =
    "create procedure t.refuse_deletes(inout ev jsonb) language plpgsql as $$
begin
  if ev->>'op' = 'd' then
    raise exception 'deletes of % are refused', ev->'key' using errcode = '23514';
  end if;
end $$;";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_event_is_dead_lettered_byte_for_byte_and_its_partition_flows_on() {
    let db = TestDb::new("dlq").await;
    db.exec(TEST_STEPS).await;
    db.exec(REFUSE_DELETES).await;
    let kafka = Kafka::new(&[("items", 1)]);
    let poison_value = r#"{"op":"c", "after": {"id": 9, "version": 1, "poison": true},  "source": {"table": "item"}}"#;
    let original_headers = vec![
        ("traceparent".to_string(), Some(b"00-4bf92f35-01".to_vec())),
        ("empty".to_string(), None),
        ("binary".to_string(), Some(vec![0xff, 0x00, 0x01])),
    ];
    let mut poison = record("items", Some(r#"{ "id" : 9 }"#), Some(poison_value));
    poison.headers = original_headers.clone();
    let records = vec![
        version("items", 0, 1),
        poison,
        version("items", 0, 2),
        // A tombstone the chain refuses: the dead letter's value stays null.
        record("items", Some(r#"{"id": 5}"#), None),
        record("items", Some(r#"{"id": 0}"#), Some("{oops")),
        version("items", 0, 3),
    ];
    kafka.produce(records).await;
    let run = start(config(
        &yaml("items", "t.poison, t.refuse_deletes, t.record", ""),
        &kafka,
        &db,
    ));
    run.drained(&kafka, &["items"]).await;
    wait_for(
        &db,
        "dead letters published",
        "select count(*) from pgchain.dead_letters where published_at is not null",
        3,
    )
    .await;
    let snap = run.stop().await;
    assert!(snap.stuck.is_empty(), "{:?}", snap.stuck);
    assert_eq!(snap.pipelines["items"].dead_lettered, 3);
    assert_eq!(
        db.strings("select (after->>'version') from t.seen order by seq")
            .await,
        ["1", "2", "3"],
        "the events after each poison were applied"
    );
    let rows = db
        .strings(
            "select concat_ws(' | ', kafka_offset, status, error_class, failing_step, sqlstate, attempts)
               from pgchain.dead_letters order by kafka_offset",
        )
        .await;
    assert_eq!(
        rows,
        [
            "1 | dead | data | t.poison | P0001 | 3",
            "3 | dead | data | t.refuse_deletes | 23514 | 3",
            "4 | dead | undecodable | 1",
        ]
    );

    let dlq = read_topic(&kafka, "items.dlq").await;
    assert_eq!(dlq.len(), 3);
    let by_offset: HashMap<&str, &OwnedMessage> = dlq
        .iter()
        .map(|m| (header_owned(m, "pgchain.offset"), m))
        .collect();
    let m = by_offset["1"];
    assert_eq!(m.key(), Some(&br#"{ "id" : 9 }"#[..]));
    assert_eq!(m.payload(), Some(poison_value.as_bytes()));
    let hs = headers(m);
    assert_eq!(
        &hs[..3],
        &original_headers[..],
        "original headers first, as they were"
    );
    let ours: Vec<(&str, Option<&str>)> = hs[3..]
        .iter()
        .map(|(k, v)| {
            (
                k.as_str(),
                v.as_deref().map(|v| std::str::from_utf8(v).unwrap()),
            )
        })
        .collect();
    let id = db
        .i64("select id from pgchain.dead_letters where kafka_offset = 1")
        .await
        .to_string();
    let ts = m.timestamp().to_millis().unwrap().to_string();
    assert_eq!(
        ours,
        [
            ("pgchain.topic", Some("items")),
            ("pgchain.partition", Some("0")),
            ("pgchain.offset", Some("1")),
            ("pgchain.timestamp", Some(ts.as_str())),
            ("pgchain.pipeline", Some("items")),
            ("pgchain.step", Some("t.poison")),
            ("pgchain.sqlstate", Some("P0001")),
            (
                "pgchain.error",
                Some(r#"poisoned row {"id": 9}; detail: test poison"#)
            ),
            ("pgchain.attempts", Some("3")),
            ("pgchain.class", Some("data")),
            ("pgchain.status", Some("dead")),
            ("pgchain.id", Some(id.as_str())),
            ("pgchain.group", Some("g1")),
        ]
    );
    let tomb = by_offset["3"];
    assert_eq!(tomb.key(), Some(&br#"{"id": 5}"#[..]));
    assert_eq!(tomb.payload(), None, "a null value stays null");
    let hs = headers(tomb);
    assert_eq!(header(&hs, "pgchain.step"), Some("t.refuse_deletes"));
    let bad = by_offset["4"];
    assert_eq!(bad.payload(), Some(&b"{oops"[..]));
    let hs = headers(bad);
    assert_eq!(header(&hs, "pgchain.class"), Some("undecodable"));
    assert!(
        header(&hs, "pgchain.error")
            .unwrap()
            .starts_with("undecodable message: the message value is not valid JSON"),
        "{hs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_postgresql_cannot_store_is_dead_lettered_and_the_partition_flows_on() {
    let db = TestDb::new("nul_key").await;
    db.exec(TEST_STEPS).await;
    let kafka = Kafka::new(&[("items", 1)]);
    // JSON allows \u0000 in a string; PostgreSQL's jsonb and text do not.
    let bad_key = r#"{"id":"a\u0000b"}"#;
    let bad_value =
        r#"{"op":"c","after":{"id":"a\u0000b","note":"x\u0000y"},"source":{"table":"item"}}"#;
    let mut bad = record("items", Some(bad_key), Some(bad_value));
    bad.headers = vec![("h".to_string(), Some(b"v\0v".to_vec()))];
    kafka
        .produce(vec![
            version("items", 1, 1),
            bad,
            version("items", 2, 1),
            version("items", 1, 2),
        ])
        .await;
    let run = start(config(&yaml("items", "t.record", ""), &kafka, &db));
    run.drained(&kafka, &["items"]).await;
    let snap = run.stop().await;
    assert!(snap.stuck.is_empty(), "{:?}", snap.stuck);
    assert_eq!(
        db.strings("select concat_ws(':', key->>'id', after->>'version') from t.seen order by seq")
            .await,
        ["1:1", "2:1", "1:2"],
        "the events after it were applied"
    );
    let rows = db
        .strings(
            "select concat_ws(' | ', kafka_offset, status, error_class, sqlstate, entity_key::text,
                              header_names[1], encode(header_values[1], 'escape'))
               from pgchain.dead_letters",
        )
        .await;
    assert_eq!(
        rows,
        ["1 | dead | data | 22P05 | {\"id\": \"a\u{FFFD}b\"} | h | v\\000v"]
    );
    // The message itself is kept byte for byte.
    let client = db.client().await;
    let row = client
        .query_one("select msg_key, msg_value from pgchain.dead_letters", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, Vec<u8>>(0), bad_key.as_bytes());
    assert_eq!(row.get::<_, Vec<u8>>(1), bad_value.as_bytes());
    assert_eq!(db.applied("g1", "items", 0).await, Some(3));
}

fn header_owned<'m>(m: &'m OwnedMessage, name: &str) -> &'m str {
    let h = m.headers().expect("headers");
    h.iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| std::str::from_utf8(v).unwrap())
        .expect(name)
}

/// A consent row (a side row of the campaign example) for `member`.
fn consent(member: i64, offset_tag: i64, sms: bool, email: bool, push: bool) -> Record {
    let after = json!({"member_id": member, "sms_ok": sms, "email_ok": email, "push_ok": push});
    let value = json!({"op": "c", "after": after,
        "source": {"schema": "public", "table": "marketing_consent", "ts_ms": 2000 + offset_tag}});
    record(
        "shop.public.marketing_consent",
        Some(&json!({"member_id": member}).to_string()),
        Some(&value.to_string()),
    )
}

fn member(id: i64, name: &str) -> Record {
    let value = json!({"op": "c", "after": {"member_id": id, "name": name, "grade": "gold", "phone": null},
        "source": {"schema": "public", "table": "member", "ts_ms": 1000}});
    record(
        "shop.public.member",
        Some(&json!({"member_id": id}).to_string()),
        Some(&value.to_string()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_side_row_before_its_base_row_parks_and_is_applied_when_the_base_arrives() {
    let db = TestDb::campaign("park").await;
    db.exec(TEST_STEPS).await;
    let (members, consents) = ("shop.public.member", "shop.public.marketing_consent");
    let kafka = Kafka::new(&[(members, 1), (consents, 1)]);
    let text = format!(
        "kafka:\n  brokers: {{brokers}}\n  group_id: g1\n  options:\n    session.timeout.ms: 6000\n\
         postgres:\n  url: {{url}}\n  pool_size: 4\n\
         dead_letters:\n  recovery_interval: 10m\n\
         pipelines:\n  member:\n    topic: {members}\n    chain: [campaign.member, t.record]\n\
         \x20 consent:\n    topic: {consents}\n    chain: [campaign.consent, t.record]\n\
         \x20   retries: {{dependency: {{attempts: 3, backoff: 10ms}}}}\n"
    );
    let run = start(config(&text, &kafka, &db));
    kafka.produce(vec![member(2, "Bo")]).await;
    run.drained(&kafka, &[members]).await;
    // Member 1's consent arrives before member 1, four times; member 2's
    // consent rows sit between them in the same partition.
    kafka
        .produce(vec![
            consent(1, 0, true, false, false),
            consent(2, 1, true, true, true),
            consent(1, 2, false, true, false),
            consent(1, 3, true, true, false),
            consent(2, 4, false, false, false),
            consent(1, 5, false, false, true),
        ])
        .await;
    run.drained(&kafka, &[consents]).await;
    let parked = db
        .strings(
            "select concat_ws(' ', kafka_offset, status, error_class, awaits)
               from pgchain.dead_letters order by id",
        )
        .await;
    assert_eq!(
        parked,
        [
            "0 parked dependency member:1",
            "2 parked queued",
            "3 parked queued",
            "5 parked queued"
        ]
    );
    // Member 2 never waited: both its consent rows were applied in passing.
    assert_eq!(
        db.strings(
            "select concat_ws(' ', member_id, sms_ok, email_ok, push_ok) from campaign.target_member"
        )
        .await,
        ["2 f f f"]
    );

    kafka.produce(vec![member(1, "Ann")]).await;
    wait_for(
        &db,
        "the parked events to be replayed",
        "select count(*) from pgchain.dead_letters where status = 'replayed'",
        4,
    )
    .await;
    let snap = run.stop().await;
    assert_eq!(snap.pipelines["consent"].replayed, 4);
    assert_eq!(
        db.strings("select kafka_offset::text from t.seen where topic = 'shop.public.marketing_consent' and key = '{\"member_id\": 1}' order by seq")
            .await,
        ["0", "2", "3", "5"],
        "replayed in their order"
    );
    assert_eq!(
        db.strings(
            "select concat_ws(' ', member_id, name, sms_ok, email_ok, push_ok) from campaign.target_member order by 1"
        )
        .await,
        ["1 Ann f f t", "2 Bo f f f"]
    );
    // Re-driven at the base row's commit, not at the next periodic pass.
    let lag_ms = db
        .i64(
            "select (extract(epoch from (select max(resolved_at) from pgchain.dead_letters)
                   - (select started from t.seen where topic = 'shop.public.member' and key = '{\"member_id\": 1}')) * 1000)::bigint",
        )
        .await;
    assert!(lag_ms < 1000, "replayed {lag_ms} ms after the base row");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_connections_and_a_30_second_outage_lose_nothing_and_dead_letter_nothing() {
    let db = TestDb::new("outage").await;
    db.exec(TEST_STEPS).await;
    let proxy = Proxy::to_server().await;
    let kafka = Kafka::new(&[("items", 2)]);
    let burst = |from: i64, to: i64| -> Vec<Record> {
        (from..=to)
            .flat_map(|v| (0..8).map(move |k| version("items", k, v)))
            .collect()
    };
    kafka.produce(burst(1, 60)).await;
    let mut cfg = config(&yaml("items", "t.pause, t.record", ""), &kafka, &db);
    cfg.postgres.url = proxy.url_for(&db);
    let run = start(cfg);
    let admin = db.client().await;
    let kill = format!(
        "select count(pg_terminate_backend(pid)) from pg_stat_activity
          where datname = '{}' and pid <> pg_backend_pid()",
        db.name
    );
    // Connections killed mid-stream, three times.
    for _ in 0..3 {
        run.until("some events applied", |s| {
            s.pipelines.get("items").is_some_and(|c| c.applied > 20)
        })
        .await;
        admin.query_one(&kill, &[]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // Then the server is unreachable for 30 seconds while events arrive.
    proxy.down();
    kafka.produce(burst(61, 100)).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    proxy.up();
    run.drained(&kafka, &["items"]).await;
    let snap = run.stop().await;

    assert!(snap.stuck.is_empty(), "{:?}", snap.stuck);
    assert!(
        snap.retries_by_class.get("transient").copied().unwrap_or(0) > 0,
        "the outage was noticed: {snap:?}"
    );
    assert_eq!(db.i64("select count(*) from pgchain.dead_letters").await, 0);
    assert_eq!(db.i64("select count(*) from t.seen").await, 800);
    assert_eq!(
        db.i64("select count(distinct (partition, kafka_offset)) from t.seen")
            .await,
        800,
        "nothing applied twice"
    );
    assert_eq!(
        db.strings("select distinct version::text from t.state")
            .await,
        ["100"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_request_errors_lose_nothing_and_duplicate_nothing() {
    let db = TestDb::new("brokererr").await;
    db.exec(TEST_STEPS).await;
    db.exec(REFUSE_DELETES).await;
    let kafka = Kafka::new(&[("items", 2), ("items.dlq", 2)]);
    let mut records: Vec<Record> = (1..=50)
        .flat_map(|v| (0..4).map(move |k| version("items", k, v)))
        .collect();
    records.insert(
        77,
        change("items", 9, json!({"id": 9, "version": 1, "poison": true})),
    );
    kafka.produce(records).await;
    use RDKafkaRespErr::*;
    let retriable = [
        RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
    ];
    kafka
        .cluster
        .request_errors(RDKafkaApiKey::Fetch, &retriable);
    kafka
        .cluster
        .request_errors(RDKafkaApiKey::Produce, &retriable);
    kafka.cluster.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[
            RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        ],
    );
    drain_with_one_dead_letter(&kafka, &db).await;
    assert_eq!(db.i64("select count(*) from t.seen").await, 200);
    assert_eq!(
        db.i64("select count(distinct (partition, kafka_offset)) from t.seen")
            .await,
        200
    );
    let dlq = read_topic(&kafka, "items.dlq").await;
    assert_eq!(dlq.len(), 1, "one dead-letter record, not a retry's copy");
    assert_eq!(header_owned(&dlq[0], "pgchain.sqlstate"), "P0001");
}

/// Runs `t.poison, t.record` over `items` until drained and its one dead
/// letter is published.
async fn drain_with_one_dead_letter(kafka: &Kafka, db: &TestDb) {
    let run = start(config(&yaml("items", "t.poison, t.record", ""), kafka, db));
    run.drained(kafka, &["items"]).await;
    wait_for(
        db,
        "the dead letter published",
        "select count(*) from pgchain.dead_letters where published_at is not null",
        1,
    )
    .await;
    run.stop().await;
}

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_letters_are_listed_replayed_and_discarded_from_the_command_line() {
    let db = TestDb::new("dlqcli").await;
    db.exec(TEST_STEPS).await;
    db.exec(REFUSE_DELETES).await;
    let kafka = Kafka::new(&[("items", 1)]);
    kafka
        .produce(vec![
            version("items", 0, 1),
            change("items", 8, json!({"id": 8, "version": 1, "poison": true})),
            change("items", 9, json!({"id": 9, "version": 1, "poison": true})),
            version("items", 0, 2),
        ])
        .await;
    let text = yaml("items", "t.poison, t.record", "")
        .replace("{brokers}", &kafka.brokers)
        .replace("{url}", &db.url);
    let dir = temp_dir("dlqcli");
    let path = dir.join("p.yaml");
    std::fs::write(&path, &text).unwrap();
    let cfg = path.to_str().unwrap();

    let run = start(config(
        &yaml("items", "t.poison, t.record", ""),
        &kafka,
        &db,
    ));
    run.drained(&kafka, &["items"]).await;
    run.stop().await;
    let ids = db
        .strings("select id::text from pgchain.dead_letters order by kafka_offset")
        .await;
    assert_eq!(ids.len(), 2);
    let (first, second) = (&ids[0], &ids[1]);

    let o = pgchain(&["dlq", "list", "-c", cfg]);
    assert!(o.status.success(), "{}", out(&o));
    let listing = out(&o);
    assert!(
        listing.contains("items/0@1") && listing.contains("items/0@2"),
        "{listing}"
    );
    assert!(
        listing.contains(r#"step t.poison: poisoned row {"id": 8}; detail: test poison (P0001)"#),
        "{listing}"
    );

    // Nothing named: refused, and nothing changes.
    let o = pgchain(&["dlq", "replay", "-c", cfg]);
    assert!(!o.status.success());
    assert!(out(&o).contains("name what to replay"), "{}", out(&o));

    // Still poisoned: the replay fails again and the row stays dead.
    let o = pgchain(&["dlq", "replay", "-c", cfg, "--id", second]);
    assert!(!o.status.success(), "{}", out(&o));
    assert!(out(&o).contains("still dead 1"), "{}", out(&o));

    // The step is fixed; one event is discarded, the other replayed.
    db.exec("create or replace procedure t.poison(inout ev jsonb) language plpgsql as $$ begin null; end $$")
        .await;
    let o = pgchain(&[
        "dlq",
        "discard",
        "-c",
        cfg,
        "--id",
        first,
        "--reason",
        "test row from the old export",
    ]);
    assert!(o.status.success(), "{}", out(&o));
    assert_eq!(out(&o).trim(), format!("discarded 1: {first}"));
    let o = pgchain(&["dlq", "replay", "-c", cfg, "--status", "dead"]);
    assert!(o.status.success(), "{}", out(&o));
    assert!(out(&o).starts_with("replayed 1;"), "{}", out(&o));

    assert_eq!(
        db.strings(
            "select concat_ws(' | ', id, status, resolution, replays) from pgchain.dead_letters order by id"
        )
        .await,
        [
            format!("{first} | discarded | test row from the old export | 0"),
            format!("{second} | replayed | replayed by pgchain dlq replay | 1"),
        ]
    );
    assert_eq!(
        db.strings("select key->>'id' from t.seen order by seq")
            .await,
        ["0", "0", "9"],
        "the replayed event ran its chain once"
    );
    // A second replay finds nothing open.
    let o = pgchain(&["dlq", "replay", "-c", cfg, "--all"]);
    assert!(o.status.success(), "{}", out(&o));
    assert!(out(&o).starts_with("replayed 0;"), "{}", out(&o));
    let o = pgchain(&["dlq", "list", "-c", cfg, "--json", "--status", "replayed"]);
    let listed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(listed[0]["id"].to_string(), *second);
    assert_eq!(listed.as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replayed_undecodable_message_stays_undecodable() {
    let db = TestDb::new("dlqclass").await;
    db.exec(TEST_STEPS).await;
    let kafka = Kafka::new(&[("items", 1)]);
    kafka
        .produce(vec![record("items", Some(r#"{"id": 1}"#), Some("{oops"))])
        .await;
    let text = yaml("items", "t.record", "")
        .replace("{brokers}", &kafka.brokers)
        .replace("{url}", &db.url);
    let dir = temp_dir("dlqclass");
    let path = dir.join("p.yaml");
    std::fs::write(&path, &text).unwrap();
    let run = start(config(&yaml("items", "t.record", ""), &kafka, &db));
    run.drained(&kafka, &["items"]).await;
    run.stop().await;
    let o = pgchain(&["dlq", "replay", "-c", path.to_str().unwrap(), "--all"]);
    assert!(!o.status.success(), "{}", out(&o));
    assert!(out(&o).contains("still dead 1"), "{}", out(&o));
    assert_eq!(
        db.strings(
            "select concat_ws(' | ', status, error_class, replays, left(error_message, 41))
               from pgchain.dead_letters"
        )
        .await,
        ["dead | undecodable | 1 | undecodable message: the message value is"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_before_the_offset_commit_writes_no_second_dead_letter() {
    let db = TestDb::new("dlqcrash").await;
    db.exec(TEST_STEPS).await;
    let kafka = Kafka::new(&[("items", 1)]);
    kafka
        .produce(vec![
            version("items", 0, 1),
            change("items", 9, json!({"id": 9, "version": 1, "poison": true})),
            version("items", 0, 2),
        ])
        .await;
    // Kafka commits would come only every ten minutes: the kill always
    // lands between the dead-letter write and the offset commit.
    let text = yaml("items", "t.poison, t.record", "")
        .replace(
            "    session.timeout.ms: 6000\n",
            "    session.timeout.ms: 6000\n    auto.commit.interval.ms: 600000\n",
        )
        .replace("{brokers}", &kafka.brokers)
        .replace("{url}", &db.url);
    let dir = temp_dir("dlqcrash");
    let path = dir.join("p.yaml");
    std::fs::write(&path, &text).unwrap();
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_pgchain"))
            .args(["run", "-c", path.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut child = spawn();
    wait_for(&db, "two events applied", "select count(*) from t.seen", 2).await;
    wait_for(
        &db,
        "the dead letter published",
        "select count(*) from pgchain.dead_letters where published_at is not null",
        1,
    )
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        committed(&kafka, "g1", "items").await,
        None,
        "killed before any offset commit"
    );

    let mut child = spawn();
    kafka.produce(vec![version("items", 0, 3)]).await;
    wait_for(
        &db,
        "the next event applied",
        "select count(*) from t.seen",
        3,
    )
    .await;
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");

    assert_eq!(db.i64("select count(*) from pgchain.dead_letters").await, 1);
    assert_eq!(read_topic(&kafka, "items.dlq").await.len(), 1);
    assert_eq!(
        db.strings("select kafka_offset::text from t.seen order by seq")
            .await,
        ["0", "2", "3"]
    );
    assert_eq!(committed(&kafka, "g1", "items").await, Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_letter_a_crash_left_unpublished_goes_out_before_the_partition_runs() {
    let db = TestDb::new("dlqsweep").await;
    db.exec(TEST_STEPS).await;
    let kafka = Kafka::new(&[("items", 1)]);
    kafka
        .produce(vec![
            version("items", 0, 1),
            change("items", 9, json!({"id": 9, "version": 1, "poison": true})),
            version("items", 0, 2),
        ])
        .await;
    // As a crash right after the table write would leave it: the row is
    // there, the ledger past it, the topic without it.
    db.exec(
        "call pgchain.dead_letter('g1', 'items', 'items', 0, 1, null, '\\x7b7d'::bytea, null,
           array['h'], array['\\x01'::bytea], '{\"id\": 9}', 'dead', 'data', 't.poison', 'P0001',
           'poisoned', null, 3, 'items.dlq', null, null);
         insert into pgchain.offsets (group_id, topic, partition, applied_through)
         values ('g1', 'items', 0, 1) on conflict (group_id, topic, partition) do nothing",
    )
    .await;
    // The row above moved the ledger to 1, so offset 0 counts as applied too;
    // only offset 2 runs.
    drain_with_one_dead_letter(&kafka, &db).await;
    let dlq = read_topic(&kafka, "items.dlq").await;
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].key(), Some(&b"{}"[..]));
    assert_eq!(dlq[0].payload(), None);
    assert_eq!(headers(&dlq[0])[0], ("h".to_string(), Some(vec![1u8])));
    assert_eq!(
        db.strings("select kafka_offset::text from t.seen").await,
        ["2"]
    );
}
