//! `pgchain bench --avro`: what decoding Avro through a schema registry
//! costs. Decoding alone (the router, on one core): the same Debezium change
//! events of a table with every common column type, as Debezium JSON with
//! the inline schema and as Avro; then the Avro events end to end through
//! pgchain into an `l0_upsert` table with typed columns, with a registry on
//! loopback.

use crate::args::BenchArgs;
use crate::measure::Figures;
use anyhow::Context;
use pgchain::config::Config;
use pgchain::kafka::{self, Record};
use pgchain::route::{Message, Router};
use pgchain::samples::avro::{self as samples, Change, Encoder};
use rdkafka::mocking::MockCluster;
use std::path::Path;
use std::time::Instant;

const TOPIC: &str = "pgserver.public.account";
/// The same events as JSON text.
const TEXT_TOPIC: &str = "pgserver.public.account.text";

const L0: &str = "procedures:\n  l0.copy_account:\n    template: l0_upsert\n    vars:\n      table: l0.account\n      columns: {id: int, balance: 'numeric(12,2)', rate: numeric, born: date, wake: time, seen: timestamp, at: timestamptz, ref: uuid, doc: jsonb, photo: bytea, note: text}\n      key: [id]\n";

/// Serves the key (1) and value (2) schemas as `GET /schemas/ids/{id}`.
async fn registry() -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/schemas/ids/{id}",
        axum::routing::get(
            |axum::extract::Path(id): axum::extract::Path<u32>| async move {
                let schema = match id {
                    1 => samples::KEY_SCHEMA,
                    2 => samples::VALUE_SCHEMA,
                    _ => {
                        return (
                            axum::http::StatusCode::NOT_FOUND,
                            r#"{"error_code":40403,"message":"Schema not found"}"#.to_string(),
                        );
                    }
                };
                (
                    axum::http::StatusCode::OK,
                    serde_json::json!({ "schema": schema }).to_string(),
                )
            },
        ),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// `n` changes over `keys` rows: a create per key, then updates.
fn changes(n: usize, keys: usize) -> Vec<Change> {
    let rows = samples::accounts(keys.max(1));
    (0..n)
        .map(|i| {
            let mut row = rows[i % rows.len()].clone();
            let round = i / rows.len();
            row.note = Some(format!("round {round}"));
            Change {
                op: if round == 0 { "c" } else { "u" },
                before: None,
                after: Some(row),
                ts_ms: 1_767_225_600_000 + i as i64,
                lsn: 1000 + i as i64,
            }
        })
        .collect()
}

