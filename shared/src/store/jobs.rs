//! Job rows: claiming one for a delivery, keeping its lease alive, ending it,
//! handing it back, and the sweeper that keeps PostgreSQL and Redis in step.
//! Every state change is a guarded update on (status, attempts), so a
//! redelivered or duplicated message can never move a job twice.

use std::time::Duration;

use apalis_redis::{Config as RedisQueueConfig, ConnectionManager};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool};

use crate::cycles::{finalize_if_done, roll_up, Ended};
use crate::domain::{CycleId, JobId, JobStatus, ModelType, OrgId};
use crate::queue::{self, QueueError, TrainJob};

/// Errors of job bookkeeping.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("PostgreSQL answered too slowly while {0}")]
    Slow(&'static str),
}

/// How long the lease sweeper's database steps may take before the pass is
/// treated as an outage.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// A job this delivery now owns.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub job_id: JobId,
    pub cycle_id: CycleId,
    pub org_id: OrgId,
    pub model_type: ModelType,
    /// The attempt number this delivery runs as (1-based); guards every later update.
    pub attempt: i32,
    pub max_attempts: i32,
    /// Whether the organization still existed when the job was claimed (it
    /// may be deleted mid-cycle; the result transaction checks again).
    pub org_exists: bool,
}

/// What happened when a delivery tried to claim its job.
#[derive(Debug, Clone)]
pub enum Claim {
    Claimed(ClaimedJob),
    /// Already succeeded, failed or skipped: acknowledge and do nothing.
    AlreadyTerminal(JobStatus),
    /// Another live worker holds it (a duplicate delivery): acknowledge.
    HeldElsewhere(String),
    /// It had used up its attempts; this call marked it failed.
    GaveUp {
        attempts: i32,
    },
    /// No such job row (e.g. a malformed or foreign payload).
    Unknown,
}

/// Claims a job for `worker`. A queued job, or a running one whose lease
/// expired (its worker died), is taken with `attempts + 1`; past the cap it is
/// failed instead, with the reason, and the cycle rolled up.
///
/// The claim commits without waiting for its WAL flush (`synchronous_commit`
/// off for this one transaction): it saves a disk flush per job, and losing
/// it costs no outcome. Only a crash of the PostgreSQL server within the WAL
/// writer's delay (200 ms by default) can forget a claim; the job is then
/// `queued` again with no delivery, the sweeper re-delivers it, and the
/// attempt guard on every later write (`status = 'running' and attempts =
/// N`) lets exactly one of the two runs record the outcome. Every write that
/// ends a job commits synchronously.
#[tracing::instrument(skip(pool), fields(job.id = %job_id))]
pub async fn claim(
    pool: &PgPool,
    job_id: JobId,
    worker: &str,
    lease_timeout: Duration,
) -> Result<Claim, JobError> {
    #[derive(sqlx::FromRow)]
    struct Claimed {
        cycle_id: CycleId,
        organization_id: OrgId,
        model_type: ModelType,
        attempts: i32,
        max_attempts: i32,
        org_exists: bool,
    }
    let lease = lease_timeout.as_secs_f64();
    let row = sqlx::query_as::<_, Claimed>(
        "with relaxed as (select set_config('synchronous_commit', 'off', true))
         update ml_training_jobs
         set status = 'running', attempts = attempts + 1, worker = $2,
             heartbeat_at = now(), started_at = coalesce(started_at, now())
         from relaxed
         where id = $1
           and (status = 'queued'
                or (status = 'running' and heartbeat_at < now() - $3 * interval '1 second'))
           and attempts < max_attempts
         returning cycle_id, organization_id, model_type, attempts, max_attempts,
                   exists(select 1 from organizations o where o.id = organization_id) as org_exists",
    )
    .bind(job_id)
    .bind(worker)
    .bind(lease)
    .fetch_optional(pool)
    .await?;
    if let Some(r) = row {
        return Ok(Claim::Claimed(ClaimedJob {
            job_id,
            cycle_id: r.cycle_id,
            org_id: r.organization_id,
            model_type: r.model_type,
            attempt: r.attempts,
            max_attempts: r.max_attempts,
            org_exists: r.org_exists,
        }));
    }

    #[derive(sqlx::FromRow)]
    struct Unclaimable {
        status: JobStatus,
        attempts: i32,
        worker: Option<String>,
        fresh: Option<bool>,
        cycle_id: CycleId,
        reason: Option<String>,
    }
    let Some(r) = sqlx::query_as::<_, Unclaimable>(
        "select status, attempts, worker,
                heartbeat_at >= now() - $2 * interval '1 second' as fresh, cycle_id, reason
         from ml_training_jobs where id = $1",
    )
    .bind(job_id)
    .bind(lease)
    .fetch_optional(pool)
    .await?
    else {
        return Ok(Claim::Unknown);
    };
    let (status, attempts) = (r.status, r.attempts);
    match status {
        s if s.is_terminal() => Ok(Claim::AlreadyTerminal(s)),
        JobStatus::Running if r.fresh == Some(true) => {
            Ok(Claim::HeldElsewhere(r.worker.unwrap_or_default()))
        }
        _ => {
            // Live but out of attempts: every earlier attempt ended without a
            // result (its worker died or was killed), so stop here.
            let cycle_id = r.cycle_id;
            let last = r.reason;
            let reason = format!(
                "gave up after {attempts} attempts: {}",
                last.unwrap_or_else(|| "each attempt ended without a result \
                     (the worker process died or was killed while training)"
                    .to_string())
            );
            let mut tx = pool.begin().await?;
            let done = sqlx::query(
                "update ml_training_jobs set status = 'failed', reason = $3, finished_at = now()
                 where id = $1 and status = $2 and attempts = $4",
            )
            .bind(job_id)
            .bind(status)
            .bind(&reason)
            .bind(attempts)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if done == 1 {
                roll_up(&mut tx, cycle_id, job_id, Ended::Failed).await?;
            }
            tx.commit().await?;
            tracing::warn!(job.id = %job_id, attempts, "job failed: attempts exhausted");
            Ok(Claim::GaveUp { attempts })
        }
    }
}

