//! The lifecycle at scale: a cycle's bookkeeping costs the same per job
//! whatever the cycle's size, stays exact, and proves its counters.

use std::time::Duration;

use trainyard_tests::{log_path, noop_cycle, TestEnv};
use uuid::Uuid;

async fn counters(env: &TestEnv, cycle: Uuid) -> anyhow::Result<(String, i32, i32, i32, i32)> {
    Ok(sqlx::query_as(
        "select status, total_jobs, live_jobs, successful_models, skipped_models
         from ml_training_cycles where id = $1",
    )
    .bind(cycle)
    .fetch_one(&env.pool)
    .await?)
}

async fn push(env: &TestEnv) -> anyhow::Result<()> {
    let mut redis = env.redis().await?;
    trainyard_shared::jobs::top_up(&env.pool, &mut redis, &env.queue_config(), 1000).await?;
    Ok(())
}

/// 20,000 no-op jobs through two workers × 4: exact counts, every job
/// claimed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cycle_of_20000_jobs_is_exact_and_runs_each_job_once() -> anyhow::Result<()> {
    let mut env = TestEnv::new().await?;
    let cycle = noop_cycle(&env, 20_000).await?;
    for _ in 0..2 {
        env.spawn_worker(&[("TRAINYARD_CONCURRENCY", "4"), ("RUST_LOG", "warn")])?;
    }
    let started = std::time::Instant::now();
    push(&env).await?;
    assert_eq!(
        env.wait_for_cycle(cycle, Duration::from_secs(300)).await?,
        "completed"
    );
    eprintln!("20,000 no-op jobs in {:?}", started.elapsed());
    assert_eq!(
        counters(&env, cycle).await?,
        ("completed".to_string(), 20_000, 0, 0, 20_000)
    );
    let (claims, most): (i64, i32) = sqlx::query_as(
        "select sum(attempts)::int8, max(attempts) from ml_training_jobs where cycle_id = $1",
    )
    .bind(cycle)
    .fetch_one(&env.pool)
    .await?;
    assert_eq!((claims, most), (20_000, 1), "each job claimed once");
    let not_skipped: i64 = sqlx::query_scalar(
        "select count(*) from ml_training_jobs where cycle_id = $1 and status <> 'skipped'",
    )
    .bind(cycle)
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(not_skipped, 0);
    Ok(())
}

/// Counters corrupted on purpose: a wrong success count is repaired by the
/// recount at finalization, a live count that would never reach zero by
/// the sweeper's audit; both are reported (log line, `counters_repaired`).
/// Either may be caught by the sweeper's first full audit instead: each
/// cycle is repaired and reported exactly once either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corrupted_counters_are_repaired_and_reported() -> anyhow::Result<()> {
    let mut env = TestEnv::new().await?;
    let wrong_count = noop_cycle(&env, 6).await?;
    let never_zero = noop_cycle(&env, 6).await?;
    // One shard of each cycle's counters is corrupted.
    sqlx::query(
        "update ml_cycle_shards set successful_models = 5
         where cycle_id = $1 and shard = (select min(shard) from ml_cycle_shards where cycle_id = $1)",
    )
    .bind(wrong_count)
    .execute(&env.pool)
    .await?;
    sqlx::query(
        "update ml_cycle_shards set live_jobs = live_jobs + 4
         where cycle_id = $1 and shard = (select min(shard) from ml_cycle_shards where cycle_id = $1)",
    )
    .bind(never_zero)
    .execute(&env.pool)
    .await?;
    env.spawn_worker(&[("TRAINYARD_SWEEP_SECS", "1")])?;
    push(&env).await?;
    for cycle in [wrong_count, never_zero] {
        assert_eq!(
            env.wait_for_cycle(cycle, Duration::from_secs(60)).await?,
            "completed"
        );
        assert_eq!(
            counters(&env, cycle).await?,
            ("completed".to_string(), 6, 0, 0, 6)
        );
    }
    let before: serde_json::Value =
        sqlx::query_scalar("select counters_repaired from ml_training_cycles where id = $1")
            .bind(wrong_count)
            .fetch_one(&env.pool)
            .await?;
    assert_eq!(before["succeeded"], 5, "{before}");
    let before: serde_json::Value =
        sqlx::query_scalar("select counters_repaired from ml_training_cycles where id = $1")
            .bind(never_zero)
            .fetch_one(&env.pool)
            .await?;
    assert_eq!(before["live"], 4, "{before}");
    let log = std::fs::read_to_string(log_path(&format!("{}-worker-0", env.db_name)))?;
    assert_eq!(log.matches("cycle counters disagreed").count(), 2, "{log}");
    Ok(())
}

