//! One delivery of one training job, from claim to result. Errors are mapped
//! to queue semantics: bad input is final and recorded on the job row;
//! infrastructure failures are retried here with backoff and, if they last,
//! left to the lease and the sweeper, never counted as the job's failure.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apalis::prelude::{AbortError, BoxDynError, Data};
use trainyard_shared::jobs::{self, Claim, ClaimedJob};
use trainyard_shared::queue::TrainJob;

use super::data;
use super::results::{self, Incumbent, Predictions};
use super::worker::WorkerState;
use crate::training::{self, EpochReport, TrainError, TrainOutcome, TrainRequest};

/// Seed of a job's training, derived from its identity so a re-run of the
/// same job reproduces the same model.
pub fn seed_for(job: &ClaimedJob) -> u64 {
    let b = job.job_id.0.as_u128();
    (b as u64) ^ ((b >> 64) as u64)
}

pub async fn handle(
    payload: serde_json::Value,
    state: Data<Arc<WorkerState>>,
) -> Result<(), BoxDynError> {
    let job: TrainJob = match serde_json::from_value(payload.clone()) {
        Ok(j) => j,
        Err(e) => {
            let shown: String = payload.to_string().chars().take(200).collect();
            tracing::error!(error = %e, payload = %shown, "malformed job payload: dropped (never retried)");
            return Err(AbortError::new(format!("malformed job payload: {e}")).into());
        }
    };
    state.in_flight.fetch_add(1, Ordering::SeqCst);
    let result = process(&state, &job).await;
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    result
}

async fn process(state: &WorkerState, job: &TrainJob) -> Result<(), BoxDynError> {
    let span = tracing::info_span!("job", job.id = %job.job_id, cycle.id = %job.cycle_id,
        org.id = %job.org_id, model.type = %job.model_type);
    let _enter = span.enter();
    drop(_enter);

    let lease = state.settings.lease_timeout();
    let claim = with_db_retry(state, "claiming the job", || {
        jobs::claim(&state.pool, job.job_id, &state.name, lease)
    })
    .await?;
    let claimed = match claim {
        Claim::Claimed(c) => c,
        Claim::AlreadyTerminal(status) => {
            tracing::info!(job.id = %job.job_id, job.status = %status, "job already finished: delivery acknowledged");
            return Ok(());
        }
        Claim::HeldElsewhere(worker) => {
            tracing::info!(job.id = %job.job_id, held_by = %worker, "job is running on another worker: duplicate delivery acknowledged");
            return Ok(());
        }
        Claim::GaveUp { attempts } => {
            tracing::warn!(job.id = %job.job_id, attempts, "job failed after exhausting its attempts");
            top_up(state).await;
            return Ok(());
        }
        Claim::Unknown => {
            tracing::error!(job.id = %job.job_id, "no such job row: delivery dropped");
            return Err(AbortError::new("unknown job id").into());
        }
    };
    tracing::info!(job.id = %claimed.job_id, org.id = %claimed.org_id, model.type = %claimed.model_type,
        attempt = claimed.attempt, "training started");

    // Keep the lease alive while we work; the guard stops it however this
    // future ends (finished, failed, or dropped by a dying queue worker).
    let _beat = {
        let pool = state.pool.clone();
        let c = claimed.clone();
        let every = (lease / 4).max(Duration::from_millis(500));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                match jobs::heartbeat(&pool, &c).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(job.id = %c.job_id, "lost the job's lease (taken over or ended)");
                        break;
                    }
                    Err(e) => tracing::warn!(job.id = %c.job_id, error = %e, "heartbeat failed"),
                }
            }
        })
    };
    let _beat = AbortOnDrop(_beat);
    run_claimed(state, &claimed).await?;
    top_up(state).await;
    Ok(())
}

enum Trained {
    Done(Box<TrainOutcome>, Vec<EpochReport>, Incumbent, f64),
    Rejected(TrainError),
    Panicked(String),
}

