//! Operations: what the dispatcher has done and how it stands.
//!
//! - [`stats`]: counts and progress per pipeline and partition (the demo,
//!   `run --until-drained` and the metrics read them);
//! - [`metrics`]: `/metrics`, `/healthz`, `/readyz`;
//! - [`alerts`]: the webhook;
//! - [`status`]: `pgchain status`: applied positions and lag per partition.

pub mod alerts;
pub mod metrics;
pub mod stats;
pub mod status;
