//! What the benchmarks measure: latencies and throughput, and memory read
//! from /proc.

use std::time::Duration;

/// Throughput and latency of one contender.
pub(crate) struct Figures {
    pub(crate) events: usize,
    pub(crate) elapsed: Duration,
    pub(crate) latencies_us: Vec<u32>,
}

impl Figures {
    pub(crate) fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }

    pub(crate) fn line(&self, name: &str) -> String {
        let mut l = self.latencies_us.clone();
        l.sort_unstable();
        let pct = |p: f64| {
            l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0)
        };
        format!(
            "{name:<34} {:>9.0} events/s   p50 {:>6.2} ms   p99 {:>6.2} ms",
            self.rate(),
            pct(0.50) as f64 / 1000.0,
            pct(0.99) as f64 / 1000.0
        )
    }
}

/// Peak resident set size (VmHWM) of a process (`self` or a pid), in KiB.
pub(crate) fn peak_rss_kib(pid: &str) -> u64 {
    proc_kib(&format!("/proc/{pid}/status"), "VmHWM:")
}

/// A `Name:  123 kB` line of a /proc file, in KiB (0 when not readable).
pub(crate) fn proc_kib(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Runs the dispatcher of `config` until `topic` is drained, timed from its
/// first applied event of `pipeline` (after the group join), and checks
/// that all `total` events were applied.
pub(crate) async fn drain(
    config: pgchain::config::Config,
    pipeline: &str,
    brokers: &str,
    topic: &str,
    total: usize,
) -> anyhow::Result<Figures> {
    use std::time::Instant;
    let running = pgchain::dispatcher::Dispatcher::new(config)?
        .record_latencies()
        .spawn();
    let stats = running.stats.clone();
    let applied =
        |s: &pgchain::ops::stats::Snapshot| s.pipelines.get(pipeline).map_or(0, |c| c.applied);
    while applied(&stats.snapshot()) == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let (start, before) = (Instant::now(), applied(&stats.snapshot()));
    pgchain::kafka::drained(
        stats.clone(),
        brokers.to_string(),
        vec![topic.to_string()],
        Duration::from_secs(3600),
    )
    .await?;
    let elapsed = start.elapsed();
    running.stop().await?;
    let snap = stats.snapshot();
    anyhow::ensure!(
        applied(&snap) as usize == total,
        "pgchain applied {} of {total} from {topic}",
        applied(&snap)
    );
    Ok(Figures {
        events: total - before as usize,
        elapsed,
        latencies_us: snap.latencies_us.unwrap_or_default(),
    })
}
