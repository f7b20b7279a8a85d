//! pgchain: runs an ordered chain of PostgreSQL procedures for every CDC
//! change event on Kafka, with exactly-once effects.
//!
//! - [`config`]: `pipelines.yaml`, validated with file:line errors.
//! - [`decode`]: Debezium, GoldenGate and plain JSON into [`event::ChangeEvent`].
//! - [`route`]: which pipeline's chain runs for a message; [`registry`]:
//!   the schemas of Avro and JSON Schema messages, from a schema registry.
//! - [`chain`]: one chain run = one `CALL pgchain.apply_event` transaction;
//!   error classes, retries, and the one backoff of every retry loop.
//! - [`kafka`]: the Kafka side: the consumer's context (reports rebalances),
//!   where partitions start, one partition's task, client helpers.
//! - [`dead_letter`]: the dead-letter topic; [`recovery`]: re-driving
//!   parked and dead events (on `pgchain.provide`, periodically, on demand).
//! - [`ops`]: operations: stats, `/metrics` and health, alerts, `pgchain status`.
//! - [`dispatcher`]: puts them together until shutdown; owns the partition tasks.
//! - [`db`]: the pool, migrations and `check`.
//! - [`verify`]: `pgchain verify`: source vs target by key ranges, `--repair`.
//! - [`render`]: `pgchain render`; [`init`]: `pgchain init`; [`embedded`]:
//!   the runtime, templates and examples built into the binary; [`store`]:
//!   every statement against pgchain's own tables (runtime, dead letters,
//!   ledger).
//! - `samples` (feature `tools`, on by default): deterministic change events
//!   of the examples, for the demo, the benchmarks and tests.
//!
//! The `pgchain` binary (`src/cli/`) holds the command line, and the demo
//! and benchmarks (feature `tools`), which drive this library from outside.

pub mod chain;
pub mod config;
pub mod db;
pub mod dead_letter;
pub mod decode;
pub mod dispatcher;
pub mod dlq;
pub mod embedded;
pub mod event;
pub mod identity;
pub mod init;
pub mod kafka;
pub mod ops;
pub mod recovery;
pub mod registry;
pub mod render;
pub mod route;
#[cfg(feature = "tools")]
pub mod samples;
pub mod store;
pub mod verify;
