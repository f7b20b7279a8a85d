//! Avro and JSON Schema messages through a schema registry, end to end
//! through `pgchain run`: a registry on loopback that answers
//! `GET /schemas/ids/{id}` as Confluent's Schema Registry REST API
//! documents it (basic auth required), Kafka on librdkafka's mock cluster,
//! Debezium's Avro messages of the PostgreSQL table of
//! `tests/fixtures/avro` into a typed `l0_upsert` table.

// The messages are encoded by the samples of feature `tools`.
#![cfg(feature = "tools")]

mod common;

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use common::*;
use pgchain::kafka::Record;
use pgchain::samples::avro::{self as samples, Account, Change, Encoder};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOPIC: &str = "pgserver.public.account";
const USER: &str = "reg-user";
const PASSWORD: &str = "s3cret-registry-pass";

/// The schemas by id and how often each was served.
#[derive(Default)]
struct Schemas {
    /// id → (schema text, schemaType; None for Avro, which the API leaves out).
    by_id: Mutex<HashMap<u32, (String, Option<&'static str>)>>,
    served: Mutex<HashMap<u32, u32>>,
}

async fn schema_by_id(
    State(schemas): State<Arc<Schemas>>,
    UrlPath(id): UrlPath<u32>,
    headers: HeaderMap,
) -> Response {
    // Basic auth, as the registry's `authentication.method=BASIC` asks for.
    let expected = format!("Basic {}", base64(&format!("{USER}:{PASSWORD}")));
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return (
            StatusCode::UNAUTHORIZED,
            [("content-type", "application/vnd.schemaregistry.v1+json")],
            json!({"error_code": 401, "message": "Unauthorized"}).to_string(),
        )
            .into_response();
    }
    let known = schemas.by_id.lock().unwrap().get(&id).cloned();
    match known {
        Some((schema, kind)) => {
            *schemas.served.lock().unwrap().entry(id).or_default() += 1;
            let mut body = json!({"schema": schema});
            if let Some(kind) = kind {
                body["schemaType"] = json!(kind);
            }
            (
                [("content-type", "application/vnd.schemaregistry.v1+json")],
                body.to_string(),
            )
                .into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            [("content-type", "application/vnd.schemaregistry.v1+json")],
            json!({"error_code": 40403, "message": "Schema not found"}).to_string(),
        )
            .into_response(),
    }
}

/// A registry listening on loopback until stopped.
struct Registry {
    addr: SocketAddr,
    schemas: Arc<Schemas>,
    stop: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
}

impl Registry {
    async fn start(schemas: Arc<Schemas>, addr: SocketAddr) -> Registry {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/schemas/ids/{id}", axum::routing::get(schema_by_id))
            .route(
                "/schemas/types",
                axum::routing::get(|headers: HeaderMap| async move {
                    let expected = format!("Basic {}", base64(&format!("{USER}:{PASSWORD}")));
                    if headers.get("authorization").and_then(|v| v.to_str().ok())
                        == Some(expected.as_str())
                    {
                        (StatusCode::OK, r#"["JSON","PROTOBUF","AVRO"]"#)
                    } else {
                        (
                            StatusCode::UNAUTHORIZED,
                            r#"{"error_code":401,"message":"Unauthorized"}"#,
                        )
                    }
                }),
            )
            .with_state(schemas.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Registry {
            addr,
            schemas,
            stop: Some((tx, task)),
        }
    }

    /// Stops listening: connections are refused until it starts again.
    async fn down(&mut self) {
        if let Some((tx, task)) = self.stop.take() {
            let _ = tx.send(());
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("the registry stops")
                .unwrap();
        }
    }

    async fn up(&mut self) {
        let again = Registry::start(self.schemas.clone(), self.addr).await;
        self.stop = again.stop;
    }

    fn served(&self) -> HashMap<u32, u32> {
        self.schemas.served.lock().unwrap().clone()
    }
}

fn base64(s: &str) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                ABC[(n >> (18 - 6 * i)) as usize & 63] as char
            } else {
                '='
            });
        }
    }
    out
}

