//! The replica's presence row (`worker_presence`): written when the process
//! starts and on every heartbeat tick with its busy slots, so the ops API
//! lists idle replicas too, and stamped stopped when it is asked to stop. The
//! same tick deletes rows of replicas gone for a day.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use trainyard_shared::store::workers::{self, Presence};

use super::worker::WorkerState;

/// How often the tick also prunes long-gone replicas' rows.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Writes the row once now, then every `every` until the task is aborted.
/// A failed write is logged and retried at the next tick: presence is for
/// operators, and never holds up training.
pub fn spawn(state: Arc<WorkerState>, every: Duration) -> tokio::task::JoinHandle<()> {
    let started_at = Utc::now();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pruned_at: Option<tokio::time::Instant> = None;
        loop {
            tick.tick().await;
            if let Err(e) = beat(&state, started_at).await {
                tracing::debug!(error = %e, "writing the worker's presence failed");
            }
            if pruned_at.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                pruned_at = Some(tokio::time::Instant::now());
                match workers::prune(&state.pool, workers::PRUNE_AFTER_SECS).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(rows = n, "pruned presence rows of replicas gone for a day")
                    }
                    Err(e) => tracing::debug!(error = %e, "pruning presence rows failed"),
                }
            }
        }
    })
}

async fn beat(state: &WorkerState, started_at: DateTime<Utc>) -> Result<(), sqlx::Error> {
    let p = Presence {
        replica: &state.name,
        started_at,
        concurrency: i32::try_from(state.settings.concurrency.max(1)).unwrap_or(i32::MAX),
        busy_slots: i32::try_from(state.in_flight.load(Ordering::SeqCst)).unwrap_or(i32::MAX),
    };
    workers::upsert(&state.pool, &p).await
}

/// Stamps the row stopped, giving up after `limit` (a dead PostgreSQL
/// cannot hold the shutdown; the row then goes stale and is pruned a day
/// later). Called when the stop is asked: jobs still finishing within the
/// grace period are not counted in its busy slots any more.
pub async fn stopped(state: &WorkerState, limit: Duration) {
    match tokio::time::timeout(limit, workers::mark_stopped(&state.pool, &state.name)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "marking the worker stopped failed"),
        Err(_) => tracing::debug!("marking the worker stopped timed out"),
    }
}
