//! pgchain's own tables and procedures in the database.
//!
//! - [`runtime`]: the runtime SQL built into the binary, applied by
//!   `pgchain migrate` before a project's own migrations;
//! - [`dead_letters`]: every statement against `pgchain.dead_letters`;
//! - [`ledger`]: reading `pgchain.offsets` (the chain runner writes it).

pub mod dead_letters;
pub mod ledger;
pub mod runtime;
