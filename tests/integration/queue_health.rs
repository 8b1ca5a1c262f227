//! The Redis transport stays bounded and healthy whatever the history:
//! every delivery is acknowledged, stopped workers deregister, messages that
//! are not jobs are dead-lettered once, and PostgreSQL outages strand
//! nothing and spend no attempt.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use trainyard_shared::ModelType;
use trainyard_tests::{enqueue, insert_org, log_path, signal, OwnPostgres, TestEnv};
use uuid::Uuid;

const LIMIT: Duration = Duration::from_secs(240);

/// Inserts `cycles` cycles of `per_cycle` jobs for organizations that do not
/// exist (deleted after enqueue): each delivery ends in one quick `failed`.
async fn cycles_of_deleted_orgs(
    env: &TestEnv,
    cycles: usize,
    per_cycle: usize,
) -> anyhow::Result<Vec<Uuid>> {
    let mut ids = Vec::new();
    for c in 0..cycles {
        let cycle = Uuid::new_v4();
        sqlx::query(
            "insert into ml_training_cycles
                 (id, cycle_key, kind, cycle_date, deadline_at, requested_by, total_jobs)
             values ($1, $2, 'adhoc', now(), now() + interval '1 hour', 'test', $3)",
        )
        .bind(cycle)
        .bind(format!("soak-{c}-{cycle}"))
        .bind(per_cycle as i32)
        .execute(&env.pool)
        .await?;
        let jobs: Vec<Uuid> = (0..per_cycle).map(|_| Uuid::new_v4()).collect();
        let orgs: Vec<Uuid> = (0..per_cycle).map(|_| Uuid::new_v4()).collect();
        sqlx::query(
            "insert into ml_training_jobs (id, cycle_id, organization_id, model_type, max_attempts)
             select u.id, $1, u.org, 'energy_forecast', 3
             from unnest($2::uuid[], $3::uuid[]) as u(id, org)",
        )
        .bind(cycle)
        .bind(&jobs)
        .bind(&orgs)
        .execute(&env.pool)
        .await?;
        ids.push(cycle);
    }
    Ok(ids)
}

fn worker_log(env: &TestEnv, index: usize) -> String {
    std::fs::read_to_string(log_path(&format!("{}-worker-{index}", env.db_name)))
        .unwrap_or_default()
}

async fn redis_keys(env: &TestEnv) -> anyhow::Result<usize> {
    let mut redis = env.redis().await?;
    Ok(trainyard_shared::queue::key_count(&mut redis, &env.queue_config()).await?)
}

async fn payloads_in_redis(env: &TestEnv) -> anyhow::Result<usize> {
    let mut redis = env.redis().await?;
    Ok(redis::cmd("HLEN")
        .arg(env.queue_config().job_data_hash())
        .query_async(&mut redis)
        .await?)
}

/// Each job's attempts in `cycle`.
async fn attempts(env: &TestEnv, cycle: Uuid) -> anyhow::Result<Vec<i32>> {
    Ok(
        sqlx::query_scalar("select attempts from ml_training_jobs where cycle_id = $1")
            .bind(cycle)
            .fetch_all(&env.pool)
            .await?,
    )
}

