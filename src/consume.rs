//! The Kafka side of the dispatcher.
//!
//! The rule of the loop: an offset is stored for commit only after the chain
//! it stands for has committed in PostgreSQL, and PostgreSQL (not Kafka) says
//! where a partition resumes, so a lost Kafka commit never re-applies a change.
//!
//! One thread polls the consumer and serves rebalances. On assignment it reads
//! each partition's applied position from `pgchain.offsets`, splits the
//! partition onto its own queue (before `assign`, so no message can reach the
//! main queue) and starts a worker task on the tokio runtime that runs that
//! partition's events strictly in order, woken by librdkafka when its queue
//! fills. On revocation and shutdown it stops the workers (each finishes the
//! chain in flight), then commits synchronously.

use crate::backoff::Backoff;
use crate::route::Router;
use crate::stats::Stats;
use crate::worker::PartitionWorker;
use deadpool_postgres::Pool;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub type ChainConsumer = BaseConsumer<ChainContext>;

/// What every partition worker shares.
pub struct Shared {
    pub handle: Handle,
    pub pool: Pool,
    pub router: Arc<Router>,
    pub group: String,
    pub stats: Stats,
    /// Retry settings for pgchain's own writes (dead letters).
    pub retries_default: crate::config::Retries,
    /// Producer of dead-letter records.
    pub producer: rdkafka::producer::FutureProducer,
    pub dead_letters: crate::config::DeadLetters,
    /// Most events of one partition run in one transaction.
    pub max_batch: usize,
    /// Where a partition the ledger does not know starts.
    pub start_from: crate::config::StartFrom,
}

struct Worker {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

pub struct ChainContext {
    shared: Arc<Shared>,
    /// Set right after the consumer is created; partition queues need the Arc.
    consumer: OnceLock<Weak<ChainConsumer>>,
    workers: Mutex<HashMap<(String, i32), Worker>>,
}

impl ChainContext {
    pub fn new(shared: Arc<Shared>) -> Self {
        ChainContext {
            shared,
            consumer: OnceLock::new(),
            workers: Mutex::new(HashMap::new()),
        }
    }

    pub fn attach(&self, consumer: &Arc<ChainConsumer>) {
        let _ = self.consumer.set(Arc::downgrade(consumer));
    }

    fn on_assign(&self, base: &ChainConsumer, tpl: &mut TopicPartitionList) {
        let parts = partitions(tpl);
        let looked_up = self.applied_positions(&parts);
        let ledger_read = looked_up.is_some();
        let positions = looked_up.unwrap_or_default();
        let mut unfit = Vec::new();
        let mut unknown = Vec::new();
        for (topic, partition) in &parts {
            if let Some(pos) = positions.get(&(topic.clone(), *partition)) {
                let _ = tpl.set_partition_offset(topic, *partition, Offset::Offset(pos + 1));
                if let Some(why) = ledger_misfit(base, topic, *partition, *pos) {
                    unfit.push(((topic.clone(), *partition), why));
                }
            } else {
                unknown.push((topic.clone(), *partition));
            }
        }
        if ledger_read && !unknown.is_empty() {
            self.start_unknown(base, tpl, &unknown);
        }
        let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else {
            return;
        };
        // Split before assign: librdkafka then never forwards these
        // partitions' messages to the main queue.
        let queues: Vec<_> = parts
            .iter()
            .filter_map(|(t, p)| Some(((t.clone(), *p), consumer.split_partition_queue(t, *p)?)))
            .collect();
        let assigned = match base.rebalance_protocol() {
            RebalanceProtocol::Cooperative => base.incremental_assign(tpl),
            _ => base.assign(tpl),
        };
        if let Err(e) = assigned {
            error!("cannot assign partitions: {e}");
            return;
        }
        for ((topic, partition), why) in &unfit {
            error!(topic, partition, "partition stopped: {why}");
            self.shared.stats.stuck(topic, *partition, why.clone());
            let mut paused = TopicPartitionList::new();
            paused.add_partition(topic, *partition);
            let _ = base.pause(&paused);
        }
        let mut workers = self.workers.lock().expect("workers lock");
        for ((topic, partition), queue) in queues {
            if unfit
                .iter()
                .any(|(tp, _)| *tp == (topic.clone(), partition))
            {
                continue;
            }
            let applied = positions.get(&(topic.clone(), partition)).copied();
            info!(topic, partition, resume_after = ?applied, "partition assigned");
            self.shared
                .stats
                .assigned(&topic, partition, applied.map(|a| a + 1));
            let worker = self.start_worker(&consumer, &topic, partition, queue);
            workers.insert((topic, partition), worker);
        }
    }

