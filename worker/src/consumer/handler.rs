//! One delivery of one training job, from claim to result. Every delivery is
//! acknowledged in Redis when its handler returns, whatever happened:
//! PostgreSQL's job row (and the sweeper that reads it) decides whether the
//! job needs another delivery, never apalis. Bad input is final and recorded
//! on the job row; an unreachable PostgreSQL is retried with backoff and never
//! spends one of the job's attempts.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apalis::prelude::{BoxDynError, Data, TaskId, WorkerContext};
use tracing::Instrument as _;
use trainyard_shared::jobs::{self, Claim, ClaimedJob};
use trainyard_shared::queue::{self, Delivery, TrainJob};
use trainyard_shared::JobStatus;

use super::data;
use super::metrics::{self, Outcome};
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
    delivery: Delivery,
    task: TaskId,
    worker: WorkerContext,
    state: Data<Arc<WorkerState>>,
) -> Result<(), BoxDynError> {
    let task = task.to_string();
    match delivery {
        Delivery::Undecodable { preview, error } => {
            tracing::error!(task.id = %task, error = %error, payload = %preview,
                "a message on the queue is not a training job: acknowledged and kept in the dead-letter list, never retried");
            let mut conn = state.redis.clone();
            let entry = serde_json::json!({ "task_id": task, "error": error, "payload": preview,
                "worker": worker.name(), "at": chrono::Utc::now().to_rfc3339() });
            metrics::dead_letter();
            if let Err(e) = queue::dead_letter(&mut conn, &state.queue, &entry.to_string()).await {
                tracing::warn!(error = %e, "keeping the undecodable message failed");
            }
        }
        Delivery::Job(job) => {
            let span = tracing::info_span!("job", job.id = %job.job_id, cycle.id = %job.cycle_id,
                org.id = %job.org_id, model.type = %job.model_type, task.id = %task);
            state.in_flight.fetch_add(1, Ordering::SeqCst);
            process(&state, &job).instrument(span).await;
            state.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let mut conn = state.redis.clone();
    if let Err(e) = queue::ack(&mut conn, &state.queue, worker.name(), &task).await {
        // Harmless: the delivery comes back once and is acknowledged then.
        tracing::warn!(task.id = %task, error = %e, "acknowledging the delivery in Redis failed");
    }
    Ok(())
}

async fn process(state: &WorkerState, job: &TrainJob) {
    let lease = state.settings.lease_timeout();
    let budget = Retry::For(Duration::from_secs(state.settings.db_retry_secs));
    let Some(claim) = with_db_retry(state, "claiming the job", budget, || {
        jobs::claim(&state.pool, job.job_id, &state.name, lease)
    })
    .await
    else {
        // Nothing was claimed, so no attempt was spent; the job is still
        // queued and the sweeper gives it a fresh delivery once PostgreSQL is
        // back (this delivery is acknowledged on return).
        tracing::warn!(
            "PostgreSQL stayed unreachable: delivery given up, the job stays queued for the sweeper"
        );
        return;
    };
    let claimed = match claim {
        Claim::Claimed(c) => c,
        Claim::AlreadyTerminal(status) => {
            tracing::info!(job.status = %status, "job already finished: delivery acknowledged");
            return;
        }
        Claim::HeldElsewhere(worker) => {
            tracing::info!(held_by = %worker, "job is running on another worker: duplicate delivery acknowledged");
            return;
        }
        Claim::GaveUp { attempts } => {
            tracing::warn!(attempts, "job failed after exhausting its attempts");
            top_up(state).await;
            return;
        }
        Claim::Unknown => {
            tracing::error!("no such job row: delivery dropped");
            return;
        }
    };
    tracing::info!(attempt = claimed.attempt, "training started");

    // Keep the lease alive while we work; the guard stops it however this
    // future ends (finished, failed, or dropped by a dying queue worker).
    let _beat = {
        let pool = state.pool.clone();
        let c = claimed.clone();
        let every = (lease / 4).max(Duration::from_millis(500));
        tokio::spawn(
            async move {
                // The claim itself wrote the first heartbeat.
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                loop {
                    tick.tick().await;
                    match jobs::heartbeat(&pool, &c).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!("lost the job's lease (taken over or ended)");
                            break;
                        }
                        Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
                    }
                }
            }
            .in_current_span(),
        )
    };
    let _beat = AbortOnDrop(_beat);
    let mut timer = metrics::JobTimer::start(claimed.model_type);
    if let Some(outcome) = run_claimed(state, &claimed).await {
        timer.ended(outcome);
        drop(timer);
        top_up(state).await;
    }
}

enum Trained {
    Done(Box<TrainOutcome>, Vec<EpochReport>, Incumbent, f64),
    Rejected(TrainError),
    Panicked(String),
}

