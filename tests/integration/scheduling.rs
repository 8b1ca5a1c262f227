//! Cycle creation: concurrent schedulers, catch-up, and a deep cycle that
//! must not deepen the Redis queue past its window.

use std::time::Duration;

use chrono::Utc;
use trainyard_scheduler::daemon;
use trainyard_scheduler::schedule::Schedule;
use trainyard_shared::cycles::CreateOutcome;
use trainyard_tests::{insert_org, TestEnv};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_schedulers_on_the_same_tick_create_one_cycle() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    for i in 0..4 {
        insert_org(&env.pool, &format!("org-{i}"), 200, i).await?;
    }
    let tick = Utc::now();
    let cycle = env.cycle_settings();
    let (a, b, c) = tokio::join!(
        daemon::create_monthly(&env.pool, &cycle, tick, "a"),
        daemon::create_monthly(&env.pool, &cycle, tick, "b"),
        daemon::create_monthly(&env.pool, &cycle, tick, "c"),
    );
    let outcomes = [a?, b?, c?];
    let created = outcomes
        .iter()
        .filter(|o| matches!(o, CreateOutcome::Created { .. }))
        .count();
    assert_eq!(created, 1, "{outcomes:?}");
    let cycles: i64 = sqlx::query_scalar("select count(*) from ml_training_cycles")
        .fetch_one(&env.pool)
        .await?;
    let jobs: i64 = sqlx::query_scalar("select count(*) from ml_training_jobs")
        .fetch_one(&env.pool)
        .await?;
    assert_eq!((cycles, jobs), (1, 12));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scheduler_started_after_a_missed_tick_catches_up_exactly_once() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    insert_org(&env.pool, "late", 200, 7).await?;
    // Ticks every minute at second 0: the latest one is always in the past minute.
    let schedule = Schedule::parse("0 * * * * *")?;
    for _ in 0..2 {
        let settings = env.scheduler_settings();
        let stop = tokio::time::sleep(Duration::from_millis(300));
        daemon::run(
            settings,
            schedule.clone(),
            chrono::Duration::minutes(5),
            stop,
        )
        .await?;
    }
    let keys: Vec<String> =
        sqlx::query_scalar("select cycle_key from ml_training_cycles where kind = 'monthly'")
            .fetch_all(&env.pool)
            .await?;
    // Two starts within the same minute: one catch-up. (Across a minute
    // boundary the second start legitimately finds a newer tick.)
    assert!(
        keys.len() == 1 || keys.len() == 2 && keys[0] != keys[1],
        "{keys:?}"
    );
    let per_key: i64 = sqlx::query_scalar(
        "select max(n) from (select count(*) n from ml_training_cycles group by cycle_key) t",
    )
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(per_key, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_organization_with_179_days_is_skipped_and_180_is_queued() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let short = insert_org(&env.pool, "short", 179, 1).await?;
    let enough = insert_org(&env.pool, "enough", 180, 2).await?;
    let cycle = trainyard_tests::enqueue(&env, None, None).await?;
    let rows: Vec<(uuid::Uuid, String, Option<String>)> = sqlx::query_as(
        "select organization_id, status, reason from ml_training_jobs where cycle_id = $1",
    )
    .bind(cycle)
    .fetch_all(&env.pool)
    .await?;
    assert_eq!(rows.len(), 6);
    for (org, status, reason) in rows {
        if org == short {
            assert_eq!(status, "skipped");
            assert!(reason.unwrap().contains("179 days"));
        } else {
            assert_eq!(org, enough);
            assert_eq!(status, "queued");
        }
    }
    let (skipped, failed): (i32, i32) = sqlx::query_as(
        "select skipped_models, failed_models from ml_training_cycles where id = $1",
    )
    .bind(cycle)
    .fetch_one(&env.pool)
    .await?;
    assert_eq!((skipped, failed), (3, 0));
    Ok(())
}

/// The scheduler judges by row counts (cheap); rows of repeated dates can
/// make an organization look long enough when it is not. Its worker then
/// records the job as skipped with the exact figures — not failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enough_rows_on_too_few_days_are_skipped_by_the_worker() -> anyhow::Result<()> {
    let mut env = TestEnv::new().await?;
    let org = insert_org(&env.pool, "doubled", 100, 3).await?;
    // Every day reported twice (two meters): 200 rows, 100 days.
    sqlx::query(
        "insert into metrics_data (organization_id, date, category, value, unit, co2e_kg, grid_factor)
         select organization_id, date, category, value, unit, co2e_kg, grid_factor
         from metrics_data where organization_id = $1",
    )
    .bind(org)
    .execute(&env.pool)
    .await?;
    let cycle = trainyard_tests::enqueue(&env, Some(org), None).await?;
    let queued: i64 = sqlx::query_scalar(
        "select count(*) from ml_training_jobs where cycle_id = $1 and status = 'queued'",
    )
    .bind(cycle)
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(queued, 3, "200 rows pass the scheduler's cheap check");
    env.spawn_worker(&[])?;
    assert_eq!(
        env.wait_for_cycle(cycle, Duration::from_secs(120)).await?,
        "completed"
    );
    let reasons: Vec<(String, Option<String>)> =
        sqlx::query_as("select status, reason from ml_training_jobs where cycle_id = $1")
            .bind(cycle)
            .fetch_all(&env.pool)
            .await?;
    for (status, reason) in &reasons {
        assert_eq!(status, "skipped", "{reason:?}");
        let reason = reason.clone().unwrap_or_default();
        assert!(reason.contains("100"), "{reason}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ad_hoc_request_for_an_unknown_organization_is_refused_and_leaves_nothing(
) -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let err = trainyard_tests::enqueue(&env, Some(uuid::Uuid::new_v4()), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    let cycles: i64 = sqlx::query_scalar("select count(*) from ml_training_cycles")
        .fetch_one(&env.pool)
        .await?;
    assert_eq!(cycles, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cycle_of_9000_jobs_keeps_redis_within_its_window() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    // 3,000 organizations × 3 model types, each with just enough data.
    sqlx::query(
        "with o as (insert into organizations (id, name)
                    select gen_random_uuid(), 'bulk-' || g from generate_series(1, 3000) g
                    returning id)
         insert into metrics_data (organization_id, date, category, value, unit, co2e_kg, grid_factor)
         select o.id, date '2026-01-01' + d, 'energy', 100, 'kWh', 30, 0.3
         from o, generate_series(0, 179) d",
    )
    .execute(&env.pool)
    .await?;
    let started = std::time::Instant::now();
    let cycle = trainyard_tests::enqueue(&env, None, None).await?;
    let took = started.elapsed();
    let total: i32 = sqlx::query_scalar("select total_jobs from ml_training_cycles where id = $1")
        .bind(cycle)
        .fetch_one(&env.pool)
        .await?;
    assert_eq!(total, 9000);
    let mut redis = env.redis().await?;
    let cfg = env.queue_config();
    let in_redis: i64 = redis::cmd("HLEN")
        .arg(cfg.job_data_hash())
        .query_async(&mut redis)
        .await?;
    assert_eq!(in_redis, 1000, "the window bounds what Redis holds");
    let pushed: i64 =
        sqlx::query_scalar("select count(*) from ml_training_jobs where pushed_at is not null")
            .fetch_one(&env.pool)
            .await?;
    assert_eq!(pushed, 1000);
    eprintln!("created and pushed a 9,000-job cycle in {took:?}");
    Ok(())
}
