//! The dead-letter path: the `pgchain.dead_letters` table and the
//! dead-letter topic.
//!
//! An event leaves its partition's way in three moves, each retried until it
//! works: (1) its row is written and the ledger moves past its offset, in one
//! transaction (a redelivery then finds the row and writes nothing); (2) the
//! original message is produced to the dead-letter topic and acknowledged;
//! (3) the row is marked published. Only then is the Kafka offset stored. A
//! crash between (1) and (3) leaves the row unpublished; the partition's next
//! worker publishes it before it runs anything else.
//!
//! The dead-letter record is the original key, value (a null stays null) and
//! headers, byte for byte, followed by the headers in [`HEADERS`].

use crate::chain::Backoff;
use crate::chain::{self, ChainError, ErrorClass};
use deadpool_postgres::Pool;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Headers pgchain adds to a dead-letter record (all UTF-8 text; one that
/// does not apply is left out).
pub const HEADERS: &[(&str, &str)] = &[
    ("pgchain.topic", "original topic"),
    ("pgchain.partition", "original partition"),
    ("pgchain.offset", "original offset"),
    (
        "pgchain.timestamp",
        "original timestamp, milliseconds since the epoch",
    ),
    ("pgchain.pipeline", "pipeline that took the message"),
    ("pgchain.step", "step that failed, `schema.procedure`"),
    ("pgchain.sqlstate", "SQLSTATE of the error"),
    ("pgchain.error", "error message"),
    ("pgchain.attempts", "chain runs before the event left"),
    (
        "pgchain.class",
        "dependency | queued | data | undecodable | unroutable",
    ),
    ("pgchain.status", "parked | dead"),
    ("pgchain.awaits", "the key a parked event waits for"),
    ("pgchain.id", "id in pgchain.dead_letters"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Waits for a missing dependency (or behind an event that does).
    Parked,
    /// Failed for good until replayed.
    Dead,
}

impl Status {
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

impl DeadLetter {
    /// The original message of `msg`, without the reason yet.
    pub fn of(msg: &OwnedMessage, dlq_topic: String) -> DeadLetter {
        let headers = msg
            .headers()
            .map(|h| {
                h.iter()
                    .map(|Header { key, value }| (key.to_string(), value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        DeadLetter {
            pipeline: None,
            topic: msg.topic().to_string(),
            partition: msg.partition(),
            offset: msg.offset(),
            timestamp: msg.timestamp().to_millis(),
            key: msg.key().map(<[u8]>::to_vec),
            value: msg.payload().map(<[u8]>::to_vec),
            headers,
            entity_key: None,
            status: Status::Dead,
            class: Class::Data,
            step: None,
            sqlstate: None,
            message: String::new(),
            awaits: None,
            attempts: 0,
            dlq_topic,
        }
    }

    /// The reason from a chain error: parked on PGW01, dead otherwise.
    pub fn failed(mut self, e: &ChainError, attempts: u32) -> DeadLetter {
        let r = Reason::of(e);
        self.status = r.status;
        self.class = r.class;
        self.step = e.step.clone();
        self.sqlstate = e.sqlstate.clone();
        self.message = r.message;
        self.awaits = r.awaits;
        self.attempts = attempts.min(i32::MAX as u32) as i32;
        self
    }
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

/// Narrows `pgchain.dead_letters` by the filters of `pgchain dlq` and of a
/// recovery pass: $2 ids (bigint[]), $3 pipeline, $4 status, $5 first
/// failed more than this many seconds ago; a null parameter takes all.
pub const FILTER_SQL: &str = "($2::bigint[] is null or id = any($2))
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

/// Writes the row and moves the ledger past the offset, in one transaction.
pub async fn record(pool: &Pool, group: &str, dl: &DeadLetter) -> Result<Recorded, ChainError> {
    let client = pool.get().await.map_err(chain::pool_error)?;
    let stmt = client
        .prepare_cached(
            "call pgchain.dead_letter($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, null, null)",
        )
        .await
        .map_err(|e| chain::db_error(&e))?;
    let names: Vec<&str> = dl.headers.iter().map(|(k, _)| k.as_str()).collect();
    let values: Vec<Option<&[u8]>> = dl.headers.iter().map(|(_, v)| v.as_deref()).collect();
    let row = client
        .query_one(
            &stmt,
            &[
                &group,
                &dl.pipeline,
                &dl.topic,
                &dl.partition,
                &dl.offset,
                &dl.timestamp,
                &dl.key,
                &dl.value,
                &names,
                &values,
                &dl.entity_key,
                &dl.status.as_str(),
                &dl.class.as_str(),
                &dl.step,
                &dl.sqlstate,
                &dl.message,
                &dl.awaits,
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

/// The producer of dead-letter records: idempotent, every replica acks.
pub fn producer(brokers: &str, options: &[(String, String)]) -> anyhow::Result<FutureProducer> {
    let mut cc = crate::kafka::producer_config(options);
    cc.set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "0");
    cc.create().map_err(|e| {
        anyhow::anyhow!(
            "cannot create the dead-letter producer: {}",
            crate::kafka::redact_kafka_error(e)
        )
    })
}

/// Produces the dead-letter record of row `id` and waits for the broker's
/// acknowledgement.
pub async fn publish(producer: &FutureProducer, id: i64, dl: &DeadLetter) -> Result<(), String> {
    let mut headers = OwnedHeaders::new_with_capacity(dl.headers.len() + HEADERS.len());
    for (k, v) in &dl.headers {
        headers = headers.insert(Header {
            key: k,
            value: v.as_deref(),
        });
    }
    let texts = [
        ("pgchain.topic", Some(dl.topic.clone())),
        ("pgchain.partition", Some(dl.partition.to_string())),
        ("pgchain.offset", Some(dl.offset.to_string())),
        ("pgchain.timestamp", dl.timestamp.map(|t| t.to_string())),
        ("pgchain.pipeline", dl.pipeline.clone()),
        ("pgchain.step", dl.step.clone()),
        ("pgchain.sqlstate", dl.sqlstate.clone()),
        ("pgchain.error", Some(dl.message.clone())),
        ("pgchain.attempts", Some(dl.attempts.to_string())),
        ("pgchain.class", Some(dl.class.as_str().to_string())),
        ("pgchain.status", Some(dl.status.as_str().to_string())),
        ("pgchain.awaits", dl.awaits.clone()),
        ("pgchain.id", Some(id.to_string())),
    ];
    for (k, v) in &texts {
        if let Some(v) = v {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
    }
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&dl.dlq_topic).headers(headers);
    if let Some(k) = &dl.key {
        record = record.key(k.as_slice());
    }
    if let Some(v) = &dl.value {
        record = record.payload(v.as_slice());
    }
    if let Some(ts) = dl.timestamp {
        record = record.timestamp(ts);
    }
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map(|_| ())
        .map_err(|(e, _)| format!("dead-letter topic `{}`: {e}", dl.dlq_topic))
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

/// Publishes row `id` and marks it, retrying both until they work or `stop`
/// fires (false).
pub async fn publish_until_done(
    pool: &Pool,
    producer: &FutureProducer,
    stop: &CancellationToken,
    id: i64,
    dl: &DeadLetter,
) -> bool {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    while let Err(e) = publish(producer, id, dl).await {
        warn!(
            id,
            topic = dl.topic,
            partition = dl.partition,
            offset = dl.offset,
            "cannot publish a dead letter, retrying: {e}"
        );
        if !backoff.wait(stop).await {
            return false;
        }
    }
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    while let Err(e) = mark_published(pool, id).await {
        warn!(id, "cannot mark a dead letter published, retrying: {e}");
        if !backoff.wait(stop).await {
            return false;
        }
    }
    true
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
                status: if status == "parked" {
                    Status::Parked
                } else {
                    Status::Dead
                },
                class: match class.as_str() {
                    "dependency" => Class::Dependency,
                    "queued" => Class::Queued,
                    "undecodable" => Class::Undecodable,
                    "unroutable" => Class::Unroutable,
                    _ => Class::Data,
                },
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

/// Creates the dead-letter topics of `topics` that do not exist yet, each
/// with as many partitions as its source topic. Failures are logged: the
/// brokers may create topics on first use, or an operator may have to.
pub async fn ensure_topics(
    brokers: &str,
    options: &[(String, String)],
    topics: &[(String, String)],
) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let mut cc = ClientConfig::new();
    for (k, v) in options {
        cc.set(k, v);
    }
    cc.set("bootstrap.servers", brokers);
    let admin: AdminClient<DefaultClientContext> = match cc.create() {
        Ok(a) => a,
        Err(e) => {
            warn!(
                "cannot create dead-letter topics: {}",
                crate::kafka::redact_kafka_error(e)
            );
            return;
        }
    };
    let admin = std::sync::Arc::new(admin);
    let wanted: Vec<(String, String)> = topics.to_vec();
    let sizes = {
        let admin = admin.clone();
        tokio::task::spawn_blocking(move || {
            wanted
                .into_iter()
                .filter_map(|(source, dlq)| {
                    let exists = admin
                        .inner()
                        .fetch_metadata(Some(&dlq), Duration::from_secs(10))
                        .ok()
                        .is_some_and(|md| {
                            md.topics()
                                .iter()
                                .any(|t| t.error().is_none() && !t.partitions().is_empty())
                        });
                    if exists {
                        return None;
                    }
                    let partitions = admin
                        .inner()
                        .fetch_metadata(Some(&source), Duration::from_secs(10))
                        .ok()
                        .and_then(|md| md.topics().first().map(|t| t.partitions().len()))
                        .filter(|n| *n > 0)
                        .unwrap_or(1);
                    Some((dlq, partitions as i32))
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default()
    };
    if sizes.is_empty() {
        return;
    }
    let new: Vec<NewTopic<'_>> = sizes
        .iter()
        .map(|(t, n)| NewTopic::new(t, *n, TopicReplication::Fixed(-1)))
        .collect();
    match admin.create_topics(&new, &AdminOptions::new()).await {
        Ok(results) => {
            for r in results {
                match r {
                    Ok(t) => tracing::info!(topic = t, "created dead-letter topic"),
                    Err((t, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                        debug!(topic = t, "dead-letter topic exists")
                    }
                    Err((t, e)) => warn!(topic = t, "cannot create dead-letter topic: {e}"),
                }
            }
        }
        Err(e) => warn!("cannot create dead-letter topics: {e}"),
    }
}
