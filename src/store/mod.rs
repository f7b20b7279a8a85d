//! pgchain's own tables and procedures in the database.
//!
//! - [`runtime`]: the runtime SQL built into the binary, applied by
//!   `pgchain migrate` before a project's own migrations.

pub mod runtime;
