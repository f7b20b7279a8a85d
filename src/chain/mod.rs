//! Running one event through its chain.
//!
//! The whole chain and the ledger update are one `CALL pgchain.apply_event`,
//! so they commit together in one round trip. This module calls it, retries
//! what is worth retrying, and turns failures into errors that say which step
//! failed and why.
//!
//! - [`error`]: error classes by SQLSTATE, and the failing step;
//! - [`retry`]: retries by class, with the one [`Backoff`] of every retry loop.

pub mod error;
pub mod retry;

pub use error::{
    ChainError, ErrorClass, classify, describe, failing_step, is_conflict, is_transient,
};
pub(crate) use error::{db_error, pool_error};
pub use retry::{Backoff, Failure, retrying};

use crate::event::ChangeEvent;
use crate::route::Route;
use deadpool_postgres::Pool;
use tokio_postgres::types::Json;

const APPLY: &str = "call pgchain.apply_event($1, $2, $3, $4, $5, $6, $7, null, null)";
const APPLY_BATCH: &str = "call pgchain.apply_batch($1, $2, $3, $4, $5, $6, $7, null, null, null)";

/// What `pgchain.apply_event` reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// A step set `ev` to null: the chain ended early, the offset counts.
    Filtered,
    /// The offset was applied before (a redelivery); nothing ran.
    Skipped,
    /// An earlier event of the same key is parked; nothing ran and the
    /// ledger did not move: the event must park behind it.
    Behind,
}

/// One event's run: its outcome and how long each step that ran took.
#[derive(Debug, Clone, PartialEq)]
pub struct Ran {
    pub outcome: Outcome,
    /// Milliseconds per step, in chain order, for the steps that ran.
    pub step_ms: Vec<f64>,
}

/// Runs the chain once: one transaction, one round trip.
pub async fn apply_once(
    pool: &Pool,
    group: &str,
    ev: &ChangeEvent,
    route: &Route,
) -> Result<Ran, ChainError> {
    let client = pool.get().await.map_err(pool_error)?;
    let stmt = client
        .prepare_cached(APPLY)
        .await
        .map_err(|e| db_error(&e))?;
    let row = client
        .query_one(
            &stmt,
            &[
                &group,
                &ev.kafka.topic,
                &ev.kafka.partition,
                &ev.kafka.offset,
                &route.pipeline,
                &route.steps,
                // Serialised straight from the event, no intermediate Value.
                &Json(ev),
            ],
        )
        .await
        .map_err(|e| db_error(&e))?;
    Ok(Ran {
        outcome: outcome(row.try_get::<_, Option<&str>>(0).ok().flatten())?,
        step_ms: row
            .try_get::<_, Option<Vec<f64>>>(1)
            .ok()
            .flatten()
            .unwrap_or_default(),
    })
}

fn outcome(status: Option<&str>) -> Result<Outcome, ChainError> {
    match status {
        Some("applied") => Ok(Outcome::Applied),
        Some("filtered") => Ok(Outcome::Filtered),
        Some("skipped") => Ok(Outcome::Skipped),
        Some("behind") => Ok(Outcome::Behind),
        other => Err(ChainError {
            class: ErrorClass::Data,
            sqlstate: None,
            step: None,
            message: format!("pgchain returned status {other:?}; is the pgchain schema migrated?"),
            detail: None,
        }),
    }
}

/// Runs events of one partition (in offset order) in one transaction; each
/// still runs its whole chain. An error rolls back the whole batch.
pub async fn apply_batch_once(
    pool: &Pool,
    group: &str,
    batch: &[(&ChangeEvent, &Route)],
) -> Result<Vec<Ran>, ChainError> {
    let Some((first, _)) = batch.first() else {
        return Ok(Vec::new());
    };
    let offsets: Vec<i64> = batch.iter().map(|(ev, _)| ev.kafka.offset).collect();
    let pipelines: Vec<&str> = batch.iter().map(|(_, r)| r.pipeline.as_str()).collect();
    let chains: Vec<String> = batch.iter().map(|(_, r)| r.steps.join(",")).collect();
    let evs: Vec<Json<&ChangeEvent>> = batch.iter().map(|(ev, _)| Json(*ev)).collect();
    let client = pool.get().await.map_err(pool_error)?;
    let stmt = client
        .prepare_cached(APPLY_BATCH)
        .await
        .map_err(|e| db_error(&e))?;
    let row = client
        .query_one(
            &stmt,
            &[
                &group,
                &first.kafka.topic,
                &first.kafka.partition,
                &offsets,
                &pipelines,
                &chains,
                &evs,
            ],
        )
        .await
        .map_err(|e| db_error(&e))?;
    let statuses: Vec<Option<String>> = row.try_get(0).unwrap_or_default();
    let step_ms: Vec<f64> = row.try_get(1).unwrap_or_default();
    let counts: Vec<i32> = row.try_get(2).unwrap_or_default();
    if statuses.len() != batch.len() || counts.len() != batch.len() {
        return Err(outcome(None).unwrap_err());
    }
    let mut times = step_ms.into_iter();
    statuses
        .iter()
        .zip(counts)
        .map(|(s, n)| {
            Ok(Ran {
                outcome: outcome(s.as_deref())?,
                step_ms: times.by_ref().take(n.max(0) as usize).collect(),
            })
        })
        .collect()
}
