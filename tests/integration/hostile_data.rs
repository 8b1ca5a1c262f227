//! Hostile rows in `metrics_data`: values PostgreSQL stores but the worker
//! cannot represent, future-dated rows and double imports. Each ends as the
//! job's recorded reason or as counts in its data report, never as a dead
//! worker or a wrong model.

use std::time::Duration;

use trainyard_shared::ModelType;
use trainyard_tests::{enqueue, insert_org, insert_series, TestEnv};
use uuid::Uuid;

const LIMIT: Duration = Duration::from_secs(180);

async fn add_row(env: &TestEnv, org: Uuid, date: &str, value: f64) -> anyhow::Result<()> {
    sqlx::query(
        "insert into metrics_data (organization_id, date, category, value, unit, co2e_kg, grid_factor)
         values ($1, $2::date, 'energy', $3, 'kWh', $3 * 0.3, 0.3)",
    )
    .bind(org)
    .bind(date)
    .bind(value)
    .execute(&env.pool)
    .await?;
    Ok(())
}

async fn job_of(env: &TestEnv, cycle: Uuid, org: Uuid) -> anyhow::Result<(String, String, i32)> {
    let (status, reason, attempts): (String, Option<String>, i32) = sqlx::query_as(
        "select status, reason, attempts from ml_training_jobs
         where cycle_id = $1 and organization_id = $2",
    )
    .bind(cycle)
    .bind(org)
    .fetch_one(&env.pool)
    .await?;
    Ok((status, reason.unwrap_or_default(), attempts))
}

async fn data_report(env: &TestEnv, org: Uuid) -> anyhow::Result<serde_json::Value> {
    Ok(
        sqlx::query_scalar("select data_report from ml_training_logs where organization_id = $1")
            .bind(org)
            .fetch_one(&env.pool)
            .await?,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unrepresentable_date_fails_its_job_with_the_reason_and_the_worker_keeps_serving(
) -> anyhow::Result<()> {
    let mut env = TestEnv::new().await?;
    let healthy = insert_org(&env.pool, "healthy", 200, 61).await?;
    let infinite = insert_org(&env.pool, "infinite", 200, 62).await?;
    add_row(&env, infinite, "infinity", 10.0).await?;
    let minus_infinite = insert_org(&env.pool, "minus-infinite", 200, 63).await?;
    add_row(&env, minus_infinite, "-infinity", 10.0).await?;
    // Finite for PostgreSQL, beyond any date the worker can represent.
    let far = insert_org(&env.pool, "far", 200, 64).await?;
    add_row(&env, far, "300000-01-01", 10.0).await?;
    // Two jobs at once, each slowed so the healthy one is in flight while a
    // hostile one is read.
    env.spawn_worker(&[
        ("TRAINYARD_CONCURRENCY", "2"),
        ("TRAINYARD_FAULTS", "slow-ms=1500"),
    ])?;
    let cycle = enqueue(&env, None, Some(ModelType::EnergyForecast)).await?;
    assert_eq!(
        env.wait_for_cycle(cycle, LIMIT).await?,
        "completed_with_failures"
    );
    let (status, reason, _) = job_of(&env, cycle, healthy).await?;
    assert_eq!(status, "succeeded", "{reason}");
    for (org, shown) in [
        (infinite, "'infinity'"),
        (minus_infinite, "'-infinity'"),
        (far, "'300000-01-01'"),
    ] {
        let (status, reason, attempts) = job_of(&env, cycle, org).await?;
        assert_eq!(status, "failed", "{reason}");
        assert!(
            reason.contains(&format!("unreadable date {shown} in metrics_data")),
            "{reason}"
        );
        assert_eq!(attempts, 1, "bad data is final, never retried");
    }
    for w in env.workers().iter_mut() {
        assert!(w.try_wait()?.is_none(), "the worker exited");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_future_dated_row_and_a_double_import_are_counted_not_trained_on() -> anyhow::Result<()> {
    let mut env = TestEnv::new().await?;
    let future = insert_org(&env.pool, "future", 200, 71).await?;
    add_row(&env, future, "2100-01-01", 1000.0).await?;
    let doubled = insert_org(&env.pool, "doubled", 200, 72).await?;
    insert_series(&env.pool, doubled, 200, 72).await?;
    // A second meter: the same days, other readings; summed, not ignored.
    let two_meters = insert_org(&env.pool, "two-meters", 200, 73).await?;
    insert_series(&env.pool, two_meters, 200, 74).await?;
    env.spawn_worker(&[])?;
    let cycle = enqueue(&env, None, Some(ModelType::EnergyForecast)).await?;
    assert_eq!(env.wait_for_cycle(cycle, LIMIT).await?, "completed");

    let report = data_report(&env, future).await?;
    assert_eq!(report["rejected"]["future"], 1, "{report}");
    assert_eq!(report["days"], 200, "{report}");
    assert_eq!(report["dropped_days"], 0, "{report}");

    let report = data_report(&env, doubled).await?;
    assert_eq!(report["duplicate_rows"], 200, "{report}");
    assert_eq!(report["duplicate_dates"], 0, "{report}");
    let report = data_report(&env, two_meters).await?;
    assert_eq!(report["duplicate_rows"], 0, "{report}");
    assert_eq!(report["duplicate_dates"], 200, "{report}");

    // The double import forecasts what the single series would: the sum of
    // its forecast is about half the two-meter organization's.
    let total = |org: Uuid| {
        sqlx::query_scalar::<_, f64>(
            "select sum(predicted_value) from ml_predictions where organization_id = $1",
        )
        .bind(org)
        .fetch_one(&env.pool)
    };
    let (single, double) = (total(doubled).await?, total(two_meters).await?);
    assert!(
        single < 0.7 * double,
        "double import {single} vs two meters {double}"
    );
    Ok(())
}
