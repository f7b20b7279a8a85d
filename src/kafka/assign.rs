//! Where assigned partitions start: after the ledger's position, checked
//! against the log, or where `kafka.start_from` says for a partition the
//! ledger does not know. The dispatcher asks this on every assignment and
//! answers the consumer's context with the [`Plan`].

use crate::chain::Backoff;
use crate::config::{OnGap, StartFrom};
use crate::kafka::context::{ChainConsumer, Plan, TopicPartition};
use crate::kafka::gap::Gap;
use crate::ops::stats::Stats;
use deadpool_postgres::Pool;
use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::{error, info, warn};

/// What the planner reads and where it reports.
#[derive(Clone)]
pub struct Planner {
    pub pool: Pool,
    pub group: String,
    pub stats: Stats,
    pub start_from: StartFrom,
    pub on_gap: OnGap,
}

impl Planner {
    /// The plan for `parts`: the ledger is read here, on the runtime; the
    /// broker questions (watermarks, committed offsets) on a blocking thread.
    pub async fn plan(&self, consumer: &Arc<ChainConsumer>, parts: Vec<TopicPartition>) -> Plan {
        let positions = self.applied_positions(&parts).await;
        let (planner, consumer) = (self.clone(), consumer.clone());
        let decided = tokio::task::spawn_blocking(move || match positions {
            Some(positions) => planner.decide(&consumer, &parts, &positions),
            None => (planner.kafka_committed_plan(&consumer, &parts), Vec::new()),
        })
        .await;
        let Ok((mut plan, gaps)) = decided else {
            return Plan::default();
        };
        // `kafka.on_gap: skip`: recorded before the partition starts past it.
        for gap in gaps {
            let tp = (gap.topic.clone(), gap.partition);
            match gap.skip(&self.pool, &self.group, &self.stats).await {
                Ok(()) => {
                    info!(
                        topic = gap.topic,
                        partition = gap.partition,
                        resume_at = gap.to + 1,
                        "partition assigned"
                    );
                    self.stats
                        .assigned(&gap.topic, gap.partition, Some(gap.to + 1));
                }
                Err(e) => {
                    let why = format!("{}; recording the skip failed: {e}", gap.stop_reason());
                    error!(
                        topic = gap.topic,
                        partition = gap.partition,
                        "partition stopped: {why}"
                    );
                    self.stats.stuck(&gap.topic, gap.partition, why.clone());
                    plan.stopped.push((tp, why));
                }
            }
        }
        plan
    }

    /// The database stayed away: start where Kafka's committed offsets say,
    /// from the beginning where there is none (librdkafka resets nothing).
    fn kafka_committed_plan(&self, base: &ChainConsumer, parts: &[TopicPartition]) -> Plan {
        let committed = committed(base, parts).unwrap_or_default();
        let mut plan = Plan::default();
        for (topic, partition) in parts {
            let offset = committed
                .get(&(topic.clone(), *partition))
                .map_or(Offset::Beginning, |o| Offset::Offset(*o));
            info!(topic, partition, start = ?offset, "partition assigned (from Kafka's committed offset)");
            self.stats.assigned(topic, *partition, None);
            plan.offsets.push(((topic.clone(), *partition), offset));
        }
        plan
    }

    /// Where each partition starts, and the gaps to skip first.
    fn decide(
        &self,
        base: &ChainConsumer,
        parts: &[TopicPartition],
        positions: &HashMap<TopicPartition, i64>,
    ) -> (Plan, Vec<Gap>) {
        let mut plan = Plan::default();
        let mut gaps = Vec::new();
        let mut unknown = Vec::new();
        for (topic, partition) in parts {
            let tp = (topic.clone(), *partition);
            match positions.get(&tp) {
                Some(pos) => match ledger_misfit(base, topic, *partition, *pos) {
                    None => plan.offsets.push((tp.clone(), Offset::Offset(pos + 1))),
                    Some(Misfit::Gap(gap)) if self.on_gap == OnGap::Skip => {
                        plan.offsets.push((tp.clone(), Offset::Offset(gap.to + 1)));
                        gaps.push(gap);
                    }
                    Some(misfit) => {
                        let why = misfit.to_string();
                        error!(topic, partition, "partition stopped: {why}");
                        self.stats.stuck(topic, *partition, why.clone());
                        plan.offsets.push((tp.clone(), Offset::Offset(pos + 1)));
                        plan.stopped.push((tp, why));
                    }
                },
                None => unknown.push(tp),
            }
        }
        if !unknown.is_empty() {
            self.start_unknown(base, &mut plan, &unknown);
        }
        for (topic, partition) in parts {
            let held_back = |t: &String, p: &i32| t == topic && p == partition;
            if plan.stopped.iter().any(|((t, p), _)| held_back(t, p))
                || gaps.iter().any(|g| held_back(&g.topic, &g.partition))
            {
                continue;
            }
            let applied = positions.get(&(topic.clone(), *partition)).copied();
            info!(topic, partition, resume_after = ?applied, "partition assigned");
            self.stats
                .assigned(topic, *partition, applied.map(|a| a + 1));
        }
        (plan, gaps)
    }

