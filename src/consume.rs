//! The Kafka side of the dispatcher.
//!
//! The rule of the loop: an offset is stored for commit only after the chain
//! it stands for has committed in PostgreSQL, and PostgreSQL (not Kafka) says
//! where a partition resumes, so a lost Kafka commit never re-applies a change.
//!
//! One thread polls the consumer and serves rebalances. On assignment it reads
//! each partition's applied position from `pgchain.offsets`, splits the
//! partition onto its own queue (before `assign`, so no message can reach the
//! main queue) and starts a worker thread that runs that partition's events
//! strictly in order. On revocation and shutdown it stops the workers (each
//! finishes the chain in flight), then commits synchronously.

use crate::chain::{self, Backoff, Failure, Outcome};
use crate::route::{Message as RouteMessage, RouteError, Routed, Router};
use crate::stats::Stats;
use deadpool_postgres::Pool;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, warn};

pub type ChainConsumer = BaseConsumer<ChainContext>;

/// What every partition worker shares.
pub struct Shared {
    pub handle: Handle,
    pub pool: Pool,
    pub router: Arc<Router>,
    pub group: String,
    pub stats: Stats,
    pub backoff: Backoff,
}

struct Worker {
    stop: CancellationToken,
    thread: JoinHandle<()>,
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
        let parts: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        let positions = self.applied_positions(&parts);
        for (topic, partition) in &parts {
            if let Some(pos) = positions.get(&(topic.clone(), *partition)) {
                let _ = tpl.set_partition_offset(topic, *partition, Offset::Offset(pos + 1));
            }
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
        let mut workers = self.workers.lock().expect("workers lock");
        for ((topic, partition), queue) in queues {
            info!(topic, partition, resume_after = ?positions.get(&(topic.clone(), partition)), "partition assigned");
            let stop = CancellationToken::new();
            let worker = PartitionWorker {
                shared: self.shared.clone(),
                consumer: consumer.clone(),
                topic: topic.clone(),
                partition,
                stop: stop.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("pgchain-{topic}-{partition}"))
                .spawn(move || worker.run(queue))
                .expect("spawn partition worker");
            workers.insert((topic, partition), Worker { stop, thread });
        }
    }

    fn on_revoke(&self, base: &ChainConsumer, tpl: &TopicPartitionList) {
        let parts: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        self.stop_workers(Some(&parts));
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
        for w in stopped {
            let _ = w.thread.join();
        }
    }

    /// Applied positions from the ledger. The database is retried for a
    /// while; if it stays away, Kafka's committed offsets are used, which are
    /// never ahead of the ledger, so the ledger still skips what was applied.
    fn applied_positions(&self, parts: &[(String, i32)]) -> HashMap<(String, i32), i64> {
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
        let mut delay = Duration::from_millis(200);
        for attempt in 1..=8 {
            match shared
                .handle
                .block_on(async { tokio::time::timeout(Duration::from_secs(10), lookup()).await })
            {
                Ok(Ok(map)) => return map,
                Ok(Err(e)) => warn!(attempt, "cannot read applied positions: {e}"),
                Err(_) => warn!(attempt, "reading applied positions timed out"),
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        warn!(
            "resuming from Kafka's committed offsets; the ledger will skip what was already applied"
        );
        HashMap::new()
    }
}

impl ClientContext for ChainContext {}

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

struct PartitionWorker {
    shared: Arc<Shared>,
    consumer: Arc<ChainConsumer>,
    topic: String,
    partition: i32,
    stop: CancellationToken,
}

/// What happened to one message.
enum Step {
    /// Applied, filtered, skipped or already applied: the offset may be stored.
    Done,
    /// Stopped while retrying; the message will be consumed again.
    Interrupted,
    /// Cannot be processed; the partition stops here.
    Stuck(String),
}

impl PartitionWorker {
    fn run(self, queue: rdkafka::consumer::base_consumer::PartitionQueue<ChainContext>) {
        while !self.stop.is_cancelled() {
            let msg = match queue.poll(Duration::from_millis(100)) {
                None => continue,
                Some(Ok(msg)) => msg,
                Some(Err(e)) => {
                    warn!(
                        topic = self.topic,
                        partition = self.partition,
                        "consume error: {e}"
                    );
                    continue;
                }
            };
            let view = RouteMessage {
                topic: msg.topic(),
                partition: msg.partition(),
                offset: msg.offset(),
                timestamp: msg.timestamp().to_millis(),
                key: msg.key(),
                value: msg.payload(),
            };
            let span = tracing::info_span!(
                "event",
                topic = view.topic,
                partition = view.partition,
                offset = view.offset,
                pipeline = tracing::field::Empty
            );
            let step = self
                .shared
                .handle
                .block_on(self.process(&view).instrument(span));
            match step {
                Step::Done => {
                    if let Err(e) =
                        self.consumer
                            .store_offset(&self.topic, self.partition, view.offset)
                    {
                        warn!(
                            topic = self.topic,
                            partition = self.partition,
                            "cannot store offset: {e}"
                        );
                    }
                    self.shared
                        .stats
                        .processed(&self.topic, self.partition, view.offset);
                }
                Step::Interrupted => break,
                Step::Stuck(why) => {
                    error!(
                        topic = self.topic,
                        partition = self.partition,
                        offset = view.offset,
                        "partition stopped: {why}; nothing after this offset is applied or committed until it is fixed and pgchain restarts"
                    );
                    self.shared.stats.stuck(&self.topic, self.partition, why);
                    let mut tpl = TopicPartitionList::new();
                    tpl.add_partition(&self.topic, self.partition);
                    let _ = self.consumer.pause(&tpl);
                    self.shared.handle.block_on(self.stop.cancelled());
                    break;
                }
            }
        }
    }

    async fn process(&self, msg: &RouteMessage<'_>) -> Step {
        let (event, route) = match self.shared.router.route(msg) {
            Ok(Routed::Event(event, route)) => (event, route),
            Ok(Routed::Skip {
                pipeline,
                reason: _,
            }) => {
                if let Some(p) = pipeline {
                    self.shared.stats.record(&p, |c| c.tombstones += 1);
                }
                return Step::Done;
            }
            Err(e @ (RouteError::Undecodable(_) | RouteError::Unroutable(_))) => {
                return Step::Stuck(e.to_string());
            }
        };
        tracing::Span::current().record("pipeline", route.pipeline.as_str());
        let started = std::time::Instant::now();
        let result = chain::apply(
            &self.shared.pool,
            &self.shared.group,
            &event,
            &route,
            self.shared.backoff,
            &self.stop,
        )
        .await;
        match result {
            Ok(outcome) => {
                self.shared.stats.latency(started.elapsed());
                self.shared
                    .stats
                    .record(&route.pipeline, |c| match outcome {
                        Outcome::Applied => c.applied += 1,
                        Outcome::Filtered => c.filtered += 1,
                        Outcome::Skipped => c.already_applied += 1,
                    });
                Step::Done
            }
            Err(Failure::Interrupted) => Step::Interrupted,
            Err(Failure::Fatal(e)) => Step::Stuck(format!("pipeline {}: {e}", route.pipeline)),
        }
    }
}