/// Renews the lease of a running attempt. `false` means the attempt no longer
/// owns the job (it was taken over or ended) and should stop.
pub async fn heartbeat(pool: &PgPool, job: &ClaimedJob) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "update ml_training_jobs set heartbeat_at = now()
         where id = $1 and status = 'running' and attempts = $2",
    )
    .bind(job.job_id)
    .bind(job.attempt)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Ends an attempt as `failed` or `skipped` with a reason and counts it in
/// the cycle's shard, in one statement (one round trip, one commit: most jobs
/// of a large cycle end here, too little data being the common outcome).
/// When the shard's live count reaches zero the cycle's finalization check
/// follows in a transaction of its own. Returns false if the attempt no
/// longer owned the job.
pub async fn finish_without_model(
    pool: &PgPool,
    job: &ClaimedJob,
    status: JobStatus,
    reason: &str,
) -> Result<bool, sqlx::Error> {
    debug_assert!(matches!(status, JobStatus::Failed | JobStatus::Skipped));
    let (ended, shard_live): (bool, Option<i32>) = sqlx::query_as(
        "with ended as (
             update ml_training_jobs
             set status = $3, reason = $4, finished_at = now(), heartbeat_at = null
             where id = $1 and status = 'running' and attempts = $2
             returning cycle_id),
         counted as (
             update ml_cycle_shards s
             set failed_models = failed_models + ($3 = 'failed')::int4,
                 skipped_models = skipped_models + ($3 = 'skipped')::int4,
                 live_jobs = live_jobs - 1
             from ended
             where s.cycle_id = ended.cycle_id and s.shard = abs(hashtext($1::text)) % 16
             returning s.live_jobs)
         select exists (select 1 from ended), (select live_jobs from counted)",
    )
    .bind(job.job_id)
    .bind(job.attempt)
    .bind(status)
    .bind(reason)
    .fetch_one(pool)
    .await?;
    if ended && shard_live.is_none_or(|n| n <= 0) {
        let mut tx = pool.begin().await?;
        finalize_if_done(&mut tx, job.cycle_id, shard_live).await?;
        tx.commit().await?;
    }
    Ok(ended)
}

