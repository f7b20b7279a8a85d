//! Test harness: a database of its own per test (on the real PostgreSQL at
//! DATABASE_URL) and librdkafka's mock cluster, both dropped at the end.

#![allow(dead_code)]

pub mod proxy;

use pgchain::config::Config;
use pgchain::dispatcher::{Background, Dispatcher};
use pgchain::kafka::{self, Record};
use pgchain::ops::stats::Stats;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub fn server_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| pgchain::config::default_url())
}

/// A fresh database with pgchain's runtime and a project's migrations applied.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// With the customer example (the repository's root project).
    pub async fn new(label: &str) -> TestDb {
        TestDb::with_project(label, "").await
    }

    /// With the campaign example.
    pub async fn campaign(label: &str) -> TestDb {
        TestDb::with_project(label, "examples/campaign").await
    }

    /// With the project in `project` (relative to the repository).
    pub async fn with_project(label: &str, project: &str) -> TestDb {
        let db = TestDb::empty(label).await;
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        pgchain::db::migrate(&db.url, &root.join(project).join("sql/migrations"))
            .await
            .expect("migrate test database");
        db
    }

    /// A fresh database with nothing in it.
    pub async fn empty(label: &str) -> TestDb {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "pgchain_t_{label}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let url = pgchain::db::recreate_database(&server_url(), &name)
            .await
            .expect("create test database");
        TestDb { name, url }
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        pgchain::db::connect(&self.url).await.expect("connect")
    }

    pub async fn exec(&self, sql: &str) {
        self.client()
            .await
            .batch_execute(sql)
            .await
            .expect("test sql");
    }

    pub async fn i64(&self, sql: &str) -> i64 {
        self.client()
            .await
            .query_one(sql, &[])
            .await
            .expect(sql)
            .get(0)
    }

    pub async fn strings(&self, sql: &str) -> Vec<String> {
        let rows = self.client().await.query(sql, &[]).await.expect(sql);
        rows.iter().map(|r| r.get(0)).collect()
    }

    /// Applied position in the ledger (None when the partition has no row).
    pub async fn applied(&self, group: &str, topic: &str, partition: i32) -> Option<i64> {
        self.client()
            .await
            .query_opt(
                "select applied_through from pgchain.offsets where group_id = $1 and topic = $2 and partition = $3",
                &[&group, &topic, &partition],
            )
            .await
            .unwrap()
            .map(|r| r.get(0))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Best effort, on a thread of its own so no runtime is needed.
        let (url, name) = (server_url(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(c) = pgchain::db::connect(&url).await {
                    let _ = c
                        .batch_execute(&format!("drop database if exists \"{name}\" with (force)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// An in-process Kafka cluster.
pub struct Kafka {
    pub cluster: MockCluster<'static, DefaultProducerContext>,
    pub brokers: String,
}

impl Kafka {
    pub fn new(topics: &[(&str, i32)]) -> Kafka {
        let cluster = MockCluster::new(1).expect("mock cluster");
        for (t, partitions) in topics {
            cluster
                .create_topic(t, *partitions, 1)
                .expect("create topic");
        }
        let brokers = cluster.bootstrap_servers();
        Kafka { cluster, brokers }
    }

    pub async fn produce(&self, records: Vec<Record>) {
        let brokers = self.brokers.clone();
        tokio::task::spawn_blocking(move || kafka::produce(&brokers, &records))
            .await
            .unwrap()
            .unwrap();
    }
}

/// Renders `procedure` from `template` with `vars` (YAML) and applies it.
pub async fn install(db: &TestDb, procedure: &str, template: &str, vars: &str) {
    let sql = rendered(procedure, template, vars).unwrap_or_else(|e| panic!("{e}"));
    db.exec(&sql).await;
}

/// The SQL of `procedure` rendered from `template` with `vars` (YAML), as
/// `pgchain render` writes it for a config file `t.yaml`, or the render
/// errors.
pub fn rendered(procedure: &str, template: &str, vars: &str) -> Result<String, String> {
    let vars = vars
        .lines()
        .map(|l| format!("      {l}\n"))
        .collect::<String>();
    let yaml = format!(
        "kafka:\n  brokers: k\npipelines:\n  p:\n    topic: t\n    chain: [{procedure}]\nprocedures:\n  {procedure}:\n    template: {template}\n    vars:\n{vars}"
    );
    let config =
        pgchain::config::Config::from_text(&yaml, Path::new("t.yaml"), |_| None).expect("config");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rendered = pgchain::render::render_all(
        &config,
        &root.join("sql/templates"),
        &root.join("sql/migrations"),
    )
    .map_err(|e| e.join("\n"))?;
    Ok(rendered[0].sql.clone())
}

/// A fresh directory for one test's files.
pub fn temp_dir(label: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pgchain-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the `pgchain` binary (without DATABASE_URL: the config says where).
pub fn pgchain(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_pgchain"))
        .args(args)
        .env_remove("DATABASE_URL")
        .output()
        .expect("run pgchain")
}

/// The group's committed offset for partition 0 of `topic`.
pub async fn committed(kafka: &Kafka, group: &str, topic: &str) -> Option<i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};
    let (brokers, group, topic) = (kafka.brokers.clone(), group.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", &group)
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&topic, 0);
        let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
        match got.find_partition(&topic, 0).unwrap().offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        }
    })
    .await
    .unwrap()
}

pub fn record(topic: &str, key: Option<&str>, value: Option<&str>) -> Record {
    Record {
        topic: topic.to_string(),
        key: key.map(|k| k.as_bytes().to_vec()),
        value: value.map(|v| v.as_bytes().to_vec()),
        headers: Vec::new(),
    }
}

/// A config from YAML text with `{brokers}` and `{url}` filled in.
pub fn config(yaml: &str, kafka: &Kafka, db: &TestDb) -> Config {
    let text = yaml
        .replace("{brokers}", &kafka.brokers)
        .replace("{url}", &db.url);
    Config::from_text(&text, Path::new("test.yaml"), |_| None).expect("test config")
}

/// The customer example's pipelines.yaml, on `kafka` and `db`.
pub fn example_config(kafka: &Kafka, db: &TestDb) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    Config::from_text(&text, &path, |name| match name {
        "KAFKA_BROKERS" => Some(kafka.brokers.clone()),
        "DATABASE_URL" => Some(db.url.clone()),
        "PGCHAIN_GROUP" => Some("example".into()),
        _ => None,
    })
    .expect("pipelines.yaml")
}

/// A dispatcher running in the background until `stop` is called.
pub struct Running {
    pub stats: Stats,
    background: Background,
}

pub fn start(config: Config) -> Running {
    // RUST_LOG=pgchain=debug shows what the dispatcher does in a failing test.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dispatcher = Dispatcher::new(config).expect("dispatcher");
    let background = dispatcher.spawn();
    Running {
        stats: background.stats.clone(),
        background,
    }
}

impl Running {
    /// Where `/metrics` listens (with `monitoring.listen`), once bound.
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.background.http_addr()
    }

    pub async fn drained(&self, kafka: &Kafka, topics: &[&str]) {
        let topics = topics.iter().map(|s| s.to_string()).collect();
        kafka::drained(
            self.stats.clone(),
            kafka.brokers.clone(),
            topics,
            Duration::from_secs(60),
        )
        .await
        .expect("drained");
    }

    /// Waits until `cond` holds on the stats (panics after 60 s).
    pub async fn until(&self, what: &str, cond: impl Fn(&pgchain::ops::stats::Snapshot) -> bool) {
        let start = std::time::Instant::now();
        while !cond(&self.stats.snapshot()) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "timed out waiting for {what}: {:?}",
                self.stats.snapshot()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(self) -> pgchain::ops::stats::Snapshot {
        self.background.stop().await.expect("dispatcher run");
        self.stats.snapshot()
    }
}

/// Test steps: `t.record` appends every event it sees to `t.seen` and keeps
/// the latest `after` per key in `t.state`; `t.log(name)` steps append to
/// `t.log`; `t.poison` raises when `after.poison` is true.
pub const TEST_STEPS: &str = r#"
create schema t;
create table t.seen (seq bigserial primary key, topic text, partition int, kafka_offset bigint,
                     op text, key jsonb, after jsonb, ev jsonb,
                     started timestamptz default clock_timestamp());
create table t.state (key jsonb primary key, after jsonb, version int);
create table t.log (step text, kafka_offset bigint);
create procedure t.record(inout ev jsonb) language plpgsql as $$
begin
  insert into t.seen (topic, partition, kafka_offset, op, key, after, ev)
  values (ev->'kafka'->>'topic', (ev->'kafka'->>'partition')::int, (ev->'kafka'->>'offset')::bigint,
          ev->>'op', ev->'key', ev->'after', ev);
  if ev->>'op' in ('d', 't') then
    delete from t.state where key = ev->'key' or ev->>'op' = 't';
  else
    insert into t.state values (ev->'key', ev->'after', (ev->'after'->>'version')::int)
    on conflict (key) do update set after = excluded.after, version = excluded.version;
  end if;
end $$;
create procedure t.step1(inout ev jsonb) language plpgsql as $$
begin insert into t.log values ('step1', (ev->'kafka'->>'offset')::bigint); end $$;
create procedure t.step2(inout ev jsonb) language plpgsql as $$
begin insert into t.log values ('step2', (ev->'kafka'->>'offset')::bigint); end $$;
create procedure t.poison(inout ev jsonb) language plpgsql as $$
begin
  if (ev->'after'->>'poison')::boolean then
    raise exception 'poisoned row %', ev->'key' using detail = 'test poison';
  end if;
end $$;
create procedure t.slow(inout ev jsonb) language plpgsql as $$
begin perform pg_sleep(0.05); end $$;
create procedure t.pause(inout ev jsonb) language plpgsql as $$
begin perform pg_sleep(0.005); end $$;
create procedure t.only_even(inout ev jsonb) language plpgsql as $$
begin if (ev->'after'->>'version')::int % 2 = 1 then ev := null; end if; end $$;
"#;

/// `pgchain run -c path` with `RUST_LOG=rust_log`, its log written to `log`.
pub fn spawn_run(path: &Path, log: &Path, rust_log: &str) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_pgchain"))
        .args(["run", "-c", path.to_str().unwrap()])
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", rust_log)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Waits until the log file holds `what`, and returns the whole log.
pub async fn log_says(log: &Path, what: &str, within: Duration) -> String {
    let start = std::time::Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(what) {
            return text;
        }
        assert!(
            start.elapsed() < within,
            "the log never said `{what}` in {within:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `sql` returns `want` (panics after 60 s).
pub async fn wait_for_count(db: &TestDb, what: &str, sql: &str, want: i64) {
    let start = std::time::Instant::now();
    while db.i64(sql).await != want {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stops a `pgchain run` child with SIGTERM and asserts it exits 0.
pub async fn sigterm(child: std::process::Child) {
    let mut child = child;
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}