fn config(text: &str) -> anyhow::Result<Config> {
    Config::from_text(text, Path::new("bench.yaml"), |_| None).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Routes every message once on this thread; events/s.
fn decode_rate(router: &Router, msgs: &[(Vec<u8>, Vec<u8>)]) -> anyhow::Result<f64> {
    let start = Instant::now();
    for (offset, (key, value)) in msgs.iter().enumerate() {
        let msg = Message {
            topic: TOPIC,
            partition: 0,
            offset: offset as i64,
            timestamp: None,
            key: Some(key),
            value: Some(value),
            headers: &[],
        };
        router
            .route(&msg)
            .map_err(|e| anyhow::anyhow!("offset {offset}: {e}"))?;
    }
    Ok(msgs.len() as f64 / start.elapsed().as_secs_f64())
}

pub async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let addr = registry().await?;
    let changes = changes(args.events, args.keys);
    let enc = Encoder::new();
    let avro: Vec<(Vec<u8>, Vec<u8>)> = changes
        .iter()
        .map(|c| {
            let id = c.after.as_ref().map_or(0, |a| a.id);
            (enc.key(1, id), enc.value(2, c))
        })
        .collect();
    let json: Vec<(Vec<u8>, Vec<u8>)> = changes
        .iter()
        .map(|c| {
            let id = c.after.as_ref().map_or(0, |a| a.id);
            (
                serde_json::json!({"id": id}).to_string().into_bytes(),
                samples::json_with_schema(c).to_string().into_bytes(),
            )
        })
        .collect();
    let avg =
        |m: &[(Vec<u8>, Vec<u8>)]| m.iter().map(|(_, v)| v.len()).sum::<usize>() / m.len().max(1);
    println!(
        "pgchain bench --avro: {} events over {} keys of public.account (11 columns: numeric(12,2), numeric, date, time, timestamp, timestamptz, uuid, jsonb, bytea, text); value {} bytes as Avro, {} bytes as JSON with the inline schema; {} cores",
        args.events,
        args.keys,
        avg(&avro),
        avg(&json),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // Decoding alone.
    let head = format!(
        "kafka:\n  brokers: k\nschema_registry:\n  url: http://{addr}\npipelines:\n  account:\n    topic: {TOPIC}\n    chain: [l0.copy_account]\n"
    );
    let router = Router::new(&config(&head)?);
    let first = Message {
        topic: TOPIC,
        partition: 0,
        offset: 0,
        timestamp: None,
        key: Some(&avro[0].0),
        value: Some(&avro[0].1),
        headers: &[],
    };
    router
        .fetch_schemas(&first)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // Once each to warm up, then the best of three (the machine is shared
    // with PostgreSQL and whatever else runs).
    decode_rate(&router, &json)?;
    decode_rate(&router, &avro)?;
    let (mut json_rate, mut avro_rate) = (0f64, 0f64);
    for _ in 0..3 {
        json_rate = json_rate.max(decode_rate(&router, &json)?);
        avro_rate = avro_rate.max(decode_rate(&router, &avro)?);
    }

    // End to end.
    let url = pgchain::db::recreate_database(&args.database_url, &args.database).await?;
    pgchain::db::migrate(&url, &args.migrations).await?;
    let with_l0 = config(&format!("{head}{L0}"))?;
    let templates = args
        .migrations
        .parent()
        .unwrap_or(Path::new(""))
        .join("templates");
    let rendered = pgchain::render::render_all(&with_l0, &templates, &args.migrations)
        .map_err(|e| anyhow::anyhow!("{}", e.join("\n")))?;
    let client = pgchain::db::connect(&url).await?;
    for r in &rendered {
        client.batch_execute(&r.sql).await?;
    }
    // The same events as Debezium JSON whose values are already the text
    // the Avro path gives (a connector with `decimal.handling.mode=string`,
    // `time.precision.mode=isostring`): what pgchain does without Avro.
    let value_schema = pgchain::decode::avro::AvroSchema::parse(samples::VALUE_SCHEMA)
        .map_err(|e| anyhow::anyhow!(e))?;
    let mut texts = Vec::with_capacity(avro.len());
    for (_, v) in &avro {
        let plain = value_schema
            .decode(&v[5..])
            .map_err(|e| anyhow::anyhow!(e))?;
        texts.push(plain.to_string().into_bytes());
    }
    // Each contender on a cluster of its own. librdkafka's mock broker keeps
    // at most 5 MB per partition (it drops the oldest beyond), so the end-to-end
    // runs take as many events as fit.
    let per_event = texts.iter().map(Vec::len).max().unwrap_or(0) + 100;
    let e2e_events = args
        .events
        .min(4_000_000 * args.partitions.max(1) as usize / per_event);
    let mut figures = Vec::new();
    for (topic, plain) in [(TEXT_TOPIC, true), (TOPIC, false)] {
        client.batch_execute("truncate l0.account").await?;
        let cluster = MockCluster::new(1).context("cannot start the embedded Kafka")?;
        let brokers = cluster.bootstrap_servers();
        cluster.create_topic(topic, args.partitions, 1)?;
        let records: Vec<Record> = avro[..e2e_events]
            .iter()
            .enumerate()
            .map(|(i, (k, v))| {
                let id = changes[i].after.as_ref().map_or(0, |a| a.id);
                Record {
                    topic: topic.to_string(),
                    key: Some(if plain {
                        serde_json::json!({"id": id}).to_string().into_bytes()
                    } else {
                        k.clone()
                    }),
                    value: Some(if plain { texts[i].clone() } else { v.clone() }),
                    headers: Vec::new(),
                }
            })
            .collect();
        {
            let b = brokers.clone();
            tokio::task::spawn_blocking(move || kafka::produce(&b, &records)).await??;
        }
        figures.push(through(args, &url, &brokers, addr, topic, e2e_events).await?);
        drop(cluster);
    }
    let e2e = figures.pop().expect("two runs");
    let text_e2e = figures.pop().expect("two runs");
    let rows: i64 = client
        .query_one("select count(*) from l0.account", &[])
        .await?
        .get(0);

    println!("decode alone (route: bytes to the event a step gets; one core, best of 3):");
    println!("  Debezium JSON, inline schema      {json_rate:>9.0} events/s");
    println!("  Debezium Avro, schema registry    {avro_rate:>9.0} events/s");
    println!("end to end, {e2e_events} events, into l0.account by l0_upsert:");
    println!(
        "{}",
        text_e2e.line(&format!("  JSON text, max_batch {}", args.max_batch))
    );
    println!(
        "{}",
        e2e.line(&format!("  Avro, max_batch {}", args.max_batch))
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    println!(
        "  {rows} rows in l0.account; at the Avro end-to-end rate, decoding Avro takes {:.1}% of one core \
         ({:.1}% of the machine's {cores} cores); end to end, Avro runs at {:.2}x the JSON text",
        100.0 * e2e.rate() / avro_rate,
        100.0 * e2e.rate() / avro_rate / cores,
        e2e.rate() / text_e2e.rate()
    );
    Ok(())
}

/// Runs `topic` through pgchain (its own consumer group) until drained.
async fn through(
    args: &BenchArgs,
    url: &str,
    brokers: &str,
    registry: std::net::SocketAddr,
    topic: &str,
    events: usize,
) -> anyhow::Result<Figures> {
    let yaml = format!(
        "kafka:\n  brokers: {brokers}\n  group_id: bench-{topic}\npostgres:\n  url: {url}\n  pool_size: {}\n  max_batch: {}\n\
         schema_registry:\n  url: http://{registry}\npipelines:\n  account:\n    topic: {topic}\n    chain: [l0.copy_account]\n",
        args.partitions, args.max_batch
    );
    crate::measure::drain(config(&yaml)?, "account", brokers, topic, events).await
}
