//! Writing a finished job: the champion as a new model version, its artifact,
//! the summary log, every epoch, every candidate's evaluation, the forecast or
//! anomaly flags, the promotion decision (taken by [`super::promotion`]) and
//! the job's terminal status — in one transaction that also rolls the cycle
//! up. Guarded by the attempt, so a delivery that lost its job writes nothing.

use sqlx::PgPool;
use trainyard_shared::cycles::{roll_up, Ended};
use trainyard_shared::jobs::{self, ClaimedJob};
use trainyard_shared::store::registry::{self, ActiveVersion, NewModel, StoredMetrics};
use trainyard_shared::store::results::{
    self as store_results, Epoch, Evaluation, EvaluationRole, Flag, PredictedDay, PredictionSource,
    TrainingLog,
};
use trainyard_shared::{Algorithm, ModelStatus};
use uuid::Uuid;

use super::promotion::{baseline_of, promotion_decision};
pub use super::promotion::{Incumbent, Predictions};
use crate::training::{self, EpochReport, Metrics, TrainOutcome, TrainRequest};

/// Scores a stored active model on this job's request (its holdout, its
/// data): the metrics promotion compares, and what it predicts today.
pub fn score_active(
    model_id: Uuid,
    version: i32,
    algorithm: Algorithm,
    artifact: &[u8],
    request: &TrainRequest,
) -> Incumbent {
    match training::rescore(artifact, request) {
        Ok(metrics) => Incumbent::Scored {
            model_id,
            version,
            algorithm,
            metrics,
            predictions: training::predict(artifact, request)
                .ok()
                .map(|(forecast, anomalies)| {
                    Box::new(Predictions {
                        forecast,
                        anomalies,
                    })
                }),
        },
        Err(e) => Incumbent::Unusable {
            model_id,
            version,
            reason: e.to_string(),
        },
    }
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Written {
    pub model_id: Uuid,
    pub version: i32,
    pub promoted: bool,
    pub reason: String,
}

/// How writing a finished job ended.
#[derive(Debug, Clone)]
pub enum WriteOutcome {
    /// The model, its output and the decision are stored; the job succeeded.
    Written(Written),
    /// This attempt no longer owned the job (taken over or ended): nothing written.
    Lost,
    /// The organization was deleted while the job ran: nothing was written
    /// for it and the job is failed with [`ORG_DELETED`].
    OrgDeleted,
}

/// The reason of a job whose organization was deleted during its cycle.
pub const ORG_DELETED: &str = "the organization no longer exists (deleted during the cycle)";

/// Writes everything, in one transaction guarded by the attempt.
///
/// The promotion decision is taken here, under the per-(organization,
/// model type) lock, against the model active *now*: if it is not the one
/// the handler scored before training (`incumbent`), the active one is
/// re-scored on this job's `request` (same data, same holdout) and the
/// decision is taken against it, so concurrent writers can never archive a
/// better model under a worse one. The organization row is locked `for key
/// share` first: deleting it waits for this transaction, and a job whose
/// organization is already gone writes nothing and is failed.
#[tracing::instrument(skip_all, fields(job.id = %job.job_id))]
pub async fn write_success(
    pool: &PgPool,
    job: &ClaimedJob,
    outcome: &TrainOutcome,
    epochs: &[EpochReport],
    incumbent: &Incumbent,
    request: &TrainRequest,
    train_seconds: f64,
) -> Result<WriteOutcome, sqlx::Error> {
    let champion = &outcome.candidates[outcome.champion];
    let m = &champion.metrics;
    let model_id = Uuid::new_v4();
    let org = job.org_id;

    let mut tx = pool.begin().await?;
    // Take the job first: if this attempt no longer owns it, write nothing.
    if !jobs::mark_succeeded(
        &mut *tx,
        job,
        model_id,
        &champion.algorithm,
        m.accuracy,
        train_seconds,
    )
    .await?
    {
        return Ok(WriteOutcome::Lost);
    }

    // Versions and the active model are per (org, model type); serialize
    // writers of the same pair.
    registry::lock_pair(&mut *tx, org, job.model_type).await?;
    if !store_results::lock_org(&mut *tx, org).await? {
        jobs::unmark_succeeded(&mut *tx, job.job_id, ORG_DELETED).await?;
        roll_up(&mut tx, job.cycle_id, job.job_id, Ended::Failed).await?;
        tx.commit().await?;
        return Ok(WriteOutcome::OrgDeleted);
    }

    let current = current_incumbent(&mut tx, job, incumbent, request).await?;
    let changed = current.model_id() != incumbent.model_id();
    let decision = promotion_decision(m, baseline_of(outcome), &current);
    let promoted = decision.promoted;
    let reason = if changed {
        format!(
            "{} (decided against the model active at write time; training had read {})",
            decision.reason,
            incumbent.label()
        )
    } else {
        decision.reason.clone()
    };
    if changed {
        tracing::info!(job.id = %job.job_id, was = %incumbent.label(), now = %current.label(),
            "the active model changed during training: decided against the current one");
    }
    jobs::set_promotion(&mut *tx, job.job_id, promoted, &reason).await?;
    let incumbent = &*current;

    let version = registry::next_version(&mut *tx, org, job.model_type).await?;
    if promoted {
        registry::archive_active(&mut *tx, org, job.model_type).await?;
    }
    let data = &outcome.data;
    registry::insert_model(
        &mut *tx,
        &NewModel {
            id: model_id,
            org,
            model_type: job.model_type,
            algorithm: &champion.algorithm,
            version,
            status: if promoted {
                ModelStatus::Active
            } else {
                ModelStatus::Candidate
            },
            metrics: stored(m),
            training_samples: outcome.training_samples as i32,
            data_start: data.train.start,
            data_end: data.holdout.end,
            cycle_id: job.cycle_id,
            job_id: job.job_id,
            promotion_reason: &reason,
        },
    )
    .await?;
    registry::insert_artifact(
        &mut *tx,
        model_id,
        &format!(
            "trainyard-artifact-v{}",
            crate::training::artifact::FORMAT_VERSION
        ),
        &champion.artifact,
        &champion.sha256,
    )
    .await?;
    store_results::insert_training_log(
        &mut *tx,
        &TrainingLog {
            model_id,
            job_id: job.job_id,
            org,
            model_type: job.model_type,
            algorithm: &champion.algorithm,
            metrics: stored(m),
            training_samples: outcome.training_samples as i32,
            train_seconds,
            data_report: data_report(outcome),
        },
    )
    .await?;
    let epochs: Vec<Epoch<'_>> = epochs
        .iter()
        .map(|e| Epoch {
            algorithm: &e.algorithm,
            epoch: e.epoch as i32,
            epochs: e.epochs as i32,
            train_loss: e.train_loss,
            val_loss: e.val_loss,
            seconds: e.seconds,
        })
        .collect();
    store_results::insert_epochs(&mut *tx, job.job_id, &epochs).await?;

    let evaluation = |algorithm, role, model_id, is_champion, metrics: &Metrics| Evaluation {
        job_id: job.job_id,
        org,
        model_type: job.model_type,
        algorithm,
        role,
        model_id,
        is_champion,
        metrics: stored(metrics),
    };
    for (i, c) in outcome.candidates.iter().enumerate() {
        let champion = i == outcome.champion;
        let e = evaluation(
            c.algorithm.as_str(),
            EvaluationRole::Candidate,
            champion.then_some(model_id),
            champion,
            &c.metrics,
        );
        store_results::insert_evaluation(&mut *tx, &e).await?;
    }
    if let Incumbent::Scored {
        model_id: inc,
        algorithm,
        metrics,
        ..
    } = incumbent
    {
        let e = evaluation(
            algorithm.as_str(),
            EvaluationRole::Incumbent,
            Some(*inc),
            false,
            metrics,
        );
        store_results::insert_evaluation(&mut *tx, &e).await?;
    }

    // The predictions the dashboards read are the active model's: the new
    // champion's when it was promoted, else the incumbent's on today's data.
    // A champion no better than a trivial model contributes nothing; one
    // that lost to an active model that could not predict keeps its own.
    let (no_forecast, no_flags) = (Vec::new(), Vec::new());
    let (pred_model, forecast, anomalies) = match incumbent {
        Incumbent::Scored {
            model_id: inc,
            predictions: Some(p),
            ..
        } if !promoted => (*inc, &p.forecast, &p.anomalies),
        _ if decision.trivial => (model_id, &no_forecast, &no_flags),
        _ => (model_id, &outcome.forecast, &outcome.anomalies),
    };
    let by = PredictionSource {
        org,
        model_type: job.model_type,
        model_id: pred_model,
        job_id: job.job_id,
    };
    let days: Vec<PredictedDay> = forecast
        .iter()
        .map(|p| PredictedDay {
            date: p.date,
            value: p.value,
            lower_80: p.lower_80,
            upper_80: p.upper_80,
            lower_95: p.lower_95,
            upper_95: p.upper_95,
        })
        .collect();
    store_results::insert_forecast(&mut *tx, by, &days).await?;
    let flags: Vec<Flag<'_>> = anomalies
        .iter()
        .map(|f| Flag {
            row_id: f.row_id,
            date: f.date,
            score: f.score,
            threshold: f.threshold,
            is_anomaly: f.is_anomaly,
            kind: f.kind.map(|k| k.as_str()),
        })
        .collect();
    store_results::insert_flags(&mut *tx, by, &flags).await?;

    roll_up(
        &mut tx,
        job.cycle_id,
        job.job_id,
        Ended::Succeeded { promoted },
    )
    .await?;
    tx.commit().await?;
    Ok(WriteOutcome::Written(Written {
        model_id,
        version,
        promoted,
        reason,
    }))
}

/// The model active now (under the pair's lock): `read` if it is still the
/// one, else the current one re-scored on this job's request, off the async
/// runtime.
async fn current_incumbent<'a>(
    tx: &mut sqlx::PgConnection,
    job: &ClaimedJob,
    read: &'a Incumbent,
    request: &TrainRequest,
) -> Result<std::borrow::Cow<'a, Incumbent>, sqlx::Error> {
    let active = registry::active_version(&mut *tx, job.org_id, job.model_type).await?;
    let Some(ActiveVersion {
        id,
        version,
        algorithm,
    }) = active
    else {
        return Ok(match read {
            Incumbent::None => std::borrow::Cow::Borrowed(read),
            _ => std::borrow::Cow::Owned(Incumbent::None),
        });
    };
    if read.model_id() == Some(id) {
        return Ok(std::borrow::Cow::Borrowed(read));
    }
    let Some(artifact) = registry::artifact(&mut *tx, id).await? else {
        return Ok(std::borrow::Cow::Owned(Incumbent::Unusable {
            model_id: id,
            version,
            reason: "its artifact is missing".to_string(),
        }));
    };
    let request = request.clone();
    let scored = tokio::task::spawn_blocking(move || {
        score_active(id, version, algorithm, &artifact, &request)
    })
    .await
    .unwrap_or_else(|e| Incumbent::Unusable {
        model_id: id,
        version,
        reason: format!("re-scoring it failed: {e}"),
    });
    Ok(std::borrow::Cow::Owned(scored))
}

/// Holdout metrics as the store keeps them.
fn stored(m: &Metrics) -> StoredMetrics {
    StoredMetrics {
        accuracy: m.accuracy,
        mae: m.mae,
        rmse: m.rmse,
        r2: m.r2,
        mape: m.mape,
        mase: m.mase,
        precision: m.precision,
        recall: m.recall,
        f1: m.f1,
    }
}

/// The job's data report, with the training notes (warnings for the
/// operator) under `notes` when there are any.
fn data_report(outcome: &TrainOutcome) -> serde_json::Value {
    let mut report = serde_json::to_value(&outcome.data).unwrap_or_default();
    if let (Some(map), false) = (report.as_object_mut(), outcome.notes.is_empty()) {
        map.insert("notes".into(), serde_json::json!(outcome.notes));
    }
    report
}
