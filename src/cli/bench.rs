//! `pgchain bench`: events/s and chain latency of pgchain against the
//! direct-SQL limit, on librdkafka's mock cluster and the local PostgreSQL.
//!
//! The chain is one step that upserts the event's row. The direct-SQL limit
//! calls the same procedure with the same events, one transaction per event,
//! without Kafka: once on one connection, and once on as many connections as
//! pgchain has partitions (pgchain runs partitions in parallel).

use crate::args::BenchArgs;
use crate::measure::{Figures, peak_rss_kib};
use anyhow::Context;
use pgchain::config::Config;
use pgchain::kafka::{self, Record};
use rdkafka::mocking::MockCluster;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio_postgres::types::Json;

const TOPIC: &str = "bench.public.member";

const BENCH_SQL: &str = "
create schema bench;
create table bench.target (id bigint primary key, name text, version int, source_ts_ms bigint);
-- The benchmark step: upsert the row the event carries.
create procedure bench.upsert(inout ev jsonb) language plpgsql as $$
begin
  insert into bench.target (id, name, version, source_ts_ms)
  values ((ev->'key'->>'id')::bigint, ev->'after'->>'name', (ev->'after'->>'version')::int,
          (ev->'source'->>'ts_ms')::bigint)
  on conflict (id) do update
     set name = excluded.name, version = excluded.version, source_ts_ms = excluded.source_ts_ms;
end $$;";

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(rows) = args.verify_rows {
        return bench_verify(&args, rows).await;
    }
    if let Some(records) = args.identity {
        let url = pgchain::db::recreate_database(&args.database_url, &args.database).await?;
        pgchain::db::migrate(&url, &args.migrations).await?;
        return crate::identity_bench::run(&url, records, args.identity_events, 2).await;
    }
    if let Some(people) = args.quality {
        let url = pgchain::db::recreate_database(&args.database_url, &args.database).await?;
        pgchain::db::migrate(&url, std::path::Path::new("examples/people/sql/migrations")).await?;
        return crate::quality_bench::run(&url, people, args.quality_seed).await;
    }
    if args.avro {
        return crate::avro_bench::run(&args).await;
    }
    let url = pgchain::db::recreate_database(&args.database_url, &args.database).await?;
    pgchain::db::migrate(&url, &args.migrations).await?;
    pgchain::db::connect(&url)
        .await?
        .batch_execute(BENCH_SQL)
        .await?;
    println!(
        "pgchain bench: {} events, {} partitions, {} keys, one-step chain bench.upsert; {} cores",
        args.events,
        args.partitions,
        args.keys,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let events = sample(&args);
    let cluster = MockCluster::new(1).context("cannot start the embedded Kafka")?;
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic(TOPIC, args.partitions, 1)?;
    let records: Vec<Record> = events
        .iter()
        .map(|(id, v)| Record {
            topic: TOPIC.to_string(),
            key: Some(json!({"id": id}).to_string().into_bytes()),
            value: Some(v.to_string().into_bytes()),
            headers: Vec::new(),
        })
        .collect();
    {
        let b = brokers.clone();
        tokio::task::spawn_blocking(move || kafka::produce(&b, &records)).await??;
    }
    // Two consumer groups read the same topic; each has its own ledger.
    let single = through_pgchain(&args, &url, &brokers, events.len(), 1).await?;
    let batched = through_pgchain(&args, &url, &brokers, events.len(), args.max_batch).await?;
    let child_rss = child_peak_rss(&args, &url, &brokers, events.len()).await?;
    drop(cluster);
    let direct_1 = direct(&url, &events, 1, false).await?;
    let direct_n = direct(&url, &events, args.partitions as usize, false).await?;
    let ledger_n = direct(&url, &events, args.partitions as usize, true).await?;

    println!("{}", single.line("pgchain, one transaction per event"));
    println!(
        "{}",
        batched.line(&format!("pgchain, max_batch {}", args.max_batch))
    );
    println!("{}", direct_1.line("direct CALL, 1 connection"));
    println!(
        "{}",
        direct_n.line(&format!("direct CALL, {} connections", args.partitions))
    );
    println!(
        "{}",
        ledger_n.line(&format!(
            "apply_event without Kafka, {} conns",
            args.partitions
        ))
    );
    for (name, f) in [
        ("one transaction per event", &single),
        ("batched", &batched),
    ] {
        println!(
            "ratio to the direct-SQL limit, {name}: {:.2}× (1 connection), {:.2}× ({} connections)",
            f.rate() / direct_1.rate(),
            f.rate() / direct_n.rate(),
            args.partitions
        );
    }
    println!(
        "peak RSS of `pgchain run` alone (a child process, max_batch {}): {} MiB",
        args.max_batch,
        child_rss / 1024
    );
    println!(
        "peak RSS of this process (with the embedded Kafka holding every event, and the producer): {} MiB",
        peak_rss_kib("self") / 1024
    );
    Ok(())
}

