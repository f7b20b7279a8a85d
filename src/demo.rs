//! `pgchain demo`: the customer example end to end on librdkafka's mock
//! cluster (in process) and the local PostgreSQL, in its own database.

use crate::config::Config;
use crate::dispatcher::Dispatcher;
use crate::kafka::{self, Record};
use anyhow::Context;
use rdkafka::mocking::MockCluster;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// People in the sample data; each yields several change events.
    #[arg(long, default_value_t = 500)]
    pub people: usize,
    /// Server URL; the demo works in its own database `--database` there.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value_t = crate::config::default_url()
    )]
    pub database_url: String,
    #[arg(long, default_value = "pgchain_demo")]
    pub database: String,
    #[arg(short, long, default_value = "pipelines.yaml")]
    pub config: PathBuf,
    /// The campaign example's pipelines (its procedures are in --migrations too).
    #[arg(long, default_value = "examples/campaign/pipelines.yaml")]
    pub campaign: PathBuf,
    #[arg(long, default_value = "sql/migrations")]
    pub migrations: PathBuf,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let url = crate::db::recreate_database(&args.database_url, &args.database).await?;
    let applied = crate::db::migrate(&url, &args.migrations).await?;
    println!(
        "database {}: {} migration(s) applied",
        args.database,
        applied.len()
    );
    let cluster = MockCluster::new(3).context("cannot start the embedded Kafka")?;
    println!("embedded Kafka at {}", cluster.bootstrap_servers());

    println!(
        "\n== customer example ({}): three sources → L0 → L1 member union → identity → golden record → outbox",
        args.config.display()
    );
    let tables = [
        "l0.sales_customer",
        "l0.options_member",
        "l0.crm_contact",
        "l1.member_union",
        "idr.records",
        "l2.customer",
        "l2.customer_outbox",
    ];
    run_example(
        &cluster,
        &url,
        &args.config,
        sample_events(args.people),
        &tables,
    )
    .await?;

    let client = crate::db::connect(&url).await?;
    let row = client
        .query_one(
            "select count(*) filter (where status = 'active'),
                    count(*) filter (where status = 'active' and cardinality(systems) > 1),
                    count(*) filter (where status = 'merged'),
                    count(*) filter (where status = 'retired'),
                    (select count(*) from idr.history where kind = 'split'),
                    (select count(*) from idr.generic)
               from l2.customer",
            &[],
        )
        .await?;
    let n = |i: usize| row.get::<_, i64>(i);
    println!(
        "{} customers ({} known to two or more systems); {} merged into another, {} retired; {} splits; {} generic key values",
        n(0),
        n(1),
        n(2),
        n(3),
        n(4),
        n(5)
    );

    println!(
        "\n== campaign example ({}): member + consent + terms → one target row",
        args.campaign.display()
    );
    let tables = ["campaign.target_member"];
    let replayed = run_example(
        &cluster,
        &url,
        &args.campaign,
        campaign_events(args.people),
        &tables,
    )
    .await?;
    let complete: i64 = client
        .query_one("select count(*) from campaign.target_member where sms_ok is not null and terms_version is not null", &[])
        .await?
        .get(0);
    println!(
        "{complete} members complete; {replayed} consent or terms rows arrived before their member, were parked, and were replayed when it came"
    );
    drop(cluster);
    Ok(())
}

