//! Scheduler settings: environment first, every one also a flag.

use std::time::Duration;

use clap::Args;
use trainyard_shared::config::ConnectionSettings;

#[derive(Debug, Clone, Args)]
pub struct SchedulerSettings {
    #[command(flatten)]
    pub connection: ConnectionSettings,

    #[command(flatten)]
    pub cycle: CycleSettings,

    /// Jobs kept in Redis at most; PostgreSQL holds the rest of the cycle.
    #[arg(long, env = "TRAINYARD_QUEUE_WINDOW", default_value_t = 1000)]
    pub window: i64,

    /// Seconds without a heartbeat after which a running job is released.
    #[arg(long, env = "TRAINYARD_LEASE_TIMEOUT_SECS", default_value_t = 20)]
    pub lease_timeout_secs: u64,

    /// Seconds between sweeper passes.
    #[arg(long, env = "TRAINYARD_SWEEP_SECS", default_value_t = 5)]
    pub sweep_secs: u64,
}

/// How cycles are made.
#[derive(Debug, Clone, Args)]
pub struct CycleSettings {
    /// Days of data a model type needs; organizations with fewer get a `skipped` job.
    #[arg(long, env = "TRAINYARD_MIN_DAYS", default_value_t = 180)]
    pub min_days: i64,

    /// Attempts per job before it is failed (counted in PostgreSQL).
    #[arg(long, env = "TRAINYARD_MAX_ATTEMPTS", default_value_t = 3)]
    pub max_attempts: i32,

    /// Hours after which an unfinished cycle is finalized as `timed_out`.
    #[arg(long, env = "TRAINYARD_CYCLE_DEADLINE_HOURS", default_value_t = 24.0)]
    pub deadline_hours: f64,
}

impl CycleSettings {
    pub fn deadline(&self) -> chrono::Duration {
        chrono::Duration::seconds((self.deadline_hours * 3600.0).round() as i64)
    }
}

impl SchedulerSettings {
    pub fn sweep_settings(&self) -> trainyard_shared::jobs::SweepSettings {
        trainyard_shared::jobs::SweepSettings {
            window: self.window,
            lease_timeout: Duration::from_secs(self.lease_timeout_secs.max(1)),
            push_grace: Duration::from_secs(10),
        }
    }
}
