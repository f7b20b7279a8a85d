//! The Kafka side.
//!
//! - [`context`]: the consumer's context, which only reports rebalances (on
//!   a channel, to the dispatcher) and commits.
//! - [`assign`]: where assigned partitions start: the ledger, checked
//!   against the log, and `kafka.start_from`.
//! - [`gap`]: offsets retention deleted before they were applied, and
//!   `kafka.on_gap`.
//! - [`partition`]: one partition's task: its events in order, batched,
//!   offsets stored once durable; parks and dead-letters.
//! - [`probe`]: `pgchain check` asking the brokers.
//! - [`client`]: small client helpers (watermarks, producing, redacted
//!   errors), re-exported here.

pub mod assign;
pub mod client;
pub mod context;
pub mod gap;
pub mod partition;
pub mod probe;

pub use client::*;
