//! The model registry: `ml_models` (one row per trained model version, at
//! most one `active` per organization and model type) and
//! `ml_model_storage` (its artifact). Promotion itself is decided elsewhere;
//! these statements only read the active model and write what was decided.

use chrono::NaiveDate;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::domain::{Algorithm, CycleId, JobId, ModelStatus, ModelType, OrgId};

/// The active model of an organization and model type, with its artifact.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ActiveModel {
    #[sqlx(rename = "id")]
    pub model_id: Uuid,
    pub version: i32,
    pub algorithm: Algorithm,
    pub artifact: Vec<u8>,
}

/// The active model of (org, model type) and its artifact, if there is one.
pub async fn active_model(
    db: impl PgExecutor<'_>,
    org: OrgId,
    model_type: ModelType,
) -> Result<Option<ActiveModel>, sqlx::Error> {
    sqlx::query_as(
        "select m.id, m.version, m.algorithm, s.artifact
         from ml_models m join ml_model_storage s on s.model_id = m.id
         where m.organization_id = $1 and m.model_type = $2 and m.status = 'active'",
    )
    .bind(org)
    .bind(model_type)
    .fetch_optional(db)
    .await
}

/// Which model version is active, without its artifact.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ActiveVersion {
    pub id: Uuid,
    pub version: i32,
    pub algorithm: Algorithm,
}

/// The active model of (org, model type), if there is one.
pub async fn active_version(
    db: impl PgExecutor<'_>,
    org: OrgId,
    model_type: ModelType,
) -> Result<Option<ActiveVersion>, sqlx::Error> {
    sqlx::query_as(
        "select id, version, algorithm from ml_models
         where organization_id = $1 and model_type = $2 and status = 'active'",
    )
    .bind(org)
    .bind(model_type)
    .fetch_optional(db)
    .await
}

/// A model's stored artifact (`None`: it has none).
pub async fn artifact(
    db: impl PgExecutor<'_>,
    model_id: Uuid,
) -> Result<Option<Vec<u8>>, sqlx::Error> {
    sqlx::query_scalar("select artifact from ml_model_storage where model_id = $1")
        .bind(model_id)
        .fetch_optional(db)
        .await
}

/// Serializes the writers of one (org, model type) until the caller's
/// transaction ends: versions and the active model are per pair.
pub async fn lock_pair(
    db: impl PgExecutor<'_>,
    org: OrgId,
    model_type: ModelType,
) -> Result<(), sqlx::Error> {
    sqlx::query("select pg_advisory_xact_lock(hashtext($1))")
        .bind(format!("trainyard:version:{org}:{model_type}"))
        .execute(db)
        .await
        .map(|_| ())
}

/// The version number the next model of (org, model type) gets.
pub async fn next_version(
    db: impl PgExecutor<'_>,
    org: OrgId,
    model_type: ModelType,
) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar(
        "select coalesce(max(version), 0) + 1 from ml_models
         where organization_id = $1 and model_type = $2",
    )
    .bind(org)
    .bind(model_type)
    .fetch_one(db)
    .await
}

/// Archives the active model of (org, model type), before a new one is
/// inserted as active.
pub async fn archive_active(
    db: impl PgExecutor<'_>,
    org: OrgId,
    model_type: ModelType,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update ml_models set status = 'archived'
         where organization_id = $1 and model_type = $2 and status = 'active'",
    )
    .bind(org)
    .bind(model_type)
    .execute(db)
    .await
    .map(|_| ())
}

/// A model's holdout metrics as stored (`ml_models`, `ml_evaluations`,
/// `ml_training_logs`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoredMetrics {
    pub accuracy: f64,
    pub mae: f64,
    pub rmse: f64,
    pub r2: f64,
    pub mape: Option<f64>,
    pub mase: Option<f64>,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub f1: Option<f64>,
}

/// A new model version.
#[derive(Debug, Clone)]
pub struct NewModel<'a> {
    pub id: Uuid,
    pub org: OrgId,
    pub model_type: ModelType,
    /// The champion's algorithm, as training names it.
    pub algorithm: &'a str,
    pub version: i32,
    pub status: ModelStatus,
    pub metrics: StoredMetrics,
    pub training_samples: i32,
    pub data_start: NaiveDate,
    pub data_end: NaiveDate,
    pub cycle_id: CycleId,
    pub job_id: JobId,
    pub promotion_reason: &'a str,
}

pub async fn insert_model(db: impl PgExecutor<'_>, m: &NewModel<'_>) -> Result<(), sqlx::Error> {
    let s = &m.metrics;
    sqlx::query(
        "insert into ml_models
             (id, organization_id, model_type, algorithm, version, status, accuracy, mae, rmse,
              r2_score, mape, mase, training_samples, data_start, data_end, cycle_id, job_id,
              promotion_reason)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
    )
    .bind(m.id)
    .bind(m.org)
    .bind(m.model_type)
    .bind(m.algorithm)
    .bind(m.version)
    .bind(m.status)
    .bind(s.accuracy)
    .bind(s.mae)
    .bind(s.rmse)
    .bind(s.r2)
    .bind(s.mape)
    .bind(s.mase)
    .bind(m.training_samples)
    .bind(m.data_start)
    .bind(m.data_end)
    .bind(m.cycle_id)
    .bind(m.job_id)
    .bind(m.promotion_reason)
    .execute(db)
    .await
    .map(|_| ())
}

/// Stores a model's artifact; `format` names its layout and version.
pub async fn insert_artifact(
    db: impl PgExecutor<'_>,
    model_id: Uuid,
    format: &str,
    artifact: &[u8],
    sha256: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into ml_model_storage (model_id, format, artifact, sha256, size_bytes)
         values ($1, $2, $3, $4, $5)",
    )
    .bind(model_id)
    .bind(format)
    .bind(artifact)
    .bind(sha256)
    .bind(artifact.len() as i32)
    .execute(db)
    .await
    .map(|_| ())
}
