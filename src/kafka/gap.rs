//! A gap: offsets of a partition that retention deleted before pgchain
//! applied them. Found at assignment (the ledger's next offset is below the
//! log's start) or while running (librdkafka reports that it cannot fetch
//! the next offset: `auto.offset.reset` is `error`, so it never jumps on by
//! itself). `kafka.on_gap` decides: stop the partition with the range named,
//! or skip it: logged, counted, recorded in `pgchain.skipped_offsets` with
//! the ledger moved past it, in one transaction.

use crate::ops::stats::Stats;
use deadpool_postgres::Pool;
use tracing::warn;

/// Offsets `from..=to` of `topic`/`partition`, deleted before they were applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub topic: String,
    pub partition: i32,
    pub from: i64,
    pub to: i64,
}

impl Gap {
    /// The gap between the next offset to apply and the log's start, if any.
    pub fn between(topic: &str, partition: i32, next: i64, log_start: i64) -> Option<Gap> {
        (next < log_start).then(|| Gap {
            topic: topic.to_string(),
            partition,
            from: next,
            to: log_start - 1,
        })
    }

    pub fn events(&self) -> u64 {
        (self.to - self.from + 1) as u64
    }

    /// Why the partition stops (`kafka.on_gap: stop`).
    pub fn stop_reason(&self) -> String {
        format!(
            "offsets {} to {} ({} events) were deleted by retention before pgchain applied them; \
             re-snapshot the source, then set the ledger row to {} (or set `kafka.on_gap: skip` \
             to go on and record such gaps in pgchain.skipped_offsets)",
            self.from,
            self.to,
            self.events(),
            self.to
        )
    }

    /// Records the gap and moves the ledger past it (`kafka.on_gap: skip`),
    /// then logs and counts it. Err: why it could not be recorded.
    pub async fn skip(&self, pool: &Pool, group: &str, stats: &Stats) -> Result<(), String> {
        let reason = format!(
            "deleted by retention before they were applied (kafka.on_gap: skip), {} events",
            self.events()
        );
        let client = pool.get().await.map_err(|e| e.to_string())?;
        crate::store::ledger::skip_gap(
            &client,
            group,
            &self.topic,
            self.partition,
            (self.from, self.to),
            &reason,
        )
        .await
        .map_err(|e| crate::chain::describe(&e))?;
        warn!(
            topic = self.topic,
            partition = self.partition,
            from = self.from,
            to = self.to,
            "skipped offsets {} to {} of {}/{} ({} events): deleted by retention before they were applied; \
             recorded in pgchain.skipped_offsets",
            self.from,
            self.to,
            self.topic,
            self.partition,
            self.events()
        );
        stats.skipped(&self.topic, self.partition, self.events(), self.to + 1);
        Ok(())
    }
}
