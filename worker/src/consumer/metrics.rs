//! Prometheus metrics of one worker replica, on `/metrics` of its health
//! port: what this process did, counted as it happens (the cluster-wide
//! gauges come from the scheduler, computed from PostgreSQL).
//!
//! Same rules as the scheduler's: the `trainyard_` prefix, seconds,
//! histograms with explicit buckets, `_total` on counters, labels only from
//! closed sets (model type, outcome) — never an organization or job id.

use std::time::Instant;

use metrics_exporter_prometheus::PrometheusHandle;
use trainyard_shared::ModelType;

/// How a claimed job ended on this worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    Skipped,
    /// Another attempt took the job over, or it ended meanwhile: nothing written.
    Lost,
    /// The process stopped first; the job was handed back or left to the sweeper.
    Stopped,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
            Outcome::Lost => "lost",
            Outcome::Stopped => "stopped",
        }
    }
}

/// The process's recorder, installed once (the first call).
pub fn handle() -> &'static PrometheusHandle {
    trainyard_shared::telemetry::prometheus(describe)
}

fn describe() {
    metrics::describe_counter!(
        "trainyard_worker_jobs_total",
        "Jobs this worker claimed, by model type and how they ended"
    );
    metrics::describe_histogram!(
        "trainyard_worker_job_duration_seconds",
        metrics::Unit::Seconds,
        "Claim to end of a job on this worker (loading, training, writing), by model type"
    );
    metrics::describe_histogram!(
        "trainyard_worker_train_duration_seconds",
        metrics::Unit::Seconds,
        "Training time of jobs that produced a model, by model type"
    );
    metrics::describe_counter!(
        "trainyard_worker_epochs_total",
        "Training epochs run on this worker, by model type"
    );
    metrics::describe_gauge!(
        "trainyard_worker_busy_slots",
        "Jobs this worker is running now (at most TRAINYARD_CONCURRENCY)"
    );
    metrics::describe_counter!(
        "trainyard_worker_dead_letters_total",
        "Queue messages that were not a job and were dead-lettered"
    );
    metrics::gauge!("trainyard_worker_busy_slots").set(0.0);
}

/// Prometheus text for `/metrics`.
pub fn render() -> String {
    handle().render()
}

/// One running job: counts the slot busy from claim to drop, then records
/// the job's duration and outcome (`Stopped` unless told otherwise).
pub struct JobTimer {
    model_type: ModelType,
    started: Instant,
    outcome: Outcome,
}

impl JobTimer {
    pub fn start(model_type: ModelType) -> JobTimer {
        handle();
        metrics::gauge!("trainyard_worker_busy_slots").increment(1.0);
        JobTimer {
            model_type,
            started: Instant::now(),
            outcome: Outcome::Stopped,
        }
    }

    pub fn ended(&mut self, outcome: Outcome) {
        self.outcome = outcome;
    }
}

impl Drop for JobTimer {
    fn drop(&mut self) {
        let model_type = self.model_type.as_str();
        metrics::gauge!("trainyard_worker_busy_slots").decrement(1.0);
        metrics::counter!("trainyard_worker_jobs_total",
            "model_type" => model_type, "outcome" => self.outcome.as_str())
        .increment(1);
        metrics::histogram!("trainyard_worker_job_duration_seconds", "model_type" => model_type)
            .record(self.started.elapsed().as_secs_f64());
    }
}

pub fn trained(model_type: ModelType, seconds: f64) {
    metrics::histogram!("trainyard_worker_train_duration_seconds",
        "model_type" => model_type.as_str())
    .record(seconds);
}

pub fn epoch(model_type: ModelType) {
    metrics::counter!("trainyard_worker_epochs_total", "model_type" => model_type.as_str())
        .increment(1);
}

pub fn dead_letter() {
    metrics::counter!("trainyard_worker_dead_letters_total").increment(1);
}
