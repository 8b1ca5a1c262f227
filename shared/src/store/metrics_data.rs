//! Reading one organization's `metrics_data` rows for one model type. A job
//! for organization A reads only A's rows: the query is filtered by the
//! job's organization id.

use chrono::NaiveDate;
use sqlx::postgres::PgRow;
use sqlx::{PgExecutor, Row};

use crate::domain::{ModelType, OrgId};

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

/// One stored row as training reads it. NULL measurements are `None`;
/// category and unit are the raw bytes (they only tell rows of one day
/// apart, so no text encoding can fail on them).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsRow {
    pub id: i64,
    pub date: NaiveDate,
    pub value: Option<f64>,
    pub co2e_kg: Option<f64>,
    pub grid_factor: Option<f64>,
    pub category: Option<Vec<u8>>,
    pub unit: Option<Vec<u8>>,
}

/// The rows a model type trains on (`ModelType::reads`), oldest first.
///
/// Every column is decoded with `try_get`, and the date only when it is
/// finite and within what `chrono` represents: PostgreSQL also stores
/// `infinity`, `-infinity` and years up to 5874897, which would panic in the
/// driver's decoder. Those come back as text and become
/// [`LoadError::Unreadable`].
#[tracing::instrument(skip(db), fields(org.id = %org, model.type = %model_type))]
pub async fn load_rows(
    db: impl PgExecutor<'_>,
    org: OrgId,
    model_type: ModelType,
) -> Result<Vec<MetricsRow>, LoadError> {
    let energy_only = model_type.reads().energy_only();
    let rows = sqlx::query(
        "select id,
                case when representable then date end as date,
                case when representable then null else date::text end as date_text,
                value, co2e_kg, grid_factor,
                convert_to(category, 'UTF8') as category, convert_to(unit, 'UTF8') as unit
         from (select *, isfinite(date) and date < date '200000-01-01' as representable
               from metrics_data
               where organization_id = $1 and (not $2 or category = 'energy')) m
         order by m.date, id",
    )
    .bind(org)
    .bind(energy_only)
    .fetch_all(db)
    .await?;
    rows.iter().map(decode_row).collect()
}

fn decode_row(r: &PgRow) -> Result<MetricsRow, LoadError> {
    let id: i64 = field(r, "id", 0)?;
    let date = match field::<Option<NaiveDate>>(r, "date", id)? {
        Some(d) => d,
        None => {
            let shown: Option<String> = field(r, "date_text", id)?;
            return Err(LoadError::Unreadable {
                column: "date",
                value: shown.unwrap_or_default(),
                row_id: id,
            });
        }
    };
    Ok(MetricsRow {
        id,
        date,
        value: field(r, "value", id)?,
        co2e_kg: field(r, "co2e_kg", id)?,
        grid_factor: field(r, "grid_factor", id)?,
        category: field(r, "category", id)?,
        unit: field(r, "unit", id)?,
    })
}

/// A value that does not decode is a property of the stored data, not of
/// the connection: [`LoadError::Unreadable`], never retried.
fn field<'r, T>(r: &'r PgRow, column: &'static str, row_id: i64) -> Result<T, LoadError>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    r.try_get(column).map_err(|e| LoadError::Unreadable {
        column: if column == "date_text" {
            "date"
        } else {
            column
        },
        value: e.to_string(),
        row_id,
    })
}

/// An organization's rows to store, column by column (the demo seed).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewRows {
    pub date: Vec<NaiveDate>,
    pub category: Vec<String>,
    pub value: Vec<Option<f64>>,
    pub unit: Vec<Option<String>>,
    pub co2e_kg: Vec<Option<f64>>,
    pub grid_factor: Vec<Option<f64>>,
}

/// Creates the organization, or renames it if its id exists.
pub async fn upsert_organization(
    db: impl PgExecutor<'_>,
    org: OrgId,
    name: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into organizations (id, name) values ($1, $2)
         on conflict (id) do update set name = excluded.name",
    )
    .bind(org)
    .bind(name)
    .execute(db)
    .await
    .map(|_| ())
}

/// Replaces all of an organization's rows with `rows`; run it in a
/// transaction so readers never see the organization without data.
pub async fn replace_rows(
    conn: &mut sqlx::PgConnection,
    org: OrgId,
    rows: &NewRows,
) -> Result<(), sqlx::Error> {
    sqlx::query("delete from metrics_data where organization_id = $1")
        .bind(org)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "insert into metrics_data (organization_id, date, category, value, unit, co2e_kg, grid_factor)
         select $1, u.d, u.c, u.v, u.unit, u.co2, u.g
         from unnest($2::date[], $3::text[], $4::float8[], $5::text[], $6::float8[], $7::float8[])
              as u(d, c, v, unit, co2, g)",
    )
    .bind(org)
    .bind(&rows.date)
    .bind(&rows.category)
    .bind(&rows.value)
    .bind(&rows.unit)
    .bind(&rows.co2e_kg)
    .bind(&rows.grid_factor)
    .execute(&mut *conn)
    .await
    .map(|_| ())
}
