//! `/metrics`, `/healthz` and `/readyz`.
//!
//! Counters and gauges are read from [`Stats`] at each scrape (a Prometheus
//! collector), so the dispatcher counts each thing once; latency histograms
//! are observed as chains run. The exposition format is prometheus-client's.

use crate::ops::stats::Stats;
use deadpool_postgres::Pool;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Open rows of `pgchain.dead_letters` by (pipeline, status), refreshed by
/// the monitor loop.
pub type OpenDeadLetters = Arc<Mutex<BTreeMap<(String, String), i64>>>;

/// What the HTTP endpoints read.
pub struct Monitor {
    pub stats: Stats,
    pub pool: Pool,
    pub group: String,
    pub stuck_after: Duration,
    pub dead_letters: OpenDeadLetters,
    registry: Registry,
}

impl Monitor {
    pub fn new(stats: Stats, pool: Pool, group: String, stuck_after: Duration) -> Monitor {
        let dead_letters = OpenDeadLetters::default();
        let mut registry = Registry::default();
        registry.register(
            "pgchain_chain_duration_seconds",
            "Time from the start of a chain (or of its batch) to its commit",
            stats.histograms.chain.clone(),
        );
        registry.register(
            "pgchain_step_duration_seconds",
            "Time one step of a chain took inside PostgreSQL",
            stats.histograms.step.clone(),
        );
        registry.register_collector(Box::new(StatsCollector {
            stats: stats.clone(),
            pool: pool.clone(),
            stuck_after,
            dead_letters: dead_letters.clone(),
        }));
        Monitor {
            stats,
            pool,
            group,
            stuck_after,
            dead_letters,
            registry,
        }
    }

    /// The Prometheus text format of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Ok when partitions are assigned, the database answers, and no
    /// partition has been stuck longer than `stuck_after`; else every reason.
    pub async fn readiness(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        let snap = self.stats.snapshot();
        if snap.assigned.is_empty() {
            problems.push("no partitions assigned".to_string());
        }
        if let Some(why) = &snap.kafka_unreachable {
            problems.push(why.clone());
        }
        for Stuck {
            topic,
            partition,
            since,
            why,
        } in stuck_longer_than(&snap, self.stuck_after)
        {
            problems.push(format!(
                "{topic}/{partition} stuck for {}s: {why}",
                since.as_secs()
            ));
        }
        let ping = async {
            let client = self.pool.get().await.map_err(|e| e.to_string())?;
            client
                .simple_query("select 1")
                .await
                .map_err(|e| e.to_string())?;
            Ok::<(), String>(())
        };
        match tokio::time::timeout(Duration::from_secs(2), ping).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => problems.push(format!("database unreachable: {e}")),
            Err(_) => problems.push("database unreachable: no answer within 2s".to_string()),
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// Reads the open dead letters of the group into the gauge.
    pub async fn refresh_dead_letters(&self) -> Result<BTreeMap<(String, String), i64>, String> {
        let client = self.pool.get().await.map_err(|e| e.to_string())?;
        let open = crate::store::dead_letters::open_counts(&client, &self.group)
            .await
            .map_err(|e| e.to_string())?;
        let mut map: BTreeMap<(String, String), i64> = BTreeMap::new();
        for o in open {
            let pipeline = o.pipeline.unwrap_or_else(|| "-".to_string());
            *map.entry((pipeline, o.status.as_str().to_string()))
                .or_default() += o.count;
        }
        *self.dead_letters.lock().expect("dead letters lock") = map.clone();
        Ok(map)
    }
}

/// A partition stopped, or retrying without progress, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stuck {
    pub topic: String,
    pub partition: i32,
    /// How long it has been so.
    pub since: Duration,
    pub why: String,
}

/// Partitions stopped, or retrying without progress, for longer than `after`.
pub fn stuck_longer_than(snap: &crate::ops::stats::Snapshot, after: Duration) -> Vec<Stuck> {
    let now = Instant::now();
    let mut out: Vec<Stuck> = snap
        .blocked_since
        .iter()
        .map(|(tp, since)| (tp, now.duration_since(*since)))
        .filter(|(_, d)| *d >= after)
        .map(|((topic, partition), since)| Stuck {
            topic: topic.clone(),
            partition: *partition,
            since,
            why: snap
                .stuck
                .get(&(topic.clone(), *partition))
                .or_else(|| snap.blocked_why.get(&(topic.clone(), *partition)))
                .cloned()
                .unwrap_or_else(|| crate::ops::stats::TRANSIENT_WAIT.into()),
        })
        .collect();
    out.sort();
    out
}

/// Reads one count of a pipeline.
type Count = fn(&crate::ops::stats::PipelineCounts) -> u64;

#[derive(Debug)]
struct StatsCollector {
    stats: Stats,
    pool: Pool,
    stuck_after: Duration,
    dead_letters: OpenDeadLetters,
}

