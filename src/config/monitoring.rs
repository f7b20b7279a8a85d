//! `monitoring:` and `alerts:`: the HTTP listener and the alert webhook.

use super::Dur;
use serde::Deserialize;

/// `monitoring:`: `/metrics`, `/healthz` and `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Monitoring {
    /// Address of the HTTP listener, e.g. `0.0.0.0:9187`; none when unset
    /// or empty.
    pub listen: Option<String>,
    /// `/readyz` fails while a partition has been stopped, or retrying
    /// without progress, for longer than this.
    pub stuck_after: Dur,
    /// How often librdkafka reports the partitions' high watermarks (the
    /// lag metric), as `statistics.interval.ms`.
    pub lag_interval: Dur,
}

impl Default for Monitoring {
    fn default() -> Self {
        Monitoring {
            listen: None,
            stuck_after: Dur::ms(60_000),
            lag_interval: Dur::ms(5_000),
        }
    }
}

impl Monitoring {
    /// The listener's address; `None` when unset or empty (`${VAR:-}`).
    pub fn listen_addr(&self) -> Option<&str> {
        self.listen
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty())
    }
}

/// `alerts:`: when to post to the webhook named by `PGCHAIN_ALERT_WEBHOOK`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Alerts {
    /// The environment variable holding the webhook URL (a secret: it is
    /// never in the file, the logs or an error).
    pub webhook_env: String,
    /// Lag of a partition (events) that raises an alert once it has lasted
    /// `lag_for`.
    pub lag_above: i64,
    pub lag_for: Dur,
    /// An alert still firing is posted again at most this often.
    pub repeat_after: Dur,
    /// How often the conditions are checked.
    pub check_every: Dur,
}

impl Default for Alerts {
    fn default() -> Self {
        Alerts {
            webhook_env: "PGCHAIN_ALERT_WEBHOOK".to_string(),
            lag_above: 10_000,
            lag_for: Dur::ms(5 * 60_000),
            repeat_after: Dur::ms(60 * 60_000),
            check_every: Dur::ms(15_000),
        }
    }
}
