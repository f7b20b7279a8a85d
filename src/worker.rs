//! One partition's worker: takes the messages waiting in its queue, routes
//! them, runs their chains (as a batch when there are several) and stores the
//! offset once they are durable. A message it cannot process stops the
//! partition there, so nothing after it is applied or committed.

use crate::chain::{self, Failure, Outcome};
use crate::consume::{ChainConsumer, ChainContext, Shared};
use crate::event::ChangeEvent;
use crate::route::{Message as RouteMessage, Route, RouteError, Routed};
use rdkafka::TopicPartitionList;
use rdkafka::consumer::Consumer;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, warn};

pub(crate) struct PartitionWorker {
    pub(crate) shared: Arc<Shared>,
    pub(crate) consumer: Arc<ChainConsumer>,
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) stop: CancellationToken,
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

/// A routed message waiting to run.
enum Item {
    Run(Box<ChangeEvent>, Arc<Route>),
    /// Nothing to run (a skipped tombstone); only its offset counts.
    Skip {
        pipeline: Option<String>,
        offset: i64,
    },
}

impl Item {
    fn offset(&self) -> i64 {
        match self {
            Item::Run(ev, _) => ev.kafka.offset,
            Item::Skip { offset, .. } => *offset,
        }
    }
}

impl PartitionWorker {
    pub(crate) async fn run(self, queue: PartitionQueue<ChainContext>, wake: Arc<Notify>) {
        while !self.stop.is_cancelled() {
            // Take what is already waiting, up to max_batch; never wait to fill.
            let mut msgs: Vec<OwnedMessage> = Vec::new();
            let mut failed = None;
            while msgs.len() < self.shared.max_batch {
                match queue.poll(Duration::ZERO) {
                    None => break,
                    Some(Ok(msg)) => msgs.push(msg.detach()),
                    Some(Err(KafkaError::PartitionEOF(_))) => break,
                    // librdkafka has moved past what it could not read (an
                    // unsupported compression, a corrupt batch): stop here
                    // rather than apply what follows.
                    Some(Err(e)) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            if !msgs.is_empty() && !self.run_messages(&msgs).await {
                break;
            }
            if let Some(e) = failed {
                let after = msgs.last().map(|m| m.offset());
                self.stuck(
                    after.map(|o| o + 1),
                    format!("cannot read the partition: {e}"),
                )
                .await;
                break;
            }
            if msgs.is_empty() {
                // librdkafka wakes us when the queue fills.
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = self.stop.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    }

    /// Routes and runs `msgs` in offset order; false when the worker must stop.
    async fn run_messages(&self, msgs: &[OwnedMessage]) -> bool {
        let mut items = Vec::with_capacity(msgs.len());
        for msg in msgs {
            let view = RouteMessage {
                topic: msg.topic(),
                partition: msg.partition(),
                offset: msg.offset(),
                timestamp: msg.timestamp().to_millis(),
                key: msg.key(),
                value: msg.payload(),
            };
            match self.shared.router.route(&view) {
                Ok(Routed::Event(ev, route)) => items.push(Item::Run(ev, route)),
                Ok(Routed::Skip {
                    pipeline,
                    reason: _,
                }) => items.push(Item::Skip {
                    pipeline,
                    offset: view.offset,
                }),
                Err(e @ (RouteError::Undecodable(_) | RouteError::Unroutable(_))) => {
                    // What came before it still runs; the partition stops here.
                    if !self.run_items(&items).await {
                        return false;
                    }
                    self.stuck(Some(view.offset), e.to_string()).await;
                    return false;
                }
            }
        }
        self.run_items(&items).await
    }

    /// Runs `items` as one batch when there are several; if the batch fails
    /// for a reason other than a transient one, runs them one by one so the
    /// failing event is found and reported exactly as on its own.
    async fn run_items(&self, items: &[Item]) -> bool {
        let runs = items.iter().filter(|i| matches!(i, Item::Run(..))).count();
        if runs >= 2 {
            match self.run_batch(items).await {
                Ok(()) => return true,
                Err(Failure::Interrupted) => return false,
                Err(Failure::Fatal(e)) => {
                    warn!(
                        topic = self.topic,
                        partition = self.partition,
                        "a batch failed ({e}); running its events one by one"
                    );
                }
            }
        }
        self.run_each(items).await
    }

    async fn run_batch(&self, items: &[Item]) -> Result<(), Failure> {
        let runs: Vec<(&ChangeEvent, &Route)> = items
            .iter()
            .filter_map(|i| match i {
                Item::Run(ev, route) => Some((ev.as_ref(), route.as_ref())),
                Item::Skip { .. } => None,
            })
            .collect();
        let started = std::time::Instant::now();
        let shared = &self.shared;
        let retried = |_: &chain::ChainError| shared.stats.retried();
        let outcomes = chain::retrying(shared.backoff, &self.stop, false, retried, || {
            chain::apply_batch_once(&shared.pool, &shared.group, &runs)
        })
        .await?;
        for ((_, route), outcome) in runs.iter().zip(outcomes) {
            shared.stats.latency(started.elapsed());
            self.count(&route.pipeline, outcome);
        }
        for item in items {
            self.count_skip(item);
        }
        if let Some(last) = items.last() {
            self.done(last.offset());
        }
        Ok(())
    }

    async fn run_each(&self, items: &[Item]) -> bool {
        for item in items {
            // Revocation or shutdown: stop between events, not after the batch.
            if self.stop.is_cancelled() {
                return false;
            }
            let Item::Run(ev, route) = item else {
                self.count_skip(item);
                self.done(item.offset());
                continue;
            };
            let span = tracing::info_span!(
                "event",
                topic = ev.kafka.topic,
                partition = ev.kafka.partition,
                offset = ev.kafka.offset,
                pipeline = route.pipeline
            );
            match self.run_one(ev, route).instrument(span).await {
                Step::Done => self.done(ev.kafka.offset),
                Step::Interrupted => return false,
                Step::Stuck(why) => {
                    self.stuck(Some(ev.kafka.offset), why).await;
                    return false;
                }
            }
        }
        true
    }

    fn count_skip(&self, item: &Item) {
        if let Item::Skip {
            pipeline: Some(p), ..
        } = item
        {
            self.shared.stats.record(p, |c| c.tombstones += 1);
        }
    }

    async fn run_one(&self, ev: &ChangeEvent, route: &Route) -> Step {
        let started = std::time::Instant::now();
        let shared = &self.shared;
        // Missing dependencies are retried too, until parking exists.
        let retried = |_: &chain::ChainError| shared.stats.retried();
        let result = chain::retrying(shared.backoff, &self.stop, true, retried, || {
            chain::apply_once(&shared.pool, &shared.group, ev, route)
        })
        .await;
        match result {
            Ok(outcome) => {
                shared.stats.latency(started.elapsed());
                self.count(&route.pipeline, outcome);
                Step::Done
            }
            Err(Failure::Interrupted) => Step::Interrupted,
            Err(Failure::Fatal(e)) => Step::Stuck(format!("pipeline {}: {e}", route.pipeline)),
        }
    }

    fn count(&self, pipeline: &str, outcome: Outcome) {
        self.shared.stats.record(pipeline, |c| match outcome {
            Outcome::Applied => c.applied += 1,
            Outcome::Filtered => c.filtered += 1,
            Outcome::Skipped => c.already_applied += 1,
        });
    }

    /// Everything up to `offset` is durable in PostgreSQL: let Kafka know.
    fn done(&self, offset: i64) {
        if let Err(e) = self
            .consumer
            .store_offset(&self.topic, self.partition, offset)
        {
            warn!(
                topic = self.topic,
                partition = self.partition,
                "cannot store offset: {e}"
            );
        }
        self.shared
            .stats
            .processed(&self.topic, self.partition, offset);
    }

    async fn stuck(&self, offset: Option<i64>, why: String) {
        error!(
            topic = self.topic,
            partition = self.partition,
            offset = ?offset,
            "partition stopped: {why}; nothing after this offset is applied or committed until it is fixed and pgchain restarts"
        );
        self.shared.stats.stuck(&self.topic, self.partition, why);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, self.partition);
        let _ = self.consumer.pause(&tpl);
        self.stop.cancelled().await;
    }
}