/// The Avro schemas (key 1, value 2 and, as a later version, value 3) and a
/// JSON Schema (10).
fn schemas() -> Arc<Schemas> {
    let json_schema = r#"{"$schema":"http://json-schema.org/draft-07/schema#","title":"Item","type":"object","properties":{"id":{"type":"integer"},"name":{"type":"string"}},"required":["id"]}"#;
    Arc::new(Schemas {
        by_id: Mutex::new(HashMap::from([
            (1, (samples::KEY_SCHEMA.to_string(), None)),
            (2, (samples::VALUE_SCHEMA.to_string(), None)),
            (3, (samples::VALUE_SCHEMA.to_string(), Some("AVRO"))),
            (10, (json_schema.to_string(), Some("JSON"))),
        ])),
        served: Mutex::default(),
    })
}

const COLUMNS: &str = "table: l0.account\ncolumns: {id: int, balance: 'numeric(12,2)', rate: numeric, born: date, wake: time, seen: timestamp, at: timestamptz, ref: uuid, doc: jsonb, photo: bytea, note: text}\nkey: [id]";

fn write_config(
    dir: &Path,
    kafka: &Kafka,
    db: &TestDb,
    registry: SocketAddr,
) -> std::path::PathBuf {
    let text = format!(
        "kafka:\n  brokers: {}\n  group_id: avro\npostgres:\n  url: {}\n  pool_size: 4\n\
         schema_registry:\n  url: http://{registry}\n  username: {USER}\n  password: ${{REGISTRY_PASSWORD}}\n\
         pipelines:\n\
         \x20 account:\n    topic: {TOPIC}\n    chain: [l0.copy_account]\n\
         \x20 items:\n    topic: items\n    format: json\n    key: [id]\n    chain: [t.record]\n",
        kafka.brokers, db.url
    );
    let path = dir.join("pipelines.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn spawn(path: &Path, log: &Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_pgchain"))
        .args(["run", "-c", path.to_str().unwrap()])
        .env_remove("DATABASE_URL")
        .env("REGISTRY_PASSWORD", PASSWORD)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn message(enc: &Encoder, value_id: u32, op: &'static str, after: &Account, lsn: i64) -> Record {
    let change = Change {
        op,
        before: None,
        after: Some(after.clone()),
        ts_ms: 1_709_287_200_000 + lsn,
        lsn,
    };
    Record {
        topic: TOPIC.into(),
        key: Some(enc.key(1, after.id)),
        value: Some(enc.value(value_id, &change)),
        headers: Vec::new(),
    }
}

/// Every column of l0.account as PostgreSQL prints it, by id.
async fn rows(db: &TestDb) -> Vec<Vec<Option<String>>> {
    let sql = "select id::text, balance::text, rate::text, born::text, wake::text, seen::text, \
               (at at time zone 'UTC')::text, ref::text, doc::text, photo::text, note \
               from l0.account order by id";
    db.client()
        .await
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (0..11).map(|i| r.get::<_, Option<String>>(i)).collect())
        .collect()
}

