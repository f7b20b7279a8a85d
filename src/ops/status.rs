//! `pgchain status`: how far each pipeline's partitions are applied, how
//! far behind Kafka they are, and how many of their events wait parked or
//! dead-lettered. Reads the ledger and the brokers' watermarks;
//! needs no running dispatcher.

use crate::config::Config;
use anyhow::Context;
use serde::Serialize;

/// One partition of one pipeline's topic.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PartitionStatus {
    pub pipeline: String,
    pub topic: String,
    pub partition: i32,
    /// Last applied offset in the ledger (None: nothing applied yet).
    pub applied: Option<i64>,
    /// The partition's high watermark: the next offset to be written.
    pub high_watermark: i64,
    /// Events not yet applied: high watermark minus the next offset to apply.
    pub lag: i64,
    /// When the ledger last moved, RFC 3339.
    pub last_applied_at: Option<String>,
    /// Events of this partition parked in `pgchain.dead_letters`.
    pub parked: i64,
    /// Events of this partition dead-lettered and not yet replayed or discarded.
    pub dead: i64,
    /// Why the ledger does not fit the log, when it does not: the partition
    /// stops there until someone decides.
    pub problem: Option<String>,
}

/// The status of every partition of every pipeline, in declaration order.
pub async fn collect(config: &Config) -> anyhow::Result<Vec<PartitionStatus>> {
    let client = crate::db::connect(&config.postgres.url).await?;
    let ledger = crate::store::ledger::positions(&client, &config.kafka.group_id)
        .await
        .context("cannot read pgchain.offsets (is the database migrated?)")?;
    let counts = crate::store::dead_letters::open_counts(&client, &config.kafka.group_id)
        .await
        .context("cannot read pgchain.dead_letters (is the database migrated?)")?;
    let mut open: std::collections::HashMap<(Option<String>, String, i32), (i64, i64)> =
        std::collections::HashMap::new();
    for o in counts {
        let n = open.entry((o.pipeline, o.topic, o.partition)).or_default();
        match o.status {
            crate::store::dead_letters::Status::Parked => n.0 += o.count,
            crate::store::dead_letters::Status::Dead => n.1 += o.count,
        }
    }
    let topics = config.topics();
    let cluster = config.cluster();
    let marks = tokio::task::spawn_blocking(move || crate::kafka::watermarks_on(&cluster, &topics))
        .await?
    .with_context(|| {
        format!(
            "cannot read the partitions' watermarks from the Kafka brokers {} (kafka.brokers in {})",
            config.kafka.brokers,
            config.path.display()
        )
    })?;
    let mut out = Vec::new();
    for (name, p) in &config.pipelines {
        for topic in p.all_topics() {
            let mut parts: Vec<(i32, (i64, i64))> = marks
                .iter()
                .filter(|((t, _), _)| t == topic)
                .map(|((_, p), m)| (*p, *m))
                .collect();
            parts.sort();
            for (partition, (low, high)) in parts {
                let entry = ledger.get(&(topic.to_string(), partition));
                let applied = entry.map(|(a, _)| *a);
                let next = applied.map_or(0, |a| a + 1);
                let (parked, dead) = open
                    .get(&(Some(name.clone()), topic.to_string(), partition))
                    .copied()
                    .unwrap_or_default();
                out.push(PartitionStatus {
                    pipeline: name.clone(),
                    topic: topic.to_string(),
                    partition,
                    applied,
                    high_watermark: high,
                    lag: (high - next).max(0),
                    last_applied_at: entry.map(|(_, at)| at.clone()),
                    parked,
                    dead,
                    problem: misfit(topic, partition, applied, (low, high), config.kafka.on_gap),
                });
            }
        }
    }
    Ok(out)
}

/// What the dispatcher would find of this ledger position at assignment.
fn misfit(
    topic: &str,
    partition: i32,
    applied: Option<i64>,
    (low, high): (i64, i64),
    on_gap: crate::config::OnGap,
) -> Option<String> {
    use crate::kafka::assign::Misfit;
    Some(match Misfit::of(topic, partition, applied?, low, high)? {
        Misfit::BeyondEnd { applied, high } => format!(
            "the ledger says offset {applied} is applied, but the partition ends at {high}: \
             the partition stops (was the topic recreated?)"
        ),
        Misfit::Gap(gap) => {
            let then = match on_gap {
                crate::config::OnGap::Stop => "the partition stops (kafka.on_gap: stop)",
                crate::config::OnGap::Skip => "they will be skipped (kafka.on_gap: skip)",
            };
            format!(
                "offsets {} to {} were deleted by retention before they were applied: {then}",
                gap.from, gap.to
            )
        }
    })
}

/// A table for people: one line per partition.
pub fn table(rows: &[PartitionStatus]) -> String {
    let mut out = format!(
        "{:<20} {:<28} {:>9} {:>12} {:>12} {:>8} {:>7} {:>6}  {}\n",
        "pipeline",
        "topic",
        "partition",
        "applied",
        "high mark",
        "lag",
        "parked",
        "dead",
        "last applied (UTC)"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<20} {:<28} {:>9} {:>12} {:>12} {:>8} {:>7} {:>6}  {}\n",
            r.pipeline,
            r.topic,
            r.partition,
            r.applied.map_or("-".to_string(), |a| a.to_string()),
            r.high_watermark,
            r.lag,
            r.parked,
            r.dead,
            r.last_applied_at.as_deref().unwrap_or("-")
        ));
        if let Some(p) = &r.problem {
            out.push_str(&format!("  ^ {p}\n"));
        }
    }
    out
}
