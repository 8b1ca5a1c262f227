//! The store: every statement on the lifecycle tables (`ml_training_jobs`,
//! `ml_training_cycles`, `ml_cycle_shards`), with rows mapped by column name
//! onto typed structs (`sqlx::FromRow`; statuses, kinds and model types
//! decode into their `domain` enums and an unknown value is an error, never
//! a panic).
//!
//! - [`jobs`]: claim, heartbeat, end, hand back, the Redis window's top-up
//!   and the sweeper (each transition guarded by status and attempt).
//! - [`cycles`]: creating a cycle and its jobs, the sharded roll-up and its
//!   recount, finalization, and the summaries the CLI prints.

pub mod cycles;
pub mod jobs;
