//! One partition's worker: takes the messages waiting in its queue, routes
//! them, runs their chains (as a batch when there are several) and stores the
//! offset once they are durable.
//!
//! Failures, by class: a transient error is retried forever with the
//! partition paused; a missing dependency (PGW01) a few times, then the event
//! is parked, and later events of its key park behind it; a data error a few
//! times, then the event is dead-lettered; an undecodable or unroutable
//! message is dead-lettered at once. Parked and dead events leave through
//! [`crate::dead_letter`], and the partition flows on. Only what the
//! dead-letter path itself cannot do (its table is missing) stops the
//! partition.

use crate::chain::{self, ChainError, ErrorClass, Failure, Outcome};
use crate::config::OnGap;
use crate::dead_letter;
use crate::event::ChangeEvent;
use crate::kafka::context::{ChainConsumer, ChainContext};
use crate::kafka::gap::Gap;
use crate::route::{Message as RouteMessage, Route, Routed};
use crate::store::dead_letters::{self as rows, Class, DeadLetter, Recorded, Status};
use rdkafka::TopicPartitionList;
use rdkafka::consumer::Consumer;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::types::RDKafkaErrorCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, warn};

/// What every partition task shares.
pub struct Shared {
    pub pool: deadpool_postgres::Pool,
    pub router: Arc<crate::route::Router>,
    pub group: String,
    pub stats: crate::ops::stats::Stats,
    /// Retry settings for pgchain's own writes (dead letters).
    pub retries_default: crate::config::Retries,
    /// Producer of dead-letter records.
    pub producer: crate::dead_letter::DeadLetterProducer,
    pub dead_letters: crate::config::DeadLetters,
    /// Most events of one partition run in one transaction.
    pub max_batch: usize,
    /// What a gap in the log does (`kafka.on_gap`).
    pub on_gap: crate::config::OnGap,
    /// Asks the dispatcher to rejoin the group (a partition librdkafka
    /// stopped fetching needs a new assignment).
    pub rejoin: Arc<Notify>,
}

pub(crate) struct PartitionWorker {
    pub(crate) shared: Arc<Shared>,
    pub(crate) consumer: Arc<ChainConsumer>,
    /// The topic as written in the config (ledger, dead letters, logs).
    pub(crate) topic: String,
    /// The topic as the brokers know it (`kafka.prefix` applied).
    pub(crate) wire: String,
    pub(crate) partition: i32,
    pub(crate) stop: CancellationToken,
}

/// Why taking messages from the queue stopped early.
enum Failed {
    /// The next offset is gone from the log.
    Gap(KafkaError),
    /// librdkafka moved past what it could not read.
    Skipped(KafkaError),
}

/// What happened to one message.
enum Step {
    /// Applied, filtered, skipped, parked or dead-lettered: the offset may be stored.
    Done,
    /// Stopped while retrying; the message will be consumed again.
    Interrupted,
    /// Cannot be processed nor dead-lettered; the partition stops here.
    Stuck(String),
}

/// A routed message waiting to run; `msg` indexes the polled messages.
enum Item {
    Run(Box<ChangeEvent>, Arc<Route>, usize),
    /// Nothing to run (a skipped tombstone); only its offset counts.
    Skip {
        pipeline: Option<String>,
        offset: i64,
        /// A JSON `null` value rather than a Kafka tombstone.
        null_value: bool,
    },
    /// Undecodable or unroutable: dead-lettered at once.
    Reject {
        msg: usize,
        pipeline: Option<String>,
        class: Class,
        why: String,
    },
}

