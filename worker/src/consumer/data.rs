//! Reading one organization's rows for one model type. A job for org A reads
//! only org A's rows: every query is filtered by the job's organization id.

use sqlx::{PgExecutor, Row};
use trainyard_shared::{ModelType, OrgId};

use crate::training::RawRow;

/// The rows a model type trains on, oldest first. NULL measurements arrive
/// as NaN so data preparation rejects and counts them.
#[tracing::instrument(skip(db), fields(org.id = %org, model.type = %model_type))]
pub async fn load_rows(
    db: impl PgExecutor<'_>,
    org: OrgId,
    model_type: ModelType,
) -> Result<Vec<RawRow>, sqlx::Error> {
    let energy_only = model_type == ModelType::EnergyForecast;
    let rows = sqlx::query(
        "select id, date, value, co2e_kg, grid_factor from metrics_data
         where organization_id = $1 and (not $2 or category = 'energy')
         order by date, id",
    )
    .bind(org)
    .bind(energy_only)
    .fetch_all(db)
    .await?;
    Ok(rows
        .iter()
        .map(|r| RawRow {
            id: Some(r.get::<i64, _>(0)),
            date: r.get(1),
            value: r.get::<Option<f64>, _>(2).unwrap_or(f64::NAN),
            co2e_kg: r.get::<Option<f64>, _>(3).unwrap_or(f64::NAN),
            grid_factor: r.get::<Option<f64>, _>(4).unwrap_or(f64::NAN),
            fingerprint: 0,
        })
        .collect())
}

/// Whether the organization still exists (it may be deleted mid-cycle).
pub async fn org_exists(db: impl PgExecutor<'_>, org: OrgId) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("select exists(select 1 from organizations where id = $1)")
        .bind(org)
        .fetch_one(db)
        .await
}

/// The active model of (org, model type), with its stored artifact.
#[derive(Debug, Clone)]
pub struct ActiveModel {
    pub model_id: uuid::Uuid,
    pub version: i32,
    pub algorithm: String,
    pub artifact: Vec<u8>,
}

pub async fn active_model(
    db: impl PgExecutor<'_>,
    org: OrgId,
    model_type: ModelType,
) -> Result<Option<ActiveModel>, sqlx::Error> {
    let row = sqlx::query(
        "select m.id, m.version, m.algorithm, s.artifact
         from ml_models m join ml_model_storage s on s.model_id = m.id
         where m.organization_id = $1 and m.model_type = $2 and m.status = 'active'",
    )
    .bind(org)
    .bind(model_type.as_str())
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| ActiveModel {
        model_id: r.get(0),
        version: r.get(1),
        algorithm: r.get(2),
        artifact: r.get(3),
    }))
}
