//! What the dispatcher has done so far: counts per pipeline, how far each
//! partition has got, what is stuck, and latency histograms. The demo prints
//! it, tests and the drain check read it, and `/metrics` and `/readyz`
//! (see [`crate::ops::metrics`]) serve it.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipelineCounts {
    /// Messages read for this pipeline (every outcome below, and retries of
    /// a redelivery).
    pub consumed: u64,
    pub applied: u64,
    /// A step ended the chain by setting `ev` to null.
    pub filtered: u64,
    /// Redelivered offsets the ledger had already applied.
    pub already_applied: u64,
    /// Tombstones passed over (`tombstones: skip`).
    pub tombstones: u64,
    /// Messages whose value is JSON `null` (or a null payload), passed
    /// over as tombstones.
    pub null_values: u64,
    /// Events parked (waiting for a dependency, or behind one of their key).
    pub parked: u64,
    /// Events dead-lettered.
    pub dead_lettered: u64,
    /// Parked or dead events replayed successfully.
    pub replayed: u64,
}

/// How far a drain has got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrainState {
    /// Every partition has been processed up to its mark.
    Done,
    Waiting,
    /// Partitions that stopped (each `topic/partition: why`): they will not
    /// get there without a fix.
    Stuck(Vec<String>),
}

/// How a partition's wait on a transient error begins (see
/// [`Stats::blocked`]).
pub const TRANSIENT_WAIT: &str = "retrying a transient error";

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub pipelines: BTreeMap<String, PipelineCounts>,
    /// Messages read, per topic.
    pub consumed_by_topic: BTreeMap<String, u64>,
    /// (topic, partition) → the next offset to process.
    pub next_offsets: HashMap<(String, i32), i64>,
    /// (topic, partition) → the high watermark librdkafka last reported.
    pub high_watermarks: HashMap<(String, i32), i64>,
    /// Partitions this instance holds now.
    pub assigned: HashSet<(String, i32)>,
    /// (topic, partition) → why it stopped.
    pub stuck: HashMap<(String, i32), String>,
    /// (topic, partition) → since when it has been stopped, or retrying a
    /// transient error without progress.
    pub blocked_since: HashMap<(String, i32), Instant>,
    /// (topic, partition) → why it is retrying without progress.
    pub blocked_why: HashMap<(String, i32), String>,
    /// (topic, partition) → offsets skipped over gaps (`kafka.on_gap: skip`).
    pub skipped_offsets: BTreeMap<(String, i32), u64>,
    /// Why the Kafka cluster cannot be reached, while it cannot.
    pub kafka_unreachable: Option<String>,
    /// Chain runs retried, in all.
    pub retries: u64,
    /// Chain runs retried, by error class (transient, deployment, dependency, data).
    pub retries_by_class: BTreeMap<&'static str, u64>,
    /// Recovery passes run (periodic, on a provided key, or from the CLI).
    pub recovery_passes: u64,
    /// Recovery passes by (trigger, outcome `ok` | `error`).
    pub recovery_outcomes: BTreeMap<(String, &'static str), u64>,
    /// Chains running now.
    pub in_flight: i64,
    /// Chain latencies in microseconds, kept only when asked for (the bench).
    pub latencies_us: Option<Vec<u32>>,
}

impl Snapshot {
    /// Events per pipeline and outcome, as `run --until-drained` and the
    /// demo print them; returns the table and the events it counts.
    pub fn pipeline_table(&self) -> (String, u64) {
        let mut out = format!(
            "{:<18} {:>8} {:>10} {:>9} {:>11} {:>7} {:>9} {:>5}\n",
            "pipeline",
            "applied",
            "tombstone",
            "filtered",
            "redelivered",
            "parked",
            "replayed",
            "dead"
        );
        let mut total = 0;
        for (name, c) in &self.pipelines {
            out.push_str(&format!(
                "{:<18} {:>8} {:>10} {:>9} {:>11} {:>7} {:>9} {:>5}\n",
                name,
                c.applied,
                c.tombstones + c.null_values,
                c.filtered,
                c.already_applied,
                c.parked,
                c.replayed,
                c.dead_lettered
            ));
            total += c.applied + c.tombstones + c.null_values + c.filtered + c.already_applied;
        }
        (out, total)
    }