/// Produces `records`, runs the example's pipelines until its topics are
/// drained and nothing waits parked, prints what happened; returns the
/// number of parked events replayed.
async fn run_example(
    cluster: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    url: &str,
    path: &std::path::Path,
    records: Vec<Record>,
    tables: &[&str],
) -> anyhow::Result<u64> {
    let brokers = cluster.bootstrap_servers();
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let config = Config::from_text(&text, path, |name| match name {
        "KAFKA_BROKERS" => Some(brokers.clone()),
        "DATABASE_URL" => Some(url.to_string()),
        other => std::env::var(other).ok(),
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let topics = config.topics();
    for t in &topics {
        cluster
            .create_topic(t, 3, 1)
            .with_context(|| format!("cannot create topic {t}"))?;
    }
    println!(
        "producing {} change events to {}",
        records.len(),
        topics.join(", ")
    );
    {
        let b = brokers.clone();
        tokio::task::spawn_blocking(move || kafka::produce(&b, &records)).await??;
    }

    let started = Instant::now();
    let running = Dispatcher::new(config)?.spawn();
    let stats = running.stats.clone();
    // The first applied event marks the end of the consumer group's forming.
    while stats.snapshot().next_offsets.is_empty() && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let joined = started.elapsed();
    let drained = kafka::drained(stats.clone(), brokers, topics, Duration::from_secs(300)).await;
    drained?;
    // Parked events are re-driven when the row they wait for commits.
    let client = crate::db::connect(url).await?;
    while started.elapsed() < Duration::from_secs(300) {
        let parked: i64 = client
            .query_one(
                "select count(*) from pgchain.dead_letters where status = 'parked'",
                &[],
            )
            .await?
            .get(0);
        if parked == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    running.stop().await?;
    let snap = stats.snapshot();
    print_summary(url, &snap, tables, joined, elapsed).await?;
    Ok(snap.pipelines.values().map(|c| c.replayed).sum())
}

async fn print_summary(
    url: &str,
    snap: &crate::stats::Snapshot,
    tables: &[&str],
    joined: Duration,
    elapsed: Duration,
) -> anyhow::Result<()> {
    println!(
        "\n{:<18} {:>8} {:>10} {:>9} {:>11} {:>7} {:>9} {:>5}",
        "pipeline", "applied", "tombstone", "filtered", "redelivered", "parked", "replayed", "dead"
    );
    let mut total = 0;
    for (name, c) in &snap.pipelines {
        println!(
            "{:<18} {:>8} {:>10} {:>9} {:>11} {:>7} {:>9} {:>5}",
            name,
            c.applied,
            c.tombstones,
            c.filtered,
            c.already_applied,
            c.parked,
            c.replayed,
            c.dead_lettered
        );
        total += c.applied + c.tombstones + c.filtered + c.already_applied;
    }
    let client = crate::db::connect(url).await?;
    println!("\n{:<24} {:>6}", "table", "rows");
    for table in tables {
        let n: i64 = client
            .query_one(&format!("select count(*) from {table}"), &[])
            .await?
            .get(0);
        println!("{table:<24} {n:>6}");
    }
    let work = (elapsed - joined).as_secs_f64();
    println!(
        "\n{total} events in {:.2} s: {:.2} s for the consumer group to form, then {work:.2} s to drain ({:.0} events/s)",
        elapsed.as_secs_f64(),
        joined.as_secs_f64(),
        total as f64 / work.max(1e-9)
    );
    Ok(())
}

/// A small deterministic generator (no randomness crate needed for a demo
/// or a benchmark).
pub(crate) struct Lcg(pub(crate) u64);

impl Lcg {
    pub(crate) fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

const SURNAMES: &[&str] = &["Kim", "Lee", "Park", "Choi", "Jung", "Kang", "Cho", "Yoon"];
const GIVEN: &[&str] = &[
    "Minjun", "Seoyeon", "Jiwoo", "Hayoon", "Dohyun", "Jiho", "Sua", "Yejun",
];

/// Change events of three systems: sales (Debezium, plain JSON), options
/// (Debezium with the schema/payload envelope) and the CRM (GoldenGate).
/// Each person is inserted, a third of them in a second system as well;
/// about a third get updated twice, a tenth deleted.
pub fn sample_events(people: usize) -> Vec<Record> {
    let mut rng = Lcg(42);
    let mut out = Vec::new();
    let mut ts: i64 = 1_767_225_600_000;
    let mut last_phone = String::new();
    for id in 1..=people as i64 {
        let name = format!(
            "{} {}",
            SURNAMES[rng.next(8) as usize],
            GIVEN[rng.next(8) as usize]
        );
        let phone = format!("010-{:04}-{:04}", rng.next(10_000), rng.next(10_000));
        let email = format!(
            " {}.{id}@Example.COM ",
            name.replace(' ', ".").to_lowercase()
        );
        let system = id % 3;
        // Every 25th person shares the phone of the one before (a family);
        // every 50th gives the shop's switchboard, which identifies no one.
        let phone = match id {
            _ if id % 50 == 0 => "1588-1234".to_string(),
            _ if id % 25 == 1 && id > 1 => last_phone.clone(),
            _ => phone,
        };
        last_phone = phone.clone();
        let mut row = json!({"name": name, "phone": phone, "email": email});
        ts += 1000;
        out.push(event(system, id, "c", None, Some(&row), ts));
        // A third of the people are in a second system too, with the same
        // e-mail written differently and the phone in another format.
        if rng.next(3) == 0 {
            let other = (system + 1 + rng.next(2) as i64) % 3;
            let again = json!({"name": name, "phone": phone.replacen("010-", "+82 10-", 1),
                               "email": email.trim().to_uppercase()});
            ts += 1000;
            out.push(event(other, id, "c", None, Some(&again), ts));
        }
        if rng.next(3) == 0 {
            for _ in 0..2 {
                let before = row.clone();
                row["phone"] = json!(format!(
                    "+82 10-{:04}-{:04}",
                    rng.next(10_000),
                    rng.next(10_000)
                ));
                ts += 1000;
                out.push(event(system, id, "u", Some(&before), Some(&row), ts));
            }
        }
        if rng.next(10) == 0 {
            ts += 1000;
            out.push(event(system, id, "d", Some(&row), None, ts));
            if system != 2 {
                out.push(Record {
                    topic: topic(system).into(),
                    key: Some(debezium_key(system, id)),
                    value: None,
                    headers: Vec::new(),
                });
            }
        }
    }
    out
}

fn topic(system: i64) -> &'static str {
    match system {
        0 => "sales.public.customer",
        1 => "options.public.member",
        _ => "crm.contact",
    }
}

fn debezium_key(system: i64, id: i64) -> Vec<u8> {
    let key = if system == 0 {
        json!({"id": id})
    } else {
        json!({"schema": {"type": "struct", "fields": [{"field": "member_no", "type": "string"}]},
               "payload": {"member_no": format!("M{id:06}")}})
    };
    key.to_string().into_bytes()
}

/// One change event of the customer example as its CDC tool writes it:
/// system 0 is sales (Debezium), 1 options (Debezium with the schema
/// envelope), 2 the CRM (GoldenGate). `row` has name, phone and email.
pub fn event(
    system: i64,
    id: i64,
    op: &str,
    before: Option<&Value>,
    after: Option<&Value>,
    ts: i64,
) -> Record {
    let value = match system {
        0 => {
            let row = |r: &Value| json!({"id": id, "name": r["name"], "phone": r["phone"], "email": r["email"]});
            json!({"before": before.map(row), "after": after.map(row), "op": op, "ts_ms": ts + 5,
                   "source": {"connector": "postgresql", "name": "sales", "db": "sales", "schema": "public",
                              "table": "customer", "ts_ms": ts, "lsn": ts * 8}})
        }
        1 => {
            let row = |r: &Value| {
                json!({"member_no": format!("M{id:06}"), "full_name": r["name"],
                                          "mobile": r["phone"], "email_addr": r["email"]})
            };
            json!({"schema": {"type": "struct", "name": "options.public.member.Envelope"},
                   "payload": {"before": before.map(row), "after": after.map(row), "op": op, "ts_ms": ts + 5,
                               "source": {"connector": "postgresql", "name": "options", "db": "options",
                                          "schema": "public", "table": "member", "ts_ms": ts, "lsn": ts * 8}}})
        }
        _ => {
            let row = |r: &Value| {
                let name = r["name"].as_str().unwrap_or("");
                let (last, first) = name.split_once(' ').unwrap_or((name, ""));
                json!({"CONTACT_ID": id, "FIRST_NAME": first, "LAST_NAME": last,
                       "PHONE": r["phone"], "EMAIL": r["email"]})
            };
            let op_type = match op {
                "c" => "I",
                "u" => "U",
                _ => "D",
            };
            let secs = ts / 1000;
            let op_ts = chrono::DateTime::from_timestamp(secs, 0)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S%.6f").to_string())
                .unwrap_or_default();
            let mut v = json!({"table": "CRM.CONTACT", "op_type": op_type, "op_ts": op_ts,
                               "pos": format!("{:020}", ts), "primary_keys": ["CONTACT_ID"]});
            if let Some(b) = before {
                v["before"] = row(b);
            }
            if let Some(a) = after {
                v["after"] = row(a);
            }
            v
        }
    };
    let key = if system == 2 {
        Some(id.to_string().into_bytes())
    } else {
        Some(debezium_key(system, id))
    };
    Record {
        topic: topic(system).into(),
        key,
        value: Some(value.to_string().into_bytes()),
        headers: Vec::new(),
    }
}

/// Campaign events: every member, its marketing consent and its terms
/// agreement on three topics; for every third member the side rows are
/// produced first, so they must wait for their member. Some consents change.
pub fn campaign_events(people: usize) -> Vec<Record> {
    let mut rng = Lcg(7);
    let mut early = Vec::new();
    let mut out = Vec::new();
    for id in 1..=people as i64 {
        let ts = 1_767_225_600_000 + id * 1000;
        let key = json!({"member_id": id}).to_string().into_bytes();
        let msg = |topic: &str, after: Value, ts: i64| {
            Record {
            topic: topic.to_string(),
            key: Some(key.clone()),
            value: Some(
                json!({"op": "c", "before": null, "after": after,
                       "source": {"name": "shop", "schema": "public", "table": topic.rsplit('.').next(), "ts_ms": ts}})
                .to_string()
                .into_bytes(),
            ),
            headers: Vec::new(),
        }
        };
        let grade = ["bronze", "silver", "gold"][rng.next(3) as usize];
        let member = msg(
            "shop.public.member",
            json!({"member_id": id, "name": format!("member {id}"), "grade": grade, "phone": format!("010-{:04}-{:04}", rng.next(10_000), id)}),
            ts,
        );
        let consent = msg(
            "shop.public.marketing_consent",
            json!({"member_id": id, "sms_ok": rng.next(2) == 0, "email_ok": true, "push_ok": rng.next(3) == 0}),
            ts + 10,
        );
        let terms = msg(
            "shop.public.terms_agreement",
            json!({"member_id": id, "terms_version": "2026-01", "marketing_terms": true}),
            ts + 20,
        );
        if id % 3 == 0 {
            early.push(consent);
            early.push(terms);
            out.push(member);
        } else {
            out.extend([member, consent, terms]);
        }
        if rng.next(5) == 0 {
            out.push(msg(
                "shop.public.marketing_consent",
                json!({"member_id": id, "sms_ok": false, "email_ok": false, "push_ok": false}),
                ts + 30,
            ));
        }
    }
    early.extend(out);
    early
}
