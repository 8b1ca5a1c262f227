//! Scheduler settings: environment first, every one also a flag. Each is
//! checked at start: a value outside its range stops the process with a
//! message naming the setting and what it allows.

use std::time::Duration;

use clap::Args;
use trainyard_shared::config::{
    bounded, ConnectionSettings, MAX_QUEUE_WINDOW, MIN_DAYS_CEILING, MIN_DAYS_FLOOR,
};

#[derive(Debug, Clone, Args)]
pub struct SchedulerSettings {
    #[command(flatten)]
    pub connection: ConnectionSettings,

    #[command(flatten)]
    pub cycle: CycleSettings,

    /// Jobs kept in Redis at most; PostgreSQL holds the rest of the cycle (1–5000).
    #[arg(long, env = "TRAINYARD_QUEUE_WINDOW", default_value_t = 1000,
          value_parser = bounded::<i64>("TRAINYARD_QUEUE_WINDOW", 1, MAX_QUEUE_WINDOW))]
    pub window: i64,

    /// Seconds without a heartbeat after which a running job is released (1–3600).
    #[arg(long, env = "TRAINYARD_LEASE_TIMEOUT_SECS", default_value_t = 20,
          value_parser = bounded::<u64>("TRAINYARD_LEASE_TIMEOUT_SECS", 1, 3600))]
    pub lease_timeout_secs: u64,

    /// Seconds between sweeper passes (1–3600).
    #[arg(long, env = "TRAINYARD_SWEEP_SECS", default_value_t = 5,
          value_parser = bounded::<u64>("TRAINYARD_SWEEP_SECS", 1, 3600))]
    pub sweep_secs: u64,
}

/// The longest cycle deadline: a year.
pub const MAX_DEADLINE_HOURS: f64 = 8760.0;

/// How cycles are made.
#[derive(Debug, Clone, Args)]
pub struct CycleSettings {
    /// Days of data a model type needs; organizations with fewer get a `skipped` job (120–36500).
    #[arg(long, env = "TRAINYARD_MIN_DAYS", default_value_t = 180,
          value_parser = bounded::<i64>("TRAINYARD_MIN_DAYS", MIN_DAYS_FLOOR, MIN_DAYS_CEILING))]
    pub min_days: i64,

    /// Attempts per job before it is failed, counted in PostgreSQL (1–100).
    #[arg(long, env = "TRAINYARD_MAX_ATTEMPTS", default_value_t = 3,
          value_parser = bounded::<i32>("TRAINYARD_MAX_ATTEMPTS", 1, 100))]
    pub max_attempts: i32,

    /// Hours after which an unfinished cycle is finalized as `timed_out` (0.01–8760).
    #[arg(long, env = "TRAINYARD_CYCLE_DEADLINE_HOURS", default_value_t = 24.0,
          value_parser = bounded::<f64>("TRAINYARD_CYCLE_DEADLINE_HOURS", 0.01, MAX_DEADLINE_HOURS))]
    pub deadline_hours: f64,
}

impl CycleSettings {
    /// The deadline as a duration. Values outside the allowed range (only
    /// possible when the struct is built in code) are clamped into it.
    pub fn deadline(&self) -> chrono::Duration {
        let hours = if self.deadline_hours.is_nan() {
            24.0
        } else {
            self.deadline_hours.clamp(0.01, MAX_DEADLINE_HOURS)
        };
        chrono::Duration::seconds((hours * 3600.0).round() as i64)
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
