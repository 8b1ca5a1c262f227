//! Full cycles through real worker processes: exact roll-up, idempotent
//! redelivery, promotion across cycles, and the dashboard queries.

use std::time::Duration;

use trainyard_shared::queue::{push_jobs, TrainJob};
use trainyard_shared::{CycleId, JobId, ModelType, OrgId};
use trainyard_tests::{enqueue, insert_org, TestEnv};
use uuid::Uuid;

const LIMIT: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_cycle_with_two_workers_rolls_up_once_with_exact_counts() -> anyhow::Result<()> {
    let mut env = TestEnv::new().await?;
    for i in 0..3 {
        insert_org(&env.pool, &format!("org-{i}"), 240, i).await?;
    }
    insert_org(&env.pool, "too-short", 179, 9).await?;
    env.spawn_worker(&[])?;
    env.spawn_worker(&[])?;
    let cycle = enqueue(&env, None, None).await?;
    let status = env.wait_for_cycle(cycle, LIMIT).await?;
    assert_eq!(status, "completed");

    let (total, ok, failed, skipped, minutes): (i32, i32, i32, i32, Option<f64>) = sqlx::query_as(
        "select total_jobs, successful_models, failed_models, skipped_models, total_time_minutes
         from ml_training_cycles where id = $1",
    )
    .bind(cycle)
    .fetch_one(&env.pool)
    .await?;
    assert_eq!((total, ok, failed, skipped), (12, 9, 0, 3));
    assert!(minutes.unwrap() > 0.0);

    let models: i64 = sqlx::query_scalar("select count(*) from ml_models")
        .fetch_one(&env.pool)
        .await?;
    assert_eq!(models, 9, "one model per succeeded job");
    let active: i64 = sqlx::query_scalar("select count(*) from ml_models where status = 'active'")
        .fetch_one(&env.pool)
        .await?;
    assert_eq!(active, 9, "first models are promoted");

    // Every job logged its epochs, evaluated several candidates and wrote its output.
    let per_job: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
        "select j.model_type,
                (select count(*) from ml_training_epochs e where e.job_id = j.id),
                (select count(*) from ml_evaluations v where v.job_id = j.id and v.role = 'candidate'),
                (select count(*) from ml_predictions p where p.job_id = j.id),
                (select count(*) from ml_anomaly_flags a where a.job_id = j.id)
         from ml_training_jobs j where j.status = 'succeeded'",
    )
    .fetch_all(&env.pool)
    .await?;
    assert_eq!(per_job.len(), 9);
    for (model_type, epochs, candidates, predictions, flags) in per_job {
        assert!(epochs > 0, "{model_type}: no epoch logs");
        // An autoencoder that did not converge is skipped by design (the PCA
        // candidate then wins), so an anomaly job may keep one candidate.
        let least = if model_type == "anomaly_detection" {
            1
        } else {
            2
        };
        assert!(candidates >= least, "{model_type}: {candidates} candidates");
        if model_type == "anomaly_detection" {
            assert_eq!(predictions, 0);
            assert!(flags >= 180, "{model_type}: {flags} anomaly rows");
        } else {
            assert_eq!(predictions, 30, "{model_type}: 30-day forecast");
        }
    }

    // Every forecast day carries its nested 80 % and 95 % intervals. (The
    // conformal band need not contain the point forecast: a model that was
    // biased on its calibration windows gets a band shifted the other way.)
    let (rows, banded): (i64, i64) = sqlx::query_as(
        "select count(*),
                count(*) filter (where 0 <= lower_95 and lower_95 <= lower_80
                                   and lower_80 <= upper_80 and upper_80 <= upper_95)
         from ml_predictions",
    )
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(
        (rows, banded),
        (180, 180),
        "6 forecasts × 30 days, all with intervals"
    );

    // The dashboards' queries, unchanged.
    let active_models: Vec<(String, i32, f64, chrono::DateTime<chrono::Utc>, String)> =
        sqlx::query_as(
            "SELECT model_type, version, accuracy, training_date, status
             FROM ml_models WHERE status = 'active' ORDER BY training_date DESC;",
        )
        .fetch_all(&env.pool)
        .await?;
    assert_eq!(active_models.len(), 9);
    assert!(active_models
        .iter()
        .all(|m| m.1 == 1 && (0.0..=100.0).contains(&m.2)));
    let logs: Vec<(
        Uuid,
        String,
        f64,
        f64,
        f64,
        f64,
        i32,
        chrono::DateTime<chrono::Utc>,
    )> = sqlx::query_as(
        "SELECT model_id, model_type, accuracy, mae, rmse, r2_score, training_samples, created_at
             FROM ml_training_logs ORDER BY created_at DESC LIMIT 10;",
    )
    .fetch_all(&env.pool)
    .await?;
    assert_eq!(logs.len(), 9);
    assert!(logs.iter().all(|l| l.6 > 0 && l.3.is_finite()));
    let cycles: Vec<(chrono::DateTime<chrono::Utc>, i32, i32, Option<f64>, String)> =
        sqlx::query_as(
            "SELECT cycle_date, successful_models, failed_models, total_time_minutes, status
             FROM ml_training_cycles ORDER BY cycle_date DESC;",
        )
        .fetch_all(&env.pool)
        .await?;
    assert_eq!(cycles.len(), 1);
    assert_eq!(
        (cycles[0].1, cycles[0].2, cycles[0].4.as_str()),
        (9, 0, "completed")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_job_delivered_twice_produces_one_model_version() -> anyhow::Result<()> {
    let mut env = TestEnv::new().await?;
    let org = insert_org(&env.pool, "dup", 220, 3).await?;
    let cycle = enqueue(&env, Some(org), Some(ModelType::EmissionsForecast)).await?;
    let job: Uuid = sqlx::query_scalar("select id from ml_training_jobs where cycle_id = $1")
        .bind(cycle)
        .fetch_one(&env.pool)
        .await?;
    // A second and third delivery of the same job under other task ids.
    let payload = TrainJob {
        job_id: JobId(job),
        cycle_id: CycleId(cycle),
        org_id: OrgId(org),
        model_type: ModelType::EmissionsForecast,
    };
    let mut redis = env.redis().await?;
    push_jobs(
        &mut redis,
        &env.queue_config(),
        &[(payload.clone(), 41), (payload, 42)],
    )
    .await?;
    env.spawn_worker(&[])?;
    env.spawn_worker(&[])?;
    assert_eq!(env.wait_for_cycle(cycle, LIMIT).await?, "completed");
    // Let the duplicates be consumed too.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (models, logs, predictions): (i64, i64, i64) = sqlx::query_as(
        "select (select count(*) from ml_models where organization_id = $1),
                (select count(*) from ml_training_logs where organization_id = $1),
                (select count(*) from ml_predictions where organization_id = $1)",
    )
    .bind(org)
    .fetch_one(&env.pool)
    .await?;
    assert_eq!((models, logs, predictions), (1, 1, 30));
    let attempts: i32 = sqlx::query_scalar("select attempts from ml_training_jobs where id = $1")
        .bind(job)
        .fetch_one(&env.pool)
        .await?;
    assert_eq!(attempts, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn promotion_compares_on_the_same_holdout_archives_the_old_model_and_skips_a_corrupt_one(
) -> anyhow::Result<()> {
    let mut env = TestEnv::new().await?;
    let org = insert_org(&env.pool, "promo", 230, 5).await?;
    let other = insert_org(&env.pool, "bystander", 230, 6).await?;
    env.spawn_worker(&[])?;
    let model = Some(ModelType::EnergyForecast);

    let first = enqueue(&env, Some(org), model).await?;
    assert_eq!(env.wait_for_cycle(first, LIMIT).await?, "completed");
    let second = enqueue(&env, Some(org), model).await?;
    assert_eq!(env.wait_for_cycle(second, LIMIT).await?, "completed");

    // Cycle 2 re-scored the active model on its own holdout and applied the margin.
    let (v2_status, v2_acc, reason): (String, f64, String) = sqlx::query_as(
        "select status, accuracy, promotion_reason from ml_models
         where organization_id = $1 and version = 2",
    )
    .bind(org)
    .fetch_one(&env.pool)
    .await?;
    let incumbent: f64 = sqlx::query_scalar(
        "select v.accuracy from ml_evaluations v join ml_training_jobs j on j.id = v.job_id
         where j.cycle_id = $1 and v.role = 'incumbent'",
    )
    .bind(second)
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(v2_status == "active", v2_acc > incumbent + 2.0, "{reason}");
    // Whichever won, cycle 2's forecast comes from the model that is active now.
    let active: Uuid = sqlx::query_scalar(
        "select id from ml_models where organization_id = $1 and status = 'active'",
    )
    .bind(org)
    .fetch_one(&env.pool)
    .await?;
    let forecasters: Vec<Uuid> = sqlx::query_scalar(
        "select distinct p.model_id from ml_predictions p
         join ml_training_jobs j on j.id = p.job_id where j.cycle_id = $1",
    )
    .bind(second)
    .fetch_all(&env.pool)
    .await?;
    assert_eq!(forecasters, vec![active]);

    // Corrupt the active artifact: the next cycle must not use it, and says why.
    sqlx::query(
        "update ml_model_storage s set artifact = overlay(artifact placing '\\x00ff'::bytea from 40)
         from ml_models m where m.id = s.model_id and m.organization_id = $1 and m.status = 'active'",
    )
    .bind(org)
    .execute(&env.pool)
    .await?;
    let third = enqueue(&env, Some(org), model).await?;
    assert_eq!(env.wait_for_cycle(third, LIMIT).await?, "completed");
    let rows: Vec<(i32, String, Option<String>)> = sqlx::query_as(
        "select version, status, promotion_reason from ml_models
         where organization_id = $1 order by version",
    )
    .bind(org)
    .fetch_all(&env.pool)
    .await?;
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[2].1, "active");
    let why = rows[2].2.clone().unwrap_or_default();
    assert!(why.contains("unusable"), "{why}");
    assert_eq!(rows.iter().filter(|r| r.1 == "active").count(), 1);
    assert!(rows[..2].iter().any(|r| r.1 == "archived"));
    // The bystander organization was never touched.
    let touched: i64 =
        sqlx::query_scalar("select count(*) from ml_models where organization_id = $1")
            .bind(other)
            .fetch_one(&env.pool)
            .await?;
    assert_eq!(touched, 0);
    Ok(())
}