fn row(cells: &[Option<&str>]) -> Vec<Option<String>> {
    cells.iter().map(|c| c.map(str::to_string)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_from_debezium_lands_typed_and_a_registry_outage_loses_and_dead_letters_nothing() {
    let db = TestDb::new("avro").await;
    db.exec(TEST_STEPS).await;
    install(&db, "l0.copy_account", "l0_upsert", COLUMNS).await;
    let kafka = Kafka::new(&[(TOPIC, 1), ("items", 1)]);
    let mut registry = Registry::start(schemas(), "127.0.0.1:0".parse().unwrap()).await;
    let dir = temp_dir("avro-e2e");
    let path = write_config(&dir, &kafka, &db, registry.addr);
    let log = dir.join("run.log");
    let child = spawn(&path, &log);
    log_says(&log, "consuming", Duration::from_secs(30)).await;

    let enc = Encoder::new();
    let accounts = samples::accounts(3);
    kafka
        .produce(
            accounts
                .iter()
                .enumerate()
                .map(|(i, a)| message(&enc, 2, "c", a, i as i64 + 1))
                .collect(),
        )
        .await;
    wait_for_count(&db, "three rows", "select count(*) from l0.account", 3).await;
    let first = vec![
        row(&[
            Some("1"),
            Some("1234.57"),
            Some("3.14159265358979323846"),
            Some("1990-05-17"),
            Some("06:30:15.123456"),
            Some("2024-02-29 23:59:59.999999"),
            Some("2024-03-01 10:00:00.5"),
            Some("6f1c8d5e-0b7a-4c1e-9d2f-000000000001"),
            Some(r#"{"n": 12345678901234567890.5, "id": 1, "tags": ["a", "b"]}"#),
            Some("\\xdeadbeef0001"),
            Some("héllo \"world\" 1"),
        ]),
        row(&[
            Some("2"),
            Some("-0.05"),
            Some("-0.001"),
            Some("1969-12-31"),
            Some("00:00:00"),
            Some("1969-12-31 23:59:59.999999"),
            None,
            None,
            Some("[]"),
            Some("\\x"),
            Some(""),
        ]),
        row(&[
            Some("3"),
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
        ]),
    ];
    assert_eq!(rows(&db).await, first);

    // The registry goes away; the next messages name a schema id not seen
    // yet (a new version of the value schema).
    registry.down().await;
    let updated: Vec<Account> = accounts
        .iter()
        .map(|a| Account {
            note: Some(format!("v2 of {}", a.id)),
            balance: Some(-99_999_999_999),
            ..a.clone()
        })
        .collect();
    kafka
        .produce(
            updated
                .iter()
                .enumerate()
                .map(|(i, a)| message(&enc, 3, "u", a, i as i64 + 10))
                .collect(),
        )
        .await;
    log_says(&log, "schema registry http://", Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        rows(&db).await,
        first,
        "nothing applied while the registry is down"
    );
    assert_eq!(
        db.i64("select count(*) from pgchain.dead_letters").await,
        0,
        "nothing dead-lettered while the registry is down"
    );

    registry.up().await;
    wait_for_count(
        &db,
        "the updates applied",
        "select count(*) from l0.account where note like 'v2 of %'",
        3,
    )
    .await;
    let now = rows(&db).await;
    for (i, r) in now.iter().enumerate() {
        let mut want = first[i].clone();
        want[1] = Some("-999999999.99".into());
        want[10] = Some(format!("v2 of {}", i + 1));
        assert_eq!(r, &want);
    }
    assert_eq!(db.i64("select count(*) from pgchain.dead_letters").await, 0);
    assert_eq!(db.applied("avro", TOPIC, 0).await, Some(5));
    // Each id asked for once; the outage's tries never reached a handler.
    assert_eq!(registry.served(), HashMap::from([(1, 1), (2, 1), (3, 1)]));

    sigterm(child).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains(PASSWORD),
        "the password is in the log:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_schema_id_is_dead_lettered_once_and_json_schema_is_decoded() {
    let db = TestDb::new("avro_unknown").await;
    db.exec(TEST_STEPS).await;
    install(&db, "l0.copy_account", "l0_upsert", COLUMNS).await;
    let kafka = Kafka::new(&[(TOPIC, 1), ("items", 1)]);
    let registry = Registry::start(schemas(), "127.0.0.1:0".parse().unwrap()).await;
    let dir = temp_dir("avro-unknown");
    let path = write_config(&dir, &kafka, &db, registry.addr);
    let log = dir.join("run.log");
    let child = spawn(&path, &log);
    log_says(&log, "consuming", Duration::from_secs(30)).await;

    let enc = Encoder::new();
    let accounts = samples::accounts(2);
    // Schema id 99 is not in the registry.
    let unknown = message(&enc, 99, "c", &accounts[0], 1);
    let known = message(&enc, 2, "c", &accounts[1], 2);
    // A JSON Schema message: the prefix, then JSON.
    let mut item = vec![0, 0, 0, 0, 10];
    item.extend_from_slice(br#"{"id": 7, "name": "seven"}"#);
    let json_schema = Record {
        topic: "items".into(),
        key: None,
        value: Some(item),
        headers: Vec::new(),
    };
    kafka.produce(vec![unknown, known, json_schema]).await;

    wait_for_count(
        &db,
        "the known one applied",
        "select count(*) from l0.account",
        1,
    )
    .await;
    wait_for_count(
        &db,
        "the JSON Schema item",
        "select count(*) from t.seen",
        1,
    )
    .await;
    wait_for_count(
        &db,
        "one dead letter",
        "select count(*) from pgchain.dead_letters",
        1,
    )
    .await;
    let client = db.client().await;
    let dead = client
        .query_one(
            "select error_class, error_message, kafka_offset, msg_value from pgchain.dead_letters",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(dead.get::<_, String>(0), "undecodable");
    let reason: String = dead.get(1);
    assert!(reason.contains("schema id 99"), "{reason}");
    assert!(reason.contains("40403"), "{reason}");
    assert_eq!(dead.get::<_, i64>(2), 0);
    assert_eq!(dead.get::<_, Vec<u8>>(3)[..5], [0, 0, 0, 0, 99]);
    assert_eq!(
        db.strings("select id::text from l0.account").await,
        ["2".to_string()]
    );
    let seen: Value = client
        .query_one("select after from t.seen", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, json!({"id": 7, "name": "seven"}));
    // Still one dead letter a moment later (not one per retry).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(db.i64("select count(*) from pgchain.dead_letters").await, 1);
    sigterm(child).await;

    // Once the schema is registered, `pgchain dlq replay` decodes and applies it.
    registry
        .schemas
        .by_id
        .lock()
        .unwrap()
        .insert(99, (samples::VALUE_SCHEMA.to_string(), None));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgchain"))
        .args(["dlq", "replay", "--all", "-c", path.to_str().unwrap()])
        .env_remove("DATABASE_URL")
        .env("REGISTRY_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("replayed 1;"), "{said}");
    assert_eq!(
        db.strings("select id::text from l0.account order by id")
            .await,
        ["1".to_string(), "2".to_string()]
    );
    assert_eq!(
        db.strings("select status from pgchain.dead_letters").await,
        ["replayed".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_asks_the_registry_and_never_shows_the_password() {
    let db = TestDb::empty("avro_check").await;
    let kafka = Kafka::new(&[(TOPIC, 1), ("items", 1)]);
    let mut registry = Registry::start(schemas(), "127.0.0.1:0".parse().unwrap()).await;
    let dir = temp_dir("avro-check");
    let path = write_config(&dir, &kafka, &db, registry.addr);
    let check = |password: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_pgchain"))
            .args([
                "check",
                "--no-db",
                "--no-kafka",
                "-c",
                path.to_str().unwrap(),
            ])
            .env("REGISTRY_PASSWORD", password)
            .output()
            .unwrap()
    };
    let out = check(PASSWORD);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(
        said.contains(&format!(
            "schema registry: answered at http://{} (schema types: JSON, PROTOBUF, AVRO)",
            registry.addr
        )),
        "{said}"
    );
    let wrong = "not-the-password";
    let out = check(wrong);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!(
            "{}:8: schema registry http://{}: HTTP 401 Unauthorized: the registry refuses the credentials",
            path.display(),
            registry.addr
        )),
        "{said}"
    );
    assert!(!said.contains(wrong), "{said}");
    // An Avro topic feeding typed l0_upsert columns carries its types: no
    // warning about Debezium JSON without the inline schema.
    let with_l0 = format!(
        "{}procedures:\n  l0.copy_account:\n    template: l0_upsert\n    vars:\n{}\n",
        std::fs::read_to_string(&path).unwrap(),
        COLUMNS
            .lines()
            .map(|l| format!("      {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    std::fs::write(&path, with_l0).unwrap();
    let enc = Encoder::new();
    kafka
        .produce(vec![message(&enc, 2, "c", &samples::accounts(1)[0], 1)])
        .await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgchain"))
        .args(["check", "--no-db", "-c", path.to_str().unwrap()])
        .env("REGISTRY_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("kafka: 1 broker(s) answered"), "{said}");
    assert!(!said.contains("warning"), "{said}");

    registry.down().await;
    let out = check(PASSWORD);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("no answer"), "{said}");
}
