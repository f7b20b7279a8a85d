//! Every statement against `pgchain.dead_letters`, with typed status and
//! class: recording an event that leaves its partition, publishing state,
//! listing, discarding, and what recovery reads and writes.

use crate::chain::{self, ChainError, ErrorClass};
use crate::route::RouteError;
use deadpool_postgres::Pool;
use serde::Serialize;
use std::borrow::Cow;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Waits for a missing dependency (or behind an event that does).
    Parked,
    /// Failed for good until replayed.
    Dead,
}

impl Status {
    /// An open row's status as the table holds it.
    fn from_db(s: &str) -> Status {
        if s == "parked" {
            Status::Parked
        } else {
            Status::Dead
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Parked => "parked",
            Status::Dead => "dead",
        }
    }
}

/// Why an event left its partition's way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A step raised PGW01 after its retries.
    Dependency,
    /// An earlier event of its key is parked.
    Queued,
    /// The chain failed on it after its retries.
    Data,
    Undecodable,
    Unroutable,
}

impl Class {
    /// The class of a message that cannot be decoded or routed.
    pub fn of_route(e: &RouteError) -> Class {
        match e {
            RouteError::Undecodable(_) => Class::Undecodable,
            RouteError::Unroutable(_) => Class::Unroutable,
        }
    }

    fn from_db(s: &str) -> Class {
        match s {
            "dependency" => Class::Dependency,
            "queued" => Class::Queued,
            "undecodable" => Class::Undecodable,
            "unroutable" => Class::Unroutable,
            _ => Class::Data,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Dependency => "dependency",
            Class::Queued => "queued",
            Class::Data => "data",
            Class::Undecodable => "undecodable",
            Class::Unroutable => "unroutable",
        }
    }
}

/// One event that leaves its partition: the original message and why.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub pipeline: Option<String>,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// The event's key, for parking later events of the same key behind it.
    pub entity_key: Option<serde_json::Value>,
    pub status: Status,
    pub class: Class,
    pub step: Option<String>,
    pub sqlstate: Option<String>,
    pub message: String,
    pub awaits: Option<String>,
    pub attempts: i32,
    pub dlq_topic: String,
}

/// How a chain error that gave up is recorded, on first failure and on a
/// failed replay alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    pub status: Status,
    pub class: Class,
    /// The error message, with its DETAIL unless DETAIL is the awaited key.
    pub message: String,
    /// The key a parked event waits for (PGW01's DETAIL).
    pub awaits: Option<String>,
}

impl Reason {
    pub fn of(e: &ChainError) -> Reason {
        if e.class == ErrorClass::DependencyMissing {
            Reason {
                status: Status::Parked,
                class: Class::Dependency,
                message: e.message.clone(),
                awaits: e.detail.clone(),
            }
        } else {
            Reason {
                status: Status::Dead,
                class: Class::Data,
                message: match &e.detail {
                    Some(d) => format!("{}; detail: {d}", e.message),
                    None => e.message.clone(),
                },
                awaits: None,
            }
        }
    }
}

/// Narrows `pgchain.dead_letters` by a [`Selection`]: $2 ids (bigint[]),
/// $3 pipeline, $4 status, $5 first failed more than this many seconds ago;
/// a null parameter takes all.
const FILTER_SQL: &str = "($2::bigint[] is null or id = any($2))
    and ($3::text is null or pipeline = $3)
    and ($4::text is null or status = $4)
    and ($5::float8 is null or first_failed_at < now() - make_interval(secs => $5))";

/// What [`record`] found or wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The row (new, or written before this redelivery).
    Row { id: i64, published: bool },
    /// A queued event whose parked predecessors were replayed meanwhile:
    /// nothing was written; run the event instead.
    AheadGone,
}

