//! Worker settings: environment first (Railway), every one also a flag.
//! Each is checked at start: a value outside its range stops the process
//! with a message naming the setting and what it allows.

use std::time::Duration;

use clap::Args;
use trainyard_shared::config::{
    bounded, ConnectionSettings, MAX_QUEUE_WINDOW, MIN_DAYS_CEILING, MIN_DAYS_FLOOR,
};

#[derive(Debug, Clone, Args)]
pub struct WorkerSettings {
    #[command(flatten)]
    pub connection: ConnectionSettings,

    /// Port of the `/health` endpoint.
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,

    /// Worker name prefix; a per-process suffix keeps names unique across replicas.
    #[arg(long, env = "TRAINYARD_WORKER_NAME")]
    pub worker_name: Option<String>,

    /// Jobs this process trains at once (one per core is the sweet spot; 1–256).
    #[arg(long, env = "TRAINYARD_CONCURRENCY", default_value_t = 1,
          value_parser = bounded::<usize>("TRAINYARD_CONCURRENCY", 1, 256))]
    pub concurrency: usize,

    /// Compute threads per process for training (one model per core is faster than threads; 1–256).
    #[arg(long, env = "TRAINYARD_TRAIN_THREADS", default_value_t = 1,
          value_parser = bounded::<usize>("TRAINYARD_TRAIN_THREADS", 1, 256))]
    pub train_threads: usize,

    /// Milliseconds between polls of an idle worker (10–60000).
    #[arg(long, env = "TRAINYARD_POLL_INTERVAL_MS", default_value_t = 100,
          value_parser = bounded::<u64>("TRAINYARD_POLL_INTERVAL_MS", 10, 60_000))]
    pub poll_interval_ms: u64,

    /// Seconds between this worker's heartbeats to Redis and to its job row (1–600).
    #[arg(long, env = "TRAINYARD_HEARTBEAT_SECS", default_value_t = 5,
          value_parser = bounded::<u64>("TRAINYARD_HEARTBEAT_SECS", 1, 600))]
    pub heartbeat_secs: u64,

    /// Missed heartbeats after which other workers re-queue a dead worker's job (1–100).
    #[arg(long, env = "TRAINYARD_MISSED_HEARTBEATS", default_value_t = 6,
          value_parser = bounded::<usize>("TRAINYARD_MISSED_HEARTBEATS", 1, 100))]
    pub missed_heartbeats: usize,

    /// Seconds without a heartbeat after which a running job row is considered abandoned (1–3600).
    #[arg(long, env = "TRAINYARD_LEASE_TIMEOUT_SECS", default_value_t = 20,
          value_parser = bounded::<u64>("TRAINYARD_LEASE_TIMEOUT_SECS", 1, 3600))]
    pub lease_timeout_secs: u64,

    /// On SIGTERM, seconds to let the current training finish before handing the job back (0–3600).
    #[arg(long, env = "TRAINYARD_GRACE_SECS", default_value_t = 20,
          value_parser = bounded::<u64>("TRAINYARD_GRACE_SECS", 0, 3600))]
    pub grace_secs: u64,

    /// Jobs kept in Redis at most; the worker tops the window up after each job (1–5000).
    #[arg(long, env = "TRAINYARD_QUEUE_WINDOW", default_value_t = 1000,
          value_parser = bounded::<i64>("TRAINYARD_QUEUE_WINDOW", 1, MAX_QUEUE_WINDOW))]
    pub window: i64,

    /// Seconds between this worker's sweeps: releasing jobs of dead workers,
    /// restoring deliveries Redis lost, topping up the window (1–3600).
    #[arg(long, env = "TRAINYARD_SWEEP_SECS", default_value_t = 5,
          value_parser = bounded::<u64>("TRAINYARD_SWEEP_SECS", 1, 3600))]
    pub sweep_secs: u64,

    /// Seconds to keep retrying PostgreSQL when it is unreachable before giving a delivery back (0–86400).
    #[arg(long, env = "TRAINYARD_DB_RETRY_SECS", default_value_t = 120,
          value_parser = bounded::<u64>("TRAINYARD_DB_RETRY_SECS", 0, 86_400))]
    pub db_retry_secs: u64,

    #[command(flatten)]
    pub training: TrainingOverrides,
}

