//! `Dispatcher`: config in, chains run, until `shutdown` resolves.
//!
//! It owns the partition tasks: the consumer's context reports each
//! rebalance on a channel, and [`Partitions`] plans where assigned
//! partitions start (from the ledger), starts a task per partition, and
//! stops them on revocation and shutdown.

use crate::config::Config;
use crate::kafka::assign::Planner;
use crate::kafka::context::{ChainConsumer, ChainContext, Rebalance, TopicPartition, commit_sync};
use crate::kafka::partition::{PartitionWorker, Shared};
use crate::ops::stats::Stats;
use crate::route::Router;
use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::consumer::Consumer;
use rdkafka::consumer::base_consumer::PartitionQueue;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::Weak;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct Dispatcher {
    config: Config,
    shared: Arc<Shared>,
    /// Where `/metrics` listens, once bound (`monitoring.listen`).
    http_addr: Arc<std::sync::OnceLock<std::net::SocketAddr>>,
}

impl Dispatcher {
    /// Builds the dispatcher; call from inside a multi-threaded tokio runtime.
    pub fn new(config: Config) -> anyhow::Result<Dispatcher> {
        let pool = crate::db::pool_for(
            &config.postgres.url,
            config.postgres.pool_size,
            &config.kafka.group_id,
        )?;
        let producer = crate::dead_letter::producer(&config.cluster())?;
        let shared = Arc::new(Shared {
            pool,
            router: Arc::new(Router::new(&config)),
            group: config.kafka.group_id.clone(),
            stats: Stats::default(),
            retries_default: crate::config::Retries::default(),
            producer,
            dead_letters: config.dead_letters.clone(),
            max_batch: config.postgres.max_batch,
            on_gap: config.kafka.on_gap,
            rejoin: Arc::new(Notify::new()),
        });
        Ok(Dispatcher {
            config,
            shared,
            http_addr: Arc::default(),
        })
    }

    /// Keeps every chain latency in the stats (for the benchmark).
    pub fn record_latencies(mut self) -> Self {
        Arc::get_mut(&mut self.shared)
            .expect("not running yet")
            .stats = Stats::recording_latencies();
        self
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats.clone()
    }

    /// Runs as a task until [`Background::stop`] (for the demo, the bench
    /// and tests; the service uses [`Dispatcher::run`] with its signals).
    pub fn spawn(self) -> Background {
        let stats = self.stats();
        let http_addr = self.http_addr.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(self.run(async {
            let _ = stopped.await;
        }));
        Background {
            stats,
            http_addr,
            stop,
            task,
        }
    }

