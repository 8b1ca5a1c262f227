//! What a job reads before training: its organization's rows, as training
//! rows, and the active model it will be compared with. The SQL is in the
//! store ([`trainyard_shared::store::metrics_data`],
//! [`trainyard_shared::store::registry`]).

use sqlx::PgExecutor;
pub use trainyard_shared::store::metrics_data::LoadError;
use trainyard_shared::store::metrics_data::{self, MetricsRow};
pub use trainyard_shared::store::registry::active_model;
use trainyard_shared::{ModelType, OrgId};

use crate::training::data::fingerprint_of;
use crate::training::RawRow;

/// The rows a model type trains on, oldest first. NULL measurements arrive
/// as NaN so data preparation rejects and counts them; category and unit
/// only feed the row's fingerprint.
pub async fn load_rows(
    db: impl PgExecutor<'_>,
    org: OrgId,
    model_type: ModelType,
) -> Result<Vec<RawRow>, LoadError> {
    let rows = metrics_data::load_rows(db, org, model_type).await?;
    Ok(rows.into_iter().map(training_row).collect())
}

fn training_row(r: MetricsRow) -> RawRow {
    RawRow {
        id: Some(r.id),
        date: r.date,
        value: r.value.unwrap_or(f64::NAN),
        co2e_kg: r.co2e_kg.unwrap_or(f64::NAN),
        grid_factor: r.grid_factor.unwrap_or(f64::NAN),
        fingerprint: fingerprint_of([r.category.as_deref(), r.unit.as_deref()]),
    }
}
