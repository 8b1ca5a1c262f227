//! What the scheduler and the workers share: domain types, the job payload and
//! queue name, configuration, the PostgreSQL schema and queries, and telemetry.

pub mod domain;

pub use domain::{CycleId, JobId, ModelId, ModelType, OrgId};
