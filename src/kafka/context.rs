//! The consumer's context: it *reports* rebalances, nothing more.
//!
//! librdkafka calls the rebalance callback on the poll thread. The context
//! sends what happens on a channel to the dispatcher, which owns the
//! partition tasks and reads the ledger, and waits for its answer:
//! - assign: the dispatcher answers with a [`Plan`] (where each partition
//!   starts, which must stay stopped); the context splits each partition
//!   onto its own queue (before `assign`, so no message can reach the main
//!   queue), assigns, and hands the queues over ([`Rebalance::Assigned`]);
//! - revoke: the dispatcher stops the partitions' tasks (each finishes the
//!   chain in flight) and answers; the context then commits synchronously.
//!
//! The rule of the loop: an offset is stored for commit only after the chain
//! it stands for has committed in PostgreSQL, and PostgreSQL (not Kafka) says
//! where a partition resumes.

use crate::ops::stats::Stats;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, OnceLock, Weak};
use tokio::sync::mpsc::UnboundedSender;
use tracing::{error, info, warn};

pub type ChainConsumer = BaseConsumer<ChainContext>;

/// A partition: (topic, partition).
pub type TopicPartition = (String, i32);

/// Where assigned partitions start, decided by the dispatcher.
#[derive(Debug, Default)]
pub struct Plan {
    /// The offset each partition starts at; a partition not listed starts
    /// where librdkafka would (Kafka's committed offset).
    pub offsets: Vec<(TopicPartition, Offset)>,
    /// Partitions that must not run, each with why (the ledger does not fit
    /// the log); they are assigned paused.
    pub stopped: Vec<(TopicPartition, String)>,
}

/// What the context reports to the dispatcher.
pub enum Rebalance {
    /// These partitions are being assigned: answer where each starts.
    Assign {
        parts: Vec<TopicPartition>,
        reply: SyncSender<Plan>,
    },
    /// These partitions are assigned, each with its own queue: run them.
    Assigned {
        queues: Vec<(TopicPartition, PartitionQueue<ChainContext>)>,
    },
    /// These partitions (every one, when `None`) are going: stop their
    /// tasks, then answer.
    Revoke {
        parts: Option<Vec<TopicPartition>>,
        done: SyncSender<()>,
    },
}

pub struct ChainContext {
    events: UnboundedSender<Rebalance>,
    /// `kafka.brokers`, named when they cannot be reached.
    brokers: String,
    /// `kafka.prefix`: the context hands the dispatcher the names as
    /// written, and gives librdkafka the names it knows.
    prefix: crate::config::Prefix,
    /// librdkafka's errors, said at a bounded rate.
    throttle: crate::kafka::Throttle,
    /// High watermarks from librdkafka's statistics go here (the lag metric).
    stats: Stats,
    /// Set right after the consumer is created; partition queues need the Arc.
    consumer: OnceLock<Weak<ChainConsumer>>,
}

impl ChainContext {
    pub fn new(
        events: UnboundedSender<Rebalance>,
        stats: Stats,
        brokers: &str,
        prefix: crate::config::Prefix,
    ) -> Self {
        ChainContext {
            events,
            brokers: brokers.to_string(),
            prefix,
            throttle: crate::kafka::Throttle::new(crate::kafka::ERROR_EVERY),
            stats,
            consumer: OnceLock::new(),
        }
    }

    /// `kafka.prefix`, for every name handed to librdkafka.
    pub fn prefix(&self) -> &crate::config::Prefix {
        &self.prefix
    }

    pub fn attach(&self, consumer: &Arc<ChainConsumer>) {
        let _ = self.consumer.set(Arc::downgrade(consumer));
    }

    /// Tells the dispatcher to stop the tasks of `parts` (all when `None`)
    /// and waits until they have finished their chains in flight. Returns
    /// at once when the dispatcher is gone.
    pub fn stop_partitions(&self, parts: Option<Vec<TopicPartition>>) {
        let (done, wait) = sync_channel(1);
        if self.events.send(Rebalance::Revoke { parts, done }).is_ok() {
            let _ = wait.recv();
        }
    }

    fn on_assign(&self, base: &ChainConsumer, tpl: &mut TopicPartitionList) {
        let parts = partitions(tpl, &self.prefix);
        let (reply, answer) = sync_channel(1);
        let plan = match self.events.send(Rebalance::Assign {
            parts: parts.clone(),
            reply,
        }) {
            Ok(()) => answer.recv().unwrap_or_default(),
            Err(_) => Plan::default(),
        };
        let wire = |topic: &str| self.prefix.wire(topic);
        for ((topic, partition), offset) in &plan.offsets {
            let _ = tpl.set_partition_offset(&wire(topic), *partition, *offset);
        }
        let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else {
            return;
        };
        // Split before assign: librdkafka then never forwards these
        // partitions' messages to the main queue.
        let queues: Vec<_> = parts
            .iter()
            .filter_map(|(t, p)| {
                Some((
                    (t.clone(), *p),
                    consumer.split_partition_queue(&wire(t), *p)?,
                ))
            })
            .collect();
        let assigned = match base.rebalance_protocol() {
            RebalanceProtocol::Cooperative => base.incremental_assign(tpl),
            _ => base.assign(tpl),
        };
        if let Err(e) = assigned {
            error!("cannot assign partitions: {e}");
            return;
        }
        for ((topic, partition), _) in &plan.stopped {
            let mut paused = TopicPartitionList::new();
            paused.add_partition(&wire(topic), *partition);
            let _ = base.pause(&paused);
        }
        let queues = queues
            .into_iter()
            .filter(|(tp, _)| !plan.stopped.iter().any(|(s, _)| s == tp))
            .collect();
        let _ = self.events.send(Rebalance::Assigned { queues });
    }

    fn on_revoke(&self, base: &ChainConsumer, tpl: &TopicPartitionList) {
        let parts = partitions(tpl, &self.prefix);
        let n = parts.len();
        self.stop_partitions(Some(parts));
        commit_sync(base);
        let _ = match base.rebalance_protocol() {
            RebalanceProtocol::Cooperative => base.incremental_unassign(tpl),
            _ => base.unassign(),
        };
        info!(partitions = n, "partitions revoked");
    }
}

impl ClientContext for ChainContext {
    /// librdkafka's statistics (every `statistics.interval.ms`): the high
    /// watermark of each partition, for the lag metric, with no extra
    /// requests to the brokers.
    /// Said at a bounded rate; an unreachable cluster is also what
    /// `/readyz` says until a broker is up again.
    fn error(&self, error: KafkaError, reason: &str) {
        crate::kafka::say_error(&self.throttle, &self.brokers, &error, reason);
        if crate::kafka::unreachable(&error) {
            self.stats.kafka_unreachable(Some(format!(
                "cannot reach the Kafka brokers {} (kafka.brokers): {error}: {reason}",
                self.brokers
            )));
        }
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        if statistics
            .brokers
            .values()
            .any(|b| b.nodeid >= 0 && b.state == "UP")
        {
            self.stats.kafka_unreachable(None);
        }
        for (name, topic) in &statistics.topics {
            for (id, p) in &topic.partitions {
                if *id >= 0 && p.hi_offset >= 0 {
                    self.stats
                        .high_watermark(self.prefix.user(name), *id, p.hi_offset);
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
                self.stop_partitions(None);
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

/// The partitions of `tpl`, by the names as written in the config.
fn partitions(tpl: &TopicPartitionList, prefix: &crate::config::Prefix) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| (prefix.user(e.topic()).to_string(), e.partition()))
        .collect()
}