/// Debezium updates, keys spread over `args.keys`, versions rising per key.
fn sample(args: &BenchArgs) -> Vec<(i64, serde_json::Value)> {
    (0..args.events)
        .map(|i| {
            let id = (i % args.keys) as i64;
            let version = (i / args.keys) as i64 + 1;
            let value = json!({
                "op": if version == 1 { "c" } else { "u" },
                "before": null,
                "after": {"id": id, "name": format!("member {id}"), "version": version},
                "source": {"name": "bench", "schema": "public", "table": "member", "ts_ms": i as i64}
            });
            (id, value)
        })
        .collect()
}

async fn through_pgchain(
    args: &BenchArgs,
    url: &str,
    brokers: &str,
    total: usize,
    max_batch: usize,
) -> anyhow::Result<Figures> {
    let topic = TOPIC;
    let yaml = format!(
        "kafka:\n  brokers: {brokers}\n  group_id: bench-{max_batch}\npostgres:\n  url: {url}\n  pool_size: {}\n  max_batch: {max_batch}\n\
         pipelines:\n  bench:\n    topic: {topic}\n    chain: [bench.upsert]\n",
        args.partitions
    );
    let config = Config::from_text(&yaml, Path::new("bench.yaml"), |_| None)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    crate::measure::drain(config, "bench", brokers, topic, total).await
}