/// The first write of a successful job's result transaction: the job is
/// `succeeded` with its new model if this attempt still owns it (`false`:
/// taken over or ended, write nothing else). The row stays locked until the
/// caller's transaction ends.
pub async fn mark_succeeded(
    db: impl PgExecutor<'_>,
    job: &ClaimedJob,
    model_id: uuid::Uuid,
    algorithm: &str,
    accuracy: f64,
    train_seconds: f64,
) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "update ml_training_jobs
         set status = 'succeeded', finished_at = now(), heartbeat_at = null, model_id = $3,
             champion_algorithm = $4, accuracy = $5, train_seconds = $6
         where id = $1 and status = 'running' and attempts = $2",
    )
    .bind(job.job_id)
    .bind(job.attempt)
    .bind(model_id)
    .bind(algorithm)
    .bind(accuracy)
    .bind(train_seconds)
    .execute(db)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Turns a job just marked succeeded (same transaction) into `failed` with
/// `reason`, clearing what the success set: its organization is gone.
pub async fn unmark_succeeded(
    db: impl PgExecutor<'_>,
    job_id: JobId,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update ml_training_jobs
         set status = 'failed', reason = $2, model_id = null, champion_algorithm = null,
             accuracy = null, promoted = false
         where id = $1",
    )
    .bind(job_id)
    .bind(reason)
    .execute(db)
    .await
    .map(|_| ())
}

/// Records the promotion decision on the job row.
pub async fn set_promotion(
    db: impl PgExecutor<'_>,
    job_id: JobId,
    promoted: bool,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("update ml_training_jobs set promoted = $2, reason = $3 where id = $1")
        .bind(job_id)
        .bind(promoted)
        .bind(reason)
        .execute(db)
        .await
        .map(|_| ())
}

/// Gives a running attempt back (graceful shutdown): the job returns to
/// `queued` without using up an attempt and gets a fresh delivery.
pub async fn hand_back(
    pool: &PgPool,
    conn: &mut ConnectionManager,
    config: &RedisQueueConfig,
    job: &ClaimedJob,
) -> Result<bool, JobError> {
    let mut tx = pool.begin().await?;
    let seq: Option<i32> = sqlx::query_scalar(
        "update ml_training_jobs
         set status = 'queued', attempts = attempts - 1, push_seq = push_seq + 1,
             pushed_at = now(), worker = null, heartbeat_at = null
         where id = $1 and status = 'running' and attempts = $2
         returning push_seq",
    )
    .bind(job.job_id)
    .bind(job.attempt)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(seq) = seq else {
        return Ok(false);
    };
    let payload = TrainJob {
        job_id: job.job_id,
        cycle_id: job.cycle_id,
        org_id: job.org_id,
        model_type: job.model_type,
    };
    queue::push_jobs(conn, config, &[(payload, seq)]).await?;
    tx.commit().await?;
    Ok(true)
}

/// Keeps at most `window` jobs in Redis (queued-and-pushed or running), pushing
/// the oldest unpushed ones. PostgreSQL holds the backlog, so a cycle of any
/// size never deepens the Redis queue past the window. Concurrent callers are
/// serialized by an advisory lock; a caller that finds it taken returns 0.
pub async fn top_up(
    pool: &PgPool,
    conn: &mut ConnectionManager,
    config: &RedisQueueConfig,
    window: i64,
) -> Result<usize, JobError> {
    let mut tx = pool.begin().await?;
    let locked: bool =
        sqlx::query_scalar("select pg_try_advisory_xact_lock(hashtext('trainyard:top_up'))")
            .fetch_one(&mut *tx)
            .await?;
    if !locked {
        return Ok(0);
    }
    // Counted at most `window` deep, walking the `in_redis` index in order:
    // an index scan marks the entries of jobs that have since left Redis
    // (each job leaves two: pushed, then running) dead as it passes them, so
    // the next count skips them. A bitmap scan, which the planner prefers
    // once statistics see a few thousand such rows, never does: it visited
    // every entry left since the last vacuum, and the refill that runs every
    // few dozen jobs grew slower the further a cycle went (10 ms at 30,000
    // jobs, ten times its cost at the start).
    let live: i64 = sqlx::query_scalar(
        "select count(*) from (
             select id from ml_training_jobs
             where status = 'running' or (status = 'queued' and pushed_at is not null)
             order by id limit $1) in_redis",
    )
    .bind(window)
    .fetch_one(&mut *tx)
    .await?;
    let room = window - live;
    if room <= 0 {
        return Ok(0);
    }
    let rows = sqlx::query_as::<_, DeliveryRow>(
        "update ml_training_jobs set pushed_at = now()
         where id in (select id from ml_training_jobs
                      where status = 'queued' and pushed_at is null
                      order by created_at, id limit $1
                      for update skip locked)
         returning id, cycle_id, organization_id, model_type, push_seq",
    )
    .bind(room)
    .fetch_all(&mut *tx)
    .await?;
    let jobs: Vec<(TrainJob, i32)> = rows.iter().map(DeliveryRow::delivery).collect();
    if !jobs.is_empty() {
        queue::push_jobs(conn, config, &jobs).await?;
    }
    tx.commit().await?;
    if !jobs.is_empty() {
        tracing::debug!(pushed = jobs.len(), live, window, "queue topped up");
    }
    Ok(jobs.len())
}