impl PartitionWorker {
    pub(crate) async fn run(self, queue: PartitionQueue<ChainContext>, wake: Arc<Notify>) {
        // A crash may have left dead letters written but not yet on their
        // topic; they go out before anything after them is committed.
        if !self.publish_pending().await {
            return;
        }
        // The offset after the last message taken, once there is one.
        let mut next: Option<i64> = None;
        while !self.stop.is_cancelled() {
            // Take what is already waiting, up to max_batch; never wait to fill.
            let mut msgs: Vec<OwnedMessage> = Vec::new();
            let mut failed = None;
            while msgs.len() < self.shared.max_batch {
                match queue.poll(Duration::ZERO) {
                    None => break,
                    Some(Ok(msg)) => msgs.push(msg.detach()),
                    Some(Err(KafkaError::PartitionEOF(_))) => break,
                    // The log no longer holds the next offset (retention
                    // deleted it first): librdkafka reports it instead of
                    // jumping on, and `kafka.on_gap` decides.
                    Some(Err(
                        e @ KafkaError::MessageConsumption(
                            RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange,
                        ),
                    )) => {
                        failed = Some(Failed::Gap(e));
                        break;
                    }
                    // librdkafka has moved past what it could not read (an
                    // unsupported compression, a corrupt batch, an offset
                    // reset): stop here rather than apply what follows.
                    Some(Err(e)) if skips_data(&e) => {
                        failed = Some(Failed::Skipped(e));
                        break;
                    }
                    // A failed fetch (timeout, leader change): librdkafka
                    // fetches again from the same offset.
                    Some(Err(e)) => {
                        warn!(
                            topic = self.topic,
                            partition = self.partition,
                            "fetch failed, librdkafka retries: {e}"
                        );
                        break;
                    }
                }
            }
            if !msgs.is_empty() && !self.run_messages(&msgs).await {
                break;
            }
            if let Some(last) = msgs.last() {
                next = Some(last.offset() + 1);
            }
            match failed {
                None => {}
                Some(Failed::Gap(e)) => {
                    self.gap(next, &e).await;
                    break;
                }
                Some(Failed::Skipped(e)) => {
                    self.stuck(next, format!("cannot read the partition: {e}"))
                        .await;
                    break;
                }
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

    /// The log lost the next offset: stops the partition with the gap named
    /// (`on_gap: stop`), or records it, moves the ledger past it and asks
    /// for a new assignment (`on_gap: skip`). Either way this task ends.
    async fn gap(&self, taken: Option<i64>, e: &KafkaError) {
        let (topic, partition) = (self.wire.clone(), self.partition);
        let consumer = self.consumer.clone();
        let marks = tokio::task::spawn_blocking(move || {
            consumer.fetch_watermarks(&topic, partition, Duration::from_secs(10))
        })
        .await;
        // The ledger knows where this partition stands when nothing was taken
        // since the assignment; a partition it never saw starts at 0.
        let applied = self.applied_position().await;
        let next = taken.max(applied.map(|a| a + 1)).unwrap_or(0);
        let (low, high) = match marks {
            Ok(Ok(marks)) => marks,
            Ok(Err(w)) => {
                self.stuck(
                    Some(next),
                    format!("cannot read the partition: {e}; and cannot read its watermarks: {w}"),
                )
                .await;
                return;
            }
            Err(_) => return,
        };
        let Some(gap) = Gap::between(&self.topic, self.partition, next, low) else {
            self.stuck(
                Some(next),
                format!("cannot read the partition at offset {next} (log {low}..{high}): {e}"),
            )
            .await;
            return;
        };
        if self.shared.on_gap == OnGap::Stop {
            self.stuck(Some(next), gap.stop_reason()).await;
            return;
        }
        let shared = &self.shared;
        if let Err(why) = gap.skip(&shared.pool, &shared.group, &shared.stats).await {
            self.stuck(
                Some(next),
                format!("{}; recording the skip failed: {why}", gap.stop_reason()),
            )
            .await;
            return;
        }
        // librdkafka has stopped fetching this partition and only a new
        // assignment restarts it: the dispatcher rejoins the group, and the
        // planner starts the partition after the gap the ledger now holds.
        self.done(gap.to);
        self.shared.rejoin.notify_one();
    }

    /// The ledger's position for this partition (None: none, or unreadable).
    async fn applied_position(&self) -> Option<i64> {
        let client = self.shared.pool.get().await.ok()?;
        let parts = [(self.topic.clone(), self.partition)];
        crate::store::ledger::applied(&client, &self.shared.group, &parts)
            .await
            .ok()?
            .get(&parts[0])
            .copied()
    }

    /// Publishes dead letter `id` to its topic and marks it published;
    /// false when stopped first.
    async fn publish(&self, id: i64, dl: &DeadLetter) -> bool {
        let shared = &self.shared;
        dead_letter::publish_until_done(
            &shared.pool,
            &shared.producer,
            &shared.group,
            &self.stop,
            id,
            dl,
        )
        .await
    }

    /// Publishes this partition's dead letters that a crash left unpublished.
    async fn publish_pending(&self) -> bool {
        let shared = &self.shared;
        let pending = chain::retrying(
            &transient_only(&shared.retries_default),
            &self.stop,
            |_, _| {},
            || rows::unpublished(&shared.pool, &shared.group, &self.topic, self.partition),
        )
        .await;
        let Ok(pending) = pending else {
            return false;
        };
        for (id, dl) in pending {
            warn!(
                id,
                topic = dl.topic,
                partition = dl.partition,
                offset = dl.offset,
                "publishing a dead letter a restart left unpublished"
            );
            if !self.publish(id, &dl).await {
                return false;
            }
        }
        true
    }

    /// Routes and runs `msgs` in offset order; false when the worker must stop.
    async fn run_messages(&self, msgs: &[OwnedMessage]) -> bool {
        let mut items = Vec::with_capacity(msgs.len());
        for (i, msg) in msgs.iter().enumerate() {
            let headers: Vec<(&str, Option<&[u8]>)> = msg
                .headers()
                .map(|h| {
                    use rdkafka::message::Headers as _;
                    h.iter().map(|h| (h.key, h.value)).collect()
                })
                .unwrap_or_default();
            let view = RouteMessage {
                topic: &self.topic,
                partition: msg.partition(),
                offset: msg.offset(),
                timestamp: msg.timestamp().to_millis(),
                key: msg.key(),
                value: msg.payload(),
                headers: &headers,
            };
            // Schemas the message names come first: a registry that does
            // not answer holds the partition, as a database outage does.
            if self.shared.router.has_registry() && !self.fetch_schemas(&view).await {
                return false;
            }
            match self.shared.router.route(&view) {
                Ok(Routed::Event(ev, route)) => items.push(Item::Run(ev, route, i)),
                Ok(Routed::Skip { pipeline, reason }) => items.push(Item::Skip {
                    pipeline,
                    offset: view.offset,
                    null_value: reason == crate::route::NULL_VALUE,
                }),
                Err(e) => items.push(Item::Reject {
                    msg: i,
                    pipeline: self
                        .shared
                        .router
                        .sole_pipeline(view.topic)
                        .map(String::from),
                    class: Class::of_route(&e),
                    why: e.to_string(),
                }),
            }
        }
        let pipelines = items.iter().map(|item| match item {
            Item::Run(_, route, _) => route.pipeline.as_str(),
            Item::Skip { pipeline, .. } | Item::Reject { pipeline, .. } => {
                pipeline.as_deref().unwrap_or("-")
            }
        });
        self.shared.stats.consumed(&self.topic, pipelines);
        if !self.run_items(msgs, &items).await {
            return false;
        }
        // Skipped tombstones run nothing, so the ledger only moves past them
        // with the next event; one that ends the batch moves it now.
        if let Some(Item::Skip { offset, .. }) = items.last() {
            self.advance_past(*offset).await;
        }
        true
    }

    /// Fetches the schemas `msg` names, retrying while the registry does
    /// not answer (the partition paused, with the transient backoff; the
    /// database coming back does not hurry it); false when stopped.
    async fn fetch_schemas(&self, msg: &RouteMessage<'_>) -> bool {
        let policy = self.shared.retries_default.transient;
        let mut backoff = chain::Backoff::new(policy.backoff.0, policy.max_backoff.0);
        let paused = self.pause_on_transient();
        let mut attempt = 0u32;
        let fetched = loop {
            let error: ChainError = match self.shared.router.fetch_schemas(msg).await {
                Ok(()) => break true,
                Err(e) => e.into(),
            };
            attempt += 1;
            let delay = backoff.next_delay();
            warn!(
                topic = self.topic,
                partition = self.partition,
                offset = msg.offset,
                attempt,
                retry_in_ms = delay.as_millis() as u64,
                "waiting for the schema registry: {error}"
            );
            paused.retried(&error, attempt);
            tokio::select! {
                _ = self.stop.cancelled() => break false,
                _ = tokio::time::sleep(delay) => {}
            }
        };
        paused.resume();
        fetched
    }

    async fn advance_past(&self, offset: i64) {
        let shared = &self.shared;
        let advanced = async {
            let client = shared.pool.get().await.map_err(|e| e.to_string())?;
            crate::store::ledger::advance(
                &client,
                &shared.group,
                &self.topic,
                self.partition,
                offset,
            )
            .await
            .map_err(|e| chain::describe(&e))
        };
        if let Err(e) = advanced.await {
            // Only the shown position lags: the tombstone is skipped again
            // if it comes back.
            debug!(
                topic = self.topic,
                partition = self.partition,
                offset,
                "cannot move the ledger past a skipped tombstone: {e}"
            );
        }
    }

    /// Runs `items` as one batch when there are several; if the batch fails
    /// for a reason other than a transient one, runs them one by one so the
    /// failing event is found and handled exactly as on its own.
    async fn run_items(&self, msgs: &[OwnedMessage], items: &[Item]) -> bool {
        let runs = items.iter().filter(|i| matches!(i, Item::Run(..))).count();
        let rejects = items.iter().any(|i| matches!(i, Item::Reject { .. }));
        if runs >= 2 && !rejects {
            match self.run_batch(items).await {
                Ok(()) => return true,
                Err(Failure::Interrupted) => return false,
                Err(Failure::GaveUp { error, .. }) => {
                    // A key waiting for a row, or parked: the usual path of
                    // out-of-order topics, not worth a warning.
                    let waits = error.sqlstate.as_deref() == Some("PGW02")
                        || error.class == ErrorClass::DependencyMissing
                        || conflict(&error);
                    if waits {
                        debug!(
                            topic = self.topic,
                            partition = self.partition,
                            "a batch holds a key that waits or conflicts with another transaction ({error}); running its events one by one"
                        );
                    } else {
                        warn!(
                            topic = self.topic,
                            partition = self.partition,
                            "a batch failed ({error}); running its events one by one"
                        );
                    }
                }
            }
        }
        self.run_each(msgs, items).await
    }

    async fn run_batch(&self, items: &[Item]) -> Result<(), Failure> {
        let runs: Vec<(&ChangeEvent, &Route)> = items
            .iter()
            .filter_map(|i| match i {
                Item::Run(ev, route, _) => Some((ev.as_ref(), route.as_ref())),
                _ => None,
            })
            .collect();
        let started = std::time::Instant::now();
        let shared = &self.shared;
        // Only transient errors are retried as a batch; anything else is
        // found and handled event by event.
        let retries = transient_only(&runs[0].1.retries);
        let paused = self.pause_on_transient();
        shared.stats.in_flight(runs.len() as i64);
        let outcomes = chain::retrying(
            &retries,
            &self.stop,
            |e, n| paused.retried(e, n),
            || async {
                chain::apply_batch_once(&shared.pool, &shared.group, &runs)
                    .await
                    .map_err(|mut e| {
                        // A batch holds every lock its events took until it
                        // commits. One that conflicts with another transaction
                        // runs its events one by one instead, each taking its
                        // locks in order (identity_link's clusters).
                        if conflict(&e) {
                            e.class = ErrorClass::Data;
                        }
                        e
                    })
            },
        )
        .await;
        shared.stats.in_flight(-(runs.len() as i64));
        paused.resume();
        let outcomes = outcomes?;
        let took = started.elapsed();
        for ((_, route), ran) in runs.iter().zip(outcomes) {
            shared
                .stats
                .timed(&route.pipeline, took, &route.steps, &ran.step_ms);
            self.count(&route.pipeline, ran.outcome);
        }
        for item in items {
            self.count_skip(item);
        }
        if let Some(last) = items.last() {
            self.done(self.offset_of(last));
        }
        Ok(())
    }

    fn offset_of(&self, item: &Item) -> i64 {
        match item {
            Item::Run(ev, _, _) => ev.kafka.offset,
            Item::Skip { offset, .. } => *offset,
            Item::Reject { .. } => unreachable!("rejects run one by one"),
        }
    }

    async fn run_each(&self, msgs: &[OwnedMessage], items: &[Item]) -> bool {
        for item in items {
            // Revocation or shutdown: stop between events, not after the batch.
            if self.stop.is_cancelled() {
                return false;
            }
            let (step, offset) = match item {
                Item::Skip { offset, .. } => {
                    self.count_skip(item);
                    (Step::Done, *offset)
                }
                Item::Reject {
                    msg,
                    pipeline,
                    class,
                    why,
                } => {
                    let msg = &msgs[*msg];
                    error!(
                        topic = self.topic,
                        partition = self.partition,
                        offset = msg.offset(),
                        "{why}; dead-lettered"
                    );
                    let mut dl = DeadLetter::of(
                        msg,
                        &self.topic,
                        self.shared.dead_letters.topic_for(&self.topic),
                    );
                    dl.pipeline = pipeline.clone();
                    dl.class = *class;
                    dl.message = why.clone();
                    dl.attempts = 1;
                    (self.leave(dl).await, msg.offset())
                }
                Item::Run(ev, route, msg) => {
                    let span = tracing::info_span!(
                        "event",
                        topic = ev.kafka.topic,
                        partition = ev.kafka.partition,
                        offset = ev.kafka.offset,
                        pipeline = route.pipeline
                    );
                    let step = self.run_one(ev, route, &msgs[*msg]).instrument(span).await;
                    (step, ev.kafka.offset)
                }
            };
            match step {
                Step::Done => self.done(offset),
                Step::Interrupted => return false,
                Step::Stuck(why) => {
                    self.stuck(Some(offset), why).await;
                    return false;
                }
            }
        }
        true
    }

    fn count_skip(&self, item: &Item) {
        let Item::Skip {
            pipeline,
            offset,
            null_value,
        } = item
        else {
            return;
        };
        if *null_value {
            // A producer bug more often than a deliberate tombstone: said,
            // at a bounded rate per topic.
            static SAID: std::sync::LazyLock<crate::kafka::Throttle> =
                std::sync::LazyLock::new(|| crate::kafka::Throttle::new(crate::kafka::ERROR_EVERY));
            if let Some(unsaid) = SAID.admit(&self.topic) {
                warn!(
                    topic = self.topic,
                    partition = self.partition,
                    offset,
                    "skipped a message whose value is JSON null (or a null payload), not a Kafka tombstone; \
                     handled as a tombstone{}",
                    if unsaid > 0 {
                        format!(
                            " ({unsaid} more on this topic in the last {} s)",
                            crate::kafka::ERROR_EVERY.as_secs()
                        )
                    } else {
                        String::new()
                    }
                );
            }
        }
        if let Some(p) = pipeline {
            self.shared.stats.record(p, |c| {
                if *null_value {
                    c.null_values += 1;
                } else {
                    c.tombstones += 1;
                }
            });
        }
    }

    async fn run_one(&self, ev: &ChangeEvent, route: &Route, msg: &OwnedMessage) -> Step {
        let started = std::time::Instant::now();
        let shared = &self.shared;
        loop {
            let paused = self.pause_on_transient();
            shared.stats.in_flight(1);
            let result = chain::retrying(
                &route.retries,
                &self.stop,
                |e, n| paused.retried(e, n),
                || chain::apply_once(&shared.pool, &shared.group, ev, route),
            )
            .await;
            shared.stats.in_flight(-1);
            paused.resume();
            // Built only when the event leaves: it copies the message.
            let of =
                || DeadLetter::of(msg, &self.topic, shared.dead_letters.topic_for(&self.topic));
            let dl = match result {
                Ok(chain::Ran {
                    outcome: Outcome::Behind,
                    ..
                }) => {
                    let mut dl = of();
                    dl.status = Status::Parked;
                    dl.class = Class::Queued;
                    dl.message = "an earlier event of this key is parked".into();
                    dl.attempts = 1;
                    dl
                }
                Ok(ran) => {
                    shared.stats.timed(
                        &route.pipeline,
                        started.elapsed(),
                        &route.steps,
                        &ran.step_ms,
                    );
                    self.count(&route.pipeline, ran.outcome);
                    return Step::Done;
                }
                Err(Failure::Interrupted) => return Step::Interrupted,
                Err(Failure::GaveUp { error, attempts }) => {
                    let dl = of().failed(&error, attempts);
                    if dl.status == Status::Parked {
                        warn!(awaits = dl.awaits, attempts, "parked: {error}");
                    } else {
                        error!(
                            attempts,
                            "dead-lettered: pipeline {}: {error}", route.pipeline
                        );
                    }
                    dl
                }
            };
            let mut dl = dl;
            dl.pipeline = Some(route.pipeline.clone());
            dl.entity_key = Some(serde_json::Value::Object(ev.key.clone()));
            match self.leave_or_rerun(dl).await {
                Some(step) => return step,
                // The parked events ahead were replayed meanwhile: run it.
                None => continue,
            }
        }
    }

    /// Dead-letters or parks `dl`; `None` when it turned out not to need it.
    async fn leave_or_rerun(&self, dl: DeadLetter) -> Option<Step> {
        let shared = &self.shared;
        let recorded = chain::retrying(
            &transient_only(&shared.retries_default),
            &self.stop,
            |_, _| shared.stats.retried(),
            || rows::record(&shared.pool, &shared.group, &dl),
        )
        .await;
        let (id, published) = match recorded {
            Ok(Recorded::Row { id, published }) => (id, published),
            Ok(Recorded::AheadGone) => return None,
            Err(Failure::Interrupted) => return Some(Step::Interrupted),
            Err(Failure::GaveUp { error, .. }) => {
                let hint = if error.class == ErrorClass::Deployment {
                    "; is the pgchain schema migrated (`pgchain migrate`)?"
                } else {
                    ""
                };
                return Some(Step::Stuck(format!(
                    "cannot write the dead letter of this event: {error}{hint}"
                )));
            }
        };
        if !published && !self.publish(id, &dl).await {
            return Some(Step::Interrupted);
        }
        let pipeline = dl.pipeline.as_deref().unwrap_or("-");
        shared.stats.record(pipeline, |c| match dl.status {
            Status::Parked => c.parked += 1,
            Status::Dead => c.dead_lettered += 1,
        });
        Some(Step::Done)
    }

    async fn leave(&self, dl: DeadLetter) -> Step {
        self.leave_or_rerun(dl).await.unwrap_or(Step::Done)
    }

    fn count(&self, pipeline: &str, outcome: Outcome) {
        self.shared.stats.record(pipeline, |c| match outcome {
            Outcome::Applied => c.applied += 1,
            Outcome::Filtered => c.filtered += 1,
            Outcome::Skipped => c.already_applied += 1,
            Outcome::Behind => {}
        });
    }

    /// Pauses fetching for this partition while a transient error is retried.
    fn pause_on_transient(&self) -> PauseGuard<'_> {
        PauseGuard {
            worker: self,
            paused: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Everything up to `offset` is durable in PostgreSQL: let Kafka know.
    fn done(&self, offset: i64) {
        if let Err(e) = self
            .consumer
            .store_offset(&self.wire, self.partition, offset)
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
        tpl.add_partition(&self.wire, self.partition);
        let _ = self.consumer.pause(&tpl);
        self.stop.cancelled().await;
    }

    fn set_paused(&self, pause: bool) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.wire, self.partition);
        let result = if pause {
            self.consumer.pause(&tpl)
        } else {
            self.consumer.resume(&tpl)
        };
        if let Err(e) = result {
            warn!(
                topic = self.topic,
                partition = self.partition,
                pause,
                "cannot pause or resume the partition: {e}"
            );
        }
    }
}

/// Pauses the partition at the first transient retry, resumes it after.
struct PauseGuard<'w> {
    worker: &'w PartitionWorker,
    paused: std::sync::atomic::AtomicBool,
}

impl PauseGuard<'_> {
    fn retried(&self, e: &ChainError, _attempt: u32) {
        let w = self.worker;
        w.shared.stats.retried_class(e.class);
        if e.class.retried_forever() {
            if !self.paused.swap(true, std::sync::atomic::Ordering::Relaxed) {
                w.set_paused(true);
            }
            // Said on /readyz and in the stuck alert.
            let why = match e.class {
                ErrorClass::Deployment => format!(
                    "waiting for a deployment: {e}; run `pgchain migrate` (or the migration that creates it)"
                ),
                _ => format!("{}: {e}", crate::ops::stats::TRANSIENT_WAIT),
            };
            w.shared.stats.blocked(&w.topic, w.partition, why);
        }
    }

    fn resume(&self) {
        if self
            .paused
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            self.worker.set_paused(false);
            let w = self.worker;
            w.shared.stats.unblocked(&w.topic, w.partition);
        }
    }
}

/// `retries` with every class but transient given up at the first error.
/// A serialization failure or a deadlock: transient for one event, but a
/// batch that meets one is better run event by event.
fn conflict(e: &chain::ChainError) -> bool {
    e.sqlstate.as_deref().is_some_and(chain::is_conflict)
}

fn transient_only(retries: &crate::config::Retries) -> crate::config::Retries {
    let mut r = *retries;
    r.dependency.attempts = 1;
    r.data.attempts = 1;
    r
}

/// True for a consumption error after which librdkafka has skipped messages
/// (corrupt or unreadable data), so carrying on would
/// silently lose them.
fn skips_data(e: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode::*;
    matches!(
        e,
        KafkaError::MessageConsumption(
            BadMessage
                | BadCompression
                | InvalidMessage
                | MessageSizeTooLarge
                | UnsupportedCompressionType
                | UnsupportedVersion
        ) | KafkaError::MessageConsumptionFatal(_)
    )
}
