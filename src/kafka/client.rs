//! Small Kafka helpers for the demo, the benchmark and tests: producing
//! records and reading high watermarks to know when topics are drained.

use crate::config::Cluster;
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
    produce_on(&Cluster::plain(brokers), records)
}

/// As [`produce`], on a configured cluster (security options, and each
/// record's topic with `kafka.prefix` applied).
pub fn produce_on(cluster: &Cluster, records: &[Record]) -> anyhow::Result<()> {
    let mut cc = producer_config(&cluster.options);
    let producer: BaseProducer = cc
        .set("bootstrap.servers", &cluster.brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .map_err(|e| anyhow::anyhow!("cannot create a producer: {}", redact_kafka_error(e)))?;
    for r in records {
        let topic = cluster.prefix.wire(&r.topic);
        let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&topic);
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
    high_watermarks_on(&Cluster::plain(brokers), topics)
}

/// As [`high_watermarks`], on a configured cluster.
pub fn high_watermarks_on(
    cluster: &Cluster,
    topics: &[String],
) -> anyhow::Result<HashMap<(String, i32), i64>> {
    Ok(watermarks_on(cluster, topics)?
        .into_iter()
        .map(|(tp, (_, high))| (tp, high))
        .collect())
}

/// (log start, high watermark) of every partition of `topics`, by the
/// names as written (the brokers are asked with `kafka.prefix` applied).
pub fn watermarks_on(
    cluster: &Cluster,
    topics: &[String],
) -> anyhow::Result<HashMap<(String, i32), (i64, i64)>> {
    let mut cc = ClientConfig::new();
    for (k, v) in &cluster.options {
        cc.set(k, v);
    }
    let consumer: BaseConsumer = cc
        .set("bootstrap.servers", &cluster.brokers)
        .create()
        .map_err(|e| {
            anyhow::anyhow!("cannot create a metadata client: {}", redact_kafka_error(e))
        })?;
    let mut out = HashMap::new();
    for topic in topics {
        let wire = cluster.prefix.wire(topic);
        let md = consumer.fetch_metadata(Some(&wire), Duration::from_secs(10))?;
        for t in md.topics() {
            for p in t.partitions() {
                let marks = consumer.fetch_watermarks(&wire, p.id(), Duration::from_secs(10))?;
                out.insert((topic.clone(), p.id()), marks);
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

/// Says a repeated error once, then at most every `every`, with how many
/// were left unsaid: librdkafka reports an unreachable broker many times a
/// second.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    seen: std::sync::Mutex<HashMap<String, (std::time::Instant, u64)>>,
}

impl Throttle {
    pub fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            seen: std::sync::Mutex::default(),
        }
    }

    /// `Some(unsaid)` when this occurrence of `key` is to be said now.
    pub fn admit(&self, key: &str) -> Option<u64> {
        self.admit_at(key, std::time::Instant::now())
    }

    fn admit_at(&self, key: &str, now: std::time::Instant) -> Option<u64> {
        let mut seen = self.seen.lock().expect("throttle lock");
        match seen.get_mut(key) {
            Some((said, unsaid)) if now.duration_since(*said) < self.every => {
                *unsaid += 1;
                None
            }
            Some((said, unsaid)) => {
                let n = *unsaid;
                (*said, *unsaid) = (now, 0);
                Some(n)
            }
            None => {
                seen.insert(key.to_string(), (now, 0));
                Some(0)
            }
        }
    }
}

/// How often a repeated librdkafka error is said.
pub const ERROR_EVERY: Duration = Duration::from_secs(30);

/// True for an error that means the brokers cannot be reached.
pub fn unreachable(error: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode::*;
    matches!(
        error.rdkafka_error_code(),
        Some(AllBrokersDown | BrokerTransportFailure | Resolve | Authentication | SSL)
    )
}

/// Says a librdkafka error through `throttle`, naming the brokers.
pub fn say_error(
    throttle: &Throttle,
    brokers: &str,
    error: &rdkafka::error::KafkaError,
    reason: &str,
) {
    // Every client (consumer, dead-letter producer, admin) meets the same
    // unreachable cluster: that is said once for all of them.
    static UNREACHABLE: std::sync::LazyLock<Throttle> =
        std::sync::LazyLock::new(|| Throttle::new(ERROR_EVERY));
    let admitted = if unreachable(error) {
        UNREACHABLE.admit(brokers)
    } else {
        throttle.admit(&format!("{:?}", error.rdkafka_error_code()))
    };
    if let Some(unsaid) = admitted {
        let more = if unsaid > 0 {
            format!(
                " ({unsaid} more like it in the last {} s)",
                ERROR_EVERY.as_secs()
            )
        } else {
            String::new()
        };
        if unreachable(error) {
            tracing::error!(
                "cannot reach the Kafka brokers {brokers} (kafka.brokers): {error}: {reason}{more}"
            );
        } else {
            tracing::error!("Kafka ({brokers}): {error}: {reason}{more}");
        }
    }
}

/// The context of pgchain's other Kafka clients (the dead-letter producer,
/// the admin client): their errors said at a bounded rate.
pub struct QuietContext {
    brokers: String,
    throttle: Throttle,
}

impl QuietContext {
    pub fn new(brokers: &str) -> QuietContext {
        QuietContext {
            brokers: brokers.to_string(),
            throttle: Throttle::new(ERROR_EVERY),
        }
    }
}

impl rdkafka::ClientContext for QuietContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        say_error(&self.throttle, &self.brokers, &error, reason);
    }
}

#[cfg(test)]
mod throttle_tests {
    use super::*;

    #[test]
    fn a_repeated_error_is_said_once_then_at_most_every_period_with_the_count() {
        let t = Throttle::new(Duration::from_secs(30));
        let t0 = std::time::Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(t.admit_at("down", at(0)), Some(0));
        assert_eq!(t.admit_at("down", at(1)), None);
        assert_eq!(t.admit_at("down", at(29)), None);
        assert_eq!(t.admit_at("other", at(29)), Some(0));
        assert_eq!(t.admit_at("down", at(30)), Some(2));
        assert_eq!(t.admit_at("down", at(31)), None);
    }
}
