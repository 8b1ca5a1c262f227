//! What the scheduler and the workers share: domain types, the job payload and
//! queue, configuration, the PostgreSQL schema and the cycle/job bookkeeping
//! that makes delivery at-least-once and the cycle roll-up exactly-once.

pub mod config;
pub mod db;
pub mod domain;
pub mod queue;
pub mod store;
pub mod telemetry;
pub mod text;

pub use domain::{
    Algorithm, CycleId, CycleKind, CycleStatus, DataColumn, JobId, JobStatus, ModelStatus,
    ModelType, OrgId,
};
pub use store::{cycles, jobs};