    /// Consumes until every partition of the config's topics has been
    /// processed up to the high watermark it had at the start (a backfill, a
    /// test, a benchmark), re-drives the parked events whose dependency has
    /// arrived meanwhile, then stops as [`Dispatcher::run`] does. Fails when a
    /// partition stops on the way, or when `shutdown` resolves first.
    /// Meant for one instance: partitions another instance holds never drain here.
    pub async fn run_until_drained(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<Drained> {
        let marks = {
            let (cluster, topics) = (self.config.cluster(), self.config.topics());
            tokio::task::spawn_blocking(move || crate::kafka::high_watermarks_on(&cluster, &topics))
                .await??
        };
        let redriver = crate::recovery::Redriver {
            pool: self.shared.pool.clone(),
            router: self.shared.router.clone(),
            group: self.shared.group.clone(),
            stats: self.shared.stats.clone(),
        };
        let started = std::time::Instant::now();
        let running = self.spawn();
        let stats = running.stats.clone();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => {
                    running.stop().await?;
                    anyhow::bail!("stopped by a signal before the topics were drained");
                }
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
            match stats.snapshot().drain_state(&marks) {
                crate::ops::stats::DrainState::Done => break,
                crate::ops::stats::DrainState::Waiting => {}
                crate::ops::stats::DrainState::Stuck(why) => {
                    running.stop().await?;
                    anyhow::bail!("not drained: {}", why.join("; "));
                }
            }
        }
        // Stopped first: the recovery task's passes are over, so this last
        // pass is the only one and finds every parked event still parked
        // (none reported behind one that another pass holds mid-replay).
        running.stop().await?;
        let scope = crate::recovery::Scope {
            rows: crate::store::dead_letters::Selection {
                status: Some("parked".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let parked = redriver
            .pass(&scope, "replayed by run --until-drained")
            .await
            .map_err(|e| anyhow::anyhow!("re-driving parked events: {}", e.message))?;
        let elapsed = started.elapsed();
        Ok(Drained {
            snapshot: stats.snapshot(),
            elapsed,
            still_parked: parked.still_parked + parked.behind,
        })
    }

    /// Consumes until `shutdown` resolves, then finishes the chains in flight,
    /// commits the offsets and leaves the group.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        // First: a Kafka option librdkafka rejects fails the start at once.
        let (events, reports) = tokio::sync::mpsc::unbounded_channel();
        let consumer = Arc::new(self.consumer(events)?);
        consumer.context().attach(&consumer);
        let recovery_stop = CancellationToken::new();
        let monitor = Arc::new(crate::ops::metrics::Monitor::new(
            self.shared.stats.clone(),
            self.shared.pool.clone(),
            self.shared.group.clone(),
            self.config.monitoring.stuck_after.0,
        ));
        let mut side_tasks = Vec::new();
        if let Some(addr) = self.config.monitoring.listen_addr() {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (monitoring.listen)"))?;
            let bound = listener.local_addr()?;
            let _ = self.http_addr.set(bound);
            tracing::info!(%bound, "serving /metrics, /healthz and /readyz");
            side_tasks.push(tokio::spawn(crate::ops::metrics::serve(
                listener,
                monitor.clone(),
                recovery_stop.clone(),
            )));
        }
        side_tasks.push(tokio::spawn(crate::ops::alerts::watch(
            monitor,
            self.config.alerts.clone(),
            recovery_stop.clone(),
        )));
        side_tasks.push(tokio::spawn(watch_database(
            self.shared.pool.clone(),
            self.shared.stats.clone(),
            recovery_stop.clone(),
        )));
        // After the listener: /readyz answers while the brokers are asked.
        if self.config.dead_letters.create_topics {
            let pairs: Vec<(String, String)> = self
                .config
                .topics()
                .into_iter()
                .map(|t| {
                    let dlq = self.config.dead_letters.topic_for(&t);
                    (t, dlq)
                })
                .collect();
            let cluster = self.config.cluster();
            let ensured = crate::dead_letter::ensure_topics(&cluster, &pairs);
            // Unreachable brokers make this slow: a signal meanwhile ends
            // the start cleanly.
            tokio::select! {
                () = ensured => {}
                () = &mut shutdown => {
                    tracing::info!("stopped during start-up, before consuming");
                    recovery_stop.cancel();
                    for t in side_tasks {
                        let _ = t.await;
                    }
                    return Ok(());
                }
            }
        }
        let recovery = tokio::spawn(
            crate::recovery::Recovery {
                redriver: crate::recovery::Redriver {
                    pool: self.shared.pool.clone(),
                    router: self.shared.router.clone(),
                    group: self.shared.group.clone(),
                    stats: self.shared.stats.clone(),
                },
                url: self.config.postgres.url.clone(),
                interval: self.config.dead_letters.recovery_interval.0,
                max_replays: self
                    .config
                    .dead_letters
                    .recovery_attempts
                    .min(i32::MAX as u32) as i32,
            }
            .run(recovery_stop.clone()),
        );
        let partitions_stop = CancellationToken::new();
        let partitions = tokio::spawn(
            Partitions {
                shared: self.shared.clone(),
                consumer: Arc::downgrade(&consumer),
                planner: Planner {
                    pool: self.shared.pool.clone(),
                    group: self.shared.group.clone(),
                    stats: self.shared.stats.clone(),
                    start_from: self.config.kafka.start_from,
                    on_gap: self.config.kafka.on_gap,
                },
                tasks: HashMap::new(),
                topics: self.wire_topics(),
            }
            .serve(reports, partitions_stop.clone()),
        );
        let topics = self.config.topics();
        let wire = self.wire_topics();
        let topic_refs: Vec<&str> = wire.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topic_refs)
            .context("cannot subscribe")?;
        tracing::info!(group = self.config.kafka.group_id, topics = ?topics, "consuming");

        let stop = CancellationToken::new();
        let poller = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("pgchain-poll".into())
                .spawn(move || poll_until(consumer, stop))
                .context("cannot start the poll thread")?
        };
        (&mut shutdown).await;
        tracing::info!("shutting down: finishing the chains in flight");
        stop.cancel();
        tokio::task::spawn_blocking(move || poller.join())
            .await?
            .map_err(|_| anyhow::anyhow!("the poll thread panicked"))?;
        // The consumer is closed: no rebalance can come any more.
        partitions_stop.cancel();
        let _ = partitions.await;
        recovery_stop.cancel();
        let _ = recovery.await;
        for t in side_tasks {
            let _ = t.await;
        }
        tracing::info!("stopped");
        Ok(())
    }