    /// Sets where partitions without a ledger row start (`kafka.start_from`),
    /// and says so once per partition with the offsets involved: a group
    /// Kafka already knows must not silently skip what this database never
    /// applied.
    fn start_unknown(
        &self,
        base: &ChainConsumer,
        tpl: &mut TopicPartitionList,
        unknown: &[(String, i32)],
    ) {
        use crate::config::StartFrom;
        let mut ask = TopicPartitionList::new();
        for (t, p) in unknown {
            ask.add_partition(t, *p);
        }
        let committed = base.committed_offsets(ask, Duration::from_secs(10));
        let start_from = self.shared.start_from;
        for (topic, partition) in unknown {
            let kafka = match &committed {
                Ok(c) => match c.find_partition(topic, *partition).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => Some(o),
                    _ => None,
                },
                Err(e) => {
                    warn!(
                        topic,
                        partition, "cannot read the group's committed offset: {e}"
                    );
                    None
                }
            };
            let (low, high) = base
                .fetch_watermarks(topic, *partition, Duration::from_secs(5))
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
            let _ = tpl.set_partition_offset(topic, *partition, offset);
            // A partition with nothing to apply from here (at its end, or
            // emptied by retention) is caught up before any event arrives.
            if let (Some(n), Some(h)) = (next, high)
                && n >= h
            {
                self.shared.stats.assigned(topic, *partition, Some(n));
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
                self.shared.group,
                show(kafka),
                show(low),
                show(high),
            );
        }
    }

    /// Starts the task that runs one partition's events, woken by librdkafka
    /// when the partition's queue fills.
    fn start_worker(
        &self,
        consumer: &Arc<ChainConsumer>,
        topic: &str,
        partition: i32,
        mut queue: PartitionQueue<ChainContext>,
    ) -> Worker {
        let stop = CancellationToken::new();
        let wake = Arc::new(Notify::new());
        let waker = wake.clone();
        queue.set_nonempty_callback(move || waker.notify_one());
        let worker = PartitionWorker {
            shared: self.shared.clone(),
            consumer: consumer.clone(),
            topic: topic.to_string(),
            partition,
            stop: stop.clone(),
        };
        let (stats, t) = (self.shared.stats.clone(), topic.to_string());
        let inner = self.shared.handle.spawn(worker.run(queue, wake));
        // A worker that panics must not leave its partition silently idle.
        let task = self.shared.handle.spawn(async move {
            if let Err(e) = inner.await {
                error!(
                    topic = t,
                    partition, "partition worker crashed: {e}; restart pgchain"
                );
                stats.stuck(&t, partition, format!("worker crashed: {e}"));
            }
        });
        Worker { stop, task }
    }

    fn on_revoke(&self, base: &ChainConsumer, tpl: &TopicPartitionList) {
        let parts: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        self.stop_workers(Some(&parts));
        for (topic, partition) in &parts {
            self.shared.stats.revoked(topic, *partition);
        }
        commit_sync(base);
        let _ = match base.rebalance_protocol() {
            RebalanceProtocol::Cooperative => base.incremental_unassign(tpl),
            _ => base.unassign(),
        };
        info!(partitions = parts.len(), "partitions revoked");
    }

    /// Stops the workers of `parts` (all when `None`) and waits for each to
    /// finish the chain it is running.
    pub fn stop_workers(&self, parts: Option<&[(String, i32)]>) {
        let stopped: Vec<Worker> = {
            let mut workers = self.workers.lock().expect("workers lock");
            let keys: Vec<_> = match parts {
                Some(p) => p.to_vec(),
                None => workers.keys().cloned().collect(),
            };
            keys.iter().filter_map(|k| workers.remove(k)).collect()
        };
        for w in &stopped {
            w.stop.cancel();
        }
        // Called on the poll thread, outside the runtime: wait for the tasks.
        self.shared.handle.block_on(async {
            for w in stopped {
                let _ = w.task.await;
            }
        });
    }

