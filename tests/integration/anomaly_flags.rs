//! Anomaly detection through a real worker: the flags of an organization
//! whose data has injected problems carry their reasons.

use std::time::Duration;

use chrono::NaiveDate;
use trainyard_shared::ModelType;
use trainyard_tests::{enqueue, insert_org, TestEnv};

const LIMIT: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cycle_writes_flags_with_reasons_for_injected_problems() -> anyhow::Result<()> {
    let mut env = TestEnv::new().await?;
    let org = insert_org(&env.pool, "broken-meter", 240, 11).await?;
    // The generated series ends on 2026-10-31.
    let day = |d: u32| NaiveDate::from_ymd_opt(2026, 8, d).expect("valid date");
    let update = |sql: &'static str, date: NaiveDate| {
        sqlx::query(sql).bind(org).bind(date).execute(&env.pool)
    };
    // A negative reading, a CO2e column that no longer follows value × factor,
    // and a meter stuck for four days on the reading of August 19.
    update(
        "update metrics_data set value = -5 where organization_id = $1 and date = $2",
        day(2),
    )
    .await?;
    update(
        "update metrics_data set co2e_kg = co2e_kg * 1.3 where organization_id = $1 and date = $2",
        day(10),
    )
    .await?;
    sqlx::query(
        "update metrics_data m set value = s.value, co2e_kg = s.co2e_kg
         from metrics_data s
         where m.organization_id = $1 and s.organization_id = $1
           and s.date = $2 and m.date between $3 and $4",
    )
    .bind(org)
    .bind(day(19))
    .bind(day(20))
    .bind(day(23))
    .execute(&env.pool)
    .await?;

    env.spawn_worker(&[])?;
    let cycle = enqueue(&env, Some(org), Some(ModelType::AnomalyDetection)).await?;
    assert_eq!(env.wait_for_cycle(cycle, LIMIT).await?, "completed");

    let flags: Vec<(NaiveDate, Option<String>, bool)> = sqlx::query_as(
        "select date, kind, is_anomaly from ml_anomaly_flags
         where organization_id = $1 and kind is not null order by date",
    )
    .bind(org)
    .fetch_all(&env.pool)
    .await?;
    let kind_on = |d: NaiveDate| -> Vec<&str> {
        flags
            .iter()
            .filter(|f| f.0 == d)
            .filter_map(|f| f.1.as_deref())
            .collect()
    };
    assert_eq!(kind_on(day(2)), ["negative"], "{flags:?}");
    assert_eq!(kind_on(day(10)), ["ratio_break"], "{flags:?}");
    for d in 20..=23 {
        assert_eq!(kind_on(day(d)), ["stuck"], "{flags:?}");
    }
    assert!(flags.iter().all(|f| f.2), "a row with a reason is flagged");

    // The seed's reading of the table still works, and unflagged rows have
    // no reason.
    let unflagged_with_kind: i64 = sqlx::query_scalar(
        "select count(*) from ml_anomaly_flags
         where organization_id = $1 and not is_anomaly and kind is not null",
    )
    .bind(org)
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(unflagged_with_kind, 0);
    let seed_query: Vec<(NaiveDate, f64, f64)> = sqlx::query_as(
        "select date, score, threshold from ml_anomaly_flags
         where organization_id = $1 and is_anomaly order by date",
    )
    .bind(org)
    .fetch_all(&env.pool)
    .await?;
    assert!(seed_query.len() >= 6);
    Ok(())
}