/// Waits for worker `pid` to exit; its status and how long that took.
async fn wait_for_exit(
    env: &mut TestEnv,
    pid: u32,
    limit: Duration,
) -> anyhow::Result<(std::process::ExitStatus, Duration)> {
    let started = Instant::now();
    let child = env
        .workers()
        .iter_mut()
        .find(|c| c.id() == pid)
        .expect("a worker of this test");
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok((s, started.elapsed()));
        }
        anyhow::ensure!(
            started.elapsed() < limit,
            "worker {pid} did not exit within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Brings the test's PostgreSQL back and reconnects the test's pool.
async fn resume(pg: &mut OwnPostgres, env: &mut TestEnv) -> anyhow::Result<()> {
    pg.resume()?;
    env.pool = trainyard_shared::db::connect(&env.database_url, 5).await?;
    Ok(())
}

async fn cycle_counts(env: &TestEnv, cycle: Uuid) -> anyhow::Result<(String, i32, i32, i32, i32)> {
    Ok(sqlx::query_as(
        "select status, total_jobs, successful_models, failed_models, skipped_models
         from ml_training_cycles where id = $1",
    )
    .bind(cycle)
    .fetch_one(&env.pool)
    .await?)
}

/// More than 10,000 deliveries through one worker, which is then killed:
/// Redis stays within the window the whole time, the survivors keep serving
/// (no consumer restart loop), and a new cycle completes exactly, each job in
/// one attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_deliveries_through_one_worker_then_a_kill_leave_redis_bounded(
) -> anyhow::Result<()> {
    const WINDOW: usize = 300;
    let mut env = TestEnv::new().await?;
    let soak = cycles_of_deleted_orgs(&env, 12, 850).await?;
    let window = WINDOW.to_string();
    let fast = [
        ("TRAINYARD_QUEUE_WINDOW", window.as_str()),
        ("TRAINYARD_CONCURRENCY", "4"),
        ("TRAINYARD_POLL_INTERVAL_MS", "10"),
    ];
    let first = env.spawn_worker(&fast)?;

    let started = Instant::now();
    let mut most_keys = 0;
    loop {
        most_keys = most_keys.max(redis_keys(&env).await?);
        let live: i64 = sqlx::query_scalar(
            "select count(*) from ml_training_jobs where status in ('queued', 'running')",
        )
        .fetch_one(&env.pool)
        .await?;
        if live == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(400),
            "{live} soak jobs still live"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for cycle in &soak {
        let (status, total, ok, failed, skipped) = cycle_counts(&env, *cycle).await?;
        assert_eq!(
            (status.as_str(), total, ok, failed, skipped),
            ("completed_with_failures", 850, 0, 850, 0)
        );
    }
    let claims: i64 = sqlx::query_scalar("select sum(attempts) from ml_training_jobs")
        .fetch_one(&env.pool)
        .await?;
    assert_eq!(claims, 12 * 850, "each delivery claimed its job once");
    // Per queue: the window's payloads and metadata plus a few fixed keys.
    assert!(
        most_keys <= WINDOW + 20,
        "Redis held {most_keys} keys of this queue (window {WINDOW})"
    );
    // Per worker: nothing left in flight once the work is done.
    let mut redis = env.redis().await?;
    let inflight: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:inflight:*", env.queue))
        .query_async(&mut redis)
        .await?;
    for set in &inflight {
        let n: usize = redis::cmd("SCARD").arg(set).query_async(&mut redis).await?;
        assert_eq!(n, 0, "{set} still holds {n} deliveries");
    }

    signal(first, Signal::SIGKILL)?;
    env.spawn_worker(&[])?;
    env.spawn_worker(&[])?;
    // Past the point where the dead worker's in-flight set is re-queued
    // (heartbeat 1 s x 3 missed in tests).
    tokio::time::sleep(Duration::from_secs(5)).await;
    for i in 0..2 {
        insert_org(&env.pool, &format!("real-{i}"), 200, 300 + i).await?;
    }
    let cycle = enqueue(&env, None, None).await?;
    assert_eq!(env.wait_for_cycle(cycle, LIMIT).await?, "completed");
    assert_eq!(
        cycle_counts(&env, cycle).await?,
        ("completed".to_string(), 6, 6, 0, 0)
    );
    assert_eq!(
        attempts(&env, cycle).await?,
        vec![1; 6],
        "no attempt lost to a broken consumer"
    );
    for i in 1..=2 {
        let log = worker_log(&env, i);
        assert!(!log.contains("queue worker died"), "worker {i}:\n{log}");
        assert!(!log.contains("too many results"), "worker {i}:\n{log}");
    }
    for w in env.workers().iter_mut().skip(1) {
        assert!(w.try_wait()?.is_none(), "a surviving worker exited");
    }
    let keys = redis_keys(&env).await?;
    assert!(keys <= 20, "{keys} keys left after everything finished");
    Ok(())
}

/// A worker SIGTERMed and restarted 20 times during a cycle: each stop
/// deregisters, so nothing but the jobs in flight at a stop is delivered
/// again, and the cycle ends exact with one model per job.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_restarts_replay_only_the_jobs_in_flight() -> anyhow::Result<()> {
    const JOBS: usize = 60;
    let mut env = TestEnv::new().await?;
    for i in 0..JOBS {
        insert_org(&env.pool, &format!("org-{i}"), 200, 500 + i as u64).await?;
    }
    let worker_env = [
        ("TRAINYARD_FAULTS", "slow-ms=150"),
        ("TRAINYARD_GRACE_SECS", "2"),
    ];
    let cycle = enqueue(&env, None, Some(ModelType::EnergyForecast)).await?;
    let mut current = env.spawn_worker(&worker_env)?;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        signal(current, Signal::SIGTERM)?;
        let (status, _) = wait_for_exit(&mut env, current, Duration::from_secs(10)).await?;
        assert!(status.success(), "{status:?}");
        current = env.spawn_worker(&worker_env)?;
    }
    assert_eq!(env.wait_for_cycle(cycle, LIMIT).await?, "completed");
    assert_eq!(
        cycle_counts(&env, cycle).await?,
        ("completed".to_string(), JOBS as i32, JOBS as i32, 0, 0)
    );
    let models: i64 = sqlx::query_scalar(
        "select count(*) from ml_models m join ml_training_jobs j on j.id = m.job_id
         where j.cycle_id = $1",
    )
    .bind(cycle)
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(models, JOBS as i64, "one model per job");

    // Every delivery a worker handled is logged once, by one of these.
    let mut handled = 0;
    for i in 0..21 {
        let log = worker_log(&env, i);
        handled += log.matches("training started").count();
        handled += log.matches("delivery acknowledged").count();
    }
    eprintln!("{handled} deliveries handled for {JOBS} jobs and 20 stops");
    // Each job once, plus at most one more delivery for each stop (the
    // worker trains one job at a time).
    assert!(
        handled <= JOBS + 20,
        "{handled} deliveries handled for {JOBS} jobs and 20 stops"
    );
    Ok(())
}

