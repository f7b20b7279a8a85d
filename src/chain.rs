//! Running one event through its chain.
//!
//! The whole chain and the ledger update are one `CALL pgchain.apply_event`,
//! so they commit together in one round trip. This module calls it, retries
//! what is worth retrying, and turns failures into errors that say which step
//! failed and why.

use crate::backoff::Backoff;
use crate::config::Retries;
use crate::event::ChangeEvent;
use crate::route::Route;
use deadpool_postgres::Pool;
use std::fmt;
use tokio_postgres::types::Json;
use tokio_util::sync::CancellationToken;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The database or the network; the same event will work later.
    Transient,
    /// A step raised `PGW01`: a row it depends on has not arrived yet.
    DependencyMissing,
    /// The event itself fails (constraint, a step's own `raise exception`).
    Data,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::DependencyMissing => "dependency",
            ErrorClass::Data => "data",
        }
    }
}

/// A failed chain run, with what a user needs to find the cause.
#[derive(Debug, Clone)]
pub struct ChainError {
    pub class: ErrorClass,
    pub sqlstate: Option<String>,
    /// The step that raised, when the error came from inside one.
    pub step: Option<String>,
    pub message: String,
    pub detail: Option<String>,
}

impl fmt::Display for ChainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(step) = &self.step {
            write!(f, "step {step}: ")?;
        }
        write!(f, "{}", self.message)?;
        if let Some(code) = &self.sqlstate {
            write!(f, " (SQLSTATE {code})")?;
        }
        if let Some(detail) = &self.detail {
            write!(f, "; detail: {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ChainError {}

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

/// Why [`retrying`] gave up.
#[derive(Debug)]
pub enum Failure {
    /// The error's class is out of attempts; `attempts` runs were made.
    GaveUp { error: ChainError, attempts: u32 },
    /// Shutdown or revocation came while waiting to retry; nothing was applied.
    Interrupted,
}

/// Calls `attempt` until it succeeds, its error's class (per `retries`) is
/// out of attempts, or `stop` fires while waiting. Transient errors are
/// retried forever. Each class backs off on its own, doubling up to its cap.
pub async fn retrying<T, F, Fut>(
    retries: &Retries,
    stop: &CancellationToken,
    on_retry: impl Fn(&ChainError, u32),
    mut attempt: F,
) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ChainError>>,
{
    let mut tries = 0u32;
    // The backoff of the class that failed last; a new class starts afresh.
    let mut backoff: Option<(ErrorClass, Backoff)> = None;
    loop {
        tries += 1;
        let err = match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let policy = match err.class {
            ErrorClass::Transient => &retries.transient,
            ErrorClass::DependencyMissing => &retries.dependency,
            ErrorClass::Data => &retries.data,
        };
        if err.class != ErrorClass::Transient && tries >= policy.attempts {
            return Err(Failure::GaveUp {
                error: err,
                attempts: tries,
            });
        }
        if backoff
            .as_ref()
            .is_none_or(|(class, _)| *class != err.class)
        {
            backoff = Some((
                err.class,
                Backoff::new(policy.backoff.0, policy.max_backoff.0),
            ));
        }
        let delay = backoff.as_mut().expect("set above").1.next_delay();
        tracing::warn!(
            attempt = tries,
            retry_in_ms = delay.as_millis() as u64,
            class = err.class.as_str(),
            "chain failed, retrying: {err}"
        );
        on_retry(&err, tries);
        tokio::select! {
            _ = stop.cancelled() => return Err(Failure::Interrupted),
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// SQLSTATEs that a retry can cure: connection trouble (class 08),
/// serialization failure, deadlock, lock not available, shutdowns, and
/// resource exhaustion (class 53).
pub fn is_transient(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(
            code,
            "40001" | "40P01" | "55P03" | "57P01" | "57P02" | "57P03"
        )
}

pub fn classify(code: &str) -> ErrorClass {
    if is_transient(code) {
        ErrorClass::Transient
    } else if code == "PGW01" {
        ErrorClass::DependencyMissing
    } else {
        ErrorClass::Data
    }
}

pub(crate) fn db_error(e: &tokio_postgres::Error) -> ChainError {
    match e.as_db_error() {
        Some(db) => {
            let code = db.code().code().to_string();
            ChainError {
                class: classify(&code),
                step: db.where_().and_then(failing_step),
                sqlstate: Some(code),
                message: db.message().to_string(),
                detail: db.detail().map(str::to_string),
            }
        }
        // No server error: the connection broke or could not be used.
        None => ChainError {
            class: ErrorClass::Transient,
            sqlstate: None,
            step: None,
            message: e.to_string(),
            detail: None,
        },
    }
}

pub(crate) fn pool_error(e: deadpool_postgres::PoolError) -> ChainError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => db_error(&e),
        other => ChainError {
            class: ErrorClass::Transient,
            sqlstate: None,
            step: None,
            message: format!("no database connection: {other}"),
            detail: None,
        },
    }
}

/// The step named in an error's CONTEXT: the `call schema.proc($1)` statement
/// just inside `pgchain.run_chain`, which every runner calls.
pub fn failing_step(context: &str) -> Option<String> {
    let lines: Vec<&str> = context.lines().collect();
    let runner = lines
        .iter()
        .position(|l| l.contains("function pgchain.run_chain("))?;
    let stmt = lines[..runner]
        .iter()
        .rev()
        .find(|l| l.starts_with("SQL statement \"call "))?;
    let name = stmt
        .strip_prefix("SQL statement \"call ")?
        .split('(')
        .next()?;
    Some(name.replace('"', ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_step_inside_the_runner() {
        let ctx = "PL/pgSQL function l1.cleanse(jsonb) line 3 at RAISE\n\
                   SQL statement \"call l1.cleanse($1)\"\n\
                   PL/pgSQL function pgchain.run_chain(text[],jsonb,text,double precision[]) line 10 at EXECUTE\n\
                   SQL statement \"CALL pgchain.run_chain(p_steps, v_ev, o_status, o_step_ms)\"\n\
                   PL/pgSQL function pgchain.apply_event(text,text,integer,bigint,text,text[],jsonb,text,double precision[]) line 33 at CALL";
        assert_eq!(failing_step(ctx).as_deref(), Some("l1.cleanse"));
        // A step that itself calls another procedure: the outermost call counts.
        let nested = format!(
            "PL/pgSQL function l1.inner(jsonb) line 1 at RAISE\n\
             SQL statement \"call l1.inner($1)\"\n\
             PL/pgSQL function l1.cleanse(jsonb) line 3 at CALL\n{}",
            ctx.split_once('\n').unwrap().1
        );
        assert_eq!(failing_step(&nested).as_deref(), Some("l1.cleanse"));
        assert_eq!(failing_step("PL/pgSQL function x() line 1 at RAISE"), None);
    }

    #[test]
    fn classes_follow_sqlstate() {
        for code in ["08006", "40001", "40P01", "55P03", "57P01", "53300"] {
            assert_eq!(classify(code), ErrorClass::Transient, "{code}");
        }
        assert_eq!(classify("PGW01"), ErrorClass::DependencyMissing);
        for code in ["23505", "P0001", "22P02", "42883"] {
            assert_eq!(classify(code), ErrorClass::Data, "{code}");
        }
    }
}
