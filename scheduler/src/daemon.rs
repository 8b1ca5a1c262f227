//! `trainyard-scheduler run`: creates the monthly cycle on each tick (and a
//! missed one at start), and sweeps: gives queued jobs whose delivery is not
//! live in Redis a fresh one, deletes Redis entries that can never be
//! delivered, releases jobs of dead workers, times out overdue cycles and tops
//! up the Redis window. Any number of replicas may run.

use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use sqlx::PgPool;
use trainyard_shared::cycles::{self, CreateOutcome, NewCycle};
use trainyard_shared::{jobs, queue, CycleKind};

use crate::schedule::Schedule;
use crate::settings::{CycleSettings, SchedulerSettings};

/// Creates the monthly cycle of `tick` unless a replica already did. Returns
/// the outcome; only a `Created` caller's jobs get pushed (by the top-up).
/// A pair whose ad-hoc job is still live when the tick comes is recorded in
/// the monthly cycle as `skipped`, naming that job (counted in `skipped`
/// and `already_live`): the live job trains it.
pub async fn create_monthly(
    pool: &PgPool,
    cycle: &CycleSettings,
    tick: chrono::DateTime<Utc>,
    who: &str,
) -> Result<CreateOutcome, cycles::CycleError> {
    let new = NewCycle {
        key: cycles::monthly_key(tick),
        kind: CycleKind::Monthly,
        cycle_date: tick,
        deadline: cycle.deadline(),
        requested_by: who.to_string(),
        org: None,
        model_type: None,
        pairs: Vec::new(),
        min_days: cycle.min_days,
        max_attempts: cycle.max_attempts,
    };
    cycles::create_cycle(pool, &new).await
}

pub async fn run(
    settings: SchedulerSettings,
    schedule: Schedule,
    catch_up_max_age: chrono::Duration,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let c = &settings.connection;
    // Each error names what failed and why; no context repeats it.
    let pool = trainyard_shared::db::connect(&c.database_url, c.db_max_connections).await?;
    trainyard_shared::db::migrate(&pool).await?;
    let mut redis = queue::connect(&c.redis_url, c.redis_timeout())
        .await
        .with_context(|| {
            format!(
                "REDIS_URL {}",
                trainyard_shared::config::redact_url(&c.redis_url)
            )
        })?;
    let qcfg = queue::queue_config(&c.queue);
    let me = format!("scheduler-{}", std::process::id());

    if let Some(tick) = schedule.last_tick(Utc::now(), catch_up_max_age) {
        match create_monthly(&pool, &settings.cycle, tick, &me).await {
            Ok(CreateOutcome::Created {
                cycle_id, total, ..
            }) => {
                tracing::info!(cycle.id = %cycle_id, tick = %tick, total, "caught up a missed monthly cycle")
            }
            Ok(CreateOutcome::AlreadyExists { .. }) => {
                tracing::info!(tick = %tick, "the latest monthly cycle already exists")
            }
            Ok(CreateOutcome::AlreadyLive { .. }) => {
                tracing::error!(tick = %tick, "monthly cycle answered with live jobs only")
            }
            Err(e) => tracing::error!(error = %e, "catching up the monthly cycle failed"),
        }
    }

    let mut sweeper = jobs::Sweeper::new(settings.sweep_settings());
    let mut next_tick = schedule.next_after(Utc::now());
    tracing::info!(next_tick = ?next_tick, queue.name = %c.queue, "scheduler started");
    tokio::pin!(shutdown);
    loop {
        let now = Utc::now();
        if let Some(t) = next_tick {
            if t <= now {
                match create_monthly(&pool, &settings.cycle, t, &me).await {
                    Ok(CreateOutcome::Created {
                        cycle_id,
                        total,
                        queued,
                        skipped,
                        already_live,
                    }) => tracing::info!(
                        cycle.id = %cycle_id, total, queued, skipped, already_live,
                        "monthly cycle created"),
                    Ok(CreateOutcome::AlreadyExists { cycle_id }) => tracing::info!(
                        cycle.id = %cycle_id, "monthly cycle already created by another replica"),
                    Ok(CreateOutcome::AlreadyLive { .. }) => {
                        tracing::error!("monthly cycle answered with live jobs only")
                    }
                    Err(e) => tracing::error!(error = %e, "creating the monthly cycle failed"),
                }
                next_tick = schedule.next_after(t);
            }
        }
        sweeper.pass(&pool, &mut redis, &qcfg).await;
        let mut wait = Duration::from_secs(settings.sweep_secs.max(1));
        if let Some(t) = next_tick {
            let until = (t - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            wait = wait.min(until.max(Duration::from_millis(10)));
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    tracing::info!("scheduler stopped");
    Ok(())
}
