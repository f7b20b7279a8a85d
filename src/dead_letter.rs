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

/// Creates the dead-letter topics of `topics` (pairs of source topic and
/// dead-letter topic, as written in the config) that do not exist yet, each
/// with as many partitions as its source topic (the most of its sources,
/// when several share one).
///
/// The brokers are asked for the whole cluster's metadata, which creates
/// nothing (asking for one topic by name would have a broker that creates
/// topics on first use create it, with its default partition count). A topic
/// that cannot be created here is left to the dead-letter producer: the
/// broker then creates it on the first dead letter, with its default
/// partition count, and a warning says so. Nothing waits longer than
/// [`METADATA_TIMEOUT`] plus [`CREATE_TIMEOUT`].
pub async fn ensure_topics(cluster: &crate::config::Cluster, topics: &[(String, String)]) {
    use rdkafka::admin::{AdminClient, AdminOptions};
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
    let topics: Vec<(String, String)> = topics
        .iter()
        .map(|(source, dlq)| (cluster.prefix.wire(source), cluster.prefix.wire(dlq)))
        .collect();
    let topics = &topics[..];
    let seen = {
        let admin = admin.clone();
        tokio::task::spawn_blocking(move || Brokers::of(admin.inner()))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r)
    };
    let seen = match seen {
        Ok(c) => c,
        Err(e) => {
            for (_, dlq) in topics {
                left_to_the_broker(dlq, &format!("cannot read the cluster's metadata: {e}"));
            }
            return;
        }
    };
    let plan = Plan::of(&seen, topics);
    for (dlq, why) in &plan.left {
        left_to_the_broker(dlq, why);
    }
    if plan.create.is_empty() {
        return;
    }
    if !seen.has_controller() {
        // A cluster that names no live controller cannot take CreateTopics
        // (librdkafka would wait for one until the request timeout).
        for (dlq, _) in &plan.create {
            left_to_the_broker(
                dlq,
                "the brokers name no controller among them to create it",
            );
        }
        return;
    }
    let new = plan.new_topics();
    let opts = AdminOptions::new()
        .request_timeout(Some(CREATE_TIMEOUT))
        .operation_timeout(Some(CREATE_TIMEOUT));
    match admin.create_topics(&new, &opts).await {
        Ok(results) => {
            for r in results {
                match r {
                    Ok(t) => {
                        let partitions = plan.partitions(&t);
                        tracing::info!(topic = t, partitions, "created dead-letter topic")
                    }
                    Err((t, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                        debug!(topic = t, "dead-letter topic exists")
                    }
                    Err((t, e)) => left_to_the_broker(&t, &e.to_string()),
                }
            }
        }
        Err(e) => {
            for (dlq, _) in &plan.create {
                left_to_the_broker(dlq, &e.to_string());
            }
        }
    }
}

/// How long the cluster's metadata may take to arrive.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a CreateTopics request may take, the broker's part included.
pub const CREATE_TIMEOUT: Duration = Duration::from_secs(15);

fn left_to_the_broker(dlq: &str, why: &str) {
    warn!(
        topic = dlq,
        "cannot create dead-letter topic: {why}; the broker creates it on the first dead letter, \
         with its default partition count"
    );
}

/// What the brokers said about the cluster: every topic with its partition
/// count, the brokers' ids and the controller they named.
#[derive(Debug, Default)]
struct Brokers {
    topics: std::collections::HashMap<String, usize>,
    brokers: Vec<i32>,
    controller: Option<i32>,
}

impl Brokers {
    /// Asks for the metadata of every topic (which creates none).
    fn of<C: rdkafka::ClientContext>(
        client: &rdkafka::client::Client<C>,
    ) -> Result<Brokers, String> {
        let md = client
            .fetch_metadata(None, METADATA_TIMEOUT)
            .map_err(|e| crate::kafka::redact_kafka_error(e).to_string())?;
        let topics = md
            .topics()
            .iter()
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .map(|t| (t.name().to_string(), t.partitions().len()))
            .collect();
        // SAFETY: the client's handle is valid while `client` lives; with a
        // timeout of 0 the call only reads the controller id librdkafka
        // cached from the metadata response above.
        let controller =
            unsafe { rdkafka::bindings::rd_kafka_controllerid(client.native_ptr(), 0) };
        Ok(Brokers {
            topics,
            brokers: md.brokers().iter().map(|b| b.id()).collect(),
            controller: (controller >= 0).then_some(controller),
        })
    }