/// `s` as PostgreSQL text can hold it: NUL (U+0000), which text and jsonb
/// refuse, becomes U+FFFD.
pub fn storable(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// `v` with every string (keys included) [`storable`].
pub fn storable_json(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) => Value::String(storable(s).into_owned()),
        Value::Array(a) => Value::Array(a.iter().map(storable_json).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (storable(k).into_owned(), storable_json(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Writes the row and moves the ledger past the offset, in one transaction.
pub async fn record(pool: &Pool, group: &str, dl: &DeadLetter) -> Result<Recorded, ChainError> {
    let client = pool.get().await.map_err(chain::pool_error)?;
    let stmt = client
        .prepare_cached(
            "call pgchain.dead_letter($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, null, null)",
        )
        .await
        .map_err(|e| chain::db_error(&e))?;
    // The message's own bytes go in as they are (bytea); what is derived
    // from them as text or jsonb is made storable, so that no message can
    // stop its partition by failing its own dead letter.
    let names: Vec<Cow<'_, str>> = dl.headers.iter().map(|(k, _)| storable(k)).collect();
    let values: Vec<Option<&[u8]>> = dl.headers.iter().map(|(_, v)| v.as_deref()).collect();
    let entity_key = dl.entity_key.as_ref().map(storable_json);
    let row = client
        .query_one(
            &stmt,
            &[
                &group,
                &dl.pipeline.as_deref().map(storable),
                &dl.topic,
                &dl.partition,
                &dl.offset,
                &dl.timestamp,
                &dl.key,
                &dl.value,
                &names,
                &values,
                &entity_key,
                &dl.status.as_str(),
                &dl.class.as_str(),
                &dl.step.as_deref().map(storable),
                &dl.sqlstate,
                &storable(&dl.message),
                &dl.awaits.as_deref().map(storable),
                &dl.attempts,
                &dl.dlq_topic,
            ],
        )
        .await
        .map_err(|e| chain::db_error(&e))?;
    let id: Option<i64> = row.get(0);
    let published: Option<bool> = row.get(1);
    Ok(match id {
        Some(id) => Recorded::Row {
            id,
            published: published.unwrap_or(false),
        },
        None => Recorded::AheadGone,
    })
}

pub async fn mark_published(pool: &Pool, id: i64) -> Result<(), ChainError> {
    let client = pool.get().await.map_err(chain::pool_error)?;
    client
        .execute(
            "update pgchain.dead_letters set published_at = now() where id = $1",
            &[&id],
        )
        .await
        .map_err(|e| chain::db_error(&e))?;
    Ok(())
}

/// Rows of one partition written but not yet acknowledged by the topic
/// (a crash came between), oldest first.
pub async fn unpublished(
    pool: &Pool,
    group: &str,
    topic: &str,
    partition: i32,
) -> Result<Vec<(i64, DeadLetter)>, ChainError> {
    let client = pool.get().await.map_err(chain::pool_error)?;
    let rows = client
        .query(
            "select id, pipeline, kafka_offset, kafka_timestamp, msg_key, msg_value,
                    header_names, header_values, entity_key, status, error_class,
                    failing_step, sqlstate, error_message, awaits, attempts, dlq_topic
               from pgchain.dead_letters
              where group_id = $1 and topic = $2 and partition = $3 and published_at is null
              order by id",
            &[&group, &topic, &partition],
        )
        .await
        .map_err(|e| chain::db_error(&e))?;
    Ok(rows
        .iter()
        .map(|r| {
            let names: Vec<String> = r.get(6);
            let values: Vec<Option<Vec<u8>>> = r.get(7);
            let status: String = r.get(9);
            let class: String = r.get(10);
            let dl = DeadLetter {
                pipeline: r.get(1),
                topic: topic.to_string(),
                partition,
                offset: r.get(2),
                timestamp: r.get(3),
                key: r.get(4),
                value: r.get(5),
                headers: names.into_iter().zip(values).collect(),
                entity_key: r.get(8),
                status: Status::from_db(&status),
                class: Class::from_db(&class),
                step: r.get(11),
                sqlstate: r.get(12),
                message: r.get(13),
                awaits: r.get(14),
                attempts: r.get(15),
                dlq_topic: r.get(16),
            };
            (r.get(0), dl)
        })
        .collect())
}

/// Which rows of the group a command or a recovery pass takes; every field
/// narrows, `None` takes all.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub ids: Option<Vec<i64>>,
    pub pipeline: Option<String>,
    /// `parked`, `dead`, `replayed` or `discarded`.
    pub status: Option<String>,
    /// First failed longer ago than this.
    pub older_than: Option<Duration>,
}

impl Selection {
    fn older_secs(&self) -> Option<f64> {
        self.older_than.map(|d| d.as_secs_f64())
    }
}

/// One dead letter as `pgchain dlq list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub id: i64,
    pub status: String,
    pub class: String,
    pub pipeline: Option<String>,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub step: Option<String>,
    pub sqlstate: Option<String>,
    pub error: String,
    pub awaits: Option<String>,
    pub attempts: i32,
    pub replays: i32,
    pub first_failed_at: String,
    pub last_failed_at: String,
    pub published: bool,
    pub resolution: Option<String>,
}

/// The group's dead letters in `sel`, oldest first.
pub async fn list(
    client: &tokio_postgres::Client,
    group: &str,
    sel: &Selection,
) -> Result<Vec<Entry>, tokio_postgres::Error> {
    let sql = format!(
        "select id, status, error_class, pipeline, topic, partition, kafka_offset,
                failing_step, sqlstate, error_message, awaits, attempts, replays,
                to_char(first_failed_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                to_char(last_failed_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                published_at is not null, resolution
           from pgchain.dead_letters
          where group_id = $1 and {FILTER_SQL}
          order by id"
    );
    let rows = client
        .query(
            &sql,
            &[
                &group,
                &sel.ids,
                &sel.pipeline,
                &sel.status,
                &sel.older_secs(),
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Entry {
            id: r.get(0),
            status: r.get(1),
            class: r.get(2),
            pipeline: r.get(3),
            topic: r.get(4),
            partition: r.get(5),
            offset: r.get(6),
            step: r.get(7),
            sqlstate: r.get(8),
            error: r.get(9),
            awaits: r.get(10),
            attempts: r.get(11),
            replays: r.get(12),
            first_failed_at: r.get(13),
            last_failed_at: r.get(14),
            published: r.get(15),
            resolution: r.get(16),
        })
        .collect())
}

/// Marks the open dead letters in `sel` discarded, keeping `reason`;
/// returns their ids, sorted.
pub async fn discard(
    client: &tokio_postgres::Client,
    group: &str,
    sel: &Selection,
    reason: &str,
) -> Result<Vec<i64>, tokio_postgres::Error> {
    let sql = format!(
        "update pgchain.dead_letters
            set status = 'discarded', resolved_at = now(), resolution = $6
          where group_id = $1 and status in ('parked', 'dead') and {FILTER_SQL}
         returning id"
    );
    let rows = client
        .query(
            &sql,
            &[
                &group,
                &sel.ids,
                &sel.pipeline,
                &sel.status,
                &sel.older_secs(),
                &reason,
            ],
        )
        .await?;
    let mut ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    ids.sort();
    Ok(ids)
}

/// An open dead letter a recovery pass may replay: the original message.
pub struct Candidate {
    pub id: i64,
    pub pipeline: Option<String>,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// The message's Kafka headers, in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// (pipeline, event key): the key whose order replays keep.
    pub entity: Option<(Option<String>, serde_json::Value)>,
}

/// The group's open dead letters in `sel`, oldest first: only those
/// replayed fewer than `max_replays` times, and with `awaiting`, only the
/// events parked on that key and those parked behind them.
pub async fn candidates(
    pool: &Pool,
    group: &str,
    sel: &Selection,
    max_replays: Option<i32>,
    awaiting: Option<&str>,
) -> Result<Vec<Candidate>, ChainError> {
    let client = pool.get().await.map_err(chain::pool_error)?;
    let sql = format!(
        "select id, pipeline, topic, partition, kafka_offset, kafka_timestamp,
                msg_key, msg_value, entity_key, header_names, header_values
           from pgchain.dead_letters d
          where group_id = $1 and status in ('parked', 'dead')
            and {FILTER_SQL}
            and ($6::int is null or replays < $6)
            and ($7::text is null or (status = 'parked' and (awaits = $7
                 or (entity_key is not null and (pipeline, entity_key) in
                     (select pipeline, entity_key from pgchain.dead_letters
                       where group_id = $1 and status = 'parked' and awaits = $7)))))
          order by id"
    );
    let rows = client
        .query(
            &sql,
            &[
                &group,
                &sel.ids,
                &sel.pipeline,
                &sel.status,
                &sel.older_secs(),
                &max_replays,
                &awaiting,
            ],
        )
        .await
        .map_err(|e| chain::db_error(&e))?;
    Ok(rows
        .iter()
        .map(|r| {
            let pipeline: Option<String> = r.get(1);
            let entity: Option<serde_json::Value> = r.get(8);
            let names: Vec<String> = r.get(9);
            let values: Vec<Option<Vec<u8>>> = r.get(10);
            Candidate {
                id: r.get(0),
                entity: entity.map(|e| (pipeline.clone(), e)),
                pipeline,
                topic: r.get(2),
                partition: r.get(3),
                offset: r.get(4),
                timestamp: r.get(5),
                key: r.get(6),
                value: r.get(7),
                headers: names.into_iter().zip(values).collect(),
            }
        })
        .collect())
}

/// Records a failed replay of row `id`: parked again on PGW01, dead otherwise.
pub async fn failed_again(pool: &Pool, id: i64, e: &ChainError) -> Result<(), ChainError> {
    failed_again_as(
        pool,
        id,
        &Reason::of(e),
        e.step.as_deref(),
        e.sqlstate.as_deref(),
    )
    .await
}

/// Records a failed replay of row `id` as `r` says (a message that still
/// cannot be decoded or routed keeps its class).
pub async fn failed_again_as(
    pool: &Pool,
    id: i64,
    r: &Reason,
    step: Option<&str>,
    sqlstate: Option<&str>,
) -> Result<(), ChainError> {
    let client = pool.get().await.map_err(chain::pool_error)?;
    client
        .execute(
            "update pgchain.dead_letters
                set replays = replays + 1, last_failed_at = now(),
                    status = $2, error_class = $3, awaits = $4,
                    failing_step = $5, sqlstate = $6, error_message = $7
              where id = $1 and status in ('parked', 'dead')",
            &[
                &id,
                &r.status.as_str(),
                &r.class.as_str(),
                &r.awaits.as_deref().map(storable),
                &step.map(storable),
                &sqlstate,
                &storable(&r.message),
            ],
        )
        .await
        .map_err(|e| chain::db_error(&e))?;
    Ok(())
}

/// Open (parked or dead) dead letters of the group by (pipeline, topic,
/// partition, status); a message no pipeline took has no pipeline.
pub async fn open_counts(
    client: &tokio_postgres::Client,
    group: &str,
) -> Result<Vec<OpenCount>, tokio_postgres::Error> {
    let rows = client
        .query(
            "select pipeline, topic, partition, status, count(*)
               from pgchain.dead_letters
              where group_id = $1 and status in ('parked', 'dead')
              group by 1, 2, 3, 4",
            &[&group],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| OpenCount {
            pipeline: r.get(0),
            topic: r.get(1),
            partition: r.get(2),
            status: Status::from_db(r.get(3)),
            count: r.get(4),
        })
        .collect())
}

/// One group of [`open_counts`].
#[derive(Debug, Clone)]
pub struct OpenCount {
    pub pipeline: Option<String>,
    pub topic: String,
    pub partition: i32,
    pub status: Status,
    pub count: i64,
}
