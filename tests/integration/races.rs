//! Races and operator-facing edges: one live job per organization × model
//! type whatever the concurrency, promotion decided against the model active
//! at write time, an organization deleted mid-training, enqueue with Redis
//! down, settings checked at start, and what the terminal shows.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use trainyard_scheduler::daemon;
use trainyard_shared::cycles::CreateOutcome;
use trainyard_shared::ModelType;
use trainyard_tests::{binary, enqueue, insert_org, wait_for_running_job, OwnRedis, TestEnv};
use uuid::Uuid;

const LIMIT: Duration = Duration::from_secs(240);

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `trainyard-scheduler ARGS` against the test's database and queue.
fn scheduler(env: &TestEnv, args: &[&str]) -> anyhow::Result<Command> {
    let mut c = Command::new(binary("trainyard-scheduler")?);
    c.args(args)
        .env("DATABASE_URL", &env.database_url)
        .env("REDIS_URL", &env.redis_url)
        .env("TRAINYARD_QUEUE", &env.queue)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    Ok(c)
}

/// Runs a command to its end, killing it after `limit` (its output is then
/// what it printed so far).
fn output_within(mut command: Command, limit: Duration) -> anyhow::Result<Output> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let started = Instant::now();
    while child.try_wait()?.is_none() && started.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    Ok(child.wait_with_output()?)
}