    /// Where `--until-drained` stands against the high watermarks seen at start.
    pub fn drain_state(&self, high_watermarks: &HashMap<(String, i32), i64>) -> DrainState {
        let mut stuck: Vec<String> = Vec::new();
        let mut done = true;
        for (tp, high) in high_watermarks {
            if *high == 0 {
                continue;
            }
            if let Some(why) = self.stuck.get(tp) {
                stuck.push(format!("{}/{}: {why}", tp.0, tp.1));
            }
            if !reached(&self.next_offsets, tp, *high) {
                done = false;
            }
        }
        stuck.sort();
        if !stuck.is_empty() {
            DrainState::Stuck(stuck)
        } else if done {
            DrainState::Done
        } else {
            DrainState::Waiting
        }
    }

    /// High watermark minus the next offset to apply, per partition held
    /// (0 when nothing is known yet).
    pub fn lag(&self) -> BTreeMap<(String, i32), i64> {
        self.assigned
            .iter()
            .map(|tp| {
                let high = self.high_watermarks.get(tp).copied().unwrap_or(0);
                let next = self.next_offsets.get(tp).copied().unwrap_or(0);
                (tp.clone(), (high - next).max(0))
            })
            .collect()
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PipelineLabel {
    pub pipeline: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabel {
    pub step: String,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms to about 4 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
}

/// Latency histograms, observed as chains run.
#[derive(Debug)]
pub struct Histograms {
    pub chain: Family<PipelineLabel, Histogram>,
    pub step: Family<StepLabel, Histogram>,
}

impl Default for Histograms {
    fn default() -> Self {
        Histograms {
            chain: Family::new_with_constructor(latency_histogram),
            step: Family::new_with_constructor(latency_histogram),
        }
    }
}

/// Shared, cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    inner: Arc<Mutex<Snapshot>>,
    pub histograms: Arc<Histograms>,
}

impl Stats {
    /// Stats that also keep every chain latency (for `pgchain bench`).
    pub fn recording_latencies() -> Stats {
        Stats {
            inner: Arc::new(Mutex::new(Snapshot {
                latencies_us: Some(Vec::new()),
                ..Snapshot::default()
            })),
            histograms: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        self.inner.lock().expect("stats lock")
    }

    pub fn latency(&self, d: Duration) {
        let mut s = self.lock();
        if let Some(l) = s.latencies_us.as_mut() {
            l.push(d.as_micros().min(u32::MAX as u128) as u32);
        }
    }

    /// One chain ran in `pipeline`, taking `chain` in all and `step_ms` per
    /// step (paired with `steps` in order).
    pub fn timed(&self, pipeline: &str, chain: Duration, steps: &[String], step_ms: &[f64]) {
        self.latency(chain);
        self.histograms
            .chain
            .get_or_create(&PipelineLabel {
                pipeline: pipeline.to_string(),
            })
            .observe(chain.as_secs_f64());
        for (step, ms) in steps.iter().zip(step_ms) {
            self.histograms
                .step
                .get_or_create(&StepLabel { step: step.clone() })
                .observe(ms / 1000.0);
        }
    }

    pub fn record(&self, pipeline: &str, f: impl FnOnce(&mut PipelineCounts)) {
        f(Self::counts(&mut self.lock(), pipeline));
    }

    /// `pipeline`'s counts, allocating its name only the first time.
    fn counts<'s>(s: &'s mut Snapshot, pipeline: &str) -> &'s mut PipelineCounts {
        if !s.pipelines.contains_key(pipeline) {
            s.pipelines
                .insert(pipeline.to_string(), PipelineCounts::default());
        }
        s.pipelines.get_mut(pipeline).expect("just inserted")
    }

    /// Messages of `topic` read, one per pipeline name (`-`: none), under
    /// one lock.
    pub fn consumed<'p>(&self, topic: &str, pipelines: impl Iterator<Item = &'p str>) {
        let mut s = self.lock();
        let mut n = 0;
        for p in pipelines {
            n += 1;
            Self::counts(&mut s, p).consumed += 1;
        }
        *s.consumed_by_topic.entry(topic.to_string()).or_default() += n;
    }

    pub fn retried(&self) {
        self.lock().retries += 1;
    }

