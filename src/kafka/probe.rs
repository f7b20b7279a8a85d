//! `pgchain check` asks the brokers: can they be reached with the
//! configured security settings, and do the pipelines' topics exist? A
//! failure carries librdkafka's own words (an SSL handshake, a SASL
//! authentication), never an option's value.

use crate::config::Cluster;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use std::sync::Mutex;
use std::time::Duration;

/// What the brokers answered.
#[derive(Debug)]
pub struct Reached {
    /// Brokers in the cluster's metadata.
    pub brokers: usize,
    /// Topics as written in the config, each with what the brokers said of
    /// it (`None`: it exists).
    pub topics: Vec<(String, Option<TopicProblem>)>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum TopicProblem {
    /// Not on the brokers (yet): `run` waits for it.
    Missing,
    /// The brokers refuse it to these credentials (a missing prefix on a
    /// multi-tenant cluster, or an ACL).
    Refused(String),
}

/// librdkafka's errors while the brokers are asked.
struct Heard {
    errors: Mutex<Vec<(KafkaError, String)>>,
}

impl rdkafka::ClientContext for Heard {
    fn error(&self, error: KafkaError, reason: &str) {
        self.errors
            .lock()
            .expect("probe lock")
            .push((error, reason.to_string()));
    }
}

impl rdkafka::consumer::ConsumerContext for Heard {}

/// An error no retry mends: the brokers answered and refused.
fn refused(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SSL)
    )
}

/// Asks the brokers for the cluster's metadata within `timeout`: the
/// brokers and the state of each of `topics`. Err: why they cannot be
/// reached, in librdkafka's words.
pub fn reach(cluster: &Cluster, topics: &[String], timeout: Duration) -> Result<Reached, String> {
    let mut cc = ClientConfig::new();
    for (k, v) in &cluster.options {
        cc.set(k, v);
    }
    cc.set("bootstrap.servers", &cluster.brokers);
    let heard = Heard {
        errors: Mutex::new(Vec::new()),
    };
    let consumer: BaseConsumer<Heard> = cc
        .create_with_context(heard)
        .map_err(crate::kafka::redact_kafka_error)?;
    // One request with the whole timeout (a second one could go to a broker
    // the first answer named, through another listener); meanwhile a
    // refusal (SSL, authentication) ends the wait at once.
    let consumer = std::sync::Arc::new(consumer);
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let consumer = consumer.clone();
        std::thread::spawn(move || {
            let _ = tx.send(consumer.fetch_metadata(None, timeout));
        });
    }
    let md = loop {
        // librdkafka's errors reach the context only through a poll.
        let _ = consumer.poll(Duration::ZERO);
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Ok(md)) => break md,
            Ok(Err(e)) => {
                let _ = consumer.poll(Duration::from_millis(100));
                let errors = consumer.context().errors.lock().expect("probe lock");
                return Err(
                    match errors
                        .iter()
                        .rev()
                        .find(|(e, _)| refused(e))
                        .or(errors.last())
                    {
                        Some((e, reason)) if !refused(e) => format!("{e}: {reason}"),
                        Some((_, reason)) => reason.clone(),
                        None => format!("no answer within {} s: {e}", timeout.as_secs()),
                    },
                );
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err("the metadata request ended without an answer".into());
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let errors = consumer.context().errors.lock().expect("probe lock");
                if let Some((_, reason)) = errors.iter().rev().find(|(e, _)| refused(e)) {
                    return Err(reason.clone());
                }
            }
        }
    };
    let mut out = Vec::new();
    for topic in topics {
        let wire = cluster.prefix.wire(topic);
        let problem = match md.topics().iter().find(|t| t.name() == wire) {
            None => Some(TopicProblem::Missing),
            Some(t) => match t.error().map(RDKafkaErrorCode::from) {
                None => None,
                Some(RDKafkaErrorCode::UnknownTopicOrPartition) => Some(TopicProblem::Missing),
                Some(code) => Some(TopicProblem::Refused(code.to_string())),
            },
        };
        out.push((topic.clone(), problem));
    }
    Ok(Reached {
        brokers: md.brokers().len(),
        topics: out,
    })
}

/// The value of the newest message of `topic` (as written in the config),
/// looked for in every partition within `timeout`; `None` when the topic is
/// empty, missing or does not answer in time.
pub fn newest_value(cluster: &Cluster, topic: &str, timeout: Duration) -> Option<Vec<u8>> {
    use rdkafka::message::Message;
    use rdkafka::{Offset, TopicPartitionList};
    let mut cc = ClientConfig::new();
    for (k, v) in &cluster.options {
        cc.set(k, v);
    }
    cc.set("bootstrap.servers", &cluster.brokers)
        .set("group.id", "pgchain-check")
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = cc.create().ok()?;
    let wire = cluster.prefix.wire(topic);
    let md = consumer.fetch_metadata(Some(&wire), timeout).ok()?;
    let mut tpl = TopicPartitionList::new();
    for p in md.topics().first()?.partitions() {
        let (low, high) = consumer.fetch_watermarks(&wire, p.id(), timeout).ok()?;
        if high > low {
            tpl.add_partition_offset(&wire, p.id(), Offset::Offset(high - 1))
                .ok()?;
        }
    }
    if tpl.count() == 0 {
        return None;
    }
    consumer.assign(&tpl).ok()?;
    let deadline = std::time::Instant::now() + timeout;
    let mut newest: Option<(i64, Vec<u8>)> = None;
    let mut seen = 0;
    while seen < tpl.count() && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            seen += 1;
            let ts = m.timestamp().to_millis().unwrap_or(0);
            if let Some(v) = m.payload()
                && newest.as_ref().is_none_or(|(t, _)| ts >= *t)
            {
                newest = Some((ts, v.to_vec()));
            }
        }
    }
    newest.map(|(_, v)| v)
}
