//! pgchain: runs an ordered chain of PostgreSQL procedures for every CDC
//! change event on Kafka, with exactly-once effects.
//!
//! - [`config`]: `pipelines.yaml`, validated with file:line errors.
//! - [`decode`]: Debezium, GoldenGate and plain JSON into [`event::ChangeEvent`].
//! - [`route`]: which pipeline's chain runs for a message.
//! - [`chain`]: one chain run = one `CALL pgchain.apply_event` transaction;
//!   [`backoff`]: the one capped exponential backoff of every retry loop.
//! - [`consume`]: the Kafka consumer: rebalances, ledger positions, commits.
//! - [`worker`]: one partition's events, in order, batched, offsets stored.
//! - [`dead_letter`]: the dead-letter table and topic; [`recovery`]: re-driving
//!   parked and dead events (on `pgchain.provide`, periodically, on demand).
//! - [`metrics`]: `/metrics`, `/healthz`, `/readyz`; [`alerts`]: the webhook.
//! - [`dispatcher`]: puts them together until shutdown.
//! - [`db`]: the pool, migrations and `check`.
//! - [`stats`]: counts and progress, for the demo and the drain check.
//! - [`status`]: `pgchain status`: applied positions and lag per partition.
//! - [`kafka`]: small Kafka helpers (watermarks, producing) for demo and bench.
//! - [`verify`]: `pgchain verify`: source vs target by key ranges, `--repair`.
//! - [`render`]: `pgchain render`; [`init`]: `pgchain init`; [`embedded`]:
//!   the runtime, templates and examples built into the binary; [`store`]:
//!   pgchain's own SQL in the database.
//! - `samples` (feature `tools`, on by default): deterministic change events
//!   of the examples, for the demo, the benchmarks and tests.
//!
//! The `pgchain` binary (`src/cli/`) holds the command line, and the demo
//! and benchmarks (feature `tools`), which drive this library from outside.

pub mod alerts;
pub mod backoff;
pub mod chain;
pub mod config;
pub mod consume;
pub mod db;
pub mod dead_letter;
pub mod decode;
pub mod dispatcher;
pub mod dlq;
pub mod embedded;
pub mod event;
pub mod init;
pub mod kafka;
pub mod metrics;
pub mod recovery;
pub mod render;
pub mod route;
#[cfg(feature = "tools")]
pub mod samples;
pub mod stats;
pub mod status;
pub mod store;
pub mod verify;
pub mod worker;
