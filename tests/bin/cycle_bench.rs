//! Benchmarks of the distributed cycle on the local stack. Prints figures.
//!
//!   cycle-bench enqueue [ORGS]          time `trainyard-scheduler enqueue --all` for ORGS orgs (default 10000)
//!   cycle-bench cycle [ORGS] [WORKERS]  run a full cycle of ORGS orgs × 3 model types (default 50, 2 workers)
//!
//! Uses DATABASE_URL / REDIS_URL like the tests (a fresh database and queue
//! prefix per run). Epochs follow TRAINYARD_LSTM_EPOCHS / TRAINYARD_AE_EPOCHS
//! when set, else the seed model's defaults.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use trainyard_tests::{binary, enqueue, TestEnv};

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
        _ => bail!("usage: cycle-bench enqueue [ORGS] | cycle [ORGS] [WORKERS]"),
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

fn vm_hwm_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