/// Messages that are not jobs (not JSON, empty, not UTF-8) are logged once,
/// kept in the dead-letter list and acknowledged; a job running beside them
/// in the same process is not disturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn undecodable_messages_are_dead_lettered_once_and_disturb_nothing() -> anyhow::Result<()> {
    let mut env = TestEnv::new().await?;
    let org = insert_org(&env.pool, "healthy", 200, 41).await?;
    env.spawn_worker(&[
        ("TRAINYARD_CONCURRENCY", "2"),
        ("TRAINYARD_FAULTS", "slow-ms=3000"),
    ])?;
    let cycle = enqueue(&env, Some(org), Some(ModelType::EnergyForecast)).await?;
    trainyard_tests::wait_for_running_job(&env, cycle, Duration::from_secs(30)).await?;
    let mut redis = env.redis().await?;
    let junk: Vec<Vec<u8>> = vec![
        b"EOF while parsing {".to_vec(),
        Vec::new(),
        vec![0xff, 0xfe, 0x1b, b'['],
    ];
    let tasks: Vec<_> = junk
        .into_iter()
        .map(|b| apalis_core::task::builder::TaskBuilder::new(b).build())
        .collect();
    apalis_redis::queries::push_tasks(&mut redis, &env.queue_config(), &tasks).await?;
    assert_eq!(env.wait_for_cycle(cycle, LIMIT).await?, "completed");
    assert_eq!(attempts(&env, cycle).await?, vec![1]);

    // Give the sweeper a pass, then nothing of the junk is left to deliver.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let dead: Vec<String> = redis::cmd("LRANGE")
        .arg(trainyard_shared::queue::dead_letter_list(
            &env.queue_config(),
        ))
        .arg(0)
        .arg(-1)
        .query_async(&mut redis)
        .await?;
    assert_eq!(dead.len(), 3, "{dead:?}");
    assert_eq!(payloads_in_redis(&env).await?, 0);
    let log = worker_log(&env, 0);
    assert_eq!(
        log.matches("is not a training job").count(),
        3,
        "each logged once:\n{log}"
    );
    assert!(!log.contains("queue worker died"), "{log}");
    // The payload's ESC byte is shown escaped, never raw.
    assert!(log.contains("\\u{1b}["), "{log}");
    Ok(())
}