/// Runs the commands at once and returns their outputs.
async fn run_concurrently(commands: Vec<Command>) -> anyhow::Result<Vec<Output>> {
    let children = commands
        .into_iter()
        .map(|mut c| {
            c.stdout(Stdio::piped()).stderr(Stdio::piped());
            c.spawn()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut outputs = Vec::new();
    for child in children {
        outputs.push(tokio::task::spawn_blocking(move || child.wait_with_output()).await??);
    }
    Ok(outputs)
}

async fn live_jobs(env: &TestEnv) -> anyhow::Result<Vec<(Uuid, Uuid, String)>> {
    Ok(sqlx::query_as(
        "select id, organization_id, model_type from ml_training_jobs
         where status in ('queued', 'running') order by organization_id, model_type",
    )
    .fetch_all(&env.pool)
    .await?)
}

async fn cycle_count(env: &TestEnv) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("select count(*) from ml_training_cycles")
            .fetch_one(&env.pool)
            .await?,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_concurrent_ad_hoc_enqueues_for_one_pair_create_one_live_job() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let org = insert_org(&env.pool, "busy", 200, 31).await?;
    let org_arg = org.to_string();
    let args = ["enqueue", "--org", &org_arg, "--model", "energy_forecast"];
    let outputs = run_concurrently(vec![
        scheduler(&env, &args)?,
        scheduler(&env, &args)?,
        scheduler(&env, &args)?,
    ])
    .await?;
    for out in &outputs {
        assert!(out.status.success(), "{}", text(out));
    }
    let live = live_jobs(&env).await?;
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(cycle_count(&env).await?, 1);
    let live_id = live[0].0.to_string();
    let answered: Vec<String> = outputs
        .iter()
        .map(text)
        .filter(|t| t.contains("already being trained"))
        .collect();
    assert_eq!(answered.len(), 2, "{outputs:?}");
    for t in answered {
        assert!(t.contains(&live_id), "the answer names the live job: {t}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_concurrent_enqueue_all_create_one_set_of_jobs() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    for i in 0..3 {
        insert_org(&env.pool, &format!("org-{i}"), 200, 40 + i).await?;
    }
    insert_org(&env.pool, "short", 100, 49).await?;
    let outputs = run_concurrently(vec![
        scheduler(&env, &["enqueue", "--all"])?,
        scheduler(&env, &["enqueue", "--all"])?,
        scheduler(&env, &["enqueue", "--all"])?,
    ])
    .await?;
    for out in &outputs {
        assert!(out.status.success(), "{}", text(out));
    }
    assert_eq!(live_jobs(&env).await?.len(), 9);
    assert_eq!(cycle_count(&env).await?, 1, "{outputs:?}");
    let jobs: i64 = sqlx::query_scalar("select count(*) from ml_training_jobs")
        .fetch_one(&env.pool)
        .await?;
    assert_eq!(
        jobs, 12,
        "9 queued and 3 skipped for the short organization"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_monthly_cycle_during_a_live_ad_hoc_job_skips_that_pair_and_counts_it(
) -> anyhow::Result<()> {
    let mut env = TestEnv::new().await?;
    let org = insert_org(&env.pool, "adhoc-first", 200, 51).await?;
    let adhoc = enqueue(&env, Some(org), Some(ModelType::EnergyForecast)).await?;
    let live_job: Uuid = sqlx::query_scalar("select id from ml_training_jobs where cycle_id = $1")
        .bind(adhoc)
        .fetch_one(&env.pool)
        .await?;
    let outcome = daemon::create_monthly(&env.pool, &env.cycle_settings(), Utc::now(), "t").await?;
    let CreateOutcome::Created {
        cycle_id: monthly,
        total,
        queued,
        skipped,
        already_live,
    } = outcome
    else {
        anyhow::bail!("monthly cycle not created: {outcome:?}");
    };
    assert_eq!((total, queued, skipped, already_live), (3, 2, 1, 1));
    let (status, reason): (String, Option<String>) = sqlx::query_as(
        "select status, reason from ml_training_jobs
         where cycle_id = $1 and model_type = 'energy_forecast'",
    )
    .bind(monthly.0)
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(status, "skipped");
    let reason = reason.unwrap_or_default();
    assert!(reason.contains(&live_job.to_string()), "{reason}");
    assert_eq!(live_jobs(&env).await?.len(), 3, "one per pair");

    env.spawn_worker(&[])?;
    assert_eq!(env.wait_for_cycle(adhoc, LIMIT).await?, "completed");
    assert_eq!(env.wait_for_cycle(monthly.0, LIMIT).await?, "completed");
    let counts: (i32, i32, i32, i32) = sqlx::query_as(
        "select total_jobs, successful_models, failed_models, skipped_models
         from ml_training_cycles where id = $1",
    )
    .bind(monthly.0)
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(counts, (3, 2, 0, 1));
    let models: i64 = sqlx::query_scalar(
        "select count(*) from ml_models where organization_id = $1 and model_type = 'energy_forecast'",
    )
    .bind(org)
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(models, 1, "the pair was trained once");
    Ok(())
}

/// The race of issue 9: a job reads "no active model", another model
/// becomes active while it trains. The decision must be taken against the
/// model active at write time, re-scored on the job's own holdout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn promotion_is_decided_against_the_model_active_when_results_are_written(
) -> anyhow::Result<()> {
    let mut env = TestEnv::new().await?;
    let org = insert_org(&env.pool, "race", 230, 5).await?;
    env.spawn_worker(&[("TRAINYARD_FAULTS", "slow-ms=4000")])?;
    let model = Some(ModelType::EnergyForecast);

    let first = enqueue(&env, Some(org), model).await?;
    assert_eq!(env.wait_for_cycle(first, LIMIT).await?, "completed");
    let (v1, v1_status): (Uuid, String) =
        sqlx::query_as("select id, status from ml_models where organization_id = $1")
            .bind(org)
            .fetch_one(&env.pool)
            .await?;
    assert_eq!(v1_status, "active");

    // The second job reads no active model…
    sqlx::query("update ml_models set status = 'archived' where id = $1")
        .bind(v1)
        .execute(&env.pool)
        .await?;
    let second = enqueue(&env, Some(org), model).await?;
    let (job, _) = wait_for_running_job(&env, second, Duration::from_secs(30)).await?;
    // …and while it trains (4 s of injected delay after the read), v1 is
    // active again, as if a concurrent job had just promoted it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sqlx::query("update ml_models set status = 'active' where id = $1")
        .bind(v1)
        .execute(&env.pool)
        .await?;
    assert_eq!(env.wait_for_cycle(second, LIMIT).await?, "completed");

    let (v2_status, v2_accuracy, reason): (String, f64, String) = sqlx::query_as(
        "select status, accuracy, promotion_reason from ml_models
         where organization_id = $1 and version = 2",
    )
    .bind(org)
    .fetch_one(&env.pool)
    .await?;
    assert!(
        reason.starts_with("beats active v1") || reason.starts_with("does not beat active v1"),
        "decided against the then-active v1: {reason}"
    );
    let (incumbent_model, incumbent_accuracy): (Uuid, f64) = sqlx::query_as(
        "select model_id, accuracy from ml_evaluations where job_id = $1 and role = 'incumbent'",
    )
    .bind(job)
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(incumbent_model, v1, "v1 was re-scored on the job's holdout");
    assert_eq!(
        v2_status == "active",
        v2_accuracy > incumbent_accuracy + 2.0,
        "{reason}"
    );
    let statuses: Vec<(i32, String)> = sqlx::query_as(
        "select version, status from ml_models where organization_id = $1 order by version",
    )
    .bind(org)
    .fetch_all(&env.pool)
    .await?;
    assert_eq!(
        statuses.iter().filter(|(_, s)| s == "active").count(),
        1,
        "{statuses:?}"
    );
    let job_reason: String =
        sqlx::query_scalar("select reason from ml_training_jobs where id = $1")
            .bind(job)
            .fetch_one(&env.pool)
            .await?;
    assert_eq!(job_reason, reason);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_organization_deleted_mid_training_gets_no_model_and_its_job_fails() -> anyhow::Result<()>
{
    let mut env = TestEnv::new().await?;
    let org = insert_org(&env.pool, "leaving", 200, 61).await?;
    env.spawn_worker(&[("TRAINYARD_FAULTS", "slow-ms=4000")])?;
    let cycle = enqueue(&env, Some(org), Some(ModelType::EnergyForecast)).await?;
    wait_for_running_job(&env, cycle, Duration::from_secs(30)).await?;
    // After the worker checked the organization and read its rows.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sqlx::query("delete from organizations where id = $1")
        .bind(org)
        .execute(&env.pool)
        .await?;
    assert_eq!(
        env.wait_for_cycle(cycle, LIMIT).await?,
        "completed_with_failures"
    );
    let (status, reason): (String, Option<String>) =
        sqlx::query_as("select status, reason from ml_training_jobs where cycle_id = $1")
            .bind(cycle)
            .fetch_one(&env.pool)
            .await?;
    assert_eq!(status, "failed");
    assert_eq!(
        reason.as_deref(),
        Some("the organization no longer exists (deleted during the cycle)")
    );
    let written: (i64, i64, i64, i64, i64) = sqlx::query_as(
        "select (select count(*) from ml_models where organization_id = $1),
                (select count(*) from ml_model_storage),
                (select count(*) from ml_predictions where organization_id = $1),
                (select count(*) from ml_training_logs where organization_id = $1),
                (select count(*) from ml_evaluations where organization_id = $1)",
    )
    .bind(org)
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(written, (0, 0, 0, 0, 0));
    let counts: (i32, i32) = sqlx::query_as(
        "select successful_models, failed_models from ml_training_cycles where id = $1",
    )
    .bind(cycle)
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(counts, (0, 1));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enqueue_with_redis_down_creates_nothing_and_a_retry_creates_one_cycle(
) -> anyhow::Result<()> {
    let mut env = TestEnv::new().await?;
    insert_org(&env.pool, "patient", 200, 71).await?;
    let port = trainyard_tests::free_port();
    let mut redis = OwnRedis::start(port, None)?;
    env.redis_url = redis.url();
    redis.kill();

    let out = scheduler(&env, &["enqueue", "--all"])?.output()?;
    assert!(!out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("nothing was enqueued") && said.contains("Redis"),
        "{said}"
    );
    assert_eq!(cycle_count(&env).await?, 0, "nothing committed: {said}");

    let _redis = OwnRedis::start(port, None)?;
    let out = scheduler(&env, &["enqueue", "--all"])?.output()?;
    assert!(out.status.success(), "{}", text(&out));
    let id: Uuid = sqlx::query_scalar("select id from ml_training_cycles")
        .fetch_one(&env.pool)
        .await?;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&id.to_string()),
        "{}",
        text(&out)
    );
    assert_eq!(cycle_count(&env).await?, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_settings_stop_both_binaries_at_start_naming_the_setting() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    insert_org(&env.pool, "untouched", 200, 81).await?;
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "TRAINYARD_CYCLE_DEADLINE_HOURS",
            "1e300",
            &["enqueue", "--all"],
        ),
        (
            "TRAINYARD_CYCLE_DEADLINE_HOURS",
            "inf",
            &["enqueue", "--all"],
        ),
        (
            "TRAINYARD_CYCLE_DEADLINE_HOURS",
            "-3",
            &["enqueue", "--all"],
        ),
        (
            "TRAINYARD_CYCLE_DEADLINE_HOURS",
            "NaN",
            &["enqueue", "--all"],
        ),
        ("TRAINYARD_MAX_ATTEMPTS", "0", &["enqueue", "--all"]),
        ("TRAINYARD_QUEUE_WINDOW", "0", &["enqueue", "--all"]),
        ("TRAINYARD_MIN_DAYS", "-5", &["enqueue", "--all"]),
        ("TRAINYARD_SWEEP_SECS", "0", &["cycles"]),
        ("TRAINYARD_SCHEDULE", "0 0 2 31 2 *", &["run"]),
        ("TRAINYARD_SCHEDULE", "0 0 2 1,15 * *", &["run"]),
    ];
    for (setting, value, args) in cases {
        let mut command = scheduler(&env, args)?;
        command.env(setting, value);
        let out = output_within(command, Duration::from_secs(5))?;
        let said = text(&out);
        assert_eq!(out.status.code(), Some(2), "{setting}={value}: {said}");
        assert!(said.contains(setting), "{setting}={value}: {said}");
        assert!(!said.contains("panicked"), "{said}");
    }
    assert_eq!(
        cycle_count(&env).await?,
        0,
        "no bad setting got as far as a cycle"
    );

    let worker = binary("trainyard-worker")?;
    for (setting, value) in [
        ("TRAINYARD_CONCURRENCY", "0"),
        ("TRAINYARD_QUEUE_WINDOW", "0"),
        ("TRAINYARD_MIN_DAYS", "-1"),
        ("TRAINYARD_HEARTBEAT_SECS", "0"),
    ] {
        let mut command = Command::new(&worker);
        command
            .arg("run")
            .env("DATABASE_URL", &env.database_url)
            .env("REDIS_URL", &env.redis_url)
            .env("TRAINYARD_QUEUE", &env.queue)
            .env("PORT", trainyard_tests::free_port().to_string())
            .env(setting, value)
            .stdin(Stdio::null());
        let out = output_within(command, Duration::from_secs(5))?;
        let said = text(&out);
        assert_eq!(out.status.code(), Some(2), "{setting}={value}: {said}");
        assert!(said.contains(setting), "{setting}={value}: {said}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cycle_command_escapes_control_characters_in_names_and_reasons() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let name = "Evil\u{1b}[2J\u{1b}[H\rcompleted  fine\nFAKE";
    let org = insert_org(&env.pool, name, 100, 91).await?;
    let cycle = enqueue(&env, Some(org), None).await?;
    let out = scheduler(&env, &["cycle", &cycle.to_string()])?.output()?;
    assert!(out.status.success(), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        !shown.chars().any(|c| c.is_control() && c != '\n'),
        "raw control characters reach the terminal: {shown:?}"
    );
    // Summary header + row, a blank line, jobs header + three jobs.
    assert_eq!(shown.lines().count(), 7, "{shown}");
    assert!(shown.contains("Evil\\u{1b}[2J"), "{shown}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_errors_say_the_real_cause_at_once_and_no_migration_notice_is_printed(
) -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    // Nothing listens on this port.
    let port = trainyard_tests::free_port();
    let mut wrong = url::Url::parse(&env.database_url)?;
    wrong
        .set_port(Some(port))
        .expect("a postgres URL has a port");
    let started = Instant::now();
    let out = scheduler(&env, &["cycles"])?
        .env("DATABASE_URL", wrong.as_str())
        .output()?;
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(started.elapsed() < Duration::from_secs(5), "{said}");
    assert!(said.to_lowercase().contains("connection refused"), "{said}");
    assert!(!said.contains("timed out"), "{said}");
    assert_eq!(said.matches("PostgreSQL").count(), 1, "said once: {said}");

    for _ in 0..2 {
        let out = scheduler(&env, &["migrate"])?.output()?;
        let said = text(&out);
        assert!(out.status.success(), "{said}");
        assert!(!said.contains("_sqlx_migrations"), "{said}");
        assert_eq!(said.trim(), "migrations applied");
    }
    Ok(())
}