    pub fn retried_class(&self, class: crate::chain::ErrorClass) {
        let mut s = self.lock();
        s.retries += 1;
        *s.retries_by_class.entry(class.as_str()).or_default() += 1;
    }

    pub fn recovery_pass(&self) {
        self.lock().recovery_passes += 1;
    }

    pub fn recovery_outcome(&self, trigger: &str, ok: bool) {
        let mut s = self.lock();
        let outcome = if ok { "ok" } else { "error" };
        *s.recovery_outcomes
            .entry((trigger.to_string(), outcome))
            .or_default() += 1;
    }

    pub fn in_flight(&self, delta: i64) {
        self.lock().in_flight += delta;
    }

    /// Everything before `offset + 1` is done: the partition made progress.
    pub fn processed(&self, topic: &str, partition: i32, offset: i64) {
        let mut s = self.lock();
        let tp = (topic.to_string(), partition);
        s.blocked_since.remove(&tp);
        s.blocked_why.remove(&tp);
        s.next_offsets.insert(tp, offset + 1);
    }

    /// `n` offsets before `next` were skipped over a gap: the partition
    /// goes on from `next`.
    pub fn skipped(&self, topic: &str, partition: i32, n: u64, next: i64) {
        let mut s = self.lock();
        let tp = (topic.to_string(), partition);
        *s.skipped_offsets.entry(tp.clone()).or_default() += n;
        let at = s.next_offsets.entry(tp).or_insert(next);
        *at = (*at).max(next);
    }

    /// The Kafka cluster cannot be reached (why), or can again (`None`).
    pub fn kafka_unreachable(&self, why: Option<String>) {
        self.lock().kafka_unreachable = why;
    }

    /// The partition is retrying without progress (from the first retry
    /// on), and why (the last error).
    pub fn blocked(&self, topic: &str, partition: i32, why: String) {
        let mut s = self.lock();
        let tp = (topic.to_string(), partition);
        s.blocked_since
            .entry(tp.clone())
            .or_insert_with(Instant::now);
        s.blocked_why.insert(tp, why);
    }

    /// True while a partition retries a transient error (read under the
    /// lock: no snapshot copied).
    pub fn waiting_on_transient(&self) -> bool {
        self.lock()
            .blocked_why
            .values()
            .any(|why| why.starts_with(TRANSIENT_WAIT))
    }

    pub fn unblocked(&self, topic: &str, partition: i32) {
        let mut s = self.lock();
        let tp = (topic.to_string(), partition);
        s.blocked_since.remove(&tp);
        s.blocked_why.remove(&tp);
    }

    pub fn stuck(&self, topic: &str, partition: i32, why: String) {
        let mut s = self.lock();
        let tp = (topic.to_string(), partition);
        s.blocked_since
            .entry(tp.clone())
            .or_insert_with(Instant::now);
        s.stuck.insert(tp, why);
    }

    pub fn assigned(&self, topic: &str, partition: i32, next: Option<i64>) {
        let mut s = self.lock();
        let tp = (topic.to_string(), partition);
        if let Some(next) = next {
            s.next_offsets.entry(tp.clone()).or_insert(next);
        }
        s.assigned.insert(tp);
    }

    pub fn revoked(&self, topic: &str, partition: i32) {
        let mut s = self.lock();
        let tp = (topic.to_string(), partition);
        s.assigned.remove(&tp);
        s.blocked_since.remove(&tp);
        s.blocked_why.remove(&tp);
    }

    pub fn high_watermark(&self, topic: &str, partition: i32, high: i64) {
        self.lock()
            .high_watermarks
            .insert((topic.to_string(), partition), high);
    }

    pub fn snapshot(&self) -> Snapshot {
        self.lock().clone()
    }

    /// True when every partition has been processed up to its high watermark.
    pub fn caught_up(&self, high_watermarks: &HashMap<(String, i32), i64>) -> bool {
        let s = self.lock();
        high_watermarks
            .iter()
            .all(|(tp, high)| reached(&s.next_offsets, tp, *high))
    }
}

/// True when the partition has been processed up to `high` (an empty one always has).
fn reached(next_offsets: &HashMap<(String, i32), i64>, tp: &(String, i32), high: i64) -> bool {
    high == 0 || next_offsets.get(tp).is_some_and(|next| *next >= high)
}
