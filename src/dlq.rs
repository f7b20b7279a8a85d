//! `pgchain dlq`: list, replay and discard dead letters of the config's
//! consumer group.

use crate::config::Config;
use crate::ops::stats::Stats;
use crate::recovery::{Redriver, Report, Scope};
use crate::route::Router;
use crate::store::dead_letters::Selection;
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;

/// Which dead letters a command takes; every filter narrows.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only these ids (repeat, or separate with commas).
    pub ids: Vec<i64>,
    pub pipeline: Option<String>,
    /// parked, dead, replayed or discarded (replay and discard take parked
    /// or dead only).
    pub status: Option<String>,
    /// First failed longer ago than this (e.g. 30m, 2h).
    pub older_than: Option<Duration>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
            && self.pipeline.is_none()
            && self.status.is_none()
            && self.older_than.is_none()
    }

    fn check_status(&self, open_only: bool) -> anyhow::Result<()> {
        let allowed: &[&str] = if open_only {
            &["parked", "dead"]
        } else {
            &["parked", "dead", "replayed", "discarded"]
        };
        match &self.status {
            Some(s) if !allowed.contains(&s.as_str()) => {
                anyhow::bail!("--status {s}: expected one of {}", allowed.join(", "))
            }
            _ => Ok(()),
        }
    }

    /// The rows this filter takes.
    fn selection(&self) -> Selection {
        Selection {
            ids: (!self.ids.is_empty()).then(|| self.ids.clone()),
            pipeline: self.pipeline.clone(),
            status: self.status.clone(),
            older_than: self.older_than,
        }
    }

    fn scope(&self) -> Scope {
        Scope {
            rows: self.selection(),
            ..Scope::default()
        }
    }
}

pub use crate::store::dead_letters::Entry;

pub async fn list(config: &Config, filter: &Filter) -> anyhow::Result<Vec<Entry>> {
    filter.check_status(false)?;
    let client = crate::db::connect(&config.postgres.url).await?;
    crate::store::dead_letters::list(&client, &config.kafka.group_id, &filter.selection())
        .await
        .context("cannot read pgchain.dead_letters; is the database migrated?")
}

pub fn table(entries: &[Entry]) -> String {
    let mut out = format!(
        "{:>6}  {:<9}  {:<11}  {:<16}  {:<28}  {:<20}  {:>8}  {}\n",
        "ID",
        "STATUS",
        "CLASS",
        "PIPELINE",
        "TOPIC/PARTITION@OFFSET",
        "FIRST FAILED",
        "REPLAYS",
        "ERROR"
    );
    for e in entries {
        let why = match (&e.step, &e.sqlstate) {
            (Some(step), Some(code)) => format!("step {step}: {} ({code})", e.error),
            (None, Some(code)) => format!("{} ({code})", e.error),
            _ => e.error.clone(),
        };
        let why = match (&e.awaits, &e.resolution) {
            (_, Some(r)) if matches!(e.status.as_str(), "replayed" | "discarded") => {
                format!("{why} [{}: {r}]", e.status)
            }
            (Some(a), _) if e.status == "parked" => format!("{why} [awaits {a}]"),
            _ => why,
        };
        out.push_str(&format!(
            "{:>6}  {:<9}  {:<11}  {:<16}  {:<28}  {:<20}  {:>8}  {}\n",
            e.id,
            e.status,
            e.class,
            e.pipeline.as_deref().unwrap_or("-"),
            format!("{}/{}@{}", e.topic, e.partition, e.offset),
            e.first_failed_at,
            e.replays,
            why
        ));
    }
    out
}

/// Replays the open dead letters in `filter` (all when `all`), in the order
/// they were written, through the current config's chains.
pub async fn replay(config: &Config, filter: &Filter, all: bool) -> anyhow::Result<Report> {
    filter.check_status(true)?;
    if filter.is_empty() && !all {
        anyhow::bail!("name what to replay: --id, --pipeline, --status, --older-than, or --all");
    }
    let redriver = Redriver {
        pool: crate::db::pool(&config.postgres.url, 2)?,
        router: Arc::new(Router::new(config)),
        group: config.kafka.group_id.clone(),
        stats: Stats::default(),
    };
    redriver
        .pass(&filter.scope(), "replayed by pgchain dlq replay")
        .await
        .map_err(|e| anyhow::anyhow!("replay stopped: {e}"))
}

/// Marks the open dead letters in `filter` discarded, keeping `reason`.
/// Returns their ids.
pub async fn discard(
    config: &Config,
    filter: &Filter,
    all: bool,
    reason: &str,
) -> anyhow::Result<Vec<i64>> {
    filter.check_status(true)?;
    if filter.is_empty() && !all {
        anyhow::bail!("name what to discard: --id, --pipeline, --status, --older-than, or --all");
    }
    if reason.trim().is_empty() {
        anyhow::bail!("--reason must say why (it is kept with the dead letter)");
    }
    let client = crate::db::connect(&config.postgres.url).await?;
    crate::store::dead_letters::discard(
        &client,
        &config.kafka.group_id,
        &filter.selection(),
        reason,
    )
    .await
    .context("cannot update pgchain.dead_letters; is the database migrated?")
}