    /// True when the controller the brokers named is one of them.
    fn has_controller(&self) -> bool {
        self.controller.is_some_and(|c| self.brokers.contains(&c))
    }
}

/// The dead-letter topics to create, with their partition counts, and
/// those left to the broker, with the reason.
#[derive(Debug, Default, PartialEq)]
struct Plan {
    create: Vec<(String, i32)>,
    left: Vec<(String, String)>,
}

impl Plan {
    fn of(seen: &Brokers, pairs: &[(String, String)]) -> Plan {
        let mut plan = Plan::default();
        for (source, dlq) in pairs {
            if seen.topics.contains_key(dlq) {
                continue;
            }
            match seen.topics.get(source) {
                // One dead-letter topic for several sources: the most
                // partitions of any.
                Some(&n) => {
                    let n = n.min(i32::MAX as usize) as i32;
                    match plan.create.iter_mut().find(|(t, _)| t == dlq) {
                        Some((_, m)) => *m = (*m).max(n),
                        None => plan.create.push((dlq.clone(), n)),
                    }
                }
                None => plan.left.push((
                    dlq.clone(),
                    format!("its source topic `{source}` does not exist yet"),
                )),
            }
        }
        plan.left
            .retain(|(t, _)| !plan.create.iter().any(|(c, _)| c == t));
        plan
    }

    /// The CreateTopics request: the source's partition count, the broker's
    /// default replication factor.
    fn new_topics(&self) -> Vec<rdkafka::admin::NewTopic<'_>> {
        use rdkafka::admin::{NewTopic, TopicReplication};
        self.create
            .iter()
            .map(|(t, n)| NewTopic::new(t, *n, TopicReplication::Fixed(-1)))
            .collect()
    }

    fn partitions(&self, topic: &str) -> i32 {
        self.create
            .iter()
            .find(|(t, _)| t == topic)
            .map_or(0, |(_, n)| *n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn a_missing_dead_letter_topic_is_asked_for_with_its_sources_partition_count() {
        let seen = Brokers {
            topics: [
                ("items", 2),
                ("orders", 3),
                ("orders.dlq", 3),
                ("people", 5),
            ]
            .into_iter()
            .map(|(t, n)| (t.to_string(), n))
            .collect(),
            brokers: vec![1, 2, 3],
            controller: Some(2),
        };
        let plan = Plan::of(
            &seen,
            &pairs(&[
                ("items", "items.dlq"),
                ("orders", "orders.dlq"),
                ("absent", "absent.dlq"),
                ("items", "all.dlq"),
                ("people", "all.dlq"),
            ]),
        );
        assert_eq!(
            plan,
            Plan {
                create: vec![("items.dlq".into(), 2), ("all.dlq".into(), 5)],
                left: vec![(
                    "absent.dlq".into(),
                    "its source topic `absent` does not exist yet".into()
                )],
            }
        );
        let asked: Vec<(&str, i32, i32)> = plan
            .new_topics()
            .iter()
            .map(|t| match t.replication {
                rdkafka::admin::TopicReplication::Fixed(r) => (t.name, t.num_partitions, r),
                _ => panic!("variable replication"),
            })
            .collect();
        assert_eq!(asked, [("items.dlq", 2, -1), ("all.dlq", 5, -1)]);
        assert!(seen.has_controller());
    }

    #[test]
    fn a_controller_id_that_names_no_broker_is_no_controller() {
        let mut seen = Brokers {
            brokers: vec![1, 2, 3],
            controller: Some(0),
            ..Default::default()
        };
        assert!(!seen.has_controller());
        seen.controller = None;
        assert!(!seen.has_controller());
    }
}
