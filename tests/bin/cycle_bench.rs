//! Benchmarks of the distributed cycle on the local stack. Prints figures.
//!
//!   cycle-bench enqueue [ORGS]          time `trainyard-scheduler enqueue --all` for ORGS orgs (default 10000)
//!   cycle-bench cycle [ORGS] [WORKERS]  run a full cycle of ORGS orgs × 3 model types (default 50, 2 workers)
//!   cycle-bench lifecycle JOBS [WORKERS] [CONCURRENCY]
//!                                       JOBS no-op jobs through the whole lifecycle (default 2 workers × 4)
//!   cycle-bench dispatch [N]            push-to-start latency of N jobs pushed one at a time to an idle worker
//!   cycle-bench api [--jobs N] [--orgs N] [--cycles N] [--requests N] [--warmup N] [--keep-db NAME]
//!                                       p50/p95 of every GET route of the ops server on a seeded
//!                                       database (default 1,000,000 jobs, 30,000 orgs, 24 cycles)
//!
//! The no-op trainer of `lifecycle` and `dispatch` is an organization with
//! no rows: the real worker binary runs the real lifecycle (claim, lease,
//! load the rows, train — refused at once as insufficient data — record the
//! job `skipped`, roll the cycle up, acknowledge the delivery, refill the
//! window), and nothing in production configuration can make it skip work.
//!
//! Uses DATABASE_URL / REDIS_URL like the tests (a fresh database and queue
//! prefix per run). Epochs follow TRAINYARD_LSTM_EPOCHS / TRAINYARD_AE_EPOCHS
//! when set, else the seed model's defaults.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use trainyard_tests::{binary, enqueue, noop_cycle, TestEnv};

#[path = "cycle_bench/api.rs"]
mod api;
#[path = "cycle_bench/seed.rs"]
mod seed;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("enqueue") => {
            let orgs = args
                .get(1)
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(10_000);
            bench_enqueue(orgs).await
        }
        Some("cycle") => {
            let orgs = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(50);
            let workers = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(2);
            bench_cycle(orgs, workers).await
        }
        Some("lifecycle") => {
            let jobs = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(3000);
            let workers = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(2);
            let concurrency = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(4);
            bench_lifecycle(jobs, workers, concurrency).await
        }
        Some("dispatch") => {
            let n = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(100);
            bench_dispatch(n).await
        }
        Some("api") => api::run(api::Options::parse(&args[1..])?).await,
        _ => bail!(
            "usage: cycle-bench enqueue [ORGS] | cycle [ORGS] [WORKERS] | lifecycle JOBS [WORKERS] [CONCURRENCY] | dispatch [N] | api [--jobs N] [--orgs N] [--cycles N] [--requests N] [--warmup N] [--keep-db NAME]"
        ),
    }
}

async fn bench_enqueue(orgs: i64) -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    eprintln!("seeding {orgs} organizations × 200 days ...");
    sqlx::query(
        "with o as (insert into organizations (id, name)
                    select gen_random_uuid(), 'bench-' || g from generate_series(1, $1) g
                    returning id)
         insert into metrics_data (organization_id, date, category, value, unit, co2e_kg, grid_factor)
         select o.id, date '2026-01-01' + d, 'energy', 100 + d, 'kWh', 30, 0.3
         from o, generate_series(0, 199) d",
    )
    .bind(orgs)
    .execute(&env.pool)
    .await?;
    sqlx::query("analyze").execute(&env.pool).await?;
    let started = Instant::now();
    let out = Command::new(binary("trainyard-scheduler")?)
        .args(["enqueue", "--all"])
        .env("DATABASE_URL", &env.database_url)
        .env("REDIS_URL", &env.redis_url)
        .env("TRAINYARD_QUEUE", &env.queue)
        .stderr(Stdio::inherit())
        .output()
        .context("running trainyard-scheduler enqueue")?;
    let wall = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("enqueue failed: {}", String::from_utf8_lossy(&out.stdout));
    }
    print!("{}", String::from_utf8_lossy(&out.stdout));
    let jobs: i64 = sqlx::query_scalar("select count(*) from ml_training_jobs")
        .fetch_one(&env.pool)
        .await?;
    let mut redis = env.redis().await?;
    let in_redis: i64 = redis::cmd("HLEN")
        .arg(env.queue_config().job_data_hash())
        .query_async(&mut redis)
        .await?;
    println!("enqueue_orgs={orgs} jobs={jobs} in_redis={in_redis} wall_s={wall:.3} (end to end: process start, connect, migrate check, cycle + job rows, first window pushed)");
    Ok(())
}