    /// The topics to subscribe to, as the brokers know them.
    fn wire_topics(&self) -> Vec<String> {
        let prefix = self.config.prefix();
        self.config
            .topics()
            .iter()
            .map(|t| prefix.wire(t))
            .collect()
    }

    fn consumer(
        &self,
        events: tokio::sync::mpsc::UnboundedSender<Rebalance>,
    ) -> anyhow::Result<ChainConsumer> {
        let mut cc = ClientConfig::new();
        for (k, v) in self.config.kafka_options() {
            cc.set(k, v);
        }
        // Every start offset is explicit (the planner), so a reset only
        // happens when the log lost the next offset: librdkafka reports it
        // and the partition applies `kafka.on_gap`.
        cc.set("auto.offset.reset", "error");
        // Static membership: the id is this consumer's only, not the other
        // clients' (the producer and the admin client belong to no group).
        let instance = self
            .config
            .kafka
            .group_instance_id()
            .map_err(|e| anyhow::anyhow!("{}{e}", self.config.at(&["kafka", "instance_id"])))?;
        if let Some(id) = &instance {
            cc.set("group.instance.id", id);
            tracing::info!(instance_id = id, "static member of the consumer group");
        }
        cc.set("bootstrap.servers", &self.config.kafka.brokers)
            .set("group.id", self.config.wire_group())
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set(
                "statistics.interval.ms",
                self.config
                    .monitoring
                    .lag_interval
                    .0
                    .as_millis()
                    .to_string(),
            );
        // librdkafka echoes a rejected value, which may be a password.
        cc.create_with_context(ChainContext::new(
            events,
            self.shared.stats.clone(),
            &self.config.kafka.brokers,
            self.config.prefix(),
        ))
        .map_err(|e| {
            anyhow::anyhow!(
                "{} (in {})",
                crate::kafka::redact_kafka_error(e),
                self.config.path.display()
            )
        })
    }
}

/// What `run --until-drained` did.
pub struct Drained {
    pub snapshot: crate::ops::stats::Snapshot,
    pub elapsed: Duration,
    /// Parked events whose dependency has still not arrived.
    pub still_parked: u64,
}

impl std::fmt::Display for Drained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (table, total) = self.snapshot.pipeline_table();
        write!(f, "{table}")?;
        let secs = self.elapsed.as_secs_f64();
        writeln!(
            f,
            "\n{total} events in {secs:.2} s ({:.0} events/s); drained to the high watermarks seen at start",
            total as f64 / secs.max(1e-9)
        )?;
        if self.still_parked > 0 {
            writeln!(
                f,
                "{} event(s) still parked, waiting for their dependency: see `pgchain dlq list --status parked`",
                self.still_parked
            )?;
        }
        Ok(())
    }
}

/// A dispatcher running as a task.
pub struct Background {
    pub stats: Stats,
    http_addr: Arc<std::sync::OnceLock<std::net::SocketAddr>>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Background {
    /// The address `/metrics` listens on, once bound.
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.http_addr.get().copied()
    }

    /// Finishes the chains in flight, commits, and waits for the end.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await?
    }
}

/// While a partition waits on a transient error, asks the database every
/// second whether it answers; when it does, the waiting retries run at once
/// ([`crate::chain::retry::DATABASE_BACK`]).
async fn watch_database(pool: deadpool_postgres::Pool, stats: Stats, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !stats.waiting_on_transient() {
            continue;
        }
        let probe = async {
            let client = pool.get().await.ok()?;
            client.simple_query("select 1").await.ok()
        };
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(2), probe).await {
            tracing::debug!("the database answers again: waiting chains retry now");
            crate::chain::retry::DATABASE_BACK.notify_waiters();
        }
    }
}

/// The poll thread: serves rebalances until stopped, then drains and closes.
fn poll_until(consumer: Arc<ChainConsumer>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                // Partitions are split before assignment, so this is a bug.
                tracing::error!(
                    topic = rdkafka::Message::topic(&m),
                    partition = rdkafka::Message::partition(&m),
                    "message on the main queue; it will be consumed again after a restart"
                );
            }
            Some(Err(e)) => tracing::warn!("kafka: {e}"),
        }
    }
    consumer.context().stop_partitions(None);
    commit_sync(&consumer);
    // Dropping the last handle leaves the group (serving the final revoke).
    tracing::debug!(
        handles = Arc::strong_count(&consumer),
        "closing the consumer"
    );
    drop(consumer);
    tracing::debug!("consumer closed");
}

