//! Worker settings: environment first (Railway), every one also a flag.

use std::time::Duration;

use clap::Args;
use trainyard_shared::config::ConnectionSettings;

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

    /// Jobs this process trains at once (one per core is the sweet spot).
    #[arg(long, env = "TRAINYARD_CONCURRENCY", default_value_t = 1)]
    pub concurrency: usize,

    /// Compute threads per process for training (one model per core is faster than threads).
    #[arg(long, env = "TRAINYARD_TRAIN_THREADS", default_value_t = 1)]
    pub train_threads: usize,

    /// Milliseconds between polls of an idle worker.
    #[arg(long, env = "TRAINYARD_POLL_INTERVAL_MS", default_value_t = 100)]
    pub poll_interval_ms: u64,

    /// Seconds between this worker's heartbeats to Redis and to its job row.
    #[arg(long, env = "TRAINYARD_HEARTBEAT_SECS", default_value_t = 5)]
    pub heartbeat_secs: u64,

    /// Missed heartbeats after which other workers re-queue a dead worker's job.
    #[arg(long, env = "TRAINYARD_MISSED_HEARTBEATS", default_value_t = 6)]
    pub missed_heartbeats: usize,

    /// Seconds without a heartbeat after which a running job row is considered abandoned.
    #[arg(long, env = "TRAINYARD_LEASE_TIMEOUT_SECS", default_value_t = 20)]
    pub lease_timeout_secs: u64,

    /// On SIGTERM, seconds to let the current training finish before handing the job back.
    #[arg(long, env = "TRAINYARD_GRACE_SECS", default_value_t = 20)]
    pub grace_secs: u64,

    /// Jobs kept in Redis at most; the worker tops the window up after each job.
    #[arg(long, env = "TRAINYARD_QUEUE_WINDOW", default_value_t = 1000)]
    pub window: i64,

    /// Seconds between this worker's sweeps: releasing jobs of dead workers,
    /// restoring deliveries Redis lost, topping up the window.
    #[arg(long, env = "TRAINYARD_SWEEP_SECS", default_value_t = 5)]
    pub sweep_secs: u64,

    /// Seconds to keep retrying PostgreSQL when it is unreachable before giving a delivery back.
    #[arg(long, env = "TRAINYARD_DB_RETRY_SECS", default_value_t = 120)]
    pub db_retry_secs: u64,

    #[command(flatten)]
    pub training: TrainingOverrides,
}

/// Training knobs operators may turn down (demos, chaos runs) or up.
#[derive(Debug, Clone, Args)]
pub struct TrainingOverrides {
    /// LSTM epochs (the seed model uses 50).
    #[arg(long, env = "TRAINYARD_LSTM_EPOCHS")]
    pub lstm_epochs: Option<usize>,

    /// Autoencoder epochs (the seed model uses 30).
    #[arg(long, env = "TRAINYARD_AE_EPOCHS")]
    pub ae_epochs: Option<usize>,

    /// Candidate algorithms not to train (comma-separated, e.g. `lstm` for a quick run).
    #[arg(long, env = "TRAINYARD_EXCLUDE", value_delimiter = ',')]
    pub exclude: Vec<String>,

    /// Days of history a model type needs.
    #[arg(long, env = "TRAINYARD_MIN_DAYS", default_value_t = 180)]
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
