//! What the dispatcher has done so far: counts per pipeline and how far each
//! partition has got. The demo prints it; tests and the drain check read it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipelineCounts {
    pub applied: u64,
    /// A step ended the chain by setting `ev` to null.
    pub filtered: u64,
    /// Redelivered offsets the ledger had already applied.
    pub already_applied: u64,
    /// Tombstones passed over (`tombstones: skip`).
    pub tombstones: u64,
    /// Events parked (waiting for a dependency, or behind one of their key).
    pub parked: u64,
    /// Events dead-lettered.
    pub dead_lettered: u64,
    /// Parked or dead events replayed successfully.
    pub replayed: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub pipelines: BTreeMap<String, PipelineCounts>,
    /// (topic, partition) → the next offset to process.
    pub next_offsets: HashMap<(String, i32), i64>,
    /// (topic, partition) → why it stopped.
    pub stuck: HashMap<(String, i32), String>,
    /// Chain runs retried, in all.
    pub retries: u64,
    /// Chain runs retried, by error class (transient, dependency, data).
    pub retries_by_class: BTreeMap<&'static str, u64>,
    /// Recovery passes run (periodic, on a provided key, or from the CLI).
    pub recovery_passes: u64,
    /// Chain latencies in microseconds, kept only when asked for (the bench).
    pub latencies_us: Option<Vec<u32>>,
}

/// Shared, cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Stats(Arc<Mutex<Snapshot>>);

impl Stats {
    /// Stats that also keep every chain latency (for `pgchain bench`).
    pub fn recording_latencies() -> Stats {
        Stats(Arc::new(Mutex::new(Snapshot {
            latencies_us: Some(Vec::new()),
            ..Snapshot::default()
        })))
    }

    pub fn latency(&self, d: std::time::Duration) {
        let mut s = self.0.lock().expect("stats lock");
        if let Some(l) = s.latencies_us.as_mut() {
            l.push(d.as_micros().min(u32::MAX as u128) as u32);
        }
    }

    pub fn record(&self, pipeline: &str, f: impl FnOnce(&mut PipelineCounts)) {
        let mut s = self.0.lock().expect("stats lock");
        f(s.pipelines.entry(pipeline.to_string()).or_default());
    }

    pub fn retried(&self) {
        self.0.lock().expect("stats lock").retries += 1;
    }

    pub fn retried_class(&self, class: crate::chain::ErrorClass) {
        let mut s = self.0.lock().expect("stats lock");
        s.retries += 1;
        *s.retries_by_class.entry(class.as_str()).or_default() += 1;
    }

    pub fn recovery_pass(&self) {
        self.0.lock().expect("stats lock").recovery_passes += 1;
    }

    pub fn processed(&self, topic: &str, partition: i32, offset: i64) {
        let mut s = self.0.lock().expect("stats lock");
        s.next_offsets
            .insert((topic.to_string(), partition), offset + 1);
    }

    pub fn stuck(&self, topic: &str, partition: i32, why: String) {
        let mut s = self.0.lock().expect("stats lock");
        s.stuck.insert((topic.to_string(), partition), why);
    }

    pub fn snapshot(&self) -> Snapshot {
        self.0.lock().expect("stats lock").clone()
    }

    /// True when every partition has been processed up to its high watermark.
    pub fn caught_up(&self, high_watermarks: &HashMap<(String, i32), i64>) -> bool {
        let s = self.0.lock().expect("stats lock");
        high_watermarks
            .iter()
            .all(|(tp, high)| *high == 0 || s.next_offsets.get(tp).is_some_and(|next| next >= high))
    }
}
