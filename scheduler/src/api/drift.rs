//! PostgreSQL/Redis drift: PostgreSQL is the truth about which jobs are
//! queued, Redis carries their deliveries. Every sweeper pass re-pushes a
//! queued job whose delivery Redis lost, and a worker drops a delivery of a
//! job that ended when it fetches it, so drift that lasts means no sweeper
//! or worker runs (no worker and no scheduler daemon alive) or repairs keep
//! failing. Measured
//! read-only: Redis first (one atomic script, [`queue::deliveries`]), then
//! PostgreSQL, so a push made in between can only make a delivery look
//! known, never missing. (A push is sent before its transaction commits,
//! so for a few milliseconds a delivery can look unknown to PostgreSQL;
//! the alert waits ten minutes, and the overview shows counts, not alarms.)

use std::collections::HashSet;
use std::time::Duration;

use apalis_redis::ConnectionManager;
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::PgExecutor;
use trainyard_shared::queue;
use trainyard_shared::store::ops;
use trainyard_shared::JobStatus;

/// A delivery pushed less than this long ago is not judged yet (the same
/// grace the sweeper gives it).
pub const GRACE_SECS: f64 = 10.0;

/// At most this many job rows are compared; past it the count of
/// deliveries unknown to PostgreSQL cannot be judged and is left out.
pub const MAX_ROWS: i64 = 20_000;

/// How long Redis may take to answer before drift is reported unmeasured.
const REDIS_LIMIT: Duration = Duration::from_secs(2);

/// What the comparison found.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Drift {
    /// Queued and pushed (longer than the grace ago) in PostgreSQL, with no
    /// delivery waiting in Redis or held by a worker: nobody will run them
    /// until the sweeper pushes them again.
    pub missing_in_redis: usize,
    /// Deliveries waiting in Redis that are not the current delivery of any
    /// queued or running job: a worker will fetch and drop them. `None`
    /// when more than [`MAX_ROWS`] jobs were live (not judged).
    pub unknown_to_postgres: Option<usize>,
    /// Queue entries whose payload is gone.
    pub dangling: usize,
    /// Up to 10 of the queued jobs missing from Redis.
    pub missing_sample: Vec<String>,
}

impl Drift {
    pub fn total(&self) -> usize {
        self.missing_in_redis + self.unknown_to_postgres.unwrap_or(0) + self.dangling
    }
}

/// Why drift could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    #[error("Redis did not answer within {} s", REDIS_LIMIT.as_secs())]
    RedisSlow,
    #[error("Redis: {0}")]
    Redis(#[from] queue::QueueError),
    #[error("PostgreSQL: {0}")]
    Db(#[from] sqlx::Error),
}

/// Compares what Redis holds with what PostgreSQL says should be there.
pub async fn measure(
    db: impl PgExecutor<'_>,
    redis: &mut ConnectionManager,
    config: &apalis_redis::Config,
) -> Result<Drift, DriftError> {
    let held = tokio::time::timeout(REDIS_LIMIT, queue::deliveries(redis, config))
        .await
        .map_err(|_| DriftError::RedisSlow)??;
    let rows = ops::deliveries_in_redis(db, GRACE_SECS, MAX_ROWS + 1).await?;
    let complete = rows.len() as i64 <= MAX_ROWS;
    let mut drift = Drift {
        dangling: held.dangling,
        ..Drift::default()
    };
    let mut known = HashSet::with_capacity(rows.len());
    for r in &rows {
        known.insert(queue::task_id(r.id, r.push_seq).to_string());
        if r.status == JobStatus::Queued && r.settled && !held.holds(r.id, r.push_seq) {
            drift.missing_in_redis += 1;
            if drift.missing_sample.len() < 10 {
                drift.missing_sample.push(r.id.to_string());
            }
        }
    }
    drift.unknown_to_postgres = complete.then(|| {
        held.waiting
            .iter()
            .filter(|id| !known.contains(*id))
            .count()
    });
    Ok(drift)
}

/// The overview's attention item for drift: `None` when PostgreSQL and
/// Redis agree, a warning naming what differs otherwise, and a warning
/// that it could not be measured when Redis or PostgreSQL did not answer.
pub async fn attention(
    pool: &sqlx::PgPool,
    mut redis: ConnectionManager,
    config: &apalis_redis::Config,
) -> Option<Value> {
    match measure(pool, &mut redis, config).await {
        Ok(d) if d.total() == 0 => None,
        Ok(d) => Some(json!({
            "kind": "queue_drift",
            "severity": "warning",
            "detail": format!(
                "PostgreSQL and Redis disagree: {} queued jobs have no delivery in Redis, {} \
                 deliveries in Redis belong to no queued or running job, {} queue entries lost \
                 their payload (every sweeper pass, of a worker or of the scheduler daemon, \
                 re-pushes missing deliveries and removes payload-less entries, and a worker \
                 drops a delivery of an ended job when it fetches it: drift that lasts means \
                 none of them runs)",
                d.missing_in_redis,
                d.unknown_to_postgres.map_or("(not judged)".to_string(), |n| n.to_string()),
                d.dangling
            ),
            "count": d.total(),
            "drift": d,
        })),
        Err(e) => {
            tracing::warn!(error = %e, "measuring PostgreSQL/Redis drift failed");
            Some(json!({
                "kind": "queue_drift",
                "severity": "warning",
                "detail": format!("PostgreSQL/Redis drift could not be measured: {e}"),
                "count": Value::Null,
            }))
        }
    }
}