/// Workers that cannot claim during a PostgreSQL outage longer than their
/// retry budget give their deliveries up; the jobs stay queued, are
/// delivered again once PostgreSQL is back, and no attempt is spent. Jobs
/// whose training ends during the outage keep their results until they can
/// be written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_postgres_outage_strands_nothing_and_spends_no_attempt() -> anyhow::Result<()> {
    let mut pg = OwnPostgres::start(None)?;
    let mut env = TestEnv::on(&pg.url()).await?;
    for i in 0..4 {
        insert_org(&env.pool, &format!("org-{i}"), 200, 90 + i).await?;
    }
    let short_budget = [
        ("TRAINYARD_DB_RETRY_SECS", "3"),
        ("TRAINYARD_CONCURRENCY", "2"),
        ("TRAINYARD_FAULTS", "slow-ms=1500"),
    ];
    let a = env.spawn_worker(&short_budget)?;
    let b = env.spawn_worker(&short_budget)?;
    // Started and registered; hold them while the jobs are pushed and
    // PostgreSQL goes away, so every claim meets the outage.
    tokio::time::sleep(Duration::from_secs(2)).await;
    signal(a, Signal::SIGSTOP)?;
    signal(b, Signal::SIGSTOP)?;
    let cycle = enqueue(&env, None, Some(ModelType::EnergyForecast)).await?;
    env.pool.close().await;
    pg.stop();
    signal(a, Signal::SIGCONT)?;
    signal(b, Signal::SIGCONT)?;
    // Longer than the retry budget plus one pool acquire timeout (10 s).
    tokio::time::sleep(Duration::from_secs(16)).await;
    resume(&mut pg, &mut env).await?;
    assert_eq!(env.wait_for_cycle(cycle, LIMIT).await?, "completed");
    assert_eq!(
        attempts(&env, cycle).await?,
        vec![1; 4],
        "the outage spent no attempt"
    );
    let log = worker_log(&env, 0) + &worker_log(&env, 1);
    assert!(
        log.contains("delivery given up"),
        "the claims met the outage:\n{log}"
    );

    // Second outage, now mid-training and longer than the budget: the
    // results wait for PostgreSQL instead of being thrown away.
    let cycle = enqueue(&env, None, Some(ModelType::EmissionsForecast)).await?;
    trainyard_tests::wait_for_running_job(&env, cycle, Duration::from_secs(30)).await?;
    env.pool.close().await;
    pg.stop();
    tokio::time::sleep(Duration::from_secs(8)).await;
    resume(&mut pg, &mut env).await?;
    assert_eq!(env.wait_for_cycle(cycle, LIMIT).await?, "completed");
    assert_eq!(
        attempts(&env, cycle).await?,
        vec![1; 4],
        "no job trained twice"
    );
    Ok(())
}

/// SIGTERM while PostgreSQL is down: the worker exits within its grace
/// period (it cannot hand the job back, so it leaves a note in Redis), and
/// the lease sweeper later gives the job back without spending the attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_during_a_postgres_outage_exits_within_grace_and_keeps_the_attempt(
) -> anyhow::Result<()> {
    let mut pg = OwnPostgres::start(None)?;
    let mut env = TestEnv::on(&pg.url()).await?;
    let org = insert_org(&env.pool, "redeploy", 200, 95).await?;
    let first = env.spawn_worker(&[
        ("TRAINYARD_FAULTS", "slow-ms=30000"),
        ("TRAINYARD_GRACE_SECS", "4"),
    ])?;
    let cycle = enqueue(&env, Some(org), Some(ModelType::EnergyForecast)).await?;
    trainyard_tests::wait_for_running_job(&env, cycle, Duration::from_secs(30)).await?;
    env.pool.close().await;
    pg.stop();
    signal(first, Signal::SIGTERM)?;
    let (status, took) = wait_for_exit(&mut env, first, Duration::from_secs(30)).await?;
    assert!(status.success(), "{status:?}");
    assert!(
        took < Duration::from_millis(5500),
        "exited {took:?} after SIGTERM with a 4 s grace period"
    );
    resume(&mut pg, &mut env).await?;
    env.spawn_worker(&[])?;
    assert_eq!(env.wait_for_cycle(cycle, LIMIT).await?, "completed");
    assert_eq!(
        attempts(&env, cycle).await?,
        vec![1],
        "the interrupted attempt was given back"
    );
    Ok(())
}

/// A queue consumer that keeps dying (here: its registration is deleted
/// under it, so every heartbeat fails) makes `/health` answer 503 with the
/// reason, while the process stays up to recover.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_turns_unavailable_while_the_queue_consumer_restarts_in_a_loop() -> anyhow::Result<()>
{
    let mut env = TestEnv::new().await?;
    let port = trainyard_tests::free_port().to_string();
    env.spawn_worker(&[("PORT", port.as_str())])?;
    // 503 ("stopped") until the consumer has started, then 200.
    let started = Instant::now();
    loop {
        let health = trainyard_tests::http_get(&port, "/health").await?;
        if health.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{health}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut redis = env.redis().await?;
    let workers = env.queue_config().workers_set();
    let started = Instant::now();
    let unhealthy = loop {
        let _: () = redis::cmd("DEL")
            .arg(&workers)
            .query_async(&mut redis)
            .await?;
        let health = trainyard_tests::http_get(&port, "/health").await?;
        // Between a crash and its restart it says "stopped"; then the loop.
        if health.contains("restarting in a loop") {
            break health;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "still healthy: {health}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(unhealthy.starts_with("HTTP/1.1 503"), "{unhealthy}");
    assert!(unhealthy.contains("\"postgres\":\"up\""), "{unhealthy}");
    for w in env.workers().iter_mut() {
        assert!(w.try_wait()?.is_none(), "the worker exited");
    }
    Ok(())
}
