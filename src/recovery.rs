//! Re-driving parked and dead events.
//!
//! A pass reads the open rows of `pgchain.dead_letters` in the order they
//! were written, decodes each original message again and runs it through its
//! chain with `pgchain.replay`, which marks the row replayed in the same
//! transaction (the row is the replay's exactly-once ledger). Within one
//! pipeline and key the order holds: once an event of a key stays parked,
//! the later events of that key wait for the next pass.
//!
//! `pgchain run` starts a pass when a step provides a key that parked events
//! await (`pgchain.provide`, delivered by LISTEN/NOTIFY at its commit), every
//! `dead_letters.recovery_interval`, and after (re)connecting; `pgchain dlq
//! replay` runs one on demand.

use crate::chain::Backoff;
use crate::chain::{self, ChainError, ErrorClass};
use crate::ops::stats::Stats;
use crate::route::{Message as RouteMessage, RouteError, Routed, Router};
use crate::store::dead_letters::{self, Candidate, Class, Reason, Selection, Status};
use deadpool_postgres::Pool;
use futures::StreamExt;
use serde::Serialize;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::AsyncMessage;
use tokio_postgres::types::Json;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The channel `pgchain.provide` notifies with the provided key.
pub const CHANNEL: &str = "pgchain_provide";

/// Which open dead letters a pass takes; every field narrows.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// By id, pipeline, status (`parked` or `dead`) and age.
    pub rows: Selection,
    /// Parked events waiting for this key, and the events of their keys
    /// parked behind them.
    pub awaiting: Option<String>,
    /// Only rows replayed fewer times than this (recovery's cap).
    pub max_replays: Option<i32>,
}

/// Why one replay did not run.
enum Replay {
    /// The chain (or the database) failed.
    Chain(ChainError),
    /// The message still cannot be decoded or routed.
    Route(RouteError),
}

/// What a pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub replayed: u64,
    /// Replayed again and still missing their dependency.
    pub still_parked: u64,
    /// Replayed again and failed again.
    pub still_dead: u64,
    /// Not tried: an earlier event of their key is still parked.
    pub behind: u64,
    /// Replayed or discarded by someone else meanwhile.
    pub gone: u64,
}

pub struct Redriver {
    pub pool: Pool,
    pub router: Arc<Router>,
    pub group: String,
    pub stats: Stats,
}

impl Redriver {
    /// One pass over the rows in `scope`. A transient error ends the pass
    /// early (the rows stay as they were, for the next one).
    pub async fn pass(&self, scope: &Scope, resolution: &str) -> Result<Report, ChainError> {
        self.stats.recovery_pass();
        let rows = self.candidates(scope).await?;
        let mut report = Report::default();
        let mut blocked: HashSet<(Option<String>, serde_json::Value)> = HashSet::new();
        for row in rows {
            if let Some(entity) = &row.entity
                && blocked.contains(entity)
            {
                report.behind += 1;
                continue;
            }
            let replayed = match self.replay(&row, resolution).await {
                Ok(r) => Ok(r),
                Err(Replay::Chain(e)) => Err(e),
                // Still undecodable or unroutable: dead again, its class kept.
                Err(Replay::Route(e)) => {
                    let reason = Reason {
                        status: Status::Dead,
                        class: Class::of_route(&e),
                        message: e.to_string(),
                        awaits: None,
                    };
                    dead_letters::failed_again_as(&self.pool, row.id, &reason, None, None).await?;
                    report.still_dead += 1;
                    continue;
                }
            };
            match replayed {
                Ok(status) => match status.as_str() {
                    "applied" | "filtered" => {
                        report.replayed += 1;
                        let p = row.pipeline.as_deref().unwrap_or("-");
                        self.stats.record(p, |c| c.replayed += 1);
                    }
                    "behind" => {
                        report.behind += 1;
                        if let Some(e) = row.entity.clone() {
                            blocked.insert(e);
                        }
                    }
                    _ => report.gone += 1,
                },
                // The database, or a step not deployed: the rows stay as
                // they are for a later pass.
                Err(e) if e.class.retried_forever() => return Err(e),
                Err(e) => {
                    let parked = e.class == ErrorClass::DependencyMissing;
                    self.failed_again(row.id, &e).await?;
                    if parked {
                        report.still_parked += 1;
                        if let Some(entity) = row.entity.clone() {
                            blocked.insert(entity);
                        }
                    } else {
                        report.still_dead += 1;
                    }
                    debug!(id = row.id, "replay failed: {e}");
                }
            }
        }
        Ok(report)
    }

    async fn candidates(&self, scope: &Scope) -> Result<Vec<Candidate>, ChainError> {
        dead_letters::candidates(
            &self.pool,
            &self.group,
            &scope.rows,
            scope.max_replays,
            scope.awaiting.as_deref(),
        )
        .await
    }