async fn bench_cycle(orgs: usize, workers: usize) -> anyhow::Result<()> {
    let mut env = TestEnv::new().await?;
    for i in 0..orgs {
        trainyard_tests::insert_org(&env.pool, &format!("bench-{i}"), 365, i as u64).await?;
    }
    let mut extra: Vec<(String, String)> = Vec::new();
    for key in ["TRAINYARD_LSTM_EPOCHS", "TRAINYARD_AE_EPOCHS"] {
        // Default: the seed model's epochs (unset the test harness' small values).
        let v = std::env::var(key)
            .unwrap_or_else(|_| if key.contains("LSTM") { "50" } else { "30" }.into());
        extra.push((key.to_string(), v));
    }
    let extra_ref: Vec<(&str, &str)> = extra
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut pids = Vec::new();
    for _ in 0..workers {
        pids.push(env.spawn_worker(&extra_ref)?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    let cycle = enqueue(&env, None, None).await?;
    let mut peak_rss_kb = vec![0u64; pids.len()];
    loop {
        for (i, pid) in pids.iter().enumerate() {
            peak_rss_kb[i] = peak_rss_kb[i].max(vm_hwm_kb(*pid).unwrap_or(0));
        }
        let status: String =
            sqlx::query_scalar("select status from ml_training_cycles where id = $1")
                .bind(cycle)
                .fetch_one(&env.pool)
                .await?;
        if status != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let wall = started.elapsed().as_secs_f64();
    let (ok, failed, train_sum): (i32, i32, Option<f64>) = sqlx::query_as(
        "select c.successful_models, c.failed_models,
                (select sum(train_seconds) from ml_training_jobs where cycle_id = c.id)
         from ml_training_cycles c where c.id = $1",
    )
    .bind(cycle)
    .fetch_one(&env.pool)
    .await?;
    let train_sum = train_sum.unwrap_or(0.0);
    let ideal = train_sum / workers as f64;
    let overhead = (wall - ideal) / ideal * 100.0;
    let peak_mb = peak_rss_kb.iter().copied().max().unwrap_or(0) as f64 / 1024.0;
    println!(
        "cycle_orgs={orgs} jobs={} succeeded={ok} failed={failed} workers={workers} wall_s={wall:.2} train_s_sum={train_sum:.2} ideal_wall_s={ideal:.2} overhead_pct={overhead:.2} worker_peak_rss_mb={peak_mb:.1}",
        orgs * 3
    );
    Ok(())
}

async fn xact_count(env: &TestEnv) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "select xact_commit + xact_rollback from pg_stat_database where datname = current_database()",
    )
    .fetch_one(&env.pool)
    .await?)
}

