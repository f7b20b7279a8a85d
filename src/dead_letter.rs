//! The dead-letter path, on the Kafka side: the dead-letter topic. Its
//! table's statements are in [`crate::store::dead_letters`].
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
use crate::chain::ChainError;
use crate::store::dead_letters::{Class, DeadLetter, Reason, Status, mark_published};
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
    (
        "pgchain.group",
        "consumer group; with pgchain.id, what identifies a dead letter",
    ),
];

impl DeadLetter {
    /// The original message of `msg`, read from `topic` (as written in the
    /// config), without the reason yet.
    pub fn of(msg: &OwnedMessage, topic: &str, dlq_topic: String) -> DeadLetter {
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
            topic: topic.to_string(),
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

/// The producer of dead-letter records: idempotent, every replica acks;
/// its errors are said at a bounded rate. Records go to the dead-letter
/// topic with `kafka.prefix` applied.
pub struct DeadLetterProducer {
    producer: FutureProducer<crate::kafka::QuietContext>,
    prefix: crate::config::Prefix,
}

pub fn producer(cluster: &crate::config::Cluster) -> anyhow::Result<DeadLetterProducer> {
    let mut cc = crate::kafka::producer_config(&cluster.options);
    cc.set("bootstrap.servers", &cluster.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "0");
    let producer = cc
        .create_with_context(crate::kafka::QuietContext::new(&cluster.brokers))
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot create the dead-letter producer: {}",
                crate::kafka::redact_kafka_error(e)
            )
        })?;
    Ok(DeadLetterProducer {
        producer,
        prefix: cluster.prefix.clone(),
    })
}

/// Produces the dead-letter record of row `id` and waits for the broker's
/// acknowledgement.
pub async fn publish(
    producer: &DeadLetterProducer,
    group: &str,
    id: i64,
    dl: &DeadLetter,
) -> Result<(), String> {
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
        ("pgchain.group", Some(group.to_string())),
    ];
    for (k, v) in &texts {
        if let Some(v) = v {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
    }
    let topic = producer.prefix.wire(&dl.dlq_topic);
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic).headers(headers);
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
        .producer
        .send(record, Duration::from_secs(30))
        .await
        .map(|_| ())
        .map_err(|(e, _)| format!("dead-letter topic `{}`: {e}", dl.dlq_topic))
}

/// Publishes row `id` and marks it, retrying both until they work or `stop`
/// fires (false).
pub async fn publish_until_done(
    pool: &Pool,
    producer: &DeadLetterProducer,
    group: &str,
    stop: &CancellationToken,
    id: i64,
    dl: &DeadLetter,
) -> bool {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    while let Err(e) = publish(producer, group, id, dl).await {
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

/// Creates the dead-letter topics of `topics` that do not exist yet, each
/// with as many partitions as its source topic. Failures are logged: the
/// brokers may create topics on first use, or an operator may have to.
pub async fn ensure_topics(cluster: &crate::config::Cluster, topics: &[(String, String)]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let mut cc = ClientConfig::new();
    for (k, v) in &cluster.options {
        cc.set(k, v);
    }
    cc.set("bootstrap.servers", &cluster.brokers);
    let admin: AdminClient<crate::kafka::QuietContext> =
        match cc.create_with_context(crate::kafka::QuietContext::new(&cluster.brokers)) {
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
    // The brokers know the names with `kafka.prefix` applied.
    let wanted: Vec<(String, String)> = topics
        .iter()
        .map(|(source, dlq)| (cluster.prefix.wire(source), cluster.prefix.wire(dlq)))
        .collect();
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
