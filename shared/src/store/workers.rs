//! Worker presence (`worker_presence`): every replica, busy or idle, keeps
//! a row fresh while it runs, so the ops API sees replicas that run no job.
//! Job heartbeats (`ml_training_jobs.heartbeat_at`) stay the lease; this
//! table only says who is there.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;

/// Rows not seen for this long are deleted: a replica gone for a day is
/// history, and the table stays as small as the fleet.
pub const PRUNE_AFTER_SECS: f64 = 86_400.0;

/// What a replica reports about itself.
#[derive(Debug, Clone)]
pub struct Presence<'a> {
    pub replica: &'a str,
    pub started_at: DateTime<Utc>,
    pub concurrency: i32,
    pub busy_slots: i32,
}

/// Inserts or refreshes a replica's row (`last_seen` = now). A replica
/// name is unique per process, so a row that says stopped is never revived
/// by another process; the upsert still clears it for clarity.
pub async fn upsert(db: impl PgExecutor<'_>, p: &Presence<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into worker_presence (replica, started_at, last_seen, concurrency, busy_slots)
         values ($1, $2, now(), $3, $4)
         on conflict (replica) do update
         set last_seen = now(), concurrency = excluded.concurrency,
             busy_slots = excluded.busy_slots, stopped_at = null",
    )
    .bind(p.replica)
    .bind(p.started_at)
    .bind(p.concurrency)
    .bind(p.busy_slots)
    .execute(db)
    .await?;
    Ok(())
}

/// Marks a replica that stops cleanly: it is shown as stopped, not stale.
pub async fn mark_stopped(db: impl PgExecutor<'_>, replica: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update worker_presence set stopped_at = now(), busy_slots = 0, last_seen = now()
         where replica = $1",
    )
    .bind(replica)
    .execute(db)
    .await?;
    Ok(())
}

/// Deletes rows not seen for `older_than_secs`; returns how many.
pub async fn prune(db: impl PgExecutor<'_>, older_than_secs: f64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "delete from worker_presence where last_seen < now() - $1 * interval '1 second'",
    )
    .bind(older_than_secs)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// One replica as the ops API lists it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct PresenceRow {
    pub replica: String,
    pub started_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub concurrency: i32,
    pub busy_slots: i32,
    pub stopped_at: Option<DateTime<Utc>>,
    /// Not seen for longer than the lease, and not stopped cleanly: the
    /// process is probably gone (killed, its host lost).
    pub stale: bool,
}

/// Every replica (the table holds at most a day of them), running ones
/// first, `stale` judged against `stale_after_secs`.
pub async fn list(
    db: impl PgExecutor<'_>,
    stale_after_secs: f64,
) -> Result<Vec<PresenceRow>, sqlx::Error> {
    sqlx::query_as(
        "select replica, started_at, last_seen, concurrency, busy_slots, stopped_at,
                stopped_at is null and last_seen < now() - $1 * interval '1 second' as stale
         from worker_presence
         order by stopped_at is not null, last_seen < now() - $1 * interval '1 second',
                  replica",
    )
    .bind(stale_after_secs)
    .fetch_all(db)
    .await
}
