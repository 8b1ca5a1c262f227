//! `seed-demo`: loads the bundled real series (see `data/demo/README.md` for
//! origin and licences) as demo organizations. Re-running replaces their rows.

use std::collections::BTreeMap;

use anyhow::Context as _;
use chrono::NaiveDate;
use sqlx::PgPool;
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

#[derive(Debug, Default)]
struct OrgRows {
    date: Vec<NaiveDate>,
    category: Vec<String>,
    value: Vec<Option<f64>>,
    unit: Vec<Option<String>>,
    co2e: Vec<Option<f64>>,
    grid: Vec<Option<f64>>,
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
    let mut orgs: BTreeMap<String, OrgRows> = BTreeMap::new();
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
        o.co2e
            .push(opt_f64(&rec[c_co2]).with_context(|| format!("row {line}: co2e_kg"))?);
        o.grid
            .push(opt_f64(&rec[c_grid]).with_context(|| format!("row {line}: grid_factor"))?);
    }
    let mut tx = pool.begin().await?;
    let mut total = 0;
    for (name, rows) in &orgs {
        let id = demo_org_id(name);
        sqlx::query(
            "insert into organizations (id, name) values ($1, $2)
             on conflict (id) do update set name = excluded.name",
        )
        .bind(id)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        sqlx::query("delete from metrics_data where organization_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "insert into metrics_data (organization_id, date, category, value, unit, co2e_kg, grid_factor)
             select $1, u.d, u.c, u.v, u.unit, u.co2, u.g
             from unnest($2::date[], $3::text[], $4::float8[], $5::text[], $6::float8[], $7::float8[])
                  as u(d, c, v, unit, co2, g)",
        )
        .bind(id)
        .bind(&rows.date)
        .bind(&rows.category)
        .bind(&rows.value)
        .bind(&rows.unit)
        .bind(&rows.co2e)
        .bind(&rows.grid)
        .execute(&mut *tx)
        .await?;
        total += rows.date.len();
    }
    tx.commit().await?;
    Ok((orgs.len(), total))
}
