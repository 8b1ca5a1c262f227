//! The chaos run: three worker processes work through a cycle of 300 jobs
//! while one of them, picked at random, is killed (SIGKILL) every few
//! seconds and restarted. Every job must end in exactly one terminal state,
//! no model may be written twice, and the cycle summary must be exact.
//!
//! Long for CI's default run, so ignored there; run it with
//!
//! ```text
//! deploy/local/test.sh -p trainyard-tests --test integration chaos -- --ignored --nocapture
//! ```
//!
//! Knobs: `CHAOS_ORGS` (100: jobs = 3 × orgs), `CHAOS_KILL_EVERY_MS` (3000),
//! `CHAOS_LIMIT_SECS` (900).

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rand::{Rng, SeedableRng};
use trainyard_tests::{enqueue, insert_org, signal, TestEnv};

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "chaos run: minutes long; see the module docs for the command"]
async fn chaos_three_workers_killed_at_random_lose_and_double_nothing() -> anyhow::Result<()> {
    let orgs = knob("CHAOS_ORGS", 100);
    let kill_every = Duration::from_millis(knob("CHAOS_KILL_EVERY_MS", 3000));
    let limit = Duration::from_secs(knob("CHAOS_LIMIT_SECS", 900));
    let mut env = TestEnv::new().await?;
    for i in 0..orgs {
        insert_org(&env.pool, &format!("chaos-{i}"), 200, 1000 + i).await?;
    }
    let small = [("TRAINYARD_LSTM_EPOCHS", "1"), ("TRAINYARD_AE_EPOCHS", "2")];
    for _ in 0..3 {
        env.spawn_worker(&small)?;
    }
    let started = Instant::now();
    let cycle = enqueue(&env, None, None).await?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut kills = 0u32;
    let mut next_kill = Instant::now() + kill_every;
    let status = loop {
        let status: String =
            sqlx::query_scalar("select status from ml_training_cycles where id = $1")
                .bind(cycle)
                .fetch_one(&env.pool)
                .await?;
        if status != "running" {
            break status;
        }
        anyhow::ensure!(
            started.elapsed() < limit,
            "cycle still running after {limit:?} ({kills} kills)"
        );
        if Instant::now() >= next_kill {
            // Kill one live worker at random and start a replacement.
            let live: Vec<usize> = env
                .workers()
                .iter_mut()
                .enumerate()
                .filter_map(|(i, c)| matches!(c.try_wait(), Ok(None)).then_some(i))
                .collect();
            if !live.is_empty() {
                let victim = live[rng.random_range(0..live.len())];
                let pid = env.workers()[victim].id();
                signal(pid, Signal::SIGKILL)?;
                let _ = env.workers()[victim].wait();
                kills += 1;
            }
            env.spawn_worker(&small)?;
            next_kill = Instant::now() + kill_every;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let wall = started.elapsed();

    let (total, succeeded, failed, skipped, non_terminal): (i64, i64, i64, i64, i64) =
        sqlx::query_as(
            "select count(*),
                    count(*) filter (where status = 'succeeded'),
                    count(*) filter (where status = 'failed'),
                    count(*) filter (where status = 'skipped'),
                    count(*) filter (where status not in ('succeeded', 'failed', 'skipped'))
             from ml_training_jobs where cycle_id = $1",
        )
        .bind(cycle)
        .fetch_one(&env.pool)
        .await?;
    let duplicates: i64 = sqlx::query_scalar(
        "select coalesce(sum(n - 1), 0)::bigint from (
             select count(*) as n from ml_models where cycle_id = $1 group by job_id) m",
    )
    .bind(cycle)
    .fetch_one(&env.pool)
    .await?;
    let missing_models: i64 = sqlx::query_scalar(
        "select count(*) from ml_training_jobs j where j.cycle_id = $1 and j.status = 'succeeded'
           and not exists (select 1 from ml_models m where m.job_id = j.id)",
    )
    .bind(cycle)
    .fetch_one(&env.pool)
    .await?;
    let (c_total, c_ok, c_failed, c_skipped): (i32, i32, i32, i32) = sqlx::query_as(
        "select total_jobs, successful_models, failed_models, skipped_models
         from ml_training_cycles where id = $1",
    )
    .bind(cycle)
    .fetch_one(&env.pool)
    .await?;
    let lost = non_terminal + missing_models;
    println!(
        "chaos: jobs_total={total} succeeded={succeeded} failed={failed} skipped={skipped} \
         duplicates={duplicates} lost={lost} kills={kills} wall_s={:.1} status={status}",
        wall.as_secs_f64()
    );
    assert_eq!(total, 3 * orgs as i64);
    assert_eq!(duplicates, 0);
    assert_eq!(lost, 0);
    assert_eq!(
        (
            c_total as i64,
            c_ok as i64,
            c_failed as i64,
            c_skipped as i64
        ),
        (total, succeeded, failed, skipped),
        "the cycle summary matches the job rows"
    );
    assert!(kills > 0, "the run killed workers");
    Ok(())
}
