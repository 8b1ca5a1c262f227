//! What a successful job writes besides its model version: the summary log,
//! every epoch, every candidate's evaluation, and the predictions the
//! dashboards read (a forecast, or anomaly flags). All of it in the job's
//! result transaction, which the caller owns.

use chrono::NaiveDate;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::domain::{JobId, ModelType, OrgId};
use crate::store::registry::StoredMetrics;

/// Locks the organization row `for key share` until the transaction ends,
/// so deleting the organization waits for the results being written.
/// `false`: the organization no longer exists.
pub async fn lock_org(db: impl PgExecutor<'_>, org: OrgId) -> Result<bool, sqlx::Error> {
    let row: Option<i32> =
        sqlx::query_scalar("select 1 from organizations where id = $1 for key share")
            .bind(org)
            .fetch_optional(db)
            .await?;
    Ok(row.is_some())
}

/// The job's summary line in `ml_training_logs`.
#[derive(Debug, Clone)]
pub struct TrainingLog<'a> {
    pub model_id: Uuid,
    pub job_id: JobId,
    pub org: OrgId,
    pub model_type: ModelType,
    pub algorithm: &'a str,
    pub metrics: StoredMetrics,
    pub training_samples: i32,
    pub train_seconds: f64,
    pub data_report: serde_json::Value,
}

pub async fn insert_training_log(
    db: impl PgExecutor<'_>,
    log: &TrainingLog<'_>,
) -> Result<(), sqlx::Error> {
    let m = &log.metrics;
    sqlx::query(
        "insert into ml_training_logs
             (model_id, job_id, organization_id, model_type, algorithm, accuracy, mae, rmse,
              r2_score, training_samples, train_seconds, data_report)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(log.model_id)
    .bind(log.job_id)
    .bind(log.org)
    .bind(log.model_type)
    .bind(log.algorithm)
    .bind(m.accuracy)
    .bind(m.mae)
    .bind(m.rmse)
    .bind(m.r2)
    .bind(log.training_samples)
    .bind(log.train_seconds)
    .bind(&log.data_report)
    .execute(db)
    .await
    .map(|_| ())
}

/// One epoch of one candidate's training.
#[derive(Debug, Clone)]
pub struct Epoch<'a> {
    pub algorithm: &'a str,
    pub epoch: i32,
    pub epochs: i32,
    pub train_loss: f64,
    pub val_loss: Option<f64>,
    pub seconds: f64,
}

/// Every epoch of the job's training, in one statement (a redelivered job's
/// epochs already stored are kept).
pub async fn insert_epochs(
    db: impl PgExecutor<'_>,
    job_id: JobId,
    epochs: &[Epoch<'_>],
) -> Result<(), sqlx::Error> {
    if epochs.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "insert into ml_training_epochs (job_id, algorithm, epoch, epochs, train_loss, val_loss, seconds)
         select $1, u.algorithm, u.epoch, u.epochs, u.train_loss, u.val_loss, u.seconds
         from unnest($2::text[], $3::int[], $4::int[], $5::float8[], $6::float8[], $7::float8[])
              as u(algorithm, epoch, epochs, train_loss, val_loss, seconds)
         on conflict do nothing",
    )
    .bind(job_id)
    .bind(epochs.iter().map(|e| e.algorithm).collect::<Vec<_>>())
    .bind(epochs.iter().map(|e| e.epoch).collect::<Vec<_>>())
    .bind(epochs.iter().map(|e| e.epochs).collect::<Vec<_>>())
    .bind(epochs.iter().map(|e| e.train_loss).collect::<Vec<_>>())
    .bind(epochs.iter().map(|e| e.val_loss).collect::<Vec<_>>())
    .bind(epochs.iter().map(|e| e.seconds).collect::<Vec<_>>())
    .execute(db)
    .await
    .map(|_| ())
}

/// Why a model was evaluated for a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvaluationRole {
    /// One of the algorithms trained by this job.
    Candidate,
    /// The active model, re-scored on this job's holdout.
    Incumbent,
}

impl EvaluationRole {
    pub fn as_str(self) -> &'static str {
        match self {
            EvaluationRole::Candidate => "candidate",
            EvaluationRole::Incumbent => "incumbent",
        }
    }
}

/// One row of `ml_evaluations`.
#[derive(Debug, Clone)]
pub struct Evaluation<'a> {
    pub job_id: JobId,
    pub org: OrgId,
    pub model_type: ModelType,
    pub algorithm: &'a str,
    pub role: EvaluationRole,
    pub model_id: Option<Uuid>,
    pub is_champion: bool,
    pub metrics: StoredMetrics,
}

