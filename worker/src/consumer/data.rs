//! Reading one organization's rows for one model type. A job for org A reads
//! only org A's rows: every query is filtered by the job's organization id.

use chrono::NaiveDate;
use sqlx::postgres::PgRow;
use sqlx::{PgExecutor, Row};
use trainyard_shared::{ModelType, OrgId};

use crate::training::data::fingerprint_of;
use crate::training::RawRow;

/// Why an organization's rows could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// PostgreSQL failed or could not be reached: retry, the data may be
    /// fine.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A stored value the worker cannot represent: final, the same rows fail
    /// the same way. Shown as the job's reason.
    #[error("unreadable {column} '{value}' in metrics_data (row id {row_id})")]
    Unreadable {
        column: &'static str,
        value: String,
        row_id: i64,
    },
}

/// The rows a model type trains on, oldest first. NULL measurements arrive
/// as NaN so data preparation rejects and counts them.
///
/// Every column is decoded with `try_get`, and the date only when it is
/// finite and within what `chrono` represents: PostgreSQL also stores
/// `infinity`, `-infinity` and years up to 5874897, which would panic in the
/// driver's decoder. Those come back as text and become
/// [`LoadError::Unreadable`]. Category and unit only feed the row's
/// fingerprint, so they are read as bytes and no text encoding can fail.
#[tracing::instrument(skip(db), fields(org.id = %org, model.type = %model_type))]
pub async fn load_rows(
    db: impl PgExecutor<'_>,
    org: OrgId,
    model_type: ModelType,
) -> Result<Vec<RawRow>, LoadError> {
    let energy_only = model_type.reads().energy_only();
    let rows = sqlx::query(
        "select id,
                case when representable then date end,
                case when representable then null else date::text end,
                value, co2e_kg, grid_factor,
                convert_to(category, 'UTF8'), convert_to(unit, 'UTF8')
         from (select *, isfinite(date) and date < date '200000-01-01' as representable
               from metrics_data
               where organization_id = $1 and (not $2 or category = 'energy')) m
         order by date, id",
    )
    .bind(org)
    .bind(energy_only)
    .fetch_all(db)
    .await?;
    rows.iter().map(decode_row).collect()
}

fn decode_row(r: &PgRow) -> Result<RawRow, LoadError> {
    let row_id: i64 = field(r, 0, "id", 0)?;
    let date = match field::<Option<NaiveDate>>(r, 1, "date", row_id)? {
        Some(d) => d,
        None => {
            let shown: Option<String> = field(r, 2, "date", row_id)?;
            return Err(LoadError::Unreadable {
                column: "date",
                value: shown.unwrap_or_default(),
                row_id,
            });
        }
    };
    let number = |i: usize, column: &'static str| {
        field::<Option<f64>>(r, i, column, row_id).map(|x| x.unwrap_or(f64::NAN))
    };
    let category: Option<Vec<u8>> = field(r, 6, "category", row_id)?;
    let unit: Option<Vec<u8>> = field(r, 7, "unit", row_id)?;
    Ok(RawRow {
        id: Some(row_id),
        date,
        value: number(3, "value")?,
        co2e_kg: number(4, "co2e_kg")?,
        grid_factor: number(5, "grid_factor")?,
        fingerprint: fingerprint_of([category.as_deref(), unit.as_deref()]),
    })
}

/// A value that does not decode is a property of the stored data, not of
/// the connection: [`LoadError::Unreadable`], never retried.
fn field<'r, T>(r: &'r PgRow, i: usize, column: &'static str, row_id: i64) -> Result<T, LoadError>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    r.try_get(i).map_err(|e| LoadError::Unreadable {
        column,
        value: e.to_string(),
        row_id,
    })
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