    /// Applied positions from the ledger. The database is retried for about
    /// 15 s (this runs inside the rebalance callback); if it stays away,
    /// Kafka's committed offsets are used. Those are ahead of the ledger only
    /// by skipped tombstones, which ran nothing, so the ledger still skips
    /// whatever was applied.
    fn applied_positions(&self, parts: &[(String, i32)]) -> Option<HashMap<(String, i32), i64>> {
        let shared = &self.shared;
        let lookup = || async {
            let client = shared.pool.get().await.map_err(|e| e.to_string())?;
            let topics: Vec<&str> = parts.iter().map(|(t, _)| t.as_str()).collect();
            let partitions: Vec<i32> = parts.iter().map(|(_, p)| *p).collect();
            let rows = client
                .query(
                    "select o.topic, o.partition, o.applied_through from pgchain.offsets o
                      join unnest($2::text[], $3::int[]) as a(topic, partition)
                        on a.topic = o.topic and a.partition = o.partition
                     where o.group_id = $1",
                    &[&shared.group, &topics, &partitions],
                )
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(
                rows.iter()
                    .map(|r| ((r.get(0), r.get(1)), r.get(2)))
                    .collect(),
            )
        };
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        for attempt in 1..=3 {
            match shared
                .handle
                .block_on(async { tokio::time::timeout(Duration::from_secs(4), lookup()).await })
            {
                Ok(Ok(map)) => return Some(map),
                Ok(Err(e)) => warn!(attempt, "cannot read applied positions: {e}"),
                Err(_) => warn!(attempt, "reading applied positions timed out"),
            }
            backoff.wait_blocking();
        }
        warn!(
            "resuming from Kafka's committed offsets; the ledger will skip what was already applied"
        );
        None
    }
}

impl ClientContext for ChainContext {
    /// librdkafka's statistics (every `statistics.interval.ms`): the high
    /// watermark of each partition, for the lag metric, with no extra
    /// requests to the brokers.
    fn stats(&self, statistics: rdkafka::Statistics) {
        for (name, topic) in &statistics.topics {
            for (id, p) in &topic.partitions {
                if *id >= 0 && p.hi_offset >= 0 {
                    self.shared.stats.high_watermark(name, *id, p.hi_offset);
                }
            }
        }
    }
}

impl ConsumerContext for ChainContext {
    fn rebalance(&self, base: &ChainConsumer, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.on_assign(base, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.on_revoke(base, tpl),
            other => {
                error!("rebalance failed: {:?}", other);
                self.stop_workers(None);
                let _ = base.unassign();
            }
        }
    }
}

/// Commits the stored offsets, waiting for the broker's answer.
pub fn commit_sync(consumer: &ChainConsumer) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => {}
        // Nothing stored since the last commit.
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => warn!("offset commit failed (the ledger keeps the position): {e}"),
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

/// Why the ledger's position does not fit the partition's log, if it does not:
/// past its end (the topic was recreated, or a database restored from another
/// cluster), or before its start (retention deleted events never applied).
fn ledger_misfit(
    base: &ChainConsumer,
    topic: &str,
    partition: i32,
    applied: i64,
) -> Option<String> {
    let (low, high) = match base.fetch_watermarks(topic, partition, Duration::from_secs(5)) {
        Ok(marks) => marks,
        Err(e) => {
            warn!(
                topic,
                partition, "cannot read watermarks to check the ledger: {e}"
            );
            return None;
        }
    };
    if applied + 1 > high {
        Some(format!(
            "pgchain.offsets says offset {applied} is applied, but the partition ends at {high}; \
             was the topic recreated? Delete the ledger row for this group, topic and partition to start over"
        ))
    } else if applied + 1 < low {
        Some(format!(
            "offsets {} to {} were deleted by retention before pgchain applied them; \
             re-snapshot the source, then set the ledger row to {}",
            applied + 1,
            low - 1,
            low - 1
        ))
    } else {
        None
    }
}
