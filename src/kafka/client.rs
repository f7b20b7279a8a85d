//! Small Kafka helpers for the demo, the benchmark and tests: producing
//! records and reading high watermarks to know when topics are drained.

use crate::ops::stats::Stats;
use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One record to produce; `None` value is a tombstone.
pub struct Record {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// Kafka headers, in order; a `None` value is a null header.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Produces `records` in order (per key, each lands in its key's partition)
/// and waits until the brokers have them all.
pub fn produce(brokers: &str, records: &[Record]) -> anyhow::Result<()> {
    produce_with(brokers, &[], records)
}

/// As [`produce`], with librdkafka options (security settings).
pub fn produce_with(
    brokers: &str,
    options: &[(String, String)],
    records: &[Record],
) -> anyhow::Result<()> {
    let mut cc = producer_config(options);
    let producer: BaseProducer = cc
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .map_err(|e| anyhow::anyhow!("cannot create a producer: {}", redact_kafka_error(e)))?;
    for r in records {
        let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&r.topic);
        if let Some(k) = &r.key {
            rec = rec.key(k.as_slice());
        }
        if let Some(v) = &r.value {
            rec = rec.payload(v.as_slice());
        }
        if !r.headers.is_empty() {
            let mut h = rdkafka::message::OwnedHeaders::new_with_capacity(r.headers.len());
            for (k, v) in &r.headers {
                h = h.insert(rdkafka::message::Header {
                    key: k,
                    value: v.as_deref(),
                });
            }
            rec = rec.headers(h);
        }
        let mut rec = rec;
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((e, back))
                    if e.rdkafka_error_code()
                        == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) =>
                {
                    producer.poll(Duration::from_millis(10));
                    rec = back;
                }
                Err((e, _)) => return Err(e).context("cannot produce"),
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(60))
        .context("producer flush")?;
    Ok(())
}

/// A producer's config from `kafka.options`, without the consumer-only
/// options (they would make the producer refuse to start).
pub fn producer_config(options: &[(String, String)]) -> ClientConfig {
    let mut cc = ClientConfig::new();
    for (k, v) in options {
        if !k.starts_with("auto.") && !k.starts_with("session.") && !k.starts_with("heartbeat.") {
            cc.set(k, v);
        }
    }
    cc
}

/// High watermark (next offset to be written) of every partition of `topics`.
pub fn high_watermarks(
    brokers: &str,
    topics: &[String],
) -> anyhow::Result<HashMap<(String, i32), i64>> {
    high_watermarks_with(brokers, &[], topics)
}

/// As [`high_watermarks`], with librdkafka options (security settings).
pub fn high_watermarks_with(
    brokers: &str,
    options: &[(String, String)],
    topics: &[String],
) -> anyhow::Result<HashMap<(String, i32), i64>> {
    let mut cc = ClientConfig::new();
    for (k, v) in options {
        cc.set(k, v);
    }
    let consumer: BaseConsumer = cc.set("bootstrap.servers", brokers).create().map_err(|e| {
        anyhow::anyhow!("cannot create a metadata client: {}", redact_kafka_error(e))
    })?;
    let mut out = HashMap::new();
    for topic in topics {
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        for t in md.topics() {
            for p in t.partitions() {
                let (_, high) =
                    consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
                out.insert((topic.clone(), p.id()), high);
            }
        }
    }
    Ok(out)
}

/// Resolves once the dispatcher has processed everything now in `topics`
/// (or after `timeout`, with an error).
pub async fn drained(
    stats: Stats,
    brokers: String,
    topics: Vec<String>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let marks = {
        let (b, t) = (brokers.clone(), topics.clone());
        tokio::task::spawn_blocking(move || high_watermarks(&b, &t)).await??
    };
    let start = Instant::now();
    while !stats.caught_up(&marks) {
        if start.elapsed() > timeout {
            anyhow::bail!(
                "topics not drained after {timeout:?}: {:?}",
                stats.snapshot().stuck
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// A client-creation error without the option's value (it may be a password).
pub fn redact_kafka_error(e: rdkafka::error::KafkaError) -> String {
    match e {
        rdkafka::error::KafkaError::ClientConfig(_, desc, key, value) => {
            let desc = if value.is_empty() {
                desc
            } else {
                desc.replace(&value, "***")
            };
            format!("kafka option `{key}`: {desc}")
        }
        other => other.to_string(),
    }
}
