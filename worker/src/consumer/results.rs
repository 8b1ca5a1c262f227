//! Writing a finished job: the champion as a new model version, its artifact,
//! the summary log, every epoch, every candidate's evaluation, the forecast or
//! anomaly flags, the promotion decision and the job's terminal status — in
//! one transaction that also rolls the cycle up. Guarded by the attempt, so a
//! delivery that lost its job writes nothing.

use sqlx::PgPool;
use trainyard_shared::cycles::{roll_up, Ended};
use trainyard_shared::jobs::ClaimedJob;
use uuid::Uuid;

use crate::training::{AnomalyFlag, EpochReport, ForecastPoint, Metrics, TrainOutcome};

/// A model must beat the active one by more than this many accuracy points,
/// on the same holdout, to replace it.
pub const PROMOTION_MARGIN: f64 = 2.0;

/// How the active model did when re-scored on this job's holdout.
#[derive(Debug, Clone)]
pub enum Incumbent {
    /// No active model for this org and model type.
    None,
    Scored {
        model_id: Uuid,
        version: i32,
        algorithm: String,
        metrics: Metrics,
        /// What it predicts on this job's data, written instead of the
        /// champion's predictions when the champion is not promoted (the
        /// dashboards show the active model's forecast). `None` when it
        /// could not predict.
        predictions: Option<Box<Predictions>>,
    },
    /// It could not be used (e.g. its artifact failed the checksum).
    Unusable {
        model_id: Uuid,
        version: i32,
        reason: String,
    },
}

/// A 30-day forecast or a set of anomaly flags, as the pipeline returns them.
#[derive(Debug, Clone, Default)]
pub struct Predictions {
    pub forecast: Vec<ForecastPoint>,
    pub anomalies: Vec<AnomalyFlag>,
}