/// A job row as it goes to Redis: the payload and its push sequence.
#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: JobId,
    cycle_id: CycleId,
    organization_id: OrgId,
    model_type: ModelType,
    push_seq: i32,
}

impl DeliveryRow {
    fn delivery(&self) -> (TrainJob, i32) {
        (
            TrainJob {
                job_id: self.id,
                cycle_id: self.cycle_id,
                org_id: self.organization_id,
                model_type: self.model_type,
            },
            self.push_seq,
        )
    }
}

/// Sweeper timing.
#[derive(Debug, Clone)]
pub struct SweepSettings {
    pub window: i64,
    /// A running job whose heartbeat is older than this lost its worker.
    pub lease_timeout: Duration,
    /// A pushed delivery younger than this is not checked against Redis yet.
    pub push_grace: Duration,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct SweepReport {
    /// Queued jobs given a fresh delivery (theirs was lost or given up).
    pub restored: usize,
    /// Payloads and queue entries in Redis that could never be delivered, removed.
    pub garbage: usize,
    pub released: usize,
    pub timed_out_cycles: usize,
    pub pushed: usize,
    /// Running cycles whose counters disagreed with their job rows, repaired.
    pub repaired_cycles: usize,
}

/// One pass of the sweeper:
/// 1. running jobs whose lease expired go back to `queued` with a fresh
///    delivery (or fail, when out of attempts, via the next claim);
/// 2. queued jobs whose delivery is not live in Redis (lost, or given up by
///    a worker) get a fresh one, and Redis entries that can never be
///    delivered are deleted;
/// 3. overdue cycles are timed out;
/// 4. the Redis window is topped up.
///
/// Step 1 runs only when `release_leases` is set: see [`Sweeper`] for when a
/// missing heartbeat may be trusted.
#[tracing::instrument(skip_all)]
pub async fn sweep(
    pool: &PgPool,
    conn: &mut ConnectionManager,
    config: &RedisQueueConfig,
    settings: &SweepSettings,
    release_leases: bool,
) -> Result<SweepReport, JobError> {
    let mut report = SweepReport::default();

    // 1. Expired leases. The job keeps its attempt count: the next claim
    // decides whether another attempt is allowed.
    if release_leases {
        // Bounded: a release that waited through an outage would judge
        // heartbeats nobody could write. A timeout fails the pass, and the
        // sweeper then waits a whole lease period again.
        report.released = tokio::time::timeout(
            RELEASE_TIMEOUT,
            release_expired(pool, conn, config, settings),
        )
        .await
        .map_err(|_| JobError::Slow("releasing expired leases"))??;
    }

    // 2. Queued jobs whose delivery is not on its way to a worker: Redis
    // lost it, or a worker gave it up (PostgreSQL was unreachable when it
    // tried to claim the job) and acknowledged it. Whatever Redis holds about
    // the old delivery, the job gets a fresh one; the same pass deletes
    // payloads nothing refers to any more, so Redis stays bounded.
    let pushed = sqlx::query_as::<_, DeliveryRow>(
        "select id, cycle_id, organization_id, model_type, push_seq from ml_training_jobs
         where status = 'queued' and pushed_at is not null
           and pushed_at < now() - $1 * interval '1 second'
         order by pushed_at limit 5000",
    )
    .bind(settings.push_grace.as_secs_f64())
    .fetch_all(pool)
    .await?;
    let pushed: Vec<_> = pushed.iter().map(DeliveryRow::delivery).collect();
    let asked: Vec<(JobId, i32)> = pushed.iter().map(|(j, seq)| (j.job_id, *seq)).collect();
    let seen = queue::reconcile(conn, config, &asked).await?;
    report.garbage = seen.garbage + seen.dangling;
    let stale: Vec<uuid::Uuid> = pushed
        .iter()
        .zip(&seen.live)
        .filter(|(_, live)| !**live)
        .map(|((job, _), _)| job.job_id.0)
        .collect();
    if !stale.is_empty() {
        let rows = sqlx::query_as::<_, DeliveryRow>(
            "update ml_training_jobs set push_seq = push_seq + 1, pushed_at = now()
             where id = any($1) and status = 'queued' and pushed_at is not null
             returning id, cycle_id, organization_id, model_type, push_seq",
        )
        .bind(&stale)
        .fetch_all(pool)
        .await?;
        let again: Vec<_> = rows.iter().map(DeliveryRow::delivery).collect();
        queue::push_jobs(conn, config, &again).await?;
        report.restored = again.len();
        if !again.is_empty() {
            tracing::warn!(
                count = again.len(),
                "re-pushed queued jobs whose delivery was no longer on its way to a worker"
            );
        }
    }

    report.timed_out_cycles = crate::cycles::time_out_overdue(pool).await?;
    report.pushed = top_up(pool, conn, config, settings.window).await?;
    Ok(report)
}

/// Leaves a note in Redis that a stopping worker could not hand `job` back
/// because PostgreSQL did not answer: when the lease sweeper releases the
/// job, it gives that attempt back. Kept a day.
pub async fn note_hand_back(
    conn: &mut ConnectionManager,
    config: &RedisQueueConfig,
    job: &ClaimedJob,
) -> Result<(), QueueError> {
    redis::cmd("SET")
        .arg(queue::hand_back_key(config, job.job_id))
        .arg(job.attempt)
        .arg("EX")
        .arg(86_400)
        .query_async::<()>(conn)
        .await?;
    Ok(())
}

/// Running jobs whose heartbeat is older than the lease go back to `queued`
/// with a fresh delivery. The attempt stays spent (the next claim decides
/// whether another is allowed), unless the worker noted that it stopped
/// during a PostgreSQL outage and could not hand the job back. Returns how
/// many were released.
async fn release_expired(
    pool: &PgPool,
    conn: &mut ConnectionManager,
    config: &RedisQueueConfig,
    settings: &SweepSettings,
) -> Result<usize, JobError> {
    let lease = settings.lease_timeout.as_secs_f64();
    let expired: Vec<(uuid::Uuid, i32)> = sqlx::query_as(
        "select id, attempts from ml_training_jobs
         where status = 'running' and heartbeat_at < now() - $1 * interval '1 second'
           -- after a database restart, give workers a lease period to heartbeat again
           and pg_postmaster_start_time() < now() - $1 * interval '1 second'
         limit 5000",
    )
    .bind(lease)
    .fetch_all(pool)
    .await?;
    if expired.is_empty() {
        return Ok(0);
    }
    let mut pipe = redis::pipe();
    for (id, _) in &expired {
        pipe.cmd("GET")
            .arg(queue::hand_back_key(config, JobId(*id)));
    }
    let notes: Vec<Option<i32>> = pipe.query_async(conn).await.map_err(QueueError::Command)?;
    let handed: Vec<uuid::Uuid> = expired
        .iter()
        .zip(&notes)
        .filter(|((_, attempts), note)| **note == Some(*attempts))
        .map(|((id, _), _)| *id)
        .collect();
    let ids: Vec<uuid::Uuid> = expired.iter().map(|(id, _)| *id).collect();
    let released = sqlx::query_as::<_, DeliveryRow>(
        "update ml_training_jobs
         set status = 'queued', attempts = attempts - (id = any($3))::int,
             push_seq = push_seq + 1, pushed_at = now(), worker = null, heartbeat_at = null
         where id = any($1) and status = 'running'
           and heartbeat_at < now() - $2 * interval '1 second'
         returning id, cycle_id, organization_id, model_type, push_seq",
    )
    .bind(&ids)
    .bind(lease)
    .bind(&handed)
    .fetch_all(pool)
    .await?;
    let released: Vec<_> = released.iter().map(DeliveryRow::delivery).collect();
    if !released.is_empty() {
        queue::push_jobs(conn, config, &released).await?;
        tracing::warn!(
            count = released.len(),
            attempts_given_back = handed.len(),
            "released jobs whose worker stopped heartbeating"
        );
    }
    if !handed.is_empty() {
        let mut pipe = redis::pipe();
        for id in &handed {
            pipe.cmd("DEL")
                .arg(queue::hand_back_key(config, JobId(*id)))
                .ignore();
        }
        pipe.query_async::<()>(conn)
            .await
            .map_err(QueueError::Command)?;
    }
    Ok(released.len())
}

/// The sweeper loop's state: runs [`sweep`] passes and logs what they did.
///
/// A heartbeat can be missing for two reasons: the worker died, or
/// PostgreSQL was unreachable and nobody could write heartbeats. Only the
/// first may release a job. So leases are released only once this sweeper
/// has reached the database without interruption for a whole lease period:
/// by then every live worker has written a heartbeat again. After an outage
/// (or at start) running jobs keep their worker; a dead worker's job is
/// released one lease period later than it otherwise would be.
#[derive(Debug)]
pub struct Sweeper {
    settings: SweepSettings,
    reachable_since: Option<std::time::Instant>,
    passes: u64,
}

impl Sweeper {
    pub fn new(settings: SweepSettings) -> Self {
        Self {
            settings,
            reachable_since: None,
            passes: 0,
        }
    }