async fn run_claimed(state: &WorkerState, job: &ClaimedJob) -> Result<(), BoxDynError> {
    let exists = with_db_retry(state, "checking the organization", || {
        data::org_exists(&state.pool, job.org_id)
    })
    .await?;
    if !exists {
        return finish(
            state,
            job,
            "failed",
            "the organization no longer exists (deleted during the cycle)",
        )
        .await;
    }
    let rows = with_db_retry(state, "loading the organization's data", || {
        data::load_rows(&state.pool, job.org_id, job.model_type)
    })
    .await?;
    let active = with_db_retry(state, "loading the active model", || {
        data::active_model(&state.pool, job.org_id, job.model_type)
    })
    .await?;

    let request = TrainRequest {
        model_type: job.model_type,
        rows,
        settings: state.train.clone(),
        seed: seed_for(job),
    };
    let job_for_log = job.clone();
    let faults = state.faults.clone();
    let training = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        faults.inject(job_for_log.org_id);
        let epochs = Arc::new(Mutex::new(Vec::new()));
        let sink = epochs.clone();
        let mut on_epoch = |e: &EpochReport| {
            tracing::debug!(job.id = %job_for_log.job_id, algorithm = %e.algorithm, epoch = e.epoch,
                epochs = e.epochs, train_loss = e.train_loss, val_loss = ?e.val_loss, "epoch");
            if let Ok(mut v) = sink.lock() {
                v.push(e.clone());
            }
        };
        let outcome = match training::train_model(&request, &mut on_epoch) {
            Ok(o) => o,
            Err(e) => return Trained::Rejected(e),
        };
        let incumbent = match active {
            None => Incumbent::None,
            Some(a) => match training::rescore(&a.artifact, &request) {
                Ok(metrics) => {
                    let predictions = match training::predict(&a.artifact, &request) {
                        Ok((forecast, anomalies)) => Some(Box::new(Predictions {
                            forecast,
                            anomalies,
                        })),
                        Err(e) => {
                            tracing::warn!(job.id = %job_for_log.job_id, model.id = %a.model_id, error = %e,
                                "the active model could not predict; the champion's predictions are kept");
                            None
                        }
                    };
                    Incumbent::Scored {
                        model_id: a.model_id,
                        version: a.version,
                        algorithm: a.algorithm,
                        metrics,
                        predictions,
                    }
                }
                Err(e) => Incumbent::Unusable {
                    model_id: a.model_id,
                    version: a.version,
                    reason: e.to_string(),
                },
            },
        };
        let epochs = epochs.lock().map(|v| v.clone()).unwrap_or_default();
        Trained::Done(
            Box::new(outcome),
            epochs,
            incumbent,
            started.elapsed().as_secs_f64(),
        )
    });

    let trained = tokio::select! {
        joined = training => joined,
        _ = shutdown_then_grace(state) => {
            // The process is stopping and training did not finish in time.
            let mut conn = state.redis.clone();
            match jobs::hand_back(&state.pool, &mut conn, &state.queue, job).await {
                Ok(true) => tracing::warn!(job.id = %job.job_id, "shutting down: job handed back to the queue"),
                Ok(false) => tracing::warn!(job.id = %job.job_id, "shutting down: job was no longer ours"),
                Err(e) => tracing::error!(job.id = %job.job_id, error = %e, "shutting down: handing the job back failed; the sweeper will release it when its lease expires"),
            }
            return Ok(());
        }
    };
    let trained = match trained {
        Ok(t) => t,
        Err(join) if join.is_panic() => {
            let p = join.into_panic();
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".to_string());
            Trained::Panicked(msg)
        }
        Err(join) => return Err(join.into()),
    };

    match trained {
        Trained::Panicked(msg) => {
            tracing::error!(job.id = %job.job_id, panic = %msg, "training panicked");
            finish(state, job, "failed", &format!("training panicked: {msg}")).await
        }
        Trained::Rejected(e) => {
            let status = if matches!(e, TrainError::InsufficientData { .. }) {
                "skipped"
            } else {
                "failed"
            };
            tracing::warn!(job.id = %job.job_id, job.status = status, reason = %e, "training did not produce a model");
            finish(state, job, status, &e.to_string()).await
        }
        Trained::Done(outcome, epochs, incumbent, seconds) => {
            let written = with_db_retry(state, "writing the results", || {
                results::write_success(&state.pool, job, &outcome, &epochs, &incumbent, seconds)
            })
            .await?;
            match written {
                Some(w) => {
                    let champion = &outcome.candidates[outcome.champion];
                    tracing::info!(job.id = %job.job_id, org.id = %job.org_id, model.type = %job.model_type,
                        model.id = %w.model_id, model.version = w.version, algorithm = %champion.algorithm,
                        accuracy = champion.metrics.accuracy, mae = champion.metrics.mae,
                        promoted = w.promoted, reason = %w.reason, train_seconds = seconds,
                        "training succeeded");
                }
                None => {
                    tracing::warn!(job.id = %job.job_id, "results discarded: the job was taken over or ended meanwhile")
                }
            }
            Ok(())
        }
    }
}

async fn finish(
    state: &WorkerState,
    job: &ClaimedJob,
    status: &str,
    reason: &str,
) -> Result<(), BoxDynError> {
    let owned = with_db_retry(state, "recording the job's end", || {
        jobs::finish_without_model(&state.pool, job, status, reason)
    })
    .await?;
    if !owned {
        tracing::warn!(job.id = %job.job_id, "the job was taken over or ended meanwhile");
    }
    Ok(())
}

async fn shutdown_then_grace(state: &WorkerState) {
    let mut rx = state.shutdown.clone();
    let _ = rx.wait_for(|s| *s).await;
    tokio::time::sleep(state.settings.grace()).await;
}

async fn top_up(state: &WorkerState) {
    let mut conn = state.redis.clone();
    if let Err(e) = jobs::top_up(&state.pool, &mut conn, &state.queue, state.settings.window).await
    {
        tracing::warn!(error = %e, "topping up the queue failed; the scheduler's sweeper will do it");
    }
}

/// Retries a database operation while PostgreSQL is unreachable, with
/// exponential backoff, up to the configured budget. An outage alone never
/// fails a job: if it lasts longer, the delivery errors and the lease and
/// sweeper bring the job back.
async fn with_db_retry<T, E, F, Fut>(
    state: &WorkerState,
    what: &str,
    mut op: F,
) -> Result<T, BoxDynError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let budget = Duration::from_secs(state.settings.db_retry_secs);
    let started = Instant::now();
    let mut wait = Duration::from_millis(250);
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if started.elapsed() < budget => {
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "{what} failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!(error = %e, "{what} failed for {} s; giving the delivery up", budget.as_secs());
                return Err(Box::new(e));
            }
        }
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
