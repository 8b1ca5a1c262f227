//! The store: SQL, one module per part of the schema, each function generic
//! over the executor where callers choose a pool, a connection or a
//! transaction, rows mapped by column name onto typed structs
//! (`sqlx::FromRow`; statuses, kinds and model types decode into their
//! `domain` enums and an unknown value is an error, never a panic).
//!
//! - [`jobs`]: claim, heartbeat, end, hand back, the Redis window's top-up
//!   and the sweeper (each transition guarded by status and attempt).
//! - [`cycles`]: creating a cycle and its jobs, the sharded roll-up and its
//!   recount, finalization, and the summaries the CLI prints.
//! - [`metrics_data`]: an organization's rows as training reads them.
//! - [`registry`]: model versions, the active model and artifacts.
//! - [`results`]: what a successful job writes besides its model (log,
//!   epochs, evaluations, forecast or anomaly flags).
//! - [`ops`]: what the ops API reads and writes (overview, searches with
//!   keyset pagination, model versions, the audit trail).
//! - [`workers`]: worker presence, kept fresh by every replica, busy or idle.

pub mod cycles;
pub mod jobs;
pub mod metrics_data;
pub mod ops;
pub mod registry;
pub mod results;
pub mod workers;
