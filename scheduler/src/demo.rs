//! `seed-demo`: loads the bundled real series (see `data/demo/README.md` for
//! origin and licences) as demo organizations. Re-running replaces their rows.

use std::collections::BTreeMap;

use anyhow::Context as _;
use chrono::NaiveDate;
use sqlx::PgPool;
use trainyard_shared::store::metrics_data::{self, NewRows};
use trainyard_shared::OrgId;
use uuid::Uuid;

/// The bundled dataset, compiled in so the binary works from any directory.
pub const DEMO_CSV: &str = include_str!("../../data/demo/metrics.csv");

/// A stable id per demo organization name, so re-seeding keeps ids.
pub fn demo_org_id(name: &str) -> Uuid {
    Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("trainyard-demo:{name}").as_bytes(),
    )
}

fn opt_f64(s: &str) -> anyhow::Result<Option<f64>> {
    let s = s.trim();
    if s.is_empty() {
        Ok(None)
    } else {
        Ok(Some(
            s.parse()
                .with_context(|| format!("`{s}` is not a number"))?,
        ))
    }
}

/// Loads a CSV with columns `organization,date,category,value,unit,co2e_kg,grid_factor`.
/// Returns (organizations, rows).
pub async fn seed(pool: &PgPool, csv_text: &str) -> anyhow::Result<(usize, usize)> {
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let headers = reader.headers()?.clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("the CSV has no `{name}` column"))
    };
    let (c_org, c_date, c_cat, c_val, c_unit, c_co2, c_grid) = (
        col("organization")?,
        col("date")?,
        col("category")?,
        col("value")?,
        col("unit")?,
        col("co2e_kg")?,
        col("grid_factor")?,
    );
    let mut orgs: BTreeMap<String, NewRows> = BTreeMap::new();
    for (i, rec) in reader.records().enumerate() {
        let rec = rec.with_context(|| format!("reading CSV row {}", i + 2))?;
        let line = i + 2;
        let o = orgs.entry(rec[c_org].to_string()).or_default();
        o.date.push(
            NaiveDate::parse_from_str(&rec[c_date], "%Y-%m-%d")
                .with_context(|| format!("row {line}: bad date `{}`", &rec[c_date]))?,
        );
        o.category.push(rec[c_cat].to_string());
        o.value
            .push(opt_f64(&rec[c_val]).with_context(|| format!("row {line}: value"))?);
        o.unit
            .push(Some(rec[c_unit].to_string()).filter(|u| !u.is_empty()));
        o.co2e_kg
            .push(opt_f64(&rec[c_co2]).with_context(|| format!("row {line}: co2e_kg"))?);
        o.grid_factor
            .push(opt_f64(&rec[c_grid]).with_context(|| format!("row {line}: grid_factor"))?);
    }
    let mut tx = pool.begin().await?;
    let mut total = 0;
    for (name, rows) in &orgs {
        let id = OrgId(demo_org_id(name));
        metrics_data::upsert_organization(&mut *tx, id, name).await?;
        metrics_data::replace_rows(&mut tx, id, rows).await?;
        total += rows.date.len();
    }
    tx.commit().await?;
    Ok((orgs.len(), total))
}
