//! Faults: killed and stopped workers, Redis losing everything, poison jobs
//! and bad input. Every job must end in exactly one terminal state and the
//! cycle summary must be exact.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use trainyard_shared::ModelType;
use trainyard_tests::{
    enqueue, insert_org, signal, wait_for_running_job, OwnPostgres, OwnRedis, TestEnv,
};
use uuid::Uuid;

const LIMIT: Duration = Duration::from_secs(240);

async fn counts(env: &TestEnv, cycle: Uuid) -> anyhow::Result<(String, i32, i32, i32)> {
    Ok(sqlx::query_as(
        "select status, successful_models, failed_models, skipped_models
         from ml_training_cycles where id = $1",
    )
    .bind(cycle)
    .fetch_one(&env.pool)
    .await?)
}

async fn models_per_job(env: &TestEnv, cycle: Uuid) -> anyhow::Result<Vec<i64>> {
    Ok(sqlx::query_scalar(
        "select (select count(*) from ml_models m where m.job_id = j.id)
         from ml_training_jobs j where j.cycle_id = $1 and j.status = 'succeeded'",
    )
    .bind(cycle)
    .fetch_all(&env.pool)
    .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_training_does_not_lose_the_job() -> anyhow::Result<()> {
    let mut env = TestEnv::new().await?;
    let org = insert_org(&env.pool, "victim", 200, 11).await?;
    let slow = [("TRAINYARD_FAULTS", "slow-ms=4000")];
    let first = env.spawn_worker(&slow)?;
    let cycle = enqueue(&env, Some(org), Some(ModelType::EnergyForecast)).await?;
    let (job, _) = wait_for_running_job(&env, cycle, Duration::from_secs(30)).await?;
    signal(first, Signal::SIGKILL)?;
    let killed_at = Instant::now();
    env.spawn_worker(&[])?;
    assert_eq!(env.wait_for_cycle(cycle, LIMIT).await?, "completed");
    let recovered_in = killed_at.elapsed();
    assert_eq!(counts(&env, cycle).await?, ("completed".into(), 1, 0, 0));
    assert_eq!(models_per_job(&env, cycle).await?, vec![1]);
    let attempts: i32 = sqlx::query_scalar("select attempts from ml_training_jobs where id = $1")
        .bind(job)
        .fetch_one(&env.pool)
        .await?;
    assert_eq!(attempts, 2, "the killed attempt and the one that finished");
    assert!(
        recovered_in < Duration::from_secs(60),
        "took {recovered_in:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_during_training_hands_the_job_back_and_exits_cleanly() -> anyhow::Result<()> {
    let mut env = TestEnv::new().await?;
    let org = insert_org(&env.pool, "redeploy", 200, 12).await?;
    let first = env.spawn_worker(&[
        ("TRAINYARD_FAULTS", "slow-ms=30000"),
        ("TRAINYARD_GRACE_SECS", "2"),
    ])?;
    let cycle = enqueue(&env, Some(org), Some(ModelType::EmissionsForecast)).await?;
    wait_for_running_job(&env, cycle, Duration::from_secs(30)).await?;
    signal(first, Signal::SIGTERM)?;
    let stopped_at = Instant::now();
    // The process exits 0 within its grace period (2 s) plus a margin.
    let child = env
        .workers()
        .iter_mut()
        .find(|c| c.id() == first)
        .expect("the first worker is ours");
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        assert!(
            stopped_at.elapsed() < Duration::from_secs(15),
            "worker did not exit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status:?}");
    let (state, attempts): (String, i32) =
        sqlx::query_as("select status, attempts from ml_training_jobs where cycle_id = $1")
            .bind(cycle)
            .fetch_one(&env.pool)
            .await?;
    assert_eq!(
        (state.as_str(), attempts),
        ("queued", 0),
        "handed back without using an attempt"
    );
    env.spawn_worker(&[])?;
    assert_eq!(env.wait_for_cycle(cycle, LIMIT).await?, "completed");
    assert_eq!(models_per_job(&env, cycle).await?, vec![1]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_losing_everything_mid_cycle_loses_no_job() -> anyhow::Result<()> {
    let mut env = TestEnv::new().await?;
    let port = trainyard_tests::free_port();
    let mut redis = OwnRedis::start(port, None)?;
    env.redis_url = redis.url();
    for i in 0..4 {
        insert_org(&env.pool, &format!("org-{i}"), 200, 20 + i).await?;
    }
    env.spawn_worker(&[("TRAINYARD_FAULTS", "slow-ms=700")])?;
    let cycle = enqueue(&env, None, Some(ModelType::EnergyForecast)).await?;
    wait_for_running_job(&env, cycle, Duration::from_secs(30)).await?;
    redis.kill();
    let _redis = OwnRedis::start(port, None)?;
    // The sweeper (what `trainyard-scheduler run` does) restores the queue.
    let settings = env.scheduler_settings();
    let schedule = trainyard_scheduler::schedule::Schedule::parse("0 0 2 15 * *")?;
    let env_ref = &env;
    let sweeper = trainyard_scheduler::daemon::run(
        settings,
        schedule,
        chrono::Duration::zero(),
        async move {
            let _ = env_ref.wait_for_cycle(cycle, LIMIT).await;
        },
    );
    sweeper.await?;
    assert_eq!(counts(&env, cycle).await?, ("completed".into(), 4, 0, 0));
    assert_eq!(models_per_job(&env, cycle).await?, vec![1, 1, 1, 1]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_outage_mid_cycle_fails_nothing_and_loses_nothing() -> anyhow::Result<()> {
    let mut pg = OwnPostgres::start(None)?;
    let mut env = TestEnv::on(&pg.url()).await?;
    for i in 0..4 {
        insert_org(&env.pool, &format!("org-{i}"), 200, 80 + i).await?;
    }
    // Training outlasts the outage's start, so jobs are mid-flight when it hits.
    let slow = [("TRAINYARD_FAULTS", "slow-ms=3000")];
    env.spawn_worker(&slow)?;
    env.spawn_worker(&slow)?;
    let cycle = enqueue(&env, None, Some(ModelType::EnergyForecast)).await?;
    wait_for_running_job(&env, cycle, Duration::from_secs(30)).await?;
    pg.stop();
    tokio::time::sleep(Duration::from_secs(15)).await;
    pg.resume()?;
    assert_eq!(env.wait_for_cycle(cycle, LIMIT).await?, "completed");
    assert_eq!(counts(&env, cycle).await?, ("completed".into(), 4, 0, 0));
    assert_eq!(models_per_job(&env, cycle).await?, vec![1, 1, 1, 1]);
    // No attempt was spent on the outage: live workers kept their jobs.
    let attempts: Vec<i32> =
        sqlx::query_scalar("select attempts from ml_training_jobs where cycle_id = $1")
            .bind(cycle)
            .fetch_all(&env.pool)
            .await?;
    assert_eq!(attempts, vec![1, 1, 1, 1]);
    // No crash loop: both workers are still serving.
    for w in env.workers().iter_mut() {
        assert!(w.try_wait()?.is_none(), "a worker exited during the outage");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panicking_job_fails_with_its_reason_and_the_worker_keeps_serving() -> anyhow::Result<()>
{
    let mut env = TestEnv::new().await?;
    let poison = insert_org(&env.pool, "poison", 200, 31).await?;
    insert_org(&env.pool, "healthy", 200, 32).await?;
    let faults = format!("panic-org={poison}");
    env.spawn_worker(&[("TRAINYARD_FAULTS", faults.as_str())])?;
    let cycle = enqueue(&env, None, Some(ModelType::EnergyForecast)).await?;
    assert_eq!(
        env.wait_for_cycle(cycle, LIMIT).await?,
        "completed_with_failures"
    );
    assert_eq!(
        counts(&env, cycle).await?,
        ("completed_with_failures".into(), 1, 1, 0)
    );
    let (reason, attempts): (String, i32) =
        sqlx::query_as("select reason, attempts from ml_training_jobs where organization_id = $1")
            .bind(poison)
            .fetch_one(&env.pool)
            .await?;
    assert!(reason.contains("training panicked"), "{reason}");
    assert_eq!(attempts, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_that_kills_its_worker_is_failed_after_three_attempts() -> anyhow::Result<()> {
    let mut env = TestEnv::new().await?;
    let poison = insert_org(&env.pool, "abort", 200, 41).await?;
    let faults = format!("abort-org={poison}");
    let cycle = enqueue(&env, Some(poison), Some(ModelType::EnergyForecast)).await?;
    // A supervisor's job: restart workers as they die.
    let started = Instant::now();
    let mut restarts = 0;
    loop {
        let running = env
            .workers()
            .iter_mut()
            .filter_map(|c| c.try_wait().ok())
            .filter(Option::is_none)
            .count();
        if running == 0 {
            env.spawn_worker(&[("TRAINYARD_FAULTS", faults.as_str())])?;
            restarts += 1;
        }
        let status: String =
            sqlx::query_scalar("select status from ml_training_cycles where id = $1")
                .bind(cycle)
                .fetch_one(&env.pool)
                .await?;
        if status != "running" {
            break;
        }
        assert!(
            started.elapsed() < LIMIT,
            "no verdict after {restarts} worker starts"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        counts(&env, cycle).await?,
        ("completed_with_failures".into(), 0, 1, 0)
    );
    let (reason, attempts): (String, i32) =
        sqlx::query_as("select reason, attempts from ml_training_jobs where cycle_id = $1")
            .bind(cycle)
            .fetch_one(&env.pool)
            .await?;
    assert_eq!(attempts, 3);
    assert!(reason.contains("gave up after 3 attempts"), "{reason}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_data_gets_a_clear_reason_and_does_not_disturb_other_jobs() -> anyhow::Result<()> {
    let mut env = TestEnv::new().await?;
    let good = insert_org(&env.pool, "good", 200, 51).await?;
    // All-zero energy for 200 days.
    let zero = Uuid::new_v4();
    sqlx::query("insert into organizations (id, name) values ($1, 'zeros')")
        .bind(zero)
        .execute(&env.pool)
        .await?;
    sqlx::query(
        "insert into metrics_data (organization_id, date, category, value, unit, co2e_kg, grid_factor)
         select $1, date '2026-01-01' + d, 'energy', 0, 'kWh', 0, 0.3 from generate_series(0, 199) d",
    )
    .bind(zero)
    .execute(&env.pool)
    .await?;
    // NaN, infinite, negative and absurd values on top of a usable series.
    let messy = insert_org(&env.pool, "messy", 200, 52).await?;
    sqlx::query(
        "insert into metrics_data (organization_id, date, category, value, unit, co2e_kg, grid_factor)
         values ($1, '2026-10-01', 'energy', 'NaN', 'kWh', 1, 0.3),
                ($1, '2026-10-02', 'energy', 'Infinity', 'kWh', 1, 0.3),
                ($1, '2026-10-03', 'energy', -50, 'kWh', 1, 0.3)",
    )
    .bind(messy)
    .execute(&env.pool)
    .await?;
    env.spawn_worker(&[])?;
    // A malformed payload pushed by hand must not stop the worker.
    let mut redis = env.redis().await?;
    let bogus = apalis_redis_task(b"{\"not\": \"a job\"}".to_vec());
    apalis_redis::queries::push_tasks(&mut redis, &env.queue_config(), &[bogus]).await?;
    let cycle = enqueue(&env, None, Some(ModelType::EnergyForecast)).await?;
    let status = env.wait_for_cycle(cycle, LIMIT).await?;
    let rows: Vec<(Uuid, String, Option<String>)> = sqlx::query_as(
        "select organization_id, status, reason from ml_training_jobs where cycle_id = $1",
    )
    .bind(cycle)
    .fetch_all(&env.pool)
    .await?;
    for (org, state, reason) in &rows {
        if *org == good {
            assert_eq!(state, "succeeded");
        } else if *org == zero {
            assert_eq!(state, "failed");
            let reason = reason.clone().unwrap_or_default();
            assert!(
                reason.contains("zero") || reason.contains("constant"),
                "{reason}"
            );
        } else {
            assert_eq!(*org, messy);
            assert_eq!(state, "succeeded", "{reason:?}");
        }
    }
    assert_eq!(status, "completed_with_failures");
    let report: serde_json::Value =
        sqlx::query_scalar("select data_report from ml_training_logs where organization_id = $1")
            .bind(messy)
            .fetch_one(&env.pool)
            .await?;
    let rejected = &report["rejected"];
    assert!(
        rejected.to_string().contains('1'),
        "rejected counts recorded: {report}"
    );
    Ok(())
}

fn apalis_redis_task(bytes: Vec<u8>) -> apalis_redis::RedisTask {
    apalis_core::task::builder::TaskBuilder::new(bytes).build()
}
