//! Failure-handling settings: retries per pipeline and the dead-letter path.

use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// A duration in YAML: `250ms`, `5s`, `5m`, `1h`, or a number of milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn ms(ms: u64) -> Dur {
        Dur(Duration::from_millis(ms))
    }
}

/// Parses `250ms`, `5s`, `5m`, `1h` or plain milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (like 250ms, 5s, 5m or 1h)"))?;
    let ms = match unit.trim() {
        "" | "ms" => n,
        "s" => n * 1000,
        "m" | "min" => n * 60_000,
        "h" => n * 3_600_000,
        _ => {
            return Err(format!(
                "`{text}` is not a duration (like 250ms, 5s, 5m or 1h)"
            ));
        }
    };
    Ok(Duration::from_millis(ms))
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Dur, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Ms(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Ms(ms) => Ok(Dur::ms(ms)),
            Raw::Text(t) => parse_duration(&t)
                .map(Dur)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// How often one error class is retried before the event leaves the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassRetry {
    /// Chain runs in all, the first included.
    pub attempts: u32,
    /// Wait before the second run; doubles each time up to `max_backoff`.
    pub backoff: Dur,
    pub max_backoff: Dur,
}

/// `retries:` of a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retries {
    /// Connection lost, serialization failure, deadlock, lock timeout,
    /// shutdown: retried forever (`attempts` is ignored), partition paused.
    #[serde(deserialize_with = "transient")]
    pub transient: ClassRetry,
    /// A step raised PGW01: then the event is parked.
    #[serde(deserialize_with = "dependency")]
    pub dependency: ClassRetry,
    /// Any other error of the chain: then the event is dead-lettered.
    #[serde(deserialize_with = "data")]
    pub data: ClassRetry,
}

const TRANSIENT: ClassRetry = ClassRetry {
    attempts: u32::MAX,
    backoff: Dur::ms(100),
    max_backoff: Dur::ms(30_000),
};
const DEPENDENCY: ClassRetry = ClassRetry {
    attempts: 3,
    backoff: Dur::ms(50),
    max_backoff: Dur::ms(1_000),
};
const DATA: ClassRetry = ClassRetry {
    attempts: 3,
    backoff: Dur::ms(100),
    max_backoff: Dur::ms(5_000),
};

impl Default for Retries {
    fn default() -> Self {
        Retries {
            transient: TRANSIENT,
            dependency: DEPENDENCY,
            data: DATA,
        }
    }
}

/// A class's settings in YAML, each key optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartialRetry {
    attempts: Option<u32>,
    backoff: Option<Dur>,
    max_backoff: Option<Dur>,
}

fn merged<'de, D: Deserializer<'de>>(d: D, base: ClassRetry) -> Result<ClassRetry, D::Error> {
    let p = PartialRetry::deserialize(d)?;
    Ok(ClassRetry {
        attempts: p.attempts.unwrap_or(base.attempts),
        backoff: p.backoff.unwrap_or(base.backoff),
        max_backoff: p.max_backoff.unwrap_or(base.max_backoff),
    })
}

fn transient<'de, D: Deserializer<'de>>(d: D) -> Result<ClassRetry, D::Error> {
    let mut r = merged(d, TRANSIENT)?;
    r.attempts = u32::MAX;
    Ok(r)
}

fn dependency<'de, D: Deserializer<'de>>(d: D) -> Result<ClassRetry, D::Error> {
    merged(d, DEPENDENCY)
}

fn data<'de, D: Deserializer<'de>>(d: D) -> Result<ClassRetry, D::Error> {
    merged(d, DATA)
}

/// `dead_letters:`: where events go that leave their partition's way.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeadLetters {
    /// Topic for an event of `{topic}`; `{topic}` is replaced.
    pub topic: String,
    /// Create missing dead-letter topics at start (as many partitions as the
    /// source topic).
    pub create_topics: bool,
    /// How often `pgchain run` re-drives parked and dead events.
    pub recovery_interval: Dur,
    /// Replays a recovery pass tries per event before leaving it to
    /// `pgchain dlq replay`.
    pub recovery_attempts: u32,
}

impl Default for DeadLetters {
    fn default() -> Self {
        DeadLetters {
            topic: "{topic}.dlq".to_string(),
            create_topics: true,
            recovery_interval: Dur::ms(5 * 60_000),
            recovery_attempts: 10,
        }
    }
}

impl DeadLetters {
    pub fn topic_for(&self, topic: &str) -> String {
        self.topic.replace("{topic}", topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("40"), Ok(Duration::from_millis(40)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("s").is_err());
    }
}
