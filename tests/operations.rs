//! Operations: `/metrics` after a known burst, `/readyz` when the database
//! goes away, and the alert webhook firing and resolving.

mod common;

use common::proxy::Proxy;
use common::*;
use serde_json::json;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn version(topic: &str, id: i64, v: i64, poison: bool) -> pgchain::kafka::Record {
    let value = json!({"op": "u", "after": {"id": id, "version": v, "poison": poison}, "source": {"table": "item"}});
    record(
        topic,
        Some(&json!({"id": id}).to_string()),
        Some(&value.to_string()),
    )
}

const YAML: &str = "kafka:\n  brokers: {brokers}\n  group_id: g1\n  options:\n    session.timeout.ms: 6000\n\
    postgres:\n  url: {url}\n  pool_size: 4\n\
    monitoring:\n  listen: 127.0.0.1:0\n  lag_interval: 100ms\n  stuck_after: 1s\n\
    pipelines:\n  items:\n    topic: items\n    chain: [t.poison, t.record]\n    retries: {data: {attempts: 3, backoff: 10ms}}\n";

async fn get(url: &str) -> (u16, String) {
    match reqwest::get(url).await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
        Err(e) => (0, e.to_string()),
    }
}

/// The value of the sample `name{labels}` in a Prometheus text page.
fn sample(page: &str, name_and_labels: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

async fn until_metrics(base: &str, what: &str, cond: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let (_, page) = get(&format!("{base}/metrics")).await;
        if cond(&page) {
            return page;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_a_known_burst_exactly_and_lag_reaches_zero() {
    let db = TestDb::new("metrics").await;
    db.exec(TEST_STEPS).await;
    let kafka = Kafka::new(&[("items", 2)]);
    let mut records: Vec<_> = (1..=10)
        .flat_map(|v| (0..4).map(move |k| version("items", k, v, false)))
        .collect();
    records.push(version("items", 9, 1, true));
    kafka.produce(records).await;
    let run = start(config(YAML, &kafka, &db));
    run.drained(&kafka, &["items"]).await;
    let addr = run.http_addr().expect("listening");
    let base = format!("http://{addr}");
    let page = until_metrics(&base, "lag 0 on both partitions", |p| {
        sample(p, r#"pgchain_consumer_lag{topic="items",partition="0"}"#) == Some(0.0)
            && sample(p, r#"pgchain_consumer_lag{topic="items",partition="1"}"#) == Some(0.0)
    })
    .await;
    let n = |s: &str| sample(&page, s).unwrap_or_else(|| panic!("{s} missing in\n{page}"));
    assert_eq!(
        n(r#"pgchain_events_consumed_total{pipeline="items"}"#),
        41.0
    );
    assert_eq!(n(r#"pgchain_events_applied_total{pipeline="items"}"#), 40.0);
    assert_eq!(
        n(r#"pgchain_events_dead_lettered_total{pipeline="items"}"#),
        1.0
    );
    assert_eq!(n(r#"pgchain_events_parked_total{pipeline="items"}"#), 0.0);
    assert_eq!(
        n(r#"pgchain_events_already_applied_total{pipeline="items"}"#),
        0.0
    );
    // Three runs of the poison event: two retries.
    assert_eq!(n(r#"pgchain_retries_total{class="data"}"#), 2.0);
    assert_eq!(n(r#"pgchain_retries_total{class="transient"}"#), 0.0);
    assert_eq!(
        n(r#"pgchain_chain_duration_seconds_count{pipeline="items"}"#),
        40.0
    );
    assert_eq!(
        n(r#"pgchain_step_duration_seconds_count{step="t.record"}"#),
        40.0
    );
    assert_eq!(n("pgchain_partitions_assigned"), 2.0);
    assert_eq!(n("pgchain_partitions_stuck"), 0.0);
    assert_eq!(n("pgchain_chains_in_flight"), 0.0);
    assert_eq!(n("pgchain_pool_connections_max"), 4.0);
    // The open dead letter shows once the monitor has read the table.
    until_metrics(&base, "the dead-letter gauge", |p| {
        sample(p, r#"pgchain_dead_letters{pipeline="items",status="dead"}"#) == Some(1.0)
    })
    .await;
    assert_eq!(get(&format!("{base}/healthz")).await, (200, "ok\n".into()));

    // Every series the Grafana dashboard queries is one pgchain exports.
    let page = get(&format!("{base}/metrics")).await.1;
    let dashboard = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy/grafana/dashboards/pgchain.json"),
    )
    .unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut queried = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for (i, _) in expr.match_indices("pgchain_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                queried.insert(name);
            }
        }
    }
    assert!(queried.len() >= 12, "{queried:?}");
    for name in &queried {
        assert!(
            page.lines()
                .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))),
            "the dashboard queries {name}, which /metrics lacks:\n{page}"
        );
    }
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readiness_fails_while_the_database_is_away_and_recovers() {
    let db = TestDb::new("ready").await;
    db.exec(TEST_STEPS).await;
    let proxy = Proxy::to_server().await;
    let kafka = Kafka::new(&[("items", 1)]);
    kafka.produce(vec![version("items", 1, 1, false)]).await;
    let mut cfg = config(YAML, &kafka, &db);
    cfg.postgres.url = proxy.url_for(&db);
    let run = start(cfg);
    run.drained(&kafka, &["items"]).await;
    let base = format!("http://{}", run.http_addr().unwrap());
    let ready = |want: u16| {
        let base = base.clone();
        async move {
            let start = Instant::now();
            loop {
                let (status, body) = get(&format!("{base}/readyz")).await;
                if status == want {
                    return body;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "/readyz stayed {status}: {body}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(ready(200).await, "ready\n");
    proxy.down();
    let body = ready(503).await;
    assert!(body.contains("database unreachable"), "{body}");
    // The process itself is alive all along.
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    proxy.up();
    ready(200).await;
    run.stop().await;
}

/// A local HTTP receiver for the webhook: every body posted to it.
async fn receiver() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let got: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let sink = sink.clone();
            async move {
                sink.lock()
                    .unwrap()
                    .push(serde_json::from_str(&body).unwrap_or(json!({"raw": body})));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

async fn until_posts(got: &Arc<Mutex<Vec<serde_json::Value>>>, n: usize) -> Vec<String> {
    let start = Instant::now();
    loop {
        let posts: Vec<String> = got
            .lock()
            .unwrap()
            .iter()
            .map(|v| v["text"].as_str().unwrap_or("").to_string())
            .collect();
        if posts.len() >= n {
            return posts;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "webhook got {posts:?}, wanted {n}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_alert_webhook_fires_on_dead_letters_and_resolves_when_they_are_handled() {
    let db = TestDb::new("alerts").await;
    db.exec(TEST_STEPS).await;
    let kafka = Kafka::new(&[("items", 1)]);
    let (hook, got) = receiver().await;
    let text = format!(
        "{YAML}alerts:\n  check_every: 100ms\n  repeat_after: 1h\n  webhook_env: PGCHAIN_TEST_HOOK\n"
    )
    .replace("{brokers}", &kafka.brokers)
    .replace("{url}", &db.url);
    let dir = temp_dir("alerts");
    let path = dir.join("p.yaml");
    std::fs::write(&path, text).unwrap();
    let cfg = path.to_str().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgchain"))
        .args(["run", "-c", cfg])
        .env("PGCHAIN_TEST_HOOK", &hook)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    kafka
        .produce(vec![
            version("items", 1, 1, false),
            version("items", 9, 1, true),
            version("items", 9, 2, true),
        ])
        .await;
    let posts = until_posts(&got, 1).await;
    assert!(
        posts[0].starts_with(":rotating_light: pgchain `g1`: ")
            && posts[0].contains("dead letter(s) open (items: "),
        "{posts:?}"
    );
    // Both poison events dead-lettered; however fast that went, the alert is
    // rate-limited to one post until it resolves.
    let start = Instant::now();
    while db.i64("select count(*) from pgchain.dead_letters").await < 2 {
        assert!(start.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(got.lock().unwrap().len(), 1);

    let out = Command::new(env!("CARGO_BIN_EXE_pgchain"))
        .args([
            "dlq",
            "discard",
            "-c",
            cfg,
            "--all",
            "--reason",
            "known test rows",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let posts = until_posts(&got, 2).await;
    assert!(
        posts[1].starts_with(":white_check_mark: pgchain `g1` resolved: "),
        "{posts:?}"
    );
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        let status = child.wait().unwrap();
        let mut err = String::new();
        use std::io::Read;
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (status, err)
    })
    .await
    .unwrap();
    assert!(out.0.success(), "{}", out.1);
    assert!(
        !out.1.contains(&hook),
        "the webhook URL is a secret and never logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_step_not_migrated_yet_dead_letters_nothing_and_everything_applies_once_it_exists() {
    let db = TestDb::new("undeployed").await;
    db.exec(TEST_STEPS).await;
    let kafka = Kafka::new(&[("items", 1)]);
    let records: Vec<_> = (1..=10)
        .flat_map(|v| (0..3).map(move |k| version("items", k, v, false)))
        .collect();
    kafka.produce(records).await;
    let yaml = YAML.replace("chain: [t.poison, t.record]", "chain: [t.record, t.later]");
    let run = start(config(&yaml, &kafka, &db));
    let base = format!(
        "http://{}",
        loop {
            match run.http_addr() {
                Some(a) => break a,
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    );
    // The partition waits and says why, past stuck_after (1 s).
    let started = Instant::now();
    let why = loop {
        let (code, body) = get(&format!("{base}/readyz")).await;
        if code == 503 && body.contains("waiting for a deployment") {
            break body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "/readyz never said why: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(why.contains("t.later"), "{why}");
    assert!(why.contains("42883"), "{why}");
    assert!(why.contains("pgchain migrate"), "{why}");
    assert_eq!(db.i64("select count(*) from pgchain.dead_letters").await, 0);
    assert_eq!(db.i64("select count(*) from t.seen").await, 0);
    assert_eq!(db.applied("g1", "items", 0).await, None);
    // pgchain's sessions are named after it and its group.
    assert!(
        db.i64(
            "select count(*) from pg_stat_activity
              where datname = current_database() and application_name = 'pgchain g1'"
        )
        .await
            >= 1
    );

    db.exec("create procedure t.later(inout ev jsonb) language plpgsql as $$ begin end $$")
        .await;
    run.drained(&kafka, &["items"]).await;
    let page = get(&format!("{base}/metrics")).await.1;
    let snap = run.stop().await;
    assert!(snap.stuck.is_empty(), "{:?}", snap.stuck);
    assert_eq!(db.i64("select count(*) from pgchain.dead_letters").await, 0);
    assert_eq!(
        db.i64("select count(*) from t.seen").await,
        30,
        "every event applied once"
    );
    assert_eq!(
        db.i64("select count(distinct kafka_offset) from t.seen")
            .await,
        30
    );
    assert!(
        sample(&page, r#"pgchain_retries_total{class="deployment"}"#).unwrap_or(0.0) >= 1.0,
        "{page}"
    );
}