    /// One pass; a failure is logged and the next pass tries again.
    pub async fn pass(
        &mut self,
        pool: &PgPool,
        conn: &mut ConnectionManager,
        config: &RedisQueueConfig,
    ) -> Option<SweepReport> {
        // A ping that fails or is slow means PostgreSQL is (or just was)
        // out of reach: workers could not heartbeat, so start counting again.
        let asked = std::time::Instant::now();
        let ping =
            tokio::time::timeout(RELEASE_TIMEOUT, sqlx::query("select 1").execute(pool)).await;
        if !matches!(ping, Ok(Ok(_))) || asked.elapsed() > RELEASE_TIMEOUT / 2 {
            self.reachable_since = None;
        }
        let since = *self
            .reachable_since
            .get_or_insert_with(std::time::Instant::now);
        let release = since.elapsed() >= self.settings.lease_timeout;
        // The first pass and every 60th do the slower housekeeping.
        let slow_pass = self.passes.is_multiple_of(60);
        self.passes += 1;
        if slow_pass {
            match queue::forget_departed_workers(conn, config).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(count = n, "deleted the metadata of departed workers"),
                Err(e) => tracing::warn!(error = %e, "deleting departed workers' metadata failed"),
            }
        }
        let audit_all = slow_pass;
        let swept = match sweep(pool, conn, config, &self.settings, release).await {
            Ok(mut r) => async {
                crate::cycles::refresh_running(pool).await?;
                r.repaired_cycles = crate::cycles::audit_running(pool, audit_all).await?;
                Ok::<_, sqlx::Error>(r)
            }
            .await
            .map_err(JobError::from),
            Err(e) => Err(e),
        };
        match swept {
            Ok(r) => {
                if r.restored + r.released + r.garbage + r.timed_out_cycles + r.repaired_cycles > 0
                {
                    tracing::info!(
                        restored = r.restored,
                        released = r.released,
                        garbage = r.garbage,
                        timed_out_cycles = r.timed_out_cycles,
                        repaired_cycles = r.repaired_cycles,
                        pushed = r.pushed,
                        "sweep recovered jobs"
                    );
                }
                Some(r)
            }
            Err(e) => {
                self.reachable_since = None;
                tracing::warn!(error = %e, "sweep failed; retrying on the next pass");
                None
            }
        }
    }
}

/// Jobs still queued or running, for progress displays.
pub async fn live_jobs(pool: &PgPool, cycle_id: CycleId) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "select count(*) from ml_training_jobs where cycle_id = $1 and status in ('queued', 'running')",
    )
    .bind(cycle_id)
    .fetch_one(pool)
    .await
}
