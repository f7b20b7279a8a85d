//! The alert webhook: Slack-compatible JSON (`{"text": …}`) posted to the URL
//! in the environment variable `alerts.webhook_env` (default
//! `PGCHAIN_ALERT_WEBHOOK`) when dead letters grow, a partition's lag stays
//! above `lag_above` for `lag_for`, or a partition is stuck longer than
//! `monitoring.stuck_after`. An alert still firing is posted again at most
//! every `repeat_after` (the dead-letter alert only if the count grew); a
//! resolved message follows when it clears.

use crate::config::Alerts;
use crate::ops::metrics::{Monitor, Stuck, stuck_longer_than};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// One condition as checked now.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// Identifies the alert across checks (`dead_letters`, `lag:t/0`, …).
    pub key: String,
    pub active: bool,
    /// How long it must stay active before it fires.
    pub hold: Duration,
    /// What it is about, for the message.
    pub text: String,
    /// A measure that may grow (open dead letters): when `grows`, the alert
    /// is posted again only when it has grown since the last post.
    pub value: i64,
    pub grows: bool,
}

#[derive(Debug)]
struct State {
    active_since: Instant,
    firing: bool,
    last_post: Option<Instant>,
    /// The measure when last posted.
    last_value: i64,
    text: String,
}

/// Which conditions fire, repeat or resolve; no I/O.
#[derive(Debug)]
pub struct Alerter {
    repeat_after: Duration,
    states: HashMap<String, State>,
}

/// A message to post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Post {
    Firing(String),
    Resolved(String),
}

impl Post {
    pub fn text(&self, group: &str) -> String {
        match self {
            Post::Firing(t) => format!(":rotating_light: pgchain `{group}`: {t}"),
            Post::Resolved(t) => format!(":white_check_mark: pgchain `{group}` resolved: {t}"),
        }
    }
}

impl Alerter {
    pub fn new(repeat_after: Duration) -> Alerter {
        Alerter {
            repeat_after,
            states: HashMap::new(),
        }
    }

    /// Takes the conditions checked at `now` (a key not among them counts
    /// as inactive) and says what to post.
    pub fn evaluate(&mut self, now: Instant, conditions: &[Condition]) -> Vec<Post> {
        let mut posts = Vec::new();
        for c in conditions.iter().filter(|c| c.active) {
            let s = self.states.entry(c.key.clone()).or_insert(State {
                active_since: now,
                firing: false,
                last_post: None,
                last_value: c.value,
                text: c.text.clone(),
            });
            s.text = c.text.clone();
            if now.duration_since(s.active_since) < c.hold {
                continue;
            }
            // Rate limit: one post per `repeat_after` per alert, however
            // much it grows meanwhile.
            let due = s
                .last_post
                .is_none_or(|at| now.duration_since(at) >= self.repeat_after);
            let news = !c.grows || c.value > s.last_value;
            if !s.firing || (due && news) {
                posts.push(Post::Firing(c.text.clone()));
                s.last_post = Some(now);
                s.last_value = c.value;
            }
            s.firing = true;
        }
        let active: Vec<&str> = conditions
            .iter()
            .filter(|c| c.active)
            .map(|c| c.key.as_str())
            .collect();
        let cleared: Vec<String> = self
            .states
            .keys()
            .filter(|k| !active.contains(&k.as_str()))
            .cloned()
            .collect();
        for key in cleared {
            if let Some(s) = self.states.remove(&key)
                && s.firing
            {
                posts.push(Post::Resolved(s.text));
            }
        }
        posts
    }
}

/// The conditions as they stand, from the stats and the open dead letters.
pub fn conditions(
    monitor: &Monitor,
    alerts: &Alerts,
    dead: &std::collections::BTreeMap<(String, String), i64>,
) -> Vec<Condition> {
    let snap = monitor.stats.snapshot();
    let mut out = Vec::new();
    let open_dead: i64 = dead
        .iter()
        .filter(|((_, status), _)| status == "dead")
        .map(|(_, n)| n)
        .sum();
    let by_pipeline: Vec<String> = dead
        .iter()
        .filter(|((_, status), _)| status == "dead")
        .map(|((p, _), n)| format!("{p}: {n}"))
        .collect();
    out.push(Condition {
        key: "dead_letters".into(),
        active: open_dead > 0,
        hold: Duration::ZERO,
        text: format!(
            "{open_dead} dead letter(s) open ({}); see `pgchain dlq list`",
            by_pipeline.join(", ")
        ),
        value: open_dead,
        grows: true,
    });
    let skipped: u64 = snap.skipped_offsets.values().sum();
    if skipped > 0 {
        let where_: Vec<String> = snap
            .skipped_offsets
            .iter()
            .map(|((t, p), n)| format!("{t}/{p}: {n}"))
            .collect();
        out.push(Condition {
            key: "offsets_skipped".into(),
            active: true,
            hold: Duration::ZERO,
            text: format!(
                "{skipped} offset(s) deleted by retention before they were applied were skipped ({}); \
                 see pgchain.skipped_offsets",
                where_.join(", ")
            ),
            value: skipped as i64,
            grows: true,
        });
    }
    for ((topic, partition), lag) in snap.lag() {
        out.push(Condition {
            key: format!("lag:{topic}/{partition}"),
            active: lag > alerts.lag_above,
            hold: alerts.lag_for.0,
            text: format!(
                "lag of {topic}/{partition} above {} for {}s (now {lag})",
                alerts.lag_above,
                alerts.lag_for.0.as_secs()
            ),
            value: 0,
            grows: false,
        });
    }
    for Stuck {
        topic,
        partition,
        why,
        ..
    } in stuck_longer_than(&snap, monitor.stuck_after)
    {
        out.push(Condition {
            key: format!("stuck:{topic}/{partition}"),
            active: true,
            hold: Duration::ZERO,
            text: format!("partition {topic}/{partition} stuck: {why}"),
            value: 0,
            grows: false,
        });
    }
    out
}