/// The partition tasks, started and stopped as the consumer's context reports.
struct Partitions {
    shared: Arc<Shared>,
    /// Weak: the poll thread's handle must be the last, so that dropping it
    /// closes the consumer and leaves the group.
    consumer: Weak<ChainConsumer>,
    planner: Planner,
    tasks: HashMap<TopicPartition, PartitionTask>,
    /// What the consumer subscribes to (a rejoin subscribes again), as the
    /// brokers know the names.
    topics: Vec<String>,
}

struct PartitionTask {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Partitions {
    async fn serve(mut self, mut reports: UnboundedReceiver<Rebalance>, stop: CancellationToken) {
        loop {
            let report = tokio::select! {
                r = reports.recv() => r,
                () = self.shared.rejoin.notified() => {
                    self.rejoin();
                    continue;
                }
                () = stop.cancelled() => None,
            };
            let Some(report) = report else { break };
            match report {
                Rebalance::Assign { parts, reply } => {
                    let plan = match self.consumer.upgrade() {
                        Some(consumer) => self.planner.plan(&consumer, parts).await,
                        None => Default::default(),
                    };
                    let _ = reply.send(plan);
                }
                Rebalance::Assigned { queues } => {
                    for (tp, queue) in queues {
                        self.start(tp, queue);
                    }
                }
                Rebalance::Revoke { parts, done } => {
                    self.stop(parts).await;
                    let _ = done.send(());
                }
            }
        }
        self.stop(None).await;
    }

    /// Leaves and rejoins the group: every partition is revoked and
    /// assigned again through the planner, which restarts a partition
    /// librdkafka stopped fetching (after a skipped gap) where the ledger
    /// says. The rebalance comes back through the context as any other.
    fn rejoin(&self) {
        let Some(consumer) = self.consumer.upgrade() else {
            return;
        };
        tracing::info!("rejoining the consumer group to restart a partition after a skipped gap");
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        consumer.unsubscribe();
        if let Err(e) = consumer.subscribe(&topics) {
            tracing::error!("cannot subscribe again after a skipped gap: {e}; restart pgchain");
        }
    }

    /// Starts the task that runs one partition's events, woken by librdkafka
    /// when the partition's queue fills.
    fn start(&mut self, tp: TopicPartition, mut queue: PartitionQueue<ChainContext>) {
        let Some(consumer) = self.consumer.upgrade() else {
            return;
        };
        let stop = CancellationToken::new();
        let wake = Arc::new(Notify::new());
        let waker = wake.clone();
        queue.set_nonempty_callback(move || waker.notify_one());
        let (topic, partition) = tp.clone();
        let worker = PartitionWorker {
            shared: self.shared.clone(),
            wire: consumer.context().prefix().wire(&topic),
            consumer,
            topic: topic.clone(),
            partition,
            stop: stop.clone(),
        };
        let stats = self.shared.stats.clone();
        let inner = tokio::spawn(worker.run(queue, wake));
        // A worker that panics must not leave its partition silently idle.
        let task = tokio::spawn(async move {
            if let Err(e) = inner.await {
                tracing::error!(
                    topic,
                    partition,
                    "partition worker crashed: {e}; restart pgchain"
                );
                stats.stuck(&topic, partition, format!("worker crashed: {e}"));
            }
        });
        self.tasks.insert(tp, PartitionTask { stop, task });
    }

    /// Stops the tasks of `parts` (all when `None`) and waits for each to
    /// finish the chain it is running.
    async fn stop(&mut self, parts: Option<Vec<TopicPartition>>) {
        let keys: Vec<TopicPartition> = match &parts {
            Some(p) => p.clone(),
            None => self.tasks.keys().cloned().collect(),
        };
        let stopped: Vec<PartitionTask> =
            keys.iter().filter_map(|k| self.tasks.remove(k)).collect();
        for t in &stopped {
            t.stop.cancel();
        }
        for t in stopped {
            let _ = t.task.await;
        }
        if let Some(parts) = parts {
            for (topic, partition) in &parts {
                self.shared.stats.revoked(topic, *partition);
            }
        }
    }
}
