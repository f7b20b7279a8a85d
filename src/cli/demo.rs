//! `pgchain demo`: the customer example end to end on librdkafka's mock
//! cluster (in process) and the local PostgreSQL, in its own database.

use anyhow::Context;
use pgchain::config::Config;
use pgchain::dispatcher::Dispatcher;
use pgchain::kafka::{self, Record};
use pgchain::samples::{campaign_events, sample_events};
use rdkafka::mocking::MockCluster;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// People in the sample data; each yields several change events.
    #[arg(long, default_value_t = 500)]
    pub people: usize,
    /// Server URL; the demo works in its own databases there: `--database`
    /// for the customer example, `{--database}_campaign` for the campaign one.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value_t = pgchain::config::default_url()
    )]
    pub database_url: String,
    #[arg(long, default_value = "pgchain_demo")]
    pub database: String,
    /// The customer example project (its migrations beside it in sql/migrations).
    #[arg(short, long, default_value = "pipelines.yaml")]
    pub config: PathBuf,
    /// The campaign example project.
    #[arg(long, default_value = "examples/campaign/pipelines.yaml")]
    pub campaign: PathBuf,
}

/// A fresh database with pgchain's runtime and the project's migrations.
async fn project_database(server: &str, database: &str, config: &Path) -> anyhow::Result<String> {
    let url = pgchain::db::recreate_database(server, database).await?;
    let dir = pgchain::config::project_dir(config).join("sql/migrations");
    let done = pgchain::db::migrate(&url, &dir).await?;
    println!(
        "database {database}: pgchain runtime and {} migration(s) of {} applied",
        done.applied.len(),
        dir.display()
    );
    Ok(url)
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let url = project_database(&args.database_url, &args.database, &args.config).await?;
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

    let client = pgchain::db::connect(&url).await?;
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
    let url = project_database(
        &args.database_url,
        &format!("{}_campaign", args.database),
        &args.campaign,
    )
    .await?;
    let client = pgchain::db::connect(&url).await?;
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
    // The dead-letter topics too, as an operator would: the embedded Kafka
    // takes no request to create a topic.
    let mut all = topics.clone();
    for t in &topics {
        let dlq = config.dead_letters.topic_for(t);
        if !all.contains(&dlq) {
            all.push(dlq);
        }
    }
    for t in all {
        cluster
            .create_topic(&t, 3, 1)
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
    let client = pgchain::db::connect(url).await?;
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
    snap: &pgchain::ops::stats::Snapshot,
    tables: &[&str],
    joined: Duration,
    elapsed: Duration,
) -> anyhow::Result<()> {
    let (table, total) = snap.pipeline_table();
    print!("\n{table}");
    let client = pgchain::db::connect(url).await?;
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
