//! The figures of the overview and of `/cycles/{id}` that aggregate every
//! job of a cycle (counts by model type × status with medians, the median
//! job duration, the models that got worse), every live job (the queue) or
//! every job finished lately (the throughput).
//! A monthly cycle has tens of thousands of jobs, so these are computed at
//! most once per [`MAX_AGE`] and shared by the requests in between: a
//! dashboard polled by many browsers costs one aggregation per interval.
//!
//! A cycle's figures are kept while its counters (live, succeeded, failed,
//! skipped, promoted) are unchanged; a running cycle's also for at most
//! [`MAX_AGE`], since a job that starts changes its figures without
//! changing the counters. A finished cycle's figures are therefore exact,
//! and a running cycle's at most [`MAX_AGE`] old.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use trainyard_shared::store::ops::{self, CycleRow, QueueFigures, StatusGroup};
use trainyard_shared::{CycleId, CycleStatus};

/// How old shared figures of a running cycle, and the queue's, may be.
pub const MAX_AGE: Duration = Duration::from_secs(5);

/// Cycles whose figures are kept (the current one and a few opened pages).
const KEPT_CYCLES: usize = 8;

/// What the overview and the cycle page show of a cycle's jobs.
#[derive(Debug)]
pub struct CycleFigures {
    pub groups: Vec<StatusGroup>,
    pub median_job_seconds: Option<f64>,
    pub finished_jobs_measured: i64,
    pub worse_models: i64,
}

/// The database (host, port, name): one process may serve several.
fn database(pool: &PgPool) -> String {
    let o = pool.connect_options();
    format!(
        "{}:{}/{}",
        o.get_host(),
        o.get_port(),
        o.get_database().unwrap_or("")
    )
}

/// The counters that change whenever one of the cycle's jobs ends.
type Counters = (String, CycleId, bool, [i32; 6]);

fn counters(db: String, c: &CycleRow) -> Counters {
    (
        db,
        c.id,
        c.status == CycleStatus::Running,
        [
            c.total_jobs,
            c.live_jobs,
            c.successful_models,
            c.failed_models,
            c.skipped_models,
            c.promoted_models,
        ],
    )
}

struct Kept {
    key: Counters,
    at: Instant,
    figures: Arc<CycleFigures>,
}

static CYCLES: Mutex<Vec<Kept>> = Mutex::new(Vec::new());
/// The queue's figures of a database, when, with which staleness threshold.
type KeptQueue = (String, f64, Instant, QueueFigures);

static QUEUE: Mutex<Vec<KeptQueue>> = Mutex::new(Vec::new());

/// The figures of cycle `c` (as just read, with its live counters).
pub async fn cycle(pool: &PgPool, c: &CycleRow) -> Result<Arc<CycleFigures>, sqlx::Error> {
    let key = counters(database(pool), c);
    let same_cycle = |k: &Kept| k.key.0 == key.0 && k.key.1 == key.1;
    {
        let kept = CYCLES.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = kept.iter().find(|k| same_cycle(k)) {
            if k.key == key && (!key.2 || k.at.elapsed() < MAX_AGE) {
                return Ok(k.figures.clone());
            }
        }
    }
    let groups = ops::cycle_groups(pool, c.id).await?;
    let (median_job_seconds, finished_jobs_measured) = ops::median_job_seconds(pool, c.id).await?;
    let worse_models = ops::worse_models(pool, c.id).await?;
    let figures = Arc::new(CycleFigures {
        groups,
        median_job_seconds,
        finished_jobs_measured,
        worse_models,
    });
    let mut kept = CYCLES.lock().unwrap_or_else(|p| p.into_inner());
    kept.retain(|k| !same_cycle(k));
    if kept.len() >= KEPT_CYCLES {
        // The one computed longest ago makes room.
        if let Some(oldest) = (0..kept.len()).min_by_key(|&i| kept[i].at) {
            kept.swap_remove(oldest);
        }
    }
    kept.push(Kept {
        key,
        at: Instant::now(),
        figures: figures.clone(),
    });
    Ok(figures)
}

/// The queue's figures, at most [`MAX_AGE`] old.
pub async fn queue(pool: &PgPool, stale_after_secs: f64) -> Result<QueueFigures, sqlx::Error> {
    let db = database(pool);
    {
        let kept = QUEUE.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = kept
            .iter()
            .find(|k| k.0 == db && k.1 == stale_after_secs && k.2.elapsed() < MAX_AGE);
        if let Some(k) = fresh {
            return Ok(k.3.clone());
        }
    }
    let q = ops::queue_figures(pool, stale_after_secs).await?;
    let mut kept = QUEUE.lock().unwrap_or_else(|p| p.into_inner());
    kept.retain(|k| k.2.elapsed() < MAX_AGE && !(k.0 == db && k.1 == stale_after_secs));
    kept.push((db, stale_after_secs, Instant::now(), q.clone()));
    Ok(q)
}

/// Jobs finished per bucket since `since` (a bucket start, count).
pub type Throughput = Vec<(DateTime<Utc>, i64)>;

/// The throughput of a database, when, with which bucket width.
type KeptThroughput = (String, i64, Instant, Arc<Throughput>);

static THROUGHPUT: Mutex<Vec<KeptThroughput>> = Mutex::new(Vec::new());

/// [`ops::throughput`], at most [`MAX_AGE`] old (`since` moves with the
/// clock; the buckets of a few seconds ago are as good).
pub async fn throughput(
    pool: &PgPool,
    since: DateTime<Utc>,
    bucket_secs: i64,
) -> Result<Arc<Throughput>, sqlx::Error> {
    let db = database(pool);
    {
        let kept = THROUGHPUT.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = kept
            .iter()
            .find(|k| k.0 == db && k.1 == bucket_secs && k.2.elapsed() < MAX_AGE);
        if let Some(k) = fresh {
            return Ok(k.3.clone());
        }
    }
    let t = Arc::new(ops::throughput(pool, since, bucket_secs).await?);
    let mut kept = THROUGHPUT.lock().unwrap_or_else(|p| p.into_inner());
    kept.retain(|k| k.2.elapsed() < MAX_AGE && !(k.0 == db && k.1 == bucket_secs));
    kept.push((db, bucket_secs, Instant::now(), t.clone()));
    Ok(t)
}