async fn bench_lifecycle(jobs: usize, workers: usize, concurrency: usize) -> anyhow::Result<()> {
    let mut env = TestEnv::new().await?;
    let conc = concurrency.to_string();
    let extra = [
        ("TRAINYARD_CONCURRENCY", conc.as_str()),
        ("RUST_LOG", "warn"),
        ("TRAINYARD_SWEEP_SECS", "5"),
        ("TRAINYARD_LEASE_TIMEOUT_SECS", "20"),
        ("TRAINYARD_POLL_INTERVAL_MS", "100"),
    ];
    // The workers start first, on an empty queue: a worker tops the Redis
    // window up as it starts, so workers started after the cycle existed
    // began on it during their settling time, before the clock did (a 3,000
    // job cycle was a third done when timing started, and the first slice
    // counted what they had ended).
    let mut pids = Vec::new();
    for _ in 0..workers {
        pids.push(env.spawn_worker(&extra)?);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let xact_before = xact_count(&env).await?;
    eprintln!("creating {jobs} no-op jobs ...");
    let cycle = noop_cycle(&env, jobs).await?;
    let started = Instant::now();
    let mut redis = env.redis().await?;
    // The first fill, as the scheduler's would be: the workers' window.
    let window: i64 = std::env::var("TRAINYARD_QUEUE_WINDOW")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(1000);
    trainyard_shared::jobs::top_up(&env.pool, &mut redis, &env.queue_config(), window).await?;
    let mut peak_rss_kb = vec![0u64; pids.len()];
    let mut polls = 0i64;
    let (mut active_samples, mut lock_samples) = (0i64, 0i64);
    let mut seen_running = std::collections::HashMap::new();
    // Jobs ended per 5-second slice, from the counter shards: a rate that
    // decays over the cycle points at work growing with it, dips at episodes
    // (autovacuum, checkpoints).
    let mut timeline: Vec<i64> = Vec::new();
    let (mut slice_start, mut ended_at_slice) = (Instant::now(), 0i64);
    loop {
        for (i, pid) in pids.iter().enumerate() {
            peak_rss_kb[i] = peak_rss_kb[i].max(vm_hwm_kb(*pid).unwrap_or(0));
        }
        // One statement: the cycle's status, and how many of the workers'
        // backends are active and how many of those wait on a lock.
        let (status, active, waiting): (String, i64, i64) = sqlx::query_as(
            "select (select status from ml_training_cycles where id = $1),
                    count(*) filter (where state = 'active'),
                    count(*) filter (where state = 'active' and wait_event_type = 'Lock')
             from pg_stat_activity
             where datname = current_database() and pid <> pg_backend_pid()",
        )
        .bind(cycle)
        .fetch_one(&env.pool)
        .await?;
        active_samples += active;
        lock_samples += waiting;
        // Where the database's time goes: the statements seen running.
        let running: Vec<String> = sqlx::query_scalar(
            "select left(regexp_replace(query, '\\s+', ' ', 'g'), 70) from pg_stat_activity
             where datname = current_database() and pid <> pg_backend_pid() and state = 'active'",
        )
        .fetch_all(&env.pool)
        .await?;
        for q in running {
            *seen_running.entry(q).or_insert(0usize) += 1;
        }
        polls += 1;
        if slice_start.elapsed() >= Duration::from_secs(5) || status != "running" {
            let ended: i64 = sqlx::query_scalar(
                "select coalesce(sum(successful_models + failed_models + skipped_models), 0)::int8
                 from ml_cycle_shards where cycle_id = $1",
            )
            .bind(cycle)
            .fetch_one(&env.pool)
            .await?;
            let secs = slice_start.elapsed().as_secs_f64();
            timeline.push(((ended - ended_at_slice) as f64 / secs).round() as i64);
            (slice_start, ended_at_slice) = (Instant::now(), ended);
        }
        if status != "running" {
            break;
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("the cycle did not finish within 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // From the cycle's first push (a worker's sweeper may push before the
    // first fill below) to its finalization, as the rows recorded them.
    let wall: f64 = sqlx::query_scalar(
        "select extract(epoch from c.finished_at - min(j.pushed_at))::float8
         from ml_training_cycles c join ml_training_jobs j on j.cycle_id = c.id
         where c.id = $1 group by c.finished_at",
    )
    .bind(cycle)
    .fetch_one(&env.pool)
    .await?;
    // This process' own polling: two transactions per poll, one per slice.
    let xacts = xact_count(&env).await? - xact_before - 2 * polls - timeline.len() as i64;
    let (total, skipped, live): (i32, i32, i32) = sqlx::query_as(
        "select total_jobs, skipped_models, live_jobs from ml_training_cycles where id = $1",
    )
    .bind(cycle)
    .fetch_one(&env.pool)
    .await?;
    let (runs, p50, p99): (i64, f64, f64) = sqlx::query_as(
        "select sum(attempts)::int8,
                percentile_cont(0.5) within group (order by extract(epoch from started_at - pushed_at)),
                percentile_cont(0.99) within group (order by extract(epoch from started_at - pushed_at))
         from ml_training_jobs where cycle_id = $1",
    )
    .bind(cycle)
    .fetch_one(&env.pool)
    .await?;
    if total as usize != jobs || skipped != total || live != 0 || runs != jobs as i64 {
        bail!("inexact cycle: total {total}, skipped {skipped}, live {live}, claims {runs} for {jobs} jobs");
    }
    let peak_mb = peak_rss_kb.iter().copied().max().unwrap_or(0) as f64 / 1024.0;
    println!(
        "lifecycle jobs={jobs} workers={workers} concurrency={concurrency} wall_s={wall:.2} jobs_per_s={:.0} exact=yes claims={runs} queue_wait_p50_ms={:.0} queue_wait_p99_ms={:.0} pg_xacts_per_job={:.2} pg_active_backends_waiting_on_locks_pct={:.1} worker_peak_rss_mb={peak_mb:.1}",
        jobs as f64 / wall,
        p50 * 1000.0,
        p99 * 1000.0,
        xacts as f64 / jobs as f64,
        100.0 * lock_samples as f64 / active_samples.max(1) as f64,
    );
    eprintln!("  jobs/s per 5 s slice: {timeline:?}");
    let mut seen: Vec<_> = seen_running.into_iter().collect();
    seen.sort_by_key(|b| std::cmp::Reverse(b.1));
    for (q, n) in seen.iter().take(6) {
        eprintln!("  seen running in {n} samples: {q}");
    }
    for w in env.workers().iter_mut() {
        let _ = w.kill();
    }
    Ok(())
}

/// Idle dispatch: one idle worker, jobs pushed one at a time, each waited
/// for before the next; push to claim from the job rows.
async fn bench_dispatch(n: usize) -> anyhow::Result<()> {
    let mut env = TestEnv::new().await?;
    env.spawn_worker(&[("RUST_LOG", "warn"), ("TRAINYARD_POLL_INTERVAL_MS", "100")])?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut redis = env.redis().await?;
    let config = env.queue_config();
    for i in 0..n {
        // Let the worker go idle between jobs, at a varying phase of its poll.
        tokio::time::sleep(Duration::from_millis(150 + (i as u64 * 37) % 100)).await;
        let cycle = noop_cycle(&env, 1).await?;
        trainyard_shared::jobs::top_up(&env.pool, &mut redis, &config, 1000).await?;
        env.wait_for_cycle(cycle, Duration::from_secs(60)).await?;
    }
    let (p50, p99, max): (f64, f64, f64) = sqlx::query_as(
        "select percentile_cont(0.5) within group (order by d), percentile_cont(0.99) within group (order by d), max(d)::float8
         from (select (extract(epoch from started_at - pushed_at) * 1000)::float8 as d from ml_training_jobs) x",
    )
    .fetch_one(&env.pool)
    .await?;
    println!("dispatch jobs={n} idle_push_to_claim_ms p50={p50:.1} p99={p99:.1} max={max:.1}");
    Ok(())
}

fn vm_hwm_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