/// Training knobs operators may turn down (demos, chaos runs) or up.
#[derive(Debug, Clone, Args)]
pub struct TrainingOverrides {
    /// LSTM epochs (the seed model uses 50; 1–10000).
    #[arg(long, env = "TRAINYARD_LSTM_EPOCHS",
          value_parser = bounded::<usize>("TRAINYARD_LSTM_EPOCHS", 1, 10_000))]
    pub lstm_epochs: Option<usize>,

    /// Autoencoder epochs (the seed model uses 30; 1–10000).
    #[arg(long, env = "TRAINYARD_AE_EPOCHS",
          value_parser = bounded::<usize>("TRAINYARD_AE_EPOCHS", 1, 10_000))]
    pub ae_epochs: Option<usize>,

    /// Candidate algorithms not to train (comma-separated, e.g. `lstm` for a quick run).
    #[arg(long, env = "TRAINYARD_EXCLUDE", value_delimiter = ',')]
    pub exclude: Vec<String>,

    /// Days of history a model type needs (120–36500).
    #[arg(long, env = "TRAINYARD_MIN_DAYS", default_value_t = 180,
          value_parser = bounded::<usize>("TRAINYARD_MIN_DAYS", MIN_DAYS_FLOOR as usize, MIN_DAYS_CEILING as usize))]
    pub min_days: usize,
}

impl WorkerSettings {
    pub fn lease_timeout(&self) -> Duration {
        Duration::from_secs(self.lease_timeout_secs.max(1))
    }
    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.grace_secs)
    }
    /// The end of the grace period kept for handing an unfinished job back.
    pub fn hand_back_budget(&self) -> Duration {
        (self.grace() / 4).clamp(Duration::from_millis(500), Duration::from_secs(5))
    }
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_secs.max(1))
    }
}

impl TrainingOverrides {
    pub fn train_settings(&self) -> crate::training::TrainSettings {
        let mut s = crate::training::TrainSettings::default();
        s.min_days = self.min_days;
        crate::training::apply_epoch_overrides(&mut s, self.lstm_epochs, self.ae_epochs);
        s.exclude = self.exclude.clone();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        settings: WorkerSettings,
    }

    fn parse(args: &[&str]) -> Result<WorkerSettings, String> {
        Cli::try_parse_from(std::iter::once("trainyard-worker").chain(args.iter().copied()))
            .map(|c| c.settings)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_defaults_are_within_their_ranges() {
        let s = parse(&[]).unwrap();
        assert_eq!(
            (s.concurrency, s.window, s.training.min_days),
            (1, 1000, 180)
        );
    }

    #[test]
    fn an_out_of_range_setting_is_refused_naming_the_setting_and_its_range() {
        for (flag, value, setting) in [
            ("--concurrency", "0", "TRAINYARD_CONCURRENCY"),
            ("--window", "0", "TRAINYARD_QUEUE_WINDOW"),
            ("--window", "-5", "TRAINYARD_QUEUE_WINDOW"),
            ("--min-days", "-1", "TRAINYARD_MIN_DAYS"),
            ("--min-days", "30", "TRAINYARD_MIN_DAYS"),
            ("--heartbeat-secs", "0", "TRAINYARD_HEARTBEAT_SECS"),
            (
                "--lease-timeout-secs",
                "99999999999999",
                "TRAINYARD_LEASE_TIMEOUT_SECS",
            ),
            ("--poll-interval-ms", "0", "TRAINYARD_POLL_INTERVAL_MS"),
            ("--lstm-epochs", "0", "TRAINYARD_LSTM_EPOCHS"),
            ("--db-max-connections", "0", "TRAINYARD_DB_MAX_CONNECTIONS"),
            ("--redis-timeout-secs", "0", "TRAINYARD_REDIS_TIMEOUT_SECS"),
        ] {
            let arg = format!("{flag}={value}");
            let e = parse(&[&arg]).unwrap_err();
            assert!(e.contains(setting) && e.contains(" from "), "{arg}: {e}");
        }
    }
}