    /// Sets where partitions without a ledger row start (`kafka.start_from`),
    /// and says so once per partition with the offsets involved: a group
    /// Kafka already knows must not silently skip what this database never
    /// applied.
    fn start_unknown(&self, base: &ChainConsumer, plan: &mut Plan, unknown: &[TopicPartition]) {
        let committed = committed(base, unknown);
        let start_from = self.start_from;
        for (topic, partition) in unknown {
            let kafka = match &committed {
                Ok(c) => c.get(&(topic.clone(), *partition)).copied(),
                Err(e) => {
                    warn!(
                        topic,
                        partition, "cannot read the group's committed offset: {e}"
                    );
                    None
                }
            };
            let wire = base.context().prefix().wire(topic);
            let (low, high) = base
                .fetch_watermarks(&wire, *partition, Duration::from_secs(5))
                .map_or((None, None), |(l, h)| (Some(l), Some(h)));
            let (offset, next, from) = match start_from {
                StartFrom::LedgerOrEarliest => (Offset::Beginning, low, "the earliest offset"),
                StartFrom::KafkaCommit => match kafka {
                    Some(o) => (Offset::Offset(o), Some(o), "Kafka's committed offset"),
                    None => (
                        Offset::Beginning,
                        low,
                        "the earliest offset (no committed offset)",
                    ),
                },
                StartFrom::Latest => (Offset::End, high, "the end of the partition"),
            };
            plan.offsets.push(((topic.clone(), *partition), offset));
            // A partition with nothing to apply from here (at its end, or
            // emptied by retention) is caught up before any event arrives.
            if let (Some(n), Some(h)) = (next, high)
                && n >= h
            {
                self.stats.assigned(topic, *partition, Some(n));
            }
            let skipped = match (start_from, kafka, low) {
                (StartFrom::KafkaCommit, Some(k), Some(l)) if k > l => {
                    format!(
                        "; offsets {l} to {} are not applied by this database",
                        k - 1
                    )
                }
                _ => String::new(),
            };
            let show = |o: Option<i64>| o.map_or("none".to_string(), |o| o.to_string());
            info!(
                topic,
                partition,
                start_from = start_from.as_str(),
                "{topic}/{partition}: the ledger has no position for group {} (Kafka's committed offset: {}; log {}..{}): \
                 starting from {from}{skipped}",
                self.group,
                show(kafka),
                show(low),
                show(high),
            );
        }
    }

    /// Applied positions from the ledger. The database is retried for about
    /// 15 s (the rebalance callback waits for this); if it stays away,
    /// Kafka's committed offsets are used. Those are ahead of the ledger only
    /// by skipped tombstones, which ran nothing, so the ledger still skips
    /// whatever was applied.
    async fn applied_positions(
        &self,
        parts: &[TopicPartition],
    ) -> Option<HashMap<TopicPartition, i64>> {
        let shared = self;
        let lookup = || async {
            let client = shared.pool.get().await.map_err(|e| e.to_string())?;
            crate::store::ledger::applied(&client, &shared.group, parts)
                .await
                .map_err(|e| e.to_string())
        };
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        for attempt in 1..=3 {
            match tokio::time::timeout(Duration::from_secs(4), lookup()).await {
                Ok(Ok(map)) => return Some(map),
                Ok(Err(e)) => warn!(attempt, "cannot read applied positions: {e}"),
                Err(_) => warn!(attempt, "reading applied positions timed out"),
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
        warn!(
            "resuming from Kafka's committed offsets; the ledger will skip what was already applied"
        );
        None
    }
}

/// The group's committed offset of each of `parts` that has one.
fn committed(
    base: &ChainConsumer,
    parts: &[TopicPartition],
) -> rdkafka::error::KafkaResult<HashMap<TopicPartition, i64>> {
    let prefix = base.context().prefix();
    let mut ask = TopicPartitionList::new();
    for (t, p) in parts {
        ask.add_partition(&prefix.wire(t), *p);
    }
    let got = base.committed_offsets(ask, Duration::from_secs(10))?;
    Ok(got
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(((prefix.user(e.topic()).to_string(), e.partition()), o)),
            _ => None,
        })
        .collect())
}

/// How the ledger's position does not fit the partition's log.
pub enum Misfit {
    /// Past its end (the topic was recreated, or a database restored from
    /// another cluster).
    BeyondEnd { applied: i64, high: i64 },
    /// Before its start: retention deleted events never applied.
    Gap(Gap),
}

impl Misfit {
    /// How `applied` (the ledger's position) fits the log `low..high` of
    /// `topic`/`partition`, when it does not.
    pub fn of(topic: &str, partition: i32, applied: i64, low: i64, high: i64) -> Option<Misfit> {
        if applied + 1 > high {
            Some(Misfit::BeyondEnd { applied, high })
        } else {
            Gap::between(topic, partition, applied + 1, low).map(Misfit::Gap)
        }
    }
}

impl std::fmt::Display for Misfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Misfit::BeyondEnd { applied, high } => write!(
                f,
                "pgchain.offsets says offset {applied} is applied, but the partition ends at {high}; \
                 was the topic recreated? Delete the ledger row for this group, topic and partition to start over"
            ),
            Misfit::Gap(gap) => f.write_str(&gap.stop_reason()),
        }
    }
}

fn ledger_misfit(
    base: &ChainConsumer,
    topic: &str,
    partition: i32,
    applied: i64,
) -> Option<Misfit> {
    let wire = base.context().prefix().wire(topic);
    let (low, high) = match base.fetch_watermarks(&wire, partition, Duration::from_secs(5)) {
        Ok(marks) => marks,
        Err(e) => {
            warn!(
                topic,
                partition, "cannot read watermarks to check the ledger: {e}"
            );
            return None;
        }
    };
    Misfit::of(topic, partition, applied, low, high)
}
