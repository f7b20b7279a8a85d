//! The `pgchain` binary as a user runs it: check, migrate, run and SIGTERM.

mod common;

use common::{Kafka, TEST_STEPS, TestDb, pgchain, record, temp_dir};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_prints_every_problem_with_its_line_and_fails() {
    let dir = temp_dir("check-file");
    let path = write(
        &dir,
        "pipelines.yaml",
        "kafka:\n  brokers: k\npipelines:\n  a:\n    topic: t\n    chain: [Bad]\n  b:\n    topic: t\n    chain: []\n",
    );
    let out = pgchain(&["check", "--no-db", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let file = path.display();
    assert_eq!(
        stdout(&out),
        format!(
            "{file}:6: pipeline `a`: step `Bad` is not `schema.procedure` (lower-case letters, digits and `_`, each part at most 63 bytes)\n\
             {file}:9: pipeline `b` has an empty chain\n\
             {file}:7: pipelines `a` and `b` both route topic `t` (every table)\n"
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn check_finds_missing_and_misshapen_steps_in_the_database() {
    let db = TestDb::new("check").await;
    db.exec(
        "create schema s; create procedure s.two(a jsonb, b jsonb) language sql as 'select 1';
             create function s.func(ev jsonb) returns jsonb language sql as 'select ev';",
    )
    .await;
    let dir = temp_dir("check-db");
    let yaml = format!(
        "kafka:\n  brokers: k\npostgres:\n  url: {}\npipelines:\n  a:\n    topic: t\n    chain:\n      - s.missing\n      - s.two\n      - s.func\n      - l0.copy_sales_customer\n",
        db.url
    );
    let path = write(&dir, "p.yaml", &yaml);
    let out = pgchain(&["check", "--no-kafka", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let file = path.display();
    assert_eq!(
        stdout(&out),
        format!(
            "{file}:9: pipeline `a`: step `s.missing` does not exist in the database\n\
             {file}:10: pipeline `a`: step `s.two` must be a procedure taking one `inout ev jsonb`; found procedure s.two(IN a jsonb, IN b jsonb)\n\
             {file}:11: pipeline `a`: step `s.func` must be a procedure taking one `inout ev jsonb`; found function s.func(ev jsonb)\n"
        )
    );

    let good = write(
        &dir,
        "good.yaml",
        &yaml.replace("      - s.missing\n      - s.two\n      - s.func\n", ""),
    );
    let out = pgchain(&["check", "--no-kafka", "-c", good.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).ends_with("1 pipeline(s) ok\n"));

    // `run` checks the same before it starts, and refuses.
    let out = pgchain(&["run", "-c", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("not starting: {file}\n")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{file}:9: pipeline `a`: step `s.missing` does not exist in the database"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("`pgchain run --no-check` starts anyway"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_applies_once_and_refuses_a_changed_applied_file() {
    let db = TestDb::new("migrate").await;
    let project = temp_dir("migrate");
    let dir = project.join("sql/migrations");
    std::fs::create_dir_all(&dir).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(root.join("pipelines.yaml"), project.join("pipelines.yaml")).unwrap();
    for f in std::fs::read_dir(root.join("sql/migrations")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), dir.join(f.file_name())).unwrap();
    }
    write(
        &dir,
        "V90__extra.sql",
        "create table l0.extra (id int primary key);\n",
    );
    let config = project.join("pipelines.yaml");
    let args = [
        "migrate",
        "--database-url",
        &db.url,
        "-c",
        config.to_str().unwrap(),
    ];
    let out = pgchain(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let folder = dir.display();
    assert_eq!(
        stdout(&out),
        format!("pgchain runtime: up to date\n{folder}: applied 1 migration(s): V90__extra\n")
    );
    assert_eq!(
        stdout(&pgchain(&args)),
        format!("pgchain runtime: up to date\n{folder}: applied 0 migration(s)\n")
    );

    write(
        &dir,
        "V90__extra.sql",
        "create table l0.extra (id bigint primary key);\n",
    );
    let out = pgchain(&args);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("applied migration V90__extra is different"),
        "{err}"
    );
    assert!(
        !err.contains("postgres://"),
        "the URL stays out of errors: {err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn run_stops_on_sigterm_after_the_chains_in_flight_and_exits_zero() {
    let db = TestDb::new("sigterm").await;
    db.exec(TEST_STEPS).await;
    let kafka = Kafka::new(&[("items", 2)]);
    let records = (0..200)
        .map(|i| {
            let value =
                json!({"op": "c", "after": {"id": i, "version": 1}, "source": {"table": "item"}});
            record(
                "items",
                Some(&json!({"id": i}).to_string()),
                Some(&value.to_string()),
            )
        })
        .collect();
    kafka.produce(records).await;
    let dir = temp_dir("sigterm");
    let path = write(
        &dir,
        "p.yaml",
        &format!(
            "kafka:\n  brokers: {}\n  group_id: g1\npostgres:\n  url: {}\npipelines:\n  p:\n    topic: items\n    chain: [t.slow, t.record]\n",
            kafka.brokers, db.url
        ),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgchain"))
        .args(["run", "-c", path.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while db.i64("select count(*) from t.seen").await < 10 {
        assert!(start.elapsed() < Duration::from_secs(60), "nothing applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");

    let seen = db.i64("select count(*) from t.seen").await;
    assert!(seen < 200, "stopped mid-burst ({seen})");
    // Every chain that started finished and recorded its offset.
    let ledger = db
        .i64("select coalesce(sum(applied_through + 1), 0)::bigint from pgchain.offsets")
        .await;
    assert_eq!(ledger, seen);
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_brokers_are_named_on_readyz_and_sigterm_during_start_up_exits_zero() {
    let db = TestDb::new("nobroker").await;
    db.exec(TEST_STEPS).await;
    // Nothing listens on port 1.
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listen.local_addr().unwrap().port();
    drop(listen);
    let dir = temp_dir("nobroker");
    let yaml = |create: bool| {
        format!(
            "kafka:\n  brokers: 127.0.0.1:1\n  group_id: g1\npostgres:\n  url: {}\n\
             monitoring:\n  listen: 127.0.0.1:{port}\n\
             dead_letters:\n  create_topics: {create}\n\
             pipelines:\n  p:\n    topic: items\n    chain: [t.record]\n",
            db.url
        )
    };
    let readyz = || async move {
        match reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(_) => (0, String::new()),
        }
    };
    // Without the topic check, the consumer reports the brokers down.
    let path = write(&dir, "p.yaml", &yaml(false));
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgchain"))
        .args(["run", "-c", path.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let body = loop {
        let (code, body) = readyz().await;
        if code == 503
            && body.contains("cannot reach the Kafka brokers 127.0.0.1:1 (kafka.brokers)")
        {
            break body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "/readyz never named the brokers: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(body.contains("no partitions assigned"), "{body}");
    // Let librdkafka retry for a while: the error is said once, not per retry.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let kill = |pid: u32| {
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
    };
    assert!(kill(child.id()).success());
    let out = tokio::task::spawn_blocking(move || {
        child.stdin.take();
        child.wait_with_output()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(out.status.success(), "exit status {:?}", out.status);
    let log = String::from_utf8_lossy(&out.stderr);
    let said = log
        .matches("cannot reach the Kafka brokers 127.0.0.1:1")
        .count();
    assert!((1..=2).contains(&said), "said {said} times:\n{log}");

    // With the topic check, start-up waits on the brokers; SIGTERM then
    // ends it cleanly.
    let path = write(&dir, "q.yaml", &yaml(true));
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgchain"))
        .args(["run", "-c", path.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while readyz().await.0 != 503 {
        assert!(start.elapsed() < Duration::from_secs(30), "never listened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(kill(child.id()).success());
    let started = Instant::now();
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );

    // `status` names the address it could not reach.
    let q = path.clone();
    let out = tokio::task::spawn_blocking(move || pgchain(&["status", "-c", q.to_str().unwrap()]))
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot read the partitions' watermarks from the Kafka brokers 127.0.0.1:1 (kafka.brokers in {})",
            path.display()
        )),
        "{stderr}"
    );
}

#[test]
fn docker_compose_declares_migrate_then_pgchain_against_kafka_and_postgres() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("docker-compose.yml")).unwrap();
    let mut compose: serde_yaml::Value =
        serde_yaml::from_str(&text).expect("docker-compose.yml parses");
    compose.apply_merge().expect("merge keys resolve");
    let services = &compose["services"];
    for s in ["postgres", "kafka", "migrate", "pgchain"] {
        assert!(services.get(s).is_some(), "service {s}");
    }
    let cmd = |s: &str| {
        services[s]["command"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(cmd("migrate"), ["migrate"]);
    assert_eq!(cmd("pgchain"), ["run", "-c", "pipelines.yaml"]);
    let env = &services["pgchain"]["environment"];
    assert_eq!(env["KAFKA_BROKERS"].as_str(), Some("kafka:9092"));
    assert!(
        env["DATABASE_URL"]
            .as_str()
            .unwrap()
            .contains("@postgres:5432/")
    );
    assert_eq!(
        services["pgchain"]["depends_on"]["migrate"]["condition"].as_str(),
        Some("service_completed_successfully")
    );
    assert_eq!(
        services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"].as_str(),
        Some("broker,controller")
    );
    // The monitoring profile: Prometheus scrapes pgchain where it listens,
    // Grafana is provisioned with the dashboard.
    assert_eq!(
        services["pgchain"]["environment"]["PGCHAIN_LISTEN"].as_str(),
        Some("0.0.0.0:9187")
    );
    for s in ["prometheus", "grafana"] {
        assert_eq!(
            services[s]["profiles"][0].as_str(),
            Some("monitoring"),
            "{s}"
        );
        for v in services[s]["volumes"].as_sequence().unwrap() {
            let source = v["source"].as_str().unwrap();
            assert!(root.join(source).exists(), "{s} mounts {source}");
        }
    }
    let prom: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(root.join("deploy/prometheus/prometheus.yml")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        prom["scrape_configs"][0]["static_configs"][0]["targets"][0].as_str(),
        Some("pgchain:9187")
    );
    let provider: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(root.join("deploy/grafana/provisioning/dashboards/pgchain.yml"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        provider["providers"][0]["options"]["path"].as_str(),
        Some("/var/lib/grafana/dashboards")
    );
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("ENTRYPOINT [\"pgchain\"]"));
}

#[tokio::test(flavor = "multi_thread")]
async fn status_shows_applied_positions_lag_and_dead_letters() {
    let db = TestDb::new("status").await;
    db.exec(TEST_STEPS).await;
    let kafka = Kafka::new(&[("items", 2)]);
    let event = |i: i64| {
        let value = json!({"op": "c", "after": {"id": i, "version": 1, "poison": i == 5}, "source": {"table": "item"}});
        record(
            "items",
            Some(&json!({"id": i}).to_string()),
            Some(&value.to_string()),
        )
    };
    let mut first: Vec<_> = (0..20).map(event).collect();
    // A skipped tombstone last on its partition: applied as far as lag goes.
    first.push(record("items", Some(&json!({"id": 3}).to_string()), None));
    kafka.produce(first).await;
    let template = "kafka:\n  brokers: {brokers}\n  group_id: g1\npostgres:\n  url: {url}\npipelines:\n  p:\n    topic: items\n    chain: [t.poison, t.record]\n    retries: {data: {attempts: 1}}\n";
    let run = common::start(common::config(template, &kafka, &db));
    run.drained(&kafka, &["items"]).await;
    run.stop().await;
    kafka.produce((20..23).map(event).collect()).await;

    let dir = temp_dir("status");
    let yaml = template
        .replace("{brokers}", &kafka.brokers)
        .replace("{url}", &db.url);
    let path = write(&dir, "p.yaml", &yaml);
    let out = pgchain(&["status", "--json", "-c", path.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 2);
    let total = |f: &str| rows.iter().map(|r| r[f].as_i64().unwrap()).sum::<i64>();
    assert_eq!(total("lag"), 3, "{rows:?}");
    assert_eq!(total("high_watermark"), 24);
    assert_eq!(total("dead"), 1, "{rows:?}");
    assert_eq!(total("parked"), 0, "{rows:?}");
    assert_eq!(
        rows.iter()
            .map(|r| r["applied"].as_i64().unwrap() + 1)
            .sum::<i64>(),
        21
    );
    assert!(rows.iter().all(|r| r["problem"].is_null()), "{rows:?}");
    assert!(rows.iter().all(|r| {
        r["pipeline"] == "p"
            && r["last_applied_at"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
    }));

    let table = stdout(&pgchain(&["status", "-c", path.to_str().unwrap()]));
    assert!(table.starts_with("pipeline "), "{table}");
    assert_eq!(table.lines().count(), 3, "{table}");

    // A ledger past the log's end (a recreated topic) is named, not shown as lag 0.
    db.exec("update pgchain.offsets set applied_through = 500 where partition = 0")
        .await;
    let table = stdout(&pgchain(&["status", "-c", path.to_str().unwrap()]));
    assert!(
        table.contains("  ^ the ledger says offset 500 is applied, but the partition ends at"),
        "{table}"
    );
}

/// A Debezium topic without the inline schema feeding typed `l0_upsert`
/// columns: `check` warns per column, naming the line and the setting.
#[tokio::test(flavor = "multi_thread")]
async fn check_warns_when_schemaless_debezium_feeds_columns_it_cannot_cast() {
    let kafka = Kafka::new(&[("pgserver.public.customer", 1)]);
    let fixture = |name: &str| {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/debezium")
                .join(name),
        )
        .unwrap()
    };
    let dir = temp_dir("check-schemaless");
    let path = write(
        &dir,
        "pipelines.yaml",
        &format!(
            "kafka:\n  brokers: {}\npipelines:\n  customer:\n    topic: pgserver.public.customer\n    chain: [l0.copy_customer]\n\
             procedures:\n  l0.copy_customer:\n    template: l0_upsert\n    vars:\n      table: l0.customer\n      columns: {{id: int, name: text, balance: 'numeric(12,2)', born: date}}\n      key: [id]\n",
            kafka.brokers
        ),
    );
    let check = || pgchain(&["check", "--no-db", "-c", path.to_str().unwrap()]);

    // An empty topic says nothing.
    let out = check();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(!stdout(&out).contains("warning"), "{}", stdout(&out));

    // The newest message has no inline schema (schemas.enable=false).
    let plain = fixture("pg_update_plain.value.json");
    kafka
        .produce(vec![record(
            "pgserver.public.customer",
            Some(r#"{"id":1001}"#),
            Some(&plain),
        )])
        .await;
    let out = check();
    let printed = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{printed}");
    let at = format!(
        "{}:12: warning: pipeline `customer`: topic `pgserver.public.customer` carries Debezium JSON without its inline schema, so column",
        path.display()
    );
    assert!(
        printed.contains(&format!("{at} `balance` (numeric(12,2)) of l0.copy_customer would get base64 bytes (or a {{scale, value}} struct) and its cast would fail; set `decimal.handling.mode=string` on the connector, or keep the converter's `schemas.enable=true`")),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("{at} `born` (date)")),
        "{printed}"
    );
    assert!(!printed.contains("`name`"), "{printed}");

    // With the inline schema, nothing to warn about.
    let wrapped = fixture("pg_create_envelope.value.json");
    kafka
        .produce(vec![record(
            "pgserver.public.customer",
            Some(r#"{"id":1001}"#),
            Some(&wrapped),
        )])
        .await;
    let out = check();
    assert!(!stdout(&out).contains("warning"), "{}", stdout(&out));
}
