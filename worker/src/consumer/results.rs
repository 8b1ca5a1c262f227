//! Writing a finished job: the champion as a new model version, its artifact,
//! the summary log, every epoch, every candidate's evaluation, the forecast or
//! anomaly flags, the promotion decision (taken by [`super::promotion`]) and
//! the job's terminal status — in one transaction that also rolls the cycle
//! up. Guarded by the attempt, so a delivery that lost its job writes nothing.

use sqlx::PgPool;
use trainyard_shared::cycles::{roll_up, Ended};
use trainyard_shared::jobs::ClaimedJob;
use uuid::Uuid;

use super::promotion::{baseline_of, promotion_decision};
pub use super::promotion::{Incumbent, Predictions};
use crate::training::{self, EpochReport, Metrics, TrainOutcome, TrainRequest};

/// Scores a stored active model on this job's request (its holdout, its
/// data): the metrics promotion compares, and what it predicts today.
pub fn score_active(
    model_id: Uuid,
    version: i32,
    algorithm: &str,
    artifact: &[u8],
    request: &TrainRequest,
) -> Incumbent {
    match training::rescore(artifact, request) {
        Ok(metrics) => Incumbent::Scored {
            model_id,
            version,
            algorithm: algorithm.to_string(),
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
    let model_type = job.model_type.as_str();

    let mut tx = pool.begin().await?;
    // Take the job first: if this attempt no longer owns it, write nothing.
    let owned = sqlx::query(
        "update ml_training_jobs
         set status = 'succeeded', finished_at = now(), heartbeat_at = null, model_id = $3,
             champion_algorithm = $4, accuracy = $5, train_seconds = $6
         where id = $1 and status = 'running' and attempts = $2",
    )
    .bind(job.job_id)
    .bind(job.attempt)
    .bind(model_id)
    .bind(&champion.algorithm)
    .bind(m.accuracy)
    .bind(train_seconds)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if owned != 1 {
        return Ok(WriteOutcome::Lost);
    }

    // Versions and the active model are per (org, model type); serialize
    // writers of the same pair.
    sqlx::query("select pg_advisory_xact_lock(hashtext($1))")
        .bind(format!("trainyard:version:{org}:{model_type}"))
        .execute(&mut *tx)
        .await?;

    let org_row: Option<i32> =
        sqlx::query_scalar("select 1 from organizations where id = $1 for key share")
            .bind(org)
            .fetch_optional(&mut *tx)
            .await?;
    if org_row.is_none() {
        sqlx::query(
            "update ml_training_jobs
             set status = 'failed', reason = $2, model_id = null, champion_algorithm = null,
                 accuracy = null, promoted = false
             where id = $1",
        )
        .bind(job.job_id)
        .bind(ORG_DELETED)
        .execute(&mut *tx)
        .await?;
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
    sqlx::query("update ml_training_jobs set promoted = $2, reason = $3 where id = $1")
        .bind(job.job_id)
        .bind(promoted)
        .bind(&reason)
        .execute(&mut *tx)
        .await?;
    let incumbent = &*current;

    let version: i32 = sqlx::query_scalar(
        "select coalesce(max(version), 0) + 1 from ml_models
         where organization_id = $1 and model_type = $2",
    )
    .bind(org)
    .bind(model_type)
    .fetch_one(&mut *tx)
    .await?;
    if promoted {
        sqlx::query(
            "update ml_models set status = 'archived'
             where organization_id = $1 and model_type = $2 and status = 'active'",
        )
        .bind(org)
        .bind(model_type)
        .execute(&mut *tx)
        .await?;
    }
    let data = &outcome.data;
    sqlx::query(
        "insert into ml_models
             (id, organization_id, model_type, algorithm, version, status, accuracy, mae, rmse,
              r2_score, mape, mase, training_samples, data_start, data_end, cycle_id, job_id,
              promotion_reason)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
    )
    .bind(model_id)
    .bind(org)
    .bind(model_type)
    .bind(&champion.algorithm)
    .bind(version)
    .bind(if promoted { "active" } else { "candidate" })
    .bind(m.accuracy)
    .bind(m.mae)
    .bind(m.rmse)
    .bind(m.r2)
    .bind(m.mape)
    .bind(m.mase)
    .bind(outcome.training_samples as i32)
    .bind(data.train.start)
    .bind(data.holdout.end)
    .bind(job.cycle_id)
    .bind(job.job_id)
    .bind(&reason)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "insert into ml_model_storage (model_id, format, artifact, sha256, size_bytes)
         values ($1, $2, $3, $4, $5)",
    )
    .bind(model_id)
    .bind(format!(
        "trainyard-artifact-v{}",
        crate::training::artifact::FORMAT_VERSION
    ))
    .bind(&champion.artifact)
    .bind(&champion.sha256)
    .bind(champion.artifact.len() as i32)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "insert into ml_training_logs
             (model_id, job_id, organization_id, model_type, algorithm, accuracy, mae, rmse,
              r2_score, training_samples, train_seconds, data_report)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(model_id)
    .bind(job.job_id)
    .bind(org)
    .bind(model_type)
    .bind(&champion.algorithm)
    .bind(m.accuracy)
    .bind(m.mae)
    .bind(m.rmse)
    .bind(m.r2)
    .bind(outcome.training_samples as i32)
    .bind(train_seconds)
    .bind(data_report(outcome))
    .execute(&mut *tx)
    .await?;

    if !epochs.is_empty() {
        sqlx::query(
            "insert into ml_training_epochs (job_id, algorithm, epoch, epochs, train_loss, val_loss, seconds)
             select $1, u.algorithm, u.epoch, u.epochs, u.train_loss, u.val_loss, u.seconds
             from unnest($2::text[], $3::int[], $4::int[], $5::float8[], $6::float8[], $7::float8[])
                  as u(algorithm, epoch, epochs, train_loss, val_loss, seconds)
             on conflict do nothing",
        )
        .bind(job.job_id)
        .bind(epochs.iter().map(|e| e.algorithm.clone()).collect::<Vec<_>>())
        .bind(epochs.iter().map(|e| e.epoch as i32).collect::<Vec<_>>())
        .bind(epochs.iter().map(|e| e.epochs as i32).collect::<Vec<_>>())
        .bind(epochs.iter().map(|e| e.train_loss).collect::<Vec<_>>())
        .bind(epochs.iter().map(|e| e.val_loss).collect::<Vec<_>>())
        .bind(epochs.iter().map(|e| e.seconds).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }

    for (i, c) in outcome.candidates.iter().enumerate() {
        insert_evaluation(
            &mut tx,
            job,
            "candidate",
            &c.algorithm,
            (i == outcome.champion).then_some(model_id),
            i == outcome.champion,
            &c.metrics,
        )
        .await?;
    }
    if let Incumbent::Scored {
        model_id: inc,
        algorithm,
        metrics,
        ..
    } = incumbent
    {
        insert_evaluation(
            &mut tx,
            job,
            "incumbent",
            algorithm,
            Some(*inc),
            false,
            metrics,
        )
        .await?;
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
    if !forecast.is_empty() {
        sqlx::query(
            "insert into ml_predictions
                 (organization_id, model_type, model_id, job_id, prediction_date, predicted_value,
                  lower_80, upper_80, lower_95, upper_95)
             select $1, $2, $3, $4, u.d, u.v, u.l80, u.u80, u.l95, u.u95
             from unnest($5::date[], $6::float8[], $7::float8[], $8::float8[], $9::float8[],
                         $10::float8[]) as u(d, v, l80, u80, l95, u95)",
        )
        .bind(org)
        .bind(model_type)
        .bind(pred_model)
        .bind(job.job_id)
        .bind(forecast.iter().map(|p| p.date).collect::<Vec<_>>())
        .bind(forecast.iter().map(|p| p.value).collect::<Vec<_>>())
        .bind(forecast.iter().map(|p| p.lower_80).collect::<Vec<_>>())
        .bind(forecast.iter().map(|p| p.upper_80).collect::<Vec<_>>())
        .bind(forecast.iter().map(|p| p.lower_95).collect::<Vec<_>>())
        .bind(forecast.iter().map(|p| p.upper_95).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    if !anomalies.is_empty() {
        let a = anomalies;
        sqlx::query(
            "insert into ml_anomaly_flags
                 (organization_id, model_id, job_id, metrics_data_id, date, score, threshold,
                  is_anomaly, kind)
             select $1, $2, $3, u.row_id, u.d, u.score, u.threshold, u.flag, u.kind
             from unnest($4::int8[], $5::date[], $6::float8[], $7::float8[], $8::bool[],
                         $9::text[])
                  as u(row_id, d, score, threshold, flag, kind)",
        )
        .bind(org)
        .bind(pred_model)
        .bind(job.job_id)
        .bind(a.iter().map(|f| f.row_id).collect::<Vec<_>>())
        .bind(a.iter().map(|f| f.date).collect::<Vec<_>>())
        .bind(a.iter().map(|f| f.score).collect::<Vec<_>>())
        .bind(a.iter().map(|f| f.threshold).collect::<Vec<_>>())
        .bind(a.iter().map(|f| f.is_anomaly).collect::<Vec<_>>())
        .bind(
            a.iter()
                .map(|f| f.kind.map(|k| k.as_str()))
                .collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await?;
    }

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
    let active: Option<(Uuid, i32, String)> = sqlx::query_as(
        "select id, version, algorithm from ml_models
         where organization_id = $1 and model_type = $2 and status = 'active'",
    )
    .bind(job.org_id)
    .bind(job.model_type.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let Some((id, version, algorithm)) = active else {
        return Ok(match read {
            Incumbent::None => std::borrow::Cow::Borrowed(read),
            _ => std::borrow::Cow::Owned(Incumbent::None),
        });
    };
    if read.model_id() == Some(id) {
        return Ok(std::borrow::Cow::Borrowed(read));
    }
    let artifact: Option<Vec<u8>> =
        sqlx::query_scalar("select artifact from ml_model_storage where model_id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(artifact) = artifact else {
        return Ok(std::borrow::Cow::Owned(Incumbent::Unusable {
            model_id: id,
            version,
            reason: "its artifact is missing".to_string(),
        }));
    };
    let request = request.clone();
    let scored = tokio::task::spawn_blocking(move || {
        score_active(id, version, &algorithm, &artifact, &request)
    })
    .await
    .unwrap_or_else(|e| Incumbent::Unusable {
        model_id: id,
        version,
        reason: format!("re-scoring it failed: {e}"),
    });
    Ok(std::borrow::Cow::Owned(scored))
}

async fn insert_evaluation(
    tx: &mut sqlx::PgConnection,
    job: &ClaimedJob,
    role: &str,
    algorithm: &str,
    model_id: Option<Uuid>,
    is_champion: bool,
    m: &Metrics,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into ml_evaluations
             (job_id, organization_id, model_type, algorithm, role, model_id, is_champion,
              accuracy, mae, rmse, r2_score, mape, mase, precision_score, recall, f1)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    .bind(job.job_id)
    .bind(job.org_id)
    .bind(job.model_type.as_str())
    .bind(algorithm)
    .bind(role)
    .bind(model_id)
    .bind(is_champion)
    .bind(m.accuracy)
    .bind(m.mae)
    .bind(m.rmse)
    .bind(m.r2)
    .bind(m.mape)
    .bind(m.mase)
    .bind(m.precision)
    .bind(m.recall)
    .bind(m.f1)
    .execute(tx)
    .await?;
    Ok(())
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