/// Refreshes the dead-letter gauge and checks the alerts until `stop`.
pub async fn watch(monitor: Arc<Monitor>, alerts: Alerts, stop: CancellationToken) {
    let webhook = std::env::var(&alerts.webhook_env)
        .ok()
        .filter(|u| !u.trim().is_empty());
    if webhook.is_some() {
        info!(
            env = alerts.webhook_env,
            "alerts go to the webhook in the environment"
        );
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build();
    let client = match client {
        Ok(c) => c,
        Err(e) => {
            warn!("cannot build the webhook client: {}", e.without_url());
            return;
        }
    };
    let mut alerter = Alerter::new(alerts.repeat_after.0);
    let mut tick = tokio::time::interval(alerts.check_every.0);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let dead = match monitor.refresh_dead_letters().await {
            Ok(d) => d,
            Err(e) => {
                debug!("cannot read the dead letters: {e}");
                // Keep the last known counts rather than resolve on an outage.
                monitor
                    .dead_letters
                    .lock()
                    .expect("dead letters lock")
                    .clone()
            }
        };
        let Some(url) = &webhook else {
            continue;
        };
        for post in alerter.evaluate(Instant::now(), &conditions(&monitor, &alerts, &dead)) {
            let text = post.text(&monitor.group);
            info!("alert: {text}");
            let sent = client
                .post(url)
                .json(&serde_json::json!({ "text": text }))
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => warn!(
                    status = r.status().as_u16(),
                    "the alert webhook refused the alert"
                ),
                // Without the URL: it is a secret.
                Err(e) => warn!("cannot post the alert: {}", e.without_url()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(key: &str, active: bool, hold: u64, value: i64) -> Condition {
        Condition {
            key: key.into(),
            active,
            hold: Duration::from_secs(hold),
            text: key.into(),
            value,
            grows: key == "dead",
        }
    }

    #[test]
    fn fires_once_repeats_after_the_limit_and_resolves() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut a = Alerter::new(Duration::from_secs(60));
        assert_eq!(
            a.evaluate(at(0), &[cond("dead", true, 0, 1)]),
            [Post::Firing("dead".into())]
        );
        // Still firing, even growing: rate-limited.
        assert!(a.evaluate(at(10), &[cond("dead", true, 0, 3)]).is_empty());
        assert_eq!(
            a.evaluate(at(61), &[cond("dead", true, 0, 3)]),
            [Post::Firing("dead".into())]
        );
        // Due again, but no more than last time: nothing new to say.
        assert!(a.evaluate(at(130), &[cond("dead", true, 0, 3)]).is_empty());
        assert_eq!(
            a.evaluate(at(62), &[cond("dead", false, 0, 0)]),
            [Post::Resolved("dead".into())]
        );
        assert!(a.evaluate(at(63), &[cond("dead", false, 0, 0)]).is_empty());
    }

    #[test]
    fn skipped_offsets_fire_an_alert_naming_the_partitions() {
        let stats = crate::ops::stats::Stats::default();
        let pool = crate::db::pool("postgres://postgres@127.0.0.1:1/none", 1).unwrap();
        let monitor = Monitor::new(stats.clone(), pool, "g".into(), Duration::from_secs(60));
        let alerts = Alerts::default();
        let none = std::collections::BTreeMap::new();
        let skipped = |m: &Monitor| {
            conditions(m, &alerts, &none)
                .into_iter()
                .find(|c| c.key == "offsets_skipped")
        };
        assert_eq!(skipped(&monitor), None);
        stats.skipped("items", 0, 57, 58);
        let c = skipped(&monitor).expect("an alert");
        assert_eq!(
            (c.active, c.value, c.grows, c.text.as_str()),
            (
                true,
                57,
                true,
                "57 offset(s) deleted by retention before they were applied were skipped (items/0: 57); see pgchain.skipped_offsets"
            )
        );
    }

    #[test]
    fn a_held_condition_fires_only_after_lasting_and_a_short_spike_never_does() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut a = Alerter::new(Duration::from_secs(3600));
        assert!(a.evaluate(at(0), &[cond("lag", true, 300, 0)]).is_empty());
        assert!(
            a.evaluate(at(100), &[cond("lag", false, 300, 0)])
                .is_empty()
        );
        assert!(a.evaluate(at(200), &[cond("lag", true, 300, 0)]).is_empty());
        assert!(a.evaluate(at(499), &[cond("lag", true, 300, 0)]).is_empty());
        assert_eq!(
            a.evaluate(at(500), &[cond("lag", true, 300, 0)]),
            [Post::Firing("lag".into())]
        );
        // Not a growing measure: a reminder once the limit has passed.
        assert!(a.evaluate(at(600), &[cond("lag", true, 300, 0)]).is_empty());
        assert_eq!(
            a.evaluate(at(4100), &[cond("lag", true, 300, 0)]),
            [Post::Firing("lag".into())]
        );
        // A condition that disappears (a revoked partition) resolves.
        assert_eq!(a.evaluate(at(4101), &[]), [Post::Resolved("lag".into())]);
    }
}