/// The procedure called directly, one transaction per event, on `conns`
/// connections (events split by key, so each key stays on one connection).
async fn direct(
    url: &str,
    events: &[(i64, serde_json::Value)],
    conns: usize,
    via_ledger: bool,
) -> anyhow::Result<Figures> {
    let mut lanes: Vec<Vec<serde_json::Value>> = vec![Vec::new(); conns];
    for (i, (id, v)) in events.iter().enumerate() {
        let ev = json!({"op": v["op"], "key": {"id": id}, "before": null, "after": v["after"], "source": v["source"],
                        "kafka": {"topic": "direct", "partition": 0, "offset": i, "timestamp": null}, "pipeline": "bench"});
        lanes[*id as usize % conns].push(ev);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (lane_no, lane) in lanes.into_iter().enumerate() {
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let client = pgchain::db::connect(&url).await?;
            let sql = if via_ledger {
                "call pgchain.apply_event('direct', 'direct', $2, $3, 'bench', array['bench.upsert'], $1, null, null)"
            } else {
                "call bench.upsert($1)"
            };
            let stmt = client.prepare(sql).await?;
            let mut lat = Vec::with_capacity(lane.len());
            for (offset, ev) in lane.iter().enumerate() {
                let t = Instant::now();
                if via_ledger {
                    client.query_one(&stmt, &[&Json(ev), &(lane_no as i32), &(offset as i64)]).await?;
                } else {
                    client.query_one(&stmt, &[&Json(ev)]).await?;
                }
                lat.push(t.elapsed().as_micros() as u32);
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut latencies_us = Vec::new();
    for t in tasks {
        latencies_us.extend(t.await??);
    }
    Ok(Figures {
        events: events.len(),
        elapsed: start.elapsed(),
        latencies_us,
    })
}

/// Runs `pgchain run` as a child process over the whole topic (a third
/// consumer group) and returns its peak RSS in KiB, read before it exits.
async fn child_peak_rss(
    args: &BenchArgs,
    url: &str,
    brokers: &str,
    total: usize,
) -> anyhow::Result<u64> {
    let group = "bench-child";
    let yaml = format!(
        "kafka:\n  brokers: {brokers}\n  group_id: {group}\npostgres:\n  url: {url}\n  pool_size: {}\n  max_batch: {}\n\
         pipelines:\n  bench:\n    topic: {TOPIC}\n    chain: [bench.upsert]\n",
        args.partitions, args.max_batch
    );
    let path = std::env::temp_dir().join(format!("pgchain-bench-{}.yaml", std::process::id()));
    std::fs::write(&path, yaml)?;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["run", "-c"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .context("cannot start `pgchain run`")?;
    let pid = child.id().context("child pid")?;
    let client = pgchain::db::connect(url).await?;
    let started = Instant::now();
    loop {
        // Offsets start at 0 in every partition, so the ledger sums to the count.
        let done: i64 = client
            .query_one(
                "select coalesce(sum(applied_through + 1), 0)::bigint from pgchain.offsets where group_id = $1",
                &[&group],
            )
            .await?
            .get(0);
        if done as usize >= total {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(3600),
            "the child did not drain the topic"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rss = peak_rss_kib(&pid.to_string());
    let _ = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await;
    let status = child.wait().await?;
    let _ = std::fs::remove_file(&path);
    anyhow::ensure!(status.success(), "`pgchain run` exited with {status}");
    Ok(rss)
}

/// `pgchain bench --verify-rows N`: a source and a target table of N rows
/// each in two databases, 100 scattered differences (missing, extra,
/// changed), then one `verify`: its time, and the rows it transferred.
async fn bench_verify(args: &BenchArgs, rows: i64) -> anyhow::Result<()> {
    let src_url =
        pgchain::db::recreate_database(&args.database_url, &format!("{}_src", args.database))
            .await?;
    let tgt_url =
        pgchain::db::recreate_database(&args.database_url, &format!("{}_tgt", args.database))
            .await?;
    println!("pgchain bench --verify-rows {rows}: building both tables");
    let build = Instant::now();
    let table = format!(
        "create table items (id bigint primary key, name text, qty int, updated timestamptz);
         insert into items select i, 'item ' || i, (i % 97)::int, timestamptz '2026-01-01' + i * interval '1 second'
           from generate_series(1, {rows}) i;
         analyze items;"
    );
    let (s, t) = (
        pgchain::db::connect(&src_url).await?,
        pgchain::db::connect(&tgt_url).await?,
    );
    tokio::try_join!(s.batch_execute(&table), t.batch_execute(&table))?;
    // 100 differences spread over the key space: 33 missing, 33 extra, 34 changed.
    let step = rows / 101;
    let mut plant = String::new();
    for n in 1..=100i64 {
        let id = n * step;
        plant.push_str(&match n % 3 {
            0 => format!("delete from items where id = {id};"),
            1 => format!("update items set qty = qty + 1 where id = {id};"),
            _ => format!(
                "insert into items values ({}, 'extra', 0, now());",
                rows + n
            ),
        });
    }
    t.batch_execute(&plant).await?;
    println!("  built in {:.1} s", build.elapsed().as_secs_f64());
    let (source, target) = pgchain::verify::sides(
        &src_url,
        "items",
        &tgt_url,
        "items",
        &["id".to_string()],
        &[],
    )
    .await?;
    let report =
        pgchain::verify::compare(&source, &target, 2000, &indicatif::ProgressBar::hidden()).await?;
    println!(
        "verify {rows} rows: {} missing, {} extra, {} changed in {:.2} s; {} rows transferred, {} range queries per side",
        report.missing.len(),
        report.extra.len(),
        report.changed.len(),
        report.seconds,
        report.rows_transferred,
        report.range_queries
    );
    Ok(())
}