/// The promotion rule, kept apart so it can be tested on its own.
pub fn promotion_decision(champion_accuracy: f64, incumbent: &Incumbent) -> (bool, String) {
    match incumbent {
        Incumbent::None => (true, "no active model".to_string()),
        Incumbent::Unusable {
            version, reason, ..
        } => (true, format!("active model v{version} unusable: {reason}")),
        Incumbent::Scored {
            version, metrics, ..
        } => {
            let margin = champion_accuracy - metrics.accuracy;
            if margin > PROMOTION_MARGIN {
                (
                    true,
                    format!(
                        "beats active v{version} by {margin:.2} accuracy points on the same holdout ({champion_accuracy:.2} vs {:.2})",
                        metrics.accuracy
                    ),
                )
            } else {
                (
                    false,
                    format!(
                        "does not beat active v{version} by more than {PROMOTION_MARGIN} points on the same holdout ({champion_accuracy:.2} vs {:.2})",
                        metrics.accuracy
                    ),
                )
            }
        }
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

/// Writes everything; `Ok(None)` if the attempt no longer owned the job.
#[tracing::instrument(skip_all, fields(job.id = %job.job_id))]
pub async fn write_success(
    pool: &PgPool,
    job: &ClaimedJob,
    outcome: &TrainOutcome,
    epochs: &[EpochReport],
    incumbent: &Incumbent,
    train_seconds: f64,
) -> Result<Option<Written>, sqlx::Error> {
    let champion = &outcome.candidates[outcome.champion];
    let m = &champion.metrics;
    let (promoted, reason) = promotion_decision(m.accuracy, incumbent);
    let model_id = Uuid::new_v4();
    let org = job.org_id;
    let model_type = job.model_type.as_str();

    let mut tx = pool.begin().await?;
    // Take the job first: if this attempt no longer owns it, write nothing.
    let owned = sqlx::query(
        "update ml_training_jobs
         set status = 'succeeded', finished_at = now(), heartbeat_at = null, model_id = $3,
             champion_algorithm = $4, accuracy = $5, promoted = $6, train_seconds = $7, reason = $8
         where id = $1 and status = 'running' and attempts = $2",
    )
    .bind(job.job_id)
    .bind(job.attempt)
    .bind(model_id)
    .bind(&champion.algorithm)
    .bind(m.accuracy)
    .bind(promoted)
    .bind(train_seconds)
    .bind(&reason)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if owned != 1 {
        return Ok(None);
    }

    // Versions are per (org, model type); serialize writers of the same pair.
    sqlx::query("select pg_advisory_xact_lock(hashtext($1))")
        .bind(format!("trainyard:version:{org}:{model_type}"))
        .execute(&mut *tx)
        .await?;
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
    .bind(serde_json::to_value(data).unwrap_or_default())
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
    let (pred_model, forecast, anomalies) = match incumbent {
        Incumbent::Scored {
            model_id: inc,
            predictions: Some(p),
            ..
        } if !promoted => (*inc, &p.forecast, &p.anomalies),
        _ => (model_id, &outcome.forecast, &outcome.anomalies),
    };
    if !forecast.is_empty() {
        sqlx::query(
            "insert into ml_predictions
                 (organization_id, model_type, model_id, job_id, prediction_date, predicted_value)
             select $1, $2, $3, $4, u.d, u.v from unnest($5::date[], $6::float8[]) as u(d, v)",
        )
        .bind(org)
        .bind(model_type)
        .bind(pred_model)
        .bind(job.job_id)
        .bind(forecast.iter().map(|p| p.date).collect::<Vec<_>>())
        .bind(forecast.iter().map(|p| p.value).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    if !anomalies.is_empty() {
        let a = anomalies;
        sqlx::query(
            "insert into ml_anomaly_flags
                 (organization_id, model_id, job_id, metrics_data_id, date, score, threshold, is_anomaly)
             select $1, $2, $3, u.row_id, u.d, u.score, u.threshold, u.flag
             from unnest($4::int8[], $5::date[], $6::float8[], $7::float8[], $8::bool[])
                  as u(row_id, d, score, threshold, flag)",
        )
        .bind(org)
        .bind(pred_model)
        .bind(job.job_id)
        .bind(a.iter().map(|f| f.row_id).collect::<Vec<_>>())
        .bind(a.iter().map(|f| f.date).collect::<Vec<_>>())
        .bind(a.iter().map(|f| f.score).collect::<Vec<_>>())
        .bind(a.iter().map(|f| f.threshold).collect::<Vec<_>>())
        .bind(a.iter().map(|f| f.is_anomaly).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }

    roll_up(&mut tx, job.cycle_id, Ended::Succeeded { promoted }).await?;
    tx.commit().await?;
    Ok(Some(Written {
        model_id,
        version,
        promoted,
        reason,
    }))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(accuracy: f64) -> Metrics {
        Metrics {
            mae: 1.0,
            rmse: 1.0,
            r2: 0.5,
            mape: Some(100.0 - accuracy),
            accuracy,
            mase: None,
            precision: None,
            recall: None,
            f1: None,
        }
    }

    fn scored(accuracy: f64) -> Incumbent {
        Incumbent::Scored {
            model_id: Uuid::nil(),
            version: 3,
            algorithm: "lstm".into(),
            metrics: metrics(accuracy),
            predictions: None,
        }
    }

    #[test]
    fn a_champion_is_promoted_only_when_it_beats_the_active_model_by_more_than_two_points() {
        assert!(promotion_decision(80.0, &Incumbent::None).0);
        assert!(!promotion_decision(82.0, &scored(80.0)).0);
        assert!(promotion_decision(82.01, &scored(80.0)).0);
        assert!(!promotion_decision(70.0, &scored(80.0)).0);
        let unusable = Incumbent::Unusable {
            model_id: Uuid::nil(),
            version: 2,
            reason: "checksum mismatch".into(),
        };
        let (p, why) = promotion_decision(10.0, &unusable);
        assert!(p && why.contains("checksum mismatch"));
    }
}