/// A worker that stops after counting the cycle's last job but before the
/// finalization check (two transactions on the common path) leaves a running
/// cycle with nothing live: the sweeper finalizes it with the exact counts,
/// and nothing is reported as repaired because nothing was wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_counted_but_not_finalized_is_finalized_by_the_sweeper() -> anyhow::Result<()> {
    let mut env = TestEnv::new().await?;
    let cycle = noop_cycle(&env, 9).await?;
    // What the last worker committed before it stopped: every job ended and
    // counted, the cycle row untouched.
    sqlx::query(
        "update ml_training_jobs
         set status = 'skipped', attempts = 1, started_at = now(), finished_at = now(),
             reason = 'too little data'
         where cycle_id = $1",
    )
    .bind(cycle)
    .execute(&env.pool)
    .await?;
    sqlx::query(
        "update ml_cycle_shards set skipped_models = skipped_models + live_jobs, live_jobs = 0
         where cycle_id = $1",
    )
    .bind(cycle)
    .execute(&env.pool)
    .await?;
    assert_eq!(counters(&env, cycle).await?.0, "running");
    env.spawn_worker(&[("TRAINYARD_SWEEP_SECS", "1")])?;
    assert_eq!(
        env.wait_for_cycle(cycle, Duration::from_secs(60)).await?,
        "completed"
    );
    assert_eq!(
        counters(&env, cycle).await?,
        ("completed".to_string(), 9, 0, 0, 9)
    );
    let repaired: Option<serde_json::Value> =
        sqlx::query_scalar("select counters_repaired from ml_training_cycles where id = $1")
            .bind(cycle)
            .fetch_one(&env.pool)
            .await?;
    assert_eq!(repaired, None);
    // The sweeper logs once its transaction has committed: give it a moment.
    let path = log_path(&format!("{}-worker-0", env.db_name));
    let mut log = String::new();
    for _ in 0..50 {
        log = std::fs::read_to_string(&path)?;
        if log.contains("finalized a cycle whose last job was counted") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        log.contains("finalized a cycle whose last job was counted"),
        "{log}"
    );
    assert!(!log.contains("cycle counters disagreed"), "{log}");
    Ok(())
}

/// A status the code does not know, read from the database, is a decoding
/// error that names the value, not a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_status_in_the_database_is_a_clear_error() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let known: trainyard_shared::JobStatus = sqlx::query_scalar("select 'skipped'::text")
        .fetch_one(&env.pool)
        .await?;
    assert_eq!(known, trainyard_shared::JobStatus::Skipped);
    let err = sqlx::query_scalar::<_, trainyard_shared::CycleStatus>("select 'paused'::text")
        .fetch_one(&env.pool)
        .await
        .expect_err("an unknown value must not decode");
    assert!(
        err.to_string().contains("unknown cycle status `paused`"),
        "{err}"
    );
    let err = sqlx::query_scalar::<_, trainyard_shared::ModelType>("select 'churn'::text")
        .fetch_one(&env.pool)
        .await
        .expect_err("an unknown model type must not decode");
    assert!(
        err.to_string().contains("unknown model type `churn`"),
        "{err}"
    );
    let err = sqlx::query_scalar::<_, trainyard_shared::Algorithm>("select 'prophet'::text")
        .fetch_one(&env.pool)
        .await
        .expect_err("an unknown algorithm must not decode");
    assert!(
        err.to_string().contains("unknown algorithm `prophet`"),
        "{err}"
    );
    // A job row whose model type is unknown: reading the cycle's jobs is an
    // error naming the value, not a panic.
    let cycle = noop_cycle(&env, 3).await?;
    sqlx::query(
        "alter table ml_training_jobs drop constraint if exists ml_training_jobs_model_type_check",
    )
    .execute(&env.pool)
    .await?;
    sqlx::query(
        "update ml_training_jobs set model_type = 'churn'
         where id = (select id from ml_training_jobs where cycle_id = $1 limit 1)",
    )
    .bind(cycle)
    .execute(&env.pool)
    .await?;
    let err = trainyard_shared::cycles::cycle_jobs(&env.pool, trainyard_shared::CycleId(cycle))
        .await
        .expect_err("an unknown model type in a row must not decode");
    assert!(err.to_string().contains("churn"), "{err}");
    Ok(())
}

/// A worker's `/metrics` (its health port): the jobs it ran, by model type
/// and outcome, as counters; job durations as histograms (never summaries);
/// no slot busy once the cycle is over; labels only from closed sets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_exports_its_jobs_by_outcome_on_metrics() -> anyhow::Result<()> {
    let mut env = TestEnv::new().await?;
    let cycle = noop_cycle(&env, 9).await?;
    let port = trainyard_tests::free_port().to_string();
    env.spawn_worker(&[("PORT", port.as_str())])?;
    push(&env).await?;
    assert_eq!(
        env.wait_for_cycle(cycle, Duration::from_secs(60)).await?,
        "completed"
    );
    let response = trainyard_tests::http_get(&port, "/metrics").await?;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let text = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    for model in ["emissions_forecast", "energy_forecast", "anomaly_detection"] {
        let line =
            format!("trainyard_worker_jobs_total{{model_type=\"{model}\",outcome=\"skipped\"}} 3");
        assert!(text.contains(&line), "{line} in:\n{text}");
    }
    assert!(
        text.contains("# TYPE trainyard_worker_job_duration_seconds histogram"),
        "{text}"
    );
    assert!(text.contains("trainyard_worker_busy_slots 0"), "{text}");
    assert!(!text.contains("quantile="), "{text}");
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('{'))
    {
        let labels = line.split_once('{').unwrap().1.rsplit_once('}').unwrap().0;
        for pair in labels.split("\",") {
            let key = pair.split_once('=').unwrap().0;
            assert!(["model_type", "outcome", "le"].contains(&key), "{line}");
        }
    }
    Ok(())
}