    /// Runs one row through its chain; the status `pgchain.replay` reports.
    async fn replay(&self, row: &Candidate, resolution: &str) -> Result<String, Replay> {
        let headers: Vec<(&str, Option<&[u8]>)> = row
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect();
        let msg = RouteMessage {
            topic: &row.topic,
            partition: row.partition,
            offset: row.offset,
            timestamp: row.timestamp,
            key: row.key.as_deref(),
            value: row.value.as_deref(),
            headers: &headers,
        };
        self.router
            .fetch_schemas(&msg)
            .await
            .map_err(|e| Replay::Chain(e.into()))?;
        let (steps, ev) = match self.router.route(&msg).map_err(Replay::Route)? {
            Routed::Event(ev, route) => (route.steps.clone(), serde_json::to_value(&ev)),
            // A tombstone the pipeline now skips: nothing to run.
            Routed::Skip { .. } => (Vec::new(), Ok(serde_json::Value::Null)),
        };
        let ev = ev.map_err(|e| {
            Replay::Chain(ChainError {
                class: ErrorClass::Data,
                sqlstate: None,
                step: None,
                message: format!("cannot encode the event: {e}"),
                detail: None,
            })
        })?;
        let client = self
            .pool
            .get()
            .await
            .map_err(|e| Replay::Chain(chain::pool_error(e)))?;
        let row = client
            .query_one(
                "call pgchain.replay($1, $2, $3, $4, null)",
                &[&row.id, &steps, &Json(&ev), &resolution],
            )
            .await
            .map_err(|e| Replay::Chain(chain::db_error(&e)))?;
        Ok(row.get::<_, Option<String>>(0).unwrap_or_default())
    }

    /// Records a failed replay: parked again on PGW01, dead otherwise.
    async fn failed_again(&self, id: i64, e: &ChainError) -> Result<(), ChainError> {
        dead_letters::failed_again(&self.pool, id, e).await
    }
}

/// Settings of the recovery task in `pgchain run`.
pub struct Recovery {
    pub redriver: Redriver,
    pub url: String,
    pub interval: Duration,
    pub max_replays: i32,
}

impl Recovery {
    /// Runs until `stop`: listens for provided keys, and passes periodically.
    pub async fn run(self, stop: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        while !stop.is_cancelled() {
            match self.listen(&stop).await {
                Ok(()) => return,
                Err(e) => {
                    warn!("recovery listener: {e}; reconnecting");
                    if !backoff.wait(&stop).await {
                        return;
                    }
                }
            }
        }
    }

    async fn listen(&self, stop: &CancellationToken) -> anyhow::Result<()> {
        let (client, mut conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect: {e}"))?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let driver = tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
            while let Some(m) = messages.next().await {
                match m {
                    Ok(AsyncMessage::Notification(n)) => {
                        let _ = tx.send(n.payload().to_string());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        debug!("recovery listener connection: {e}");
                        break;
                    }
                }
            }
        });
        let result = async {
            client.batch_execute(&format!("listen {CHANNEL}")).await?;
            // Keys provided while nobody listened: try what is parked.
            self.run_pass(
                &Scope {
                    rows: Selection {
                        status: Some("parked".into()),
                        ..Selection::default()
                    },
                    max_replays: Some(self.max_replays),
                    ..Scope::default()
                },
                "startup",
            )
            .await;
            let mut tick = tokio::time::interval(self.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = tick.tick() => {
                        self.run_pass(&Scope { max_replays: Some(self.max_replays), ..Scope::default() }, "periodic").await;
                    }
                    key = rx.recv() => {
                        let Some(key) = key else {
                            anyhow::bail!("connection lost");
                        };
                        let mut keys = vec![key];
                        while let Ok(k) = rx.try_recv() {
                            keys.push(k);
                        }
                        keys.sort();
                        keys.dedup();
                        for key in keys {
                            self.run_pass(&Scope { awaiting: Some(key), ..Scope::default() }, "provided").await;
                        }
                    }
                }
            }
        }
        .await;
        driver.abort();
        result
    }

    async fn run_pass(&self, scope: &Scope, why: &str) {
        let result = self.redriver.pass(scope, "replayed by recovery").await;
        self.redriver.stats.recovery_outcome(why, result.is_ok());
        match result {
            Ok(r) if r == Report::default() => debug!(pass = why, "recovery: nothing to do"),
            Ok(r) => {
                info!(pass = why, awaiting = ?scope.awaiting, replayed = r.replayed, still_parked = r.still_parked, still_dead = r.still_dead, behind = r.behind, "recovery pass")
            }
            Err(e) => warn!(pass = why, "recovery pass ended early: {e}"),
        }
    }
}