/// Runs a claimed job to its end. `None` when the process stopped first (the
/// job was handed back, or left to the lease sweeper).
async fn run_claimed(state: &WorkerState, job: &ClaimedJob) -> Option<Outcome> {
    // Once claimed, an outage is waited out however long it lasts (the
    // sweeper does not release leases while PostgreSQL is unreachable), so
    // it never costs the job an attempt; only a shutdown ends the wait.
    // The claim read whether the organization still exists.
    let exists = job.org_exists;
    if !exists {
        return finish(
            state,
            job,
            JobStatus::Failed,
            "the organization no longer exists (deleted during the cycle)",
        )
        .await;
    }
    // Only the database is retried; rows that cannot be decoded fail the job.
    let loaded = match with_db_retry(
        state,
        "loading the organization's data",
        Retry::UntilStopped,
        || async {
            match data::load_rows(&state.pool, job.org_id, job.model_type).await {
                Err(data::LoadError::Database(e)) => Err(e),
                other => Ok(other),
            }
        },
    )
    .await
    {
        Some(r) => r,
        None => return stop(state, job).await,
    };
    let rows = match loaded {
        Ok(rows) => rows,
        Err(unreadable) => {
            tracing::warn!(job.status = "failed", reason = %unreadable, "the organization's data cannot be read");
            return finish(state, job, JobStatus::Failed, &unreadable.to_string()).await;
        }
    };
    // The active model is only read to compare a new model with; fewer rows
    // than the minimum number of days can never make one (training refuses
    // them at once), so such a job skips the read.
    let active = if rows.len() < state.train.min_days {
        None
    } else {
        match with_db_retry(
            state,
            "loading the active model",
            Retry::UntilStopped,
            || data::active_model(&state.pool, job.org_id, job.model_type),
        )
        .await
        {
            Some(a) => a,
            None => return stop(state, job).await,
        }
    };

    let request = TrainRequest {
        model_type: job.model_type,
        rows,
        settings: state.train.clone(),
        seed: seed_for(job),
    };
    let request_for_results = request.clone();
    let job_for_log = job.clone();
    let faults = state.faults.clone();
    let span = tracing::Span::current();
    let training = tokio::task::spawn_blocking(move || {
        let _in_job = span.enter();
        let started = Instant::now();
        faults.inject(job_for_log.org_id);
        let epochs = Arc::new(Mutex::new(Vec::new()));
        let sink = epochs.clone();
        let mut on_epoch = |e: &EpochReport| {
            metrics::epoch(job_for_log.model_type);
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
        _ = grace_over(state) => {
            // The process is stopping and training did not finish in time.
            return stop(state, job).await;
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
        Err(join) => Trained::Panicked(format!("training task ended: {join}")),
    };

    match trained {
        Trained::Panicked(msg) => {
            tracing::error!(panic = %msg, "training panicked");
            finish(
                state,
                job,
                JobStatus::Failed,
                &format!("training panicked: {msg}"),
            )
            .await
        }
        Trained::Rejected(e) => {
            let status = if matches!(e, TrainError::InsufficientData { .. }) {
                JobStatus::Skipped
            } else {
                JobStatus::Failed
            };
            if status == JobStatus::Skipped {
                // Too little data is an expected outcome, not a problem.
                tracing::info!(job.status = %status, reason = %e, "training did not produce a model");
            } else {
                tracing::warn!(job.status = %status, reason = %e, "training did not produce a model");
            }
            finish(state, job, status, &e.to_string()).await
        }
        Trained::Done(outcome, epochs, incumbent, seconds) => {
            // The results are in memory: losing them to an outage would mean
            // training again, so wait it out.
            let written = with_db_retry(state, "writing the results", Retry::UntilStopped, || {
                results::write_success(
                    &state.pool,
                    job,
                    &outcome,
                    &epochs,
                    &incumbent,
                    &request_for_results,
                    seconds,
                )
            })
            .await;
            metrics::trained(job.model_type, seconds);
            match written {
                None => stop(state, job).await,
                Some(results::WriteOutcome::Written(w)) => {
                    let champion = &outcome.candidates[outcome.champion];
                    tracing::info!(model.id = %w.model_id, model.version = w.version,
                        algorithm = %champion.algorithm, accuracy = champion.metrics.accuracy,
                        mae = champion.metrics.mae, promoted = w.promoted, reason = %w.reason,
                        train_seconds = seconds, "training succeeded");
                    Some(Outcome::Succeeded)
                }
                Some(results::WriteOutcome::Lost) => {
                    tracing::warn!("results discarded: the job was taken over or ended meanwhile");
                    Some(Outcome::Lost)
                }
                Some(results::WriteOutcome::OrgDeleted) => {
                    tracing::warn!(reason = results::ORG_DELETED, "job failed: nothing written");
                    Some(Outcome::Failed)
                }
            }
        }
    }
}

/// Ends the attempt without a model. If the process stops before
/// PostgreSQL answers, the job is left running for the lease sweeper.
async fn finish(
    state: &WorkerState,
    job: &ClaimedJob,
    status: JobStatus,
    reason: &str,
) -> Option<Outcome> {
    let owned = with_db_retry(
        state,
        "recording the job's end",
        Retry::UntilStopped,
        || jobs::finish_without_model(&state.pool, job, status, reason),
    )
    .await;
    match owned {
        Some(true) if status == JobStatus::Skipped => Some(Outcome::Skipped),
        Some(true) => Some(Outcome::Failed),
        Some(false) => {
            tracing::warn!("the job was taken over or ended meanwhile");
            Some(Outcome::Lost)
        }
        None => stop(state, job).await,
    }
}

/// The process is stopping with this job unfinished: hand it back within
/// what is left of the grace period. If PostgreSQL cannot be reached in
/// time, leave a note in Redis so the lease sweeper gives the attempt back
/// when it releases the job, and exit anyway: the shutdown never outlasts
/// the grace period.
async fn stop(state: &WorkerState, job: &ClaimedJob) -> Option<Outcome> {
    let mut conn = state.redis.clone();
    let budget = state.settings.hand_back_budget();
    match tokio::time::timeout(
        budget,
        jobs::hand_back(&state.pool, &mut conn, &state.queue, job),
    )
    .await
    {
        Ok(Ok(true)) => tracing::warn!("shutting down: job handed back to the queue"),
        Ok(Ok(false)) => tracing::warn!("shutting down: job was no longer ours"),
        outcome => {
            let why = match outcome {
                Ok(Err(e)) => e.to_string(),
                _ => format!("no answer within {} ms", budget.as_millis()),
            };
            let noted = jobs::note_hand_back(&mut conn, &state.queue, job).await;
            tracing::error!(error = %why, noted_in_redis = noted.is_ok(),
                "shutting down: handing the job back failed; the lease sweeper releases it once its lease expires");
        }
    }
    None
}

/// Resolves when the process is stopping and what is left of the grace
/// period is just enough to hand a job back.
async fn grace_over(state: &WorkerState) {
    let mut rx = state.shutdown.clone();
    let _ = rx.wait_for(|s| *s).await;
    let since = state
        .stopping_since()
        .unwrap_or_else(tokio::time::Instant::now);
    let handback = state.settings.hand_back_budget();
    tokio::time::sleep_until(since + state.settings.grace().saturating_sub(handback)).await;
}

/// Refills the Redis window after a job, every `window / 20` jobs of this
/// process (the window is deep enough that a worker never waits for it,
/// and each refill is one transaction, so refilling after every job would
/// only add load). The sweeper refills too.
async fn top_up(state: &WorkerState) {
    let every = (state.settings.window / 20).max(1) as u64;
    if !state
        .finished
        .fetch_add(1, Ordering::Relaxed)
        .is_multiple_of(every)
    {
        return;
    }
    let mut conn = state.redis.clone();
    if let Err(e) = jobs::top_up(&state.pool, &mut conn, &state.queue, state.settings.window).await
    {
        tracing::warn!(error = %e, "topping up the queue failed; the scheduler's sweeper will do it");
    }
}

/// How long [`with_db_retry`] keeps trying.
#[derive(Debug, Clone, Copy)]
enum Retry {
    /// Up to this long (before a job is claimed: giving up costs nothing).
    For(Duration),
    /// Until the process stops and its grace period runs out.
    UntilStopped,
}

/// Retries a database operation while PostgreSQL is unreachable, with
/// exponential backoff. `None` when it gave up (budget spent or process
/// stopping); the error has been logged.
async fn with_db_retry<T, E, F, Fut>(
    state: &WorkerState,
    what: &str,
    retry: Retry,
    mut op: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let started = Instant::now();
    let mut wait = Duration::from_millis(250);
    loop {
        match op().await {
            Ok(v) => return Some(v),
            Err(e) => {
                if let Retry::For(budget) = retry {
                    if started.elapsed() >= budget {
                        tracing::error!(error = %e, "{what} failed for {} s; giving up", budget.as_secs());
                        return None;
                    }
                }
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "{what} failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = grace_over(state) => {
                        tracing::error!(error = %e, "{what} failed and the process is stopping; giving up");
                        return None;
                    }
                }
                wait = (wait * 2).min(Duration::from_secs(5));
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