pub async fn insert_evaluation(
    db: impl PgExecutor<'_>,
    e: &Evaluation<'_>,
) -> Result<(), sqlx::Error> {
    let m = &e.metrics;
    sqlx::query(
        "insert into ml_evaluations
             (job_id, organization_id, model_type, algorithm, role, model_id, is_champion,
              accuracy, mae, rmse, r2_score, mape, mase, precision_score, recall, f1)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    .bind(e.job_id)
    .bind(e.org)
    .bind(e.model_type)
    .bind(e.algorithm)
    .bind(e.role.as_str())
    .bind(e.model_id)
    .bind(e.is_champion)
    .bind(m.accuracy)
    .bind(m.mae)
    .bind(m.rmse)
    .bind(m.r2)
    .bind(m.mape)
    .bind(m.mase)
    .bind(m.precision)
    .bind(m.recall)
    .bind(m.f1)
    .execute(db)
    .await
    .map(|_| ())
}

/// One forecast day with its 80 % and 95 % intervals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PredictedDay {
    pub date: NaiveDate,
    pub value: f64,
    pub lower_80: Option<f64>,
    pub upper_80: Option<f64>,
    pub lower_95: Option<f64>,
    pub upper_95: Option<f64>,
}

/// Whose predictions they are: the organization, the model type and the
/// model that made them, for the job that wrote them.
#[derive(Debug, Clone, Copy)]
pub struct PredictionSource {
    pub org: OrgId,
    pub model_type: ModelType,
    pub model_id: Uuid,
    pub job_id: JobId,
}

/// A forecast, in one statement.
pub async fn insert_forecast(
    db: impl PgExecutor<'_>,
    by: PredictionSource,
    days: &[PredictedDay],
) -> Result<(), sqlx::Error> {
    if days.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "insert into ml_predictions
             (organization_id, model_type, model_id, job_id, prediction_date, predicted_value,
              lower_80, upper_80, lower_95, upper_95)
         select $1, $2, $3, $4, u.d, u.v, u.l80, u.u80, u.l95, u.u95
         from unnest($5::date[], $6::float8[], $7::float8[], $8::float8[], $9::float8[],
                     $10::float8[]) as u(d, v, l80, u80, l95, u95)",
    )
    .bind(by.org)
    .bind(by.model_type)
    .bind(by.model_id)
    .bind(by.job_id)
    .bind(days.iter().map(|p| p.date).collect::<Vec<_>>())
    .bind(days.iter().map(|p| p.value).collect::<Vec<_>>())
    .bind(days.iter().map(|p| p.lower_80).collect::<Vec<_>>())
    .bind(days.iter().map(|p| p.upper_80).collect::<Vec<_>>())
    .bind(days.iter().map(|p| p.lower_95).collect::<Vec<_>>())
    .bind(days.iter().map(|p| p.upper_95).collect::<Vec<_>>())
    .execute(db)
    .await
    .map(|_| ())
}

/// One scored day of anomaly detection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Flag<'a> {
    /// The `metrics_data` row scored, when it was one row.
    pub row_id: Option<i64>,
    pub date: NaiveDate,
    pub score: f64,
    pub threshold: f64,
    pub is_anomaly: bool,
    /// What kind of anomaly, for flagged days (`spike`, `dip`, …).
    pub kind: Option<&'a str>,
}

/// Anomaly flags, in one statement.
pub async fn insert_flags(
    db: impl PgExecutor<'_>,
    by: PredictionSource,
    flags: &[Flag<'_>],
) -> Result<(), sqlx::Error> {
    if flags.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "insert into ml_anomaly_flags
             (organization_id, model_id, job_id, metrics_data_id, date, score, threshold,
              is_anomaly, kind)
         select $1, $2, $3, u.row_id, u.d, u.score, u.threshold, u.flag, u.kind
         from unnest($4::int8[], $5::date[], $6::float8[], $7::float8[], $8::bool[],
                     $9::text[])
              as u(row_id, d, score, threshold, flag, kind)",
    )
    .bind(by.org)
    .bind(by.model_id)
    .bind(by.job_id)
    .bind(flags.iter().map(|f| f.row_id).collect::<Vec<_>>())
    .bind(flags.iter().map(|f| f.date).collect::<Vec<_>>())
    .bind(flags.iter().map(|f| f.score).collect::<Vec<_>>())
    .bind(flags.iter().map(|f| f.threshold).collect::<Vec<_>>())
    .bind(flags.iter().map(|f| f.is_anomaly).collect::<Vec<_>>())
    .bind(flags.iter().map(|f| f.kind).collect::<Vec<_>>())
    .execute(db)
    .await
    .map(|_| ())
}