fn counter_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(String, u64)],
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, n) in values {
        let labels = [(label, value.as_str())];
        ConstCounter::new(*n).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> std::fmt::Result {
    ConstGauge::new(v).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

impl Collector for StatsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let snap = self.stats.snapshot();
        let per = |f: Count| -> Vec<(String, u64)> {
            snap.pipelines
                .iter()
                .map(|(p, c)| (p.clone(), f(c)))
                .collect()
        };
        let events: [(&str, &str, Count); 9] = [
            (
                "pgchain_events_consumed",
                "Messages read, per pipeline (`-`: no pipeline took them)",
                |c| c.consumed,
            ),
            (
                "pgchain_events_applied",
                "Events whose chain committed",
                |c| c.applied,
            ),
            (
                "pgchain_events_filtered",
                "Events a step ended early (set ev to null)",
                |c| c.filtered,
            ),
            (
                "pgchain_events_already_applied",
                "Redelivered events the ledger skipped as already applied",
                |c| c.already_applied,
            ),
            (
                "pgchain_events_tombstones_skipped",
                "Tombstones passed over (tombstones: skip)",
                |c| c.tombstones,
            ),
            (
                "pgchain_events_null_values_skipped",
                "Messages whose value is JSON null (or a null payload) passed over as tombstones",
                |c| c.null_values,
            ),
            (
                "pgchain_events_parked",
                "Events parked behind a missing dependency or an earlier parked event of their key",
                |c| c.parked,
            ),
            (
                "pgchain_events_dead_lettered",
                "Events dead-lettered",
                |c| c.dead_lettered,
            ),
            (
                "pgchain_events_replayed",
                "Parked or dead events replayed successfully",
                |c| c.replayed,
            ),
        ];
        for (name, help, f) in events {
            counter_family(&mut encoder, name, help, "pipeline", &per(f))?;
        }
        let topics: Vec<(String, u64)> = snap
            .consumed_by_topic
            .iter()
            .map(|(t, n)| (t.clone(), *n))
            .collect();
        counter_family(
            &mut encoder,
            "pgchain_messages_consumed",
            "Messages read, per topic",
            "topic",
            &topics,
        )?;
        let retries: Vec<(String, u64)> = ["transient", "deployment", "dependency", "data"]
            .iter()
            .map(|c| {
                (
                    c.to_string(),
                    snap.retries_by_class.get(c).copied().unwrap_or(0),
                )
            })
            .collect();
        counter_family(
            &mut encoder,
            "pgchain_retries",
            "Chain runs retried, by error class",
            "class",
            &retries,
        )?;

        let mut lag = encoder.encode_descriptor(
            "pgchain_consumer_lag",
            "High watermark minus the next offset to apply, per partition held",
            None,
            MetricType::Gauge,
        )?;
        for ((topic, partition), n) in snap.lag() {
            let partition = partition.to_string();
            let labels = [("topic", topic.as_str()), ("partition", partition.as_str())];
            ConstGauge::new(n).encode(lag.encode_family(&labels)?)?;
        }

        let mut skipped = encoder.encode_descriptor(
            "pgchain_offsets_skipped",
            "Offsets moved past unapplied because retention deleted them first (kafka.on_gap: skip)",
            None,
            MetricType::Counter,
        )?;
        for ((topic, partition), n) in &snap.skipped_offsets {
            let partition = partition.to_string();
            let labels = [("topic", topic.as_str()), ("partition", partition.as_str())];
            ConstCounter::new(*n).encode(skipped.encode_family(&labels)?)?;
        }

        let mut passes = encoder.encode_descriptor(
            "pgchain_recovery_passes",
            "Recovery passes over parked and dead events, by trigger and outcome",
            None,
            MetricType::Counter,
        )?;
        for ((trigger, outcome), n) in &snap.recovery_outcomes {
            let labels = [("trigger", trigger.as_str()), ("outcome", *outcome)];
            ConstCounter::new(*n).encode(passes.encode_family(&labels)?)?;
        }

        let mut open = encoder.encode_descriptor(
            "pgchain_dead_letters",
            "Open rows of pgchain.dead_letters for this consumer group",
            None,
            MetricType::Gauge,
        )?;
        for ((pipeline, status), n) in self.dead_letters.lock().expect("dead letters").iter() {
            let labels = [("pipeline", pipeline.as_str()), ("status", status.as_str())];
            ConstGauge::new(*n).encode(open.encode_family(&labels)?)?;
        }

        gauge(
            &mut encoder,
            "pgchain_chains_in_flight",
            "Chains running now",
            snap.in_flight,
        )?;
        let status = self.pool.status();
        gauge(
            &mut encoder,
            "pgchain_pool_connections_in_use",
            "Pool connections lent out now",
            (status.size as i64 - status.available as i64).max(0),
        )?;
        gauge(
            &mut encoder,
            "pgchain_pool_connections_max",
            "Pool size limit (postgres.pool_size)",
            status.max_size as i64,
        )?;
        gauge(
            &mut encoder,
            "pgchain_partitions_assigned",
            "Partitions this instance holds",
            snap.assigned.len() as i64,
        )?;
        gauge(
            &mut encoder,
            "pgchain_partitions_stuck",
            "Partitions stopped, or retrying without progress, longer than monitoring.stuck_after",
            stuck_longer_than(&snap, self.stuck_after).len() as i64,
        )?;
        Ok(())
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    monitor: Arc<Monitor>,
    stop: CancellationToken,
) {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(
                |axum::extract::State(m): axum::extract::State<Arc<Monitor>>| async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        m.render(),
                    )
                },
            ),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(
                |axum::extract::State(m): axum::extract::State<Arc<Monitor>>| async move {
                    match m.readiness().await {
                        Ok(()) => (StatusCode::OK, "ready\n".to_string()).into_response(),
                        Err(problems) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready:\n{}\n", problems.join("\n")),
                        )
                            .into_response(),
                    }
                },
            ),
        )
        .with_state(monitor);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        tracing::error!("monitoring listener stopped: {e}");
    }
}
