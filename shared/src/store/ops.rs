//! The queries of the ops API (`trainyard-scheduler serve`): cycles, jobs,
//! organizations, models, workers and the audit trail, read with keyset
//! pagination (never an offset, never a count of the whole jobs table), and
//! the few writes the API makes itself (audit rows, idempotent answers,
//! promotion and rollback). Enqueueing and retrying go through
//! [`crate::cycles::create_cycle`] and [`crate::jobs::top_up`].

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgExecutor, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::domain::{CycleId, CycleStatus, JobId, JobStatus, ModelStatus, ModelType, OrgId};

/// Errors of the ops writes that are not plain database errors.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The model named for promotion is not a model of this organization and model type.
    #[error("model {0} is not a model of this organization and model type")]
    UnknownModel(Uuid),
    /// A rollback found no active model, or no earlier active one to return to.
    #[error("{0}")]
    NothingToRollBack(&'static str),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// One cycle; counters of a running cycle are summed from its shards.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct CycleRow {
    pub id: CycleId,
    pub cycle_key: String,
    pub kind: String,
    pub cycle_date: DateTime<Utc>,
    pub status: CycleStatus,
    pub total_jobs: i32,
    pub live_jobs: i32,
    pub successful_models: i32,
    pub failed_models: i32,
    pub skipped_models: i32,
    pub promoted_models: i32,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub deadline_at: DateTime<Utc>,
    pub total_time_minutes: Option<f64>,
    pub requested_by: String,
    /// Median holdout accuracy of the successful jobs, set at finalization.
    pub median_accuracy: Option<f64>,
}

macro_rules! cycle_select {
    () => {
        "select c.id, c.cycle_key, c.kind, c.cycle_date, c.status, c.total_jobs,
                case when c.status = 'running' then coalesce(s.live, c.live_jobs) else 0 end as live_jobs,
                case when c.status = 'running' then coalesce(s.ok, c.successful_models)
                     else c.successful_models end as successful_models,
                case when c.status = 'running' then coalesce(s.failed, c.failed_models)
                     else c.failed_models end as failed_models,
                case when c.status = 'running' then coalesce(s.skipped, c.skipped_models)
                     else c.skipped_models end as skipped_models,
                case when c.status = 'running' then coalesce(s.promoted, c.promoted_models)
                     else c.promoted_models end as promoted_models,
                c.started_at, c.finished_at, c.deadline_at, c.total_time_minutes, c.requested_by,
                c.median_accuracy
         from ml_training_cycles c
         left join lateral (select sum(live_jobs)::int4 as live, sum(successful_models)::int4 as ok,
                                   sum(failed_models)::int4 as failed,
                                   sum(skipped_models)::int4 as skipped,
                                   sum(promoted_models)::int4 as promoted
                            from ml_cycle_shards sh
                            where sh.cycle_id = c.id and c.status = 'running') s on true "
    };
}

/// Cycles newest first, after the keyset `(started_at, id)` when given.
pub async fn list_cycles(
    db: impl PgExecutor<'_>,
    before: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<CycleRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        cycle_select!(),
        "where ($1::timestamptz is null or (c.started_at, c.id) < ($1, $2))
         order by c.started_at desc, c.id desc limit $3"
    ))
    .bind(before.map(|b| b.0))
    .bind(before.map(|b| b.1))
    .bind(limit)
    .fetch_all(db)
    .await
}

pub async fn cycle(db: impl PgExecutor<'_>, id: CycleId) -> Result<Option<CycleRow>, sqlx::Error> {
    sqlx::query_as(concat!(cycle_select!(), "where c.id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

/// The running cycle started last, else the cycle started last.
pub async fn current_cycle(db: impl PgExecutor<'_>) -> Result<Option<CycleRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        cycle_select!(),
        "where c.id = coalesce(
             (select id from ml_training_cycles where status = 'running'
              order by started_at desc limit 1),
             (select id from ml_training_cycles order by started_at desc, id desc limit 1))"
    ))
    .fetch_optional(db)
    .await
}

/// One (model type, status) group of a cycle's jobs.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct StatusGroup {
    pub model_type: ModelType,
    pub status: JobStatus,
    pub jobs: i64,
    /// Median seconds from start to finish of the group's finished jobs.
    pub median_seconds: Option<f64>,
    pub median_accuracy: Option<f64>,
}

/// A cycle's jobs counted by model type × status, with medians. Grouped in
/// the order of the (cycle, status, model type) index, which carries the
/// aggregated columns: an index-only scan, no sort of the cycle's rows.
pub async fn cycle_groups(
    db: impl PgExecutor<'_>,
    id: CycleId,
) -> Result<Vec<StatusGroup>, sqlx::Error> {
    sqlx::query_as(
        "select model_type, status, count(*) as jobs,
                percentile_cont(0.5) within group (
                    order by extract(epoch from (finished_at - started_at))::float8) as median_seconds,
                percentile_cont(0.5) within group (order by accuracy) as median_accuracy
         from ml_training_jobs where cycle_id = $1
         group by status, model_type order by model_type, status",
    )
    .bind(id)
    .fetch_all(db)
    .await
}

/// One organization × model type cell of a cycle.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct MatrixCell {
    pub organization_id: OrgId,
    pub organization: Option<String>,
    pub model_type: ModelType,
    pub job_id: JobId,
    pub status: JobStatus,
    pub accuracy: Option<f64>,
    /// Holdout accuracy of the model that was active before, re-scored on
    /// the same holdout (none when there was none).
    pub incumbent_accuracy: Option<f64>,
    pub promoted: bool,
    pub reason: Option<String>,
}

/// The cells of a cycle for up to `orgs` organizations (every model type of
/// each), organizations in id order after `after`.
pub async fn cycle_matrix(
    db: impl PgExecutor<'_>,
    id: CycleId,
    after: Option<OrgId>,
    orgs: i64,
) -> Result<Vec<MatrixCell>, sqlx::Error> {
    sqlx::query_as(
        "with page as (
             select distinct organization_id from ml_training_jobs
             where cycle_id = $1 and ($2::uuid is null or organization_id > $2)
             order by organization_id limit $3)
         select j.organization_id, o.name as organization, j.model_type, j.id as job_id,
                j.status, j.accuracy, j.promoted, j.reason,
                (select max(e.accuracy) from ml_evaluations e
                 where e.job_id = j.id and e.role = 'incumbent') as incumbent_accuracy
         from ml_training_jobs j
         join page p on p.organization_id = j.organization_id
         left join organizations o on o.id = j.organization_id
         where j.cycle_id = $1
         order by j.organization_id, j.model_type",
    )
    .bind(id)
    .bind(after)
    .bind(orgs)
    .fetch_all(db)
    .await
}

/// One job as the API lists it.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct JobRow {
    pub id: JobId,
    pub cycle_id: CycleId,
    pub organization_id: OrgId,
    pub organization: Option<String>,
    pub model_type: ModelType,
    pub status: JobStatus,
    pub reason: Option<String>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub worker: Option<String>,
    pub created_at: DateTime<Utc>,
    pub pushed_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub heartbeat_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub train_seconds: Option<f64>,
    pub model_id: Option<Uuid>,
    pub champion_algorithm: Option<String>,
    pub accuracy: Option<f64>,
    pub promoted: bool,
}

macro_rules! job_select {
    () => {
        "select j.id, j.cycle_id, j.organization_id, o.name as organization,
        j.model_type, j.status, j.reason, j.attempts, j.max_attempts, j.worker, j.created_at,
        j.pushed_at, j.started_at, j.heartbeat_at, j.finished_at, j.train_seconds, j.model_id,
        j.champion_algorithm, j.accuracy, j.promoted
    from ml_training_jobs j left join organizations o on o.id = j.organization_id "
    };
}

/// What `/jobs` filters on; every field narrows (and).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFilter {
    pub org: Option<OrgId>,
    pub model: Option<ModelType>,
    pub status: Option<JobStatus>,
    pub cycle: Option<CycleId>,
    /// Case-insensitive substring of the job's reason.
    pub reason: Option<String>,
    pub worker: Option<String>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
}

/// Jobs newest first (by `(created_at, id)`), after `before` when given.
pub async fn list_jobs(
    db: impl PgExecutor<'_>,
    filter: &JobFilter,
    before: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<JobRow>, sqlx::Error> {
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(job_select!());
    q.push("where true");
    if let Some(org) = filter.org {
        q.push(" and j.organization_id = ").push_bind(org);
    }
    if let Some(model) = filter.model {
        q.push(" and j.model_type = ").push_bind(model);
    }
    if let Some(status) = filter.status {
        q.push(" and j.status = ").push_bind(status);
    }
    if let Some(cycle) = filter.cycle {
        // A cycle's jobs are created with it and never after it finished:
        // the bound lets the planner walk (cycle_id, created_at, id) instead
        // of every newer job of the (created_at, id) index.
        q.push(" and j.cycle_id = ")
            .push_bind(cycle)
            .push(
                " and j.created_at <= (select coalesce(finished_at, 'infinity')
                                        from ml_training_cycles where id = ",
            )
            .push_bind(cycle)
            .push(")");
    }
    if let Some(reason) = &filter.reason {
        let escaped = reason
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        q.push(" and j.reason ilike ")
            .push_bind(format!("%{escaped}%"));
    }
    if let Some(worker) = &filter.worker {
        q.push(" and j.worker = ").push_bind(worker.clone());
    }
    if let Some(since) = filter.since {
        q.push(" and j.created_at >= ").push_bind(since);
    }
    if let Some((at, id)) = before {
        q.push(" and (j.created_at, j.id) < (")
            .push_bind(at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    q.push(" order by j.created_at desc, j.id desc limit ")
        .push_bind(limit);
    q.build_query_as().fetch_all(db).await
}

pub async fn job(db: impl PgExecutor<'_>, id: JobId) -> Result<Option<JobRow>, sqlx::Error> {
    let sql = concat!(job_select!(), " where j.id = $1");
    sqlx::query_as(sql).bind(id).fetch_optional(db).await
}

/// One model scored by a job on its holdout: every candidate it trained and
/// the incumbent it was compared with.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct EvaluationRow {
    pub algorithm: String,
    pub role: String,
    pub model_id: Option<Uuid>,
    pub is_champion: bool,
    pub accuracy: f64,
    pub mae: f64,
    pub rmse: f64,
    pub r2_score: f64,
    pub mape: Option<f64>,
    pub mase: Option<f64>,
    pub precision_score: Option<f64>,
    pub recall: Option<f64>,
    pub f1: Option<f64>,
}

pub async fn job_evaluations(
    db: impl PgExecutor<'_>,
    id: JobId,
) -> Result<Vec<EvaluationRow>, sqlx::Error> {
    sqlx::query_as(
        "select algorithm, role, model_id, is_champion, accuracy, mae, rmse, r2_score, mape, mase,
                precision_score, recall, f1
         from ml_evaluations where job_id = $1
         order by role, is_champion desc, accuracy desc, algorithm",
    )
    .bind(id)
    .fetch_all(db)
    .await
}

/// One trained model (`ml_models`).
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct ModelRow {
    pub id: Uuid,
    pub organization_id: OrgId,
    pub model_type: ModelType,
    pub algorithm: String,
    pub version: i32,
    pub status: ModelStatus,
    pub accuracy: f64,
    pub mae: f64,
    pub rmse: f64,
    pub r2_score: f64,
    pub mape: Option<f64>,
    pub mase: Option<f64>,
    pub training_samples: i32,
    pub training_date: DateTime<Utc>,
    pub data_start: Option<NaiveDate>,
    pub data_end: Option<NaiveDate>,
    pub cycle_id: CycleId,
    pub job_id: JobId,
    pub promotion_reason: Option<String>,
    pub activated_at: Option<DateTime<Utc>>,
}

macro_rules! model_select {
    () => {
        "select id, organization_id, model_type, algorithm, version, status,
        accuracy, mae, rmse, r2_score, mape, mase, training_samples, training_date, data_start,
        data_end, cycle_id, job_id, promotion_reason, activated_at
    from ml_models "
    };
}

/// The model a job produced, if any.
pub async fn job_model(
    db: impl PgExecutor<'_>,
    id: JobId,
) -> Result<Option<ModelRow>, sqlx::Error> {
    let sql = concat!(model_select!(), " where job_id = $1");
    sqlx::query_as(sql).bind(id).fetch_optional(db).await
}

/// One epoch of one algorithm trained by a job.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct EpochRow {
    pub algorithm: String,
    pub epoch: i32,
    pub epochs: i32,
    pub train_loss: f64,
    pub val_loss: Option<f64>,
    pub seconds: f64,
}

pub async fn job_epochs(db: impl PgExecutor<'_>, id: JobId) -> Result<Vec<EpochRow>, sqlx::Error> {
    sqlx::query_as(
        "select algorithm, epoch, epochs, train_loss, val_loss, seconds
         from ml_training_epochs where job_id = $1 order by algorithm, epoch",
    )
    .bind(id)
    .fetch_all(db)
    .await
}

/// One organization.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct OrgRow {
    pub id: OrgId,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// Organizations in id order after `after`.
pub async fn list_orgs(
    db: impl PgExecutor<'_>,
    after: Option<OrgId>,
    limit: i64,
) -> Result<Vec<OrgRow>, sqlx::Error> {
    sqlx::query_as(
        "select id, name, created_at from organizations
         where ($1::uuid is null or id > $1) order by id limit $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}

pub async fn org(db: impl PgExecutor<'_>, id: OrgId) -> Result<Option<OrgRow>, sqlx::Error> {
    sqlx::query_as("select id, name, created_at from organizations where id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// The active model of each model type of an organization.
pub async fn active_models(
    db: impl PgExecutor<'_>,
    org: OrgId,
) -> Result<Vec<ModelRow>, sqlx::Error> {
    let sql = concat!(
        model_select!(),
        " where organization_id = $1 and status = 'active' order by model_type"
    );
    sqlx::query_as(sql).bind(org).fetch_all(db).await
}

/// The latest job of each model type of an organization.
pub async fn latest_jobs(db: impl PgExecutor<'_>, org: OrgId) -> Result<Vec<JobRow>, sqlx::Error> {
    let sql = concat!(
        "select * from (select distinct on (j.model_type) * from (",
        job_select!(),
        "
             where j.organization_id = $1) j
         order by j.model_type, j.created_at desc, j.id desc) latest order by model_type"
    );
    sqlx::query_as(sql).bind(org).fetch_all(db).await
}

/// Every version of an organization's model of one type, newest first.
pub async fn model_versions(
    db: impl PgExecutor<'_>,
    org: OrgId,
    model_type: ModelType,
    limit: i64,
) -> Result<Vec<ModelRow>, sqlx::Error> {
    let sql = concat!(
        model_select!(),
        " where organization_id = $1 and model_type = $2
         order by version desc limit $3"
    );
    sqlx::query_as(sql)
        .bind(org)
        .bind(model_type)
        .bind(limit)
        .fetch_all(db)
        .await
}

/// One worker seen through the heartbeats of the jobs it runs.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct WorkerJob {
    pub worker: String,
    pub job_id: JobId,
    pub organization_id: OrgId,
    pub model_type: ModelType,
    pub attempts: i32,
    pub started_at: Option<DateTime<Utc>>,
    pub heartbeat_at: Option<DateTime<Utc>>,
    /// No heartbeat for longer than the lease.
    pub stale: bool,
}

/// Every running job with its worker, a heartbeat older than
/// `stale_after_secs` marked stale.
pub async fn running_jobs(
    db: impl PgExecutor<'_>,
    stale_after_secs: f64,
) -> Result<Vec<WorkerJob>, sqlx::Error> {
    sqlx::query_as(
        "select coalesce(worker, '') as worker, id as job_id, organization_id, model_type, attempts,
                started_at, heartbeat_at,
                coalesce(heartbeat_at < now() - $1 * interval '1 second', true) as stale
         from ml_training_jobs where status = 'running'
         order by worker, started_at",
    )
    .bind(stale_after_secs)
    .fetch_all(db)
    .await
}

/// The queue's figures the overview shows, none of which counts the whole
/// jobs table: only live rows (bounded by the partial indexes).
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct QueueFigures {
    pub queued: i64,
    pub running: i64,
    pub oldest_queued_at: Option<DateTime<Utc>>,
    /// Replicas with a running job: a fresh job heartbeat, or a fresh
    /// presence row with a busy slot.
    pub busy_workers: i64,
    /// Replicas whose presence row is fresh (idle ones included).
    pub alive_workers: i64,
    pub stale_running: i64,
}

pub async fn queue_figures(
    db: impl PgExecutor<'_>,
    stale_after_secs: f64,
) -> Result<QueueFigures, sqlx::Error> {
    sqlx::query_as(
        "with live as (
             select status, created_at, worker,
                    coalesce(heartbeat_at < now() - $1 * interval '1 second', true) as stale
             from ml_training_jobs where status in ('queued', 'running')),
         present as (
             select replica, busy_slots from worker_presence
             where stopped_at is null and last_seen >= now() - $1 * interval '1 second')
         select (select count(*) from live where status = 'queued') as queued,
                (select count(*) from live where status = 'running') as running,
                (select min(created_at) from live where status = 'queued') as oldest_queued_at,
                (select count(*) from (
                     select worker from live where status = 'running' and not stale
                     union
                     select replica from present where busy_slots > 0) b) as busy_workers,
                (select count(*) from present) as alive_workers,
                (select count(*) from live where status = 'running' and stale) as stale_running",
    )
    .bind(stale_after_secs)
    .fetch_one(db)
    .await
}

/// How long a cycle's finished jobs took: the median, and how many finished.
pub async fn median_job_seconds(
    db: impl PgExecutor<'_>,
    cycle: CycleId,
) -> Result<(Option<f64>, i64), sqlx::Error> {
    sqlx::query_as(
        "select percentile_cont(0.5) within group (
                    order by extract(epoch from (finished_at - started_at))::float8),
                count(*)
         from ml_training_jobs
         where cycle_id = $1 and status in ('succeeded', 'failed') and started_at is not null",
    )
    .bind(cycle)
    .fetch_one(db)
    .await
}

/// Jobs of a cycle that ended with a model whose holdout accuracy is below
/// the accuracy of the model that was active before (the incumbent re-scored
/// on the same holdout): models that got worse. A succeeded job's accuracy
/// is its champion's (written from the same metrics as the champion's
/// evaluation row). An incumbent is scored when its job ends, so after the
/// cycle started: the incumbents are read from that time on (an index
/// range), not from every evaluation ever written.
pub async fn worse_models(db: impl PgExecutor<'_>, cycle: CycleId) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "select count(*) from ml_training_jobs j
         join ml_evaluations i on i.job_id = j.id and i.role = 'incumbent'
              and i.created_at >= (select started_at from ml_training_cycles where id = $1)
         where j.cycle_id = $1 and j.status = 'succeeded' and j.accuracy < i.accuracy",
    )
    .bind(cycle)
    .fetch_one(db)
    .await
}

/// The (organization, model type) pairs of a cycle's failed jobs that have
/// no live job now: what "retry failed" would enqueue. At most `limit`.
pub async fn retryable_failed_pairs(
    db: impl PgExecutor<'_>,
    cycle: CycleId,
    limit: i64,
) -> Result<Vec<(OrgId, ModelType)>, sqlx::Error> {
    sqlx::query_as(
        "select j.organization_id, j.model_type from ml_training_jobs j
         where j.cycle_id = $1 and j.status = 'failed'
           and not exists (select 1 from ml_training_jobs l
                           where l.organization_id = j.organization_id
                             and l.model_type = j.model_type
                             and l.status in ('queued', 'running'))
         order by j.organization_id, j.model_type limit $2",
    )
    .bind(cycle)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// The queued or running job of an (organization, model type) pair, if any.
pub async fn live_job_of_pair(
    db: impl PgExecutor<'_>,
    org: OrgId,
    model_type: ModelType,
) -> Result<Option<(JobId, CycleId, JobStatus)>, sqlx::Error> {
    sqlx::query_as(
        "select id, cycle_id, status from ml_training_jobs
         where organization_id = $1 and model_type = $2 and status in ('queued', 'running')",
    )
    .bind(org)
    .bind(model_type)
    .fetch_optional(db)
    .await
}

/// The job of a cycle for an (organization, model type) pair.
pub async fn job_of_pair(
    db: impl PgExecutor<'_>,
    cycle: CycleId,
    org: OrgId,
    model_type: ModelType,
) -> Result<Option<JobRow>, sqlx::Error> {
    let sql = concat!(
        job_select!(),
        " where j.cycle_id = $1 and j.organization_id = $2 and j.model_type = $3"
    );
    sqlx::query_as(sql)
        .bind(cycle)
        .bind(org)
        .bind(model_type)
        .fetch_optional(db)
        .await
}

/// One write recorded by the ops API.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct AuditRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub role: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub reason: Option<String>,
    pub result: String,
    pub status_code: i32,
    pub request_id: String,
    pub detail: Option<serde_json::Value>,
}

/// What to record of one write.
#[derive(Debug, Clone)]
pub struct NewAudit<'a> {
    pub role: &'a str,
    pub actor: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub reason: Option<&'a str>,
    pub result: &'a str,
    pub status_code: u16,
    pub request_id: &'a str,
    pub detail: Option<serde_json::Value>,
}

pub async fn insert_audit(db: impl PgExecutor<'_>, a: &NewAudit<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "insert into ops_audit
             (role, actor, action, target, reason, result, status_code, request_id, detail)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9) returning id",
    )
    .bind(a.role)
    .bind(a.actor)
    .bind(a.action)
    .bind(a.target)
    .bind(a.reason)
    .bind(a.result)
    .bind(i32::from(a.status_code))
    .bind(a.request_id)
    .bind(&a.detail)
    .fetch_one(db)
    .await
}

/// Audit rows newest first, before id `before` when given.
pub async fn list_audit(
    db: impl PgExecutor<'_>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditRow>, sqlx::Error> {
    sqlx::query_as(
        "select id, at, role, actor, action, target, reason, result, status_code, request_id, detail
         from ops_audit where ($1::int8 is null or id < $1) order by id desc limit $2",
    )
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// The answer recorded for an `Idempotency-Key`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredAnswer {
    pub request: String,
    pub status_code: i32,
    pub body: serde_json::Value,
}

/// The `status_code` of a key whose request is still being carried out.
const PENDING: i32 = 0;

/// What [`claim_key`] found.
#[derive(Debug, Clone)]
pub enum KeyClaim {
    /// This request owns the key: carry it out, then [`settle_key`] or
    /// [`release_key`].
    Claimed,
    /// Another request with this key is being carried out now.
    InProgress { request: String },
    /// The key's request was carried out: replay its answer.
    Done(StoredAnswer),
}

/// Claims an `Idempotency-Key` before anything is done for it: a pending
/// row is inserted, and the primary key lets exactly one of any number of
/// concurrent requests insert it. A pending row older than
/// `abandoned_after_secs` (its request's process died before settling it)
/// is taken over.
pub async fn claim_key(
    db: &sqlx::PgPool,
    key: &str,
    request: &str,
    abandoned_after_secs: f64,
) -> Result<KeyClaim, sqlx::Error> {
    let claimed: Option<String> = sqlx::query_scalar(
        "insert into ops_idempotency (key, request, status_code, body)
         values ($1, $2, 0, 'null'::jsonb)
         on conflict (key) do update set request = excluded.request, created_at = now()
             where ops_idempotency.status_code = 0
               and ops_idempotency.created_at < now() - $3 * interval '1 second'
         returning key",
    )
    .bind(key)
    .bind(request)
    .bind(abandoned_after_secs)
    .fetch_optional(db)
    .await?;
    if claimed.is_some() {
        return Ok(KeyClaim::Claimed);
    }
    let stored: Option<StoredAnswer> =
        sqlx::query_as("select request, status_code, body from ops_idempotency where key = $1")
            .bind(key)
            .fetch_optional(db)
            .await?;
    Ok(match stored {
        // Released between the insert and the read: claim again.
        None => Box::pin(claim_key(db, key, request, abandoned_after_secs)).await?,
        Some(s) if s.status_code == PENDING => KeyClaim::InProgress { request: s.request },
        Some(s) => KeyClaim::Done(s),
    })
}

/// Records the answer of a claimed key; later requests with it replay it.
pub async fn settle_key(
    db: impl PgExecutor<'_>,
    key: &str,
    status_code: u16,
    body: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update ops_idempotency set status_code = $2, body = $3
         where key = $1 and status_code = 0",
    )
    .bind(key)
    .bind(i32::from(status_code))
    .bind(body)
    .execute(db)
    .await?;
    Ok(())
}

/// Gives a claimed key up (its request was refused or failed): the same
/// key may be sent again.
pub async fn release_key(db: impl PgExecutor<'_>, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query("delete from ops_idempotency where key = $1 and status_code = 0")
        .bind(key)
        .execute(db)
        .await?;
    Ok(())
}

/// Makes `model` the active model of its organization and model type: the
/// active one (if another) is archived, in one transaction of the caller's,
/// so exactly one stays active. Returns the model that was active before.
pub async fn promote(
    conn: &mut PgConnection,
    org: OrgId,
    model_type: ModelType,
    model: Uuid,
    reason: &str,
) -> Result<Option<Uuid>, OpsError> {
    // Serializes operators' promotions of the same pair; a worker's own
    // promotion meets the one-active unique index instead.
    sqlx::query("select pg_advisory_xact_lock(hashtext('trainyard:promote:' || $1::text || $2))")
        .bind(org)
        .bind(model_type)
        .execute(&mut *conn)
        .await?;
    let exists: bool = sqlx::query_scalar(
        "select exists(select 1 from ml_models
                       where id = $1 and organization_id = $2 and model_type = $3)",
    )
    .bind(model)
    .bind(org)
    .bind(model_type)
    .fetch_one(&mut *conn)
    .await?;
    if !exists {
        return Err(OpsError::UnknownModel(model));
    }
    let before: Option<Uuid> = sqlx::query_scalar(
        "update ml_models set status = 'archived'
         where organization_id = $1 and model_type = $2 and status = 'active' and id <> $3
         returning id",
    )
    .bind(org)
    .bind(model_type)
    .bind(model)
    .fetch_optional(&mut *conn)
    .await?;
    sqlx::query(
        "update ml_models set status = 'active', activated_at = now(), promotion_reason = $2
         where id = $1",
    )
    .bind(model)
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    Ok(before)
}

/// The model that was active before the current one: the archived model
/// made active last (by an operator's promotion, else by its training).
/// Returns (current, previous).
pub async fn rollback_target(
    conn: &mut PgConnection,
    org: OrgId,
    model_type: ModelType,
) -> Result<(Uuid, Uuid), OpsError> {
    let current: Option<Uuid> = sqlx::query_scalar(
        "select id from ml_models
         where organization_id = $1 and model_type = $2 and status = 'active' for update",
    )
    .bind(org)
    .bind(model_type)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(current) = current else {
        return Err(OpsError::NothingToRollBack(
            "no model is active for this organization and model type",
        ));
    };
    let previous: Option<Uuid> = sqlx::query_scalar(
        "select id from ml_models
         where organization_id = $1 and model_type = $2 and status = 'archived'
         order by coalesce(activated_at, training_date) desc, version desc limit 1",
    )
    .bind(org)
    .bind(model_type)
    .fetch_optional(&mut *conn)
    .await?;
    match previous {
        Some(p) => Ok((current, p)),
        None => Err(OpsError::NothingToRollBack(
            "no earlier active model to roll back to",
        )),
    }
}

/// When the last cycle that completed (with or without failures) finished.
pub async fn last_completed_cycle_at(
    db: impl PgExecutor<'_>,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(
        "select max(finished_at) from ml_training_cycles
         where status in ('completed', 'completed_with_failures')",
    )
    .fetch_one(db)
    .await
}

/// The readiness probe's PostgreSQL check.
pub async fn ping(db: impl PgExecutor<'_>) -> Result<(), sqlx::Error> {
    sqlx::query("select 1").execute(db).await.map(|_| ())
}

/// Jobs finished per bucket of `bucket_secs` since `since`, oldest first,
/// empty buckets included (the Now page's throughput sparkline). Reads only
/// the recently finished rows, through `ml_training_jobs_finished`.
pub async fn throughput(
    db: impl PgExecutor<'_>,
    since: DateTime<Utc>,
    bucket_secs: i64,
) -> Result<Vec<(DateTime<Utc>, i64)>, sqlx::Error> {
    sqlx::query_as(
        "select b.at, count(j.finished_at)
         from generate_series(date_bin($2 * interval '1 second', $1, 'epoch'),
                              now(), $2 * interval '1 second') as b(at)
         left join ml_training_jobs j
                on j.finished_at >= b.at and j.finished_at < b.at + $2 * interval '1 second'
               and j.finished_at >= $1
         group by b.at order by b.at",
    )
    .bind(since)
    .bind(bucket_secs as f64)
    .fetch_all(db)
    .await
}

/// The failed jobs of a cycle grouped by reason (its first line, at most 120
/// characters), most frequent first.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct ReasonGroup {
    pub reason: String,
    pub jobs: i64,
    pub example_job_id: JobId,
}

pub async fn failure_reasons(
    db: impl PgExecutor<'_>,
    cycle: CycleId,
    limit: i64,
) -> Result<Vec<ReasonGroup>, sqlx::Error> {
    sqlx::query_as(
        "select r.reason, count(*) as jobs, (array_agg(r.id order by r.id))[1] as example_job_id
         from (select id, left(split_part(coalesce(reason, '(no reason recorded)'), E'\\n', 1), 120)
                      as reason
               from ml_training_jobs where cycle_id = $1 and status = 'failed') r
         group by r.reason order by count(*) desc, r.reason limit $2",
    )
    .bind(cycle)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// One job whose delivery PostgreSQL says is in Redis: queued and pushed,
/// or running.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryInRedis {
    pub id: JobId,
    pub push_seq: i32,
    pub status: JobStatus,
    /// Pushed longer than the grace ago (a younger push may still be on
    /// its way; only settled ones are judged missing).
    pub settled: bool,
}

/// The jobs whose delivery should be in Redis, at most `limit` (the partial
/// index `ml_training_jobs_in_redis` bounds them by the window).
pub async fn deliveries_in_redis(
    db: impl PgExecutor<'_>,
    grace_secs: f64,
    limit: i64,
) -> Result<Vec<DeliveryInRedis>, sqlx::Error> {
    sqlx::query_as(
        "select id, push_seq, status,
                coalesce(pushed_at < now() - $1 * interval '1 second', false) as settled
         from ml_training_jobs
         where status = 'running' or (status = 'queued' and pushed_at is not null)
         limit $2",
    )
    .bind(grace_secs)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// One version of an organization's model of one type.
pub async fn model_version(
    db: impl PgExecutor<'_>,
    org: OrgId,
    model_type: ModelType,
    version: i32,
) -> Result<Option<ModelRow>, sqlx::Error> {
    let sql = concat!(
        model_select!(),
        " where organization_id = $1 and model_type = $2 and version = $3"
    );
    sqlx::query_as(sql)
        .bind(org)
        .bind(model_type)
        .bind(version)
        .fetch_optional(db)
        .await
}

/// How a job scored one model on its holdout: the champion it trained, or
/// the active model it re-scored (`role` incumbent). `None` when the job
/// did not score that model.
pub async fn evaluation_of_model(
    db: impl PgExecutor<'_>,
    job: JobId,
    model: Uuid,
) -> Result<Option<EvaluationRow>, sqlx::Error> {
    sqlx::query_as(
        "select algorithm, role, model_id, is_champion, accuracy, mae, rmse, r2_score, mape, mase,
                precision_score, recall, f1
         from ml_evaluations where job_id = $1 and model_id = $2
         order by role limit 1",
    )
    .bind(job)
    .bind(model)
    .fetch_optional(db)
    .await
}

/// The trivial baseline a job trained beside its champion (its metrics on
/// the same holdout), if it trained one.
pub async fn baseline_of_job(
    db: impl PgExecutor<'_>,
    job: JobId,
    algorithm: &str,
) -> Result<Option<EvaluationRow>, sqlx::Error> {
    sqlx::query_as(
        "select algorithm, role, model_id, is_champion, accuracy, mae, rmse, r2_score, mape, mase,
                precision_score, recall, f1
         from ml_evaluations where job_id = $1 and role = 'candidate' and algorithm = $2",
    )
    .bind(job)
    .bind(algorithm)
    .fetch_optional(db)
    .await
}

/// One day of an organization's data, summed the way its model type reads it.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct DailyActual {
    pub date: NaiveDate,
    /// The day's total; `None` when every row of the day lacked the value.
    pub value: Option<f64>,
    pub rows: i64,
}

/// The daily totals of `column` over the `days` days ending at the
/// organization's latest date with data (never after today: a future-dated
/// row does not move the window). Rows with impossible dates are outside
/// any window and never decoded.
pub async fn daily_actuals(
    db: impl PgExecutor<'_>,
    org: OrgId,
    column: crate::domain::DataColumn,
    days: i32,
) -> Result<Vec<DailyActual>, sqlx::Error> {
    use crate::domain::DataColumn;
    let co2e = column == DataColumn::Co2eKg;
    sqlx::query_as(
        "with last as (
             select max(date) as d from metrics_data
             where organization_id = $1 and date <= current_date
               and ($2 = false or category = 'energy'))
         select m.date, sum(case when $4 then m.co2e_kg else m.value end) as value,
                count(*) as rows
         from metrics_data m, last
         where m.organization_id = $1 and ($2 = false or m.category = 'energy')
           and m.date <= last.d and m.date > last.d - $3
         group by m.date order by m.date",
    )
    .bind(org)
    .bind(column.energy_only())
    .bind(days)
    .bind(co2e)
    .fetch_all(db)
    .await
}

/// One forecast day.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct PredictionRow {
    /// The job that wrote it (the same for a whole forecast).
    #[serde(skip_serializing)]
    pub job_id: JobId,
    pub prediction_date: NaiveDate,
    pub predicted_value: f64,
    pub lower_80: Option<f64>,
    pub upper_80: Option<f64>,
    pub lower_95: Option<f64>,
    pub upper_95: Option<f64>,
}

/// The forecast `model` made last: the predictions of the latest job that
/// wrote some for it (a job that kept the active model writes the active
/// model's forecast on that job's data), with the job's id.
pub async fn latest_predictions(
    db: impl PgExecutor<'_>,
    org: OrgId,
    model_type: ModelType,
    model: Uuid,
) -> Result<(Option<JobId>, Vec<PredictionRow>), sqlx::Error> {
    let rows: Vec<PredictionRow> = sqlx::query_as(
        "select job_id, prediction_date, predicted_value, lower_80, upper_80, lower_95, upper_95
         from ml_predictions
         where organization_id = $1 and model_type = $2 and model_id = $3
           and job_id = (select job_id from ml_predictions
                         where organization_id = $1 and model_type = $2 and model_id = $3
                         order by created_at desc, id desc limit 1)
         order by prediction_date",
    )
    .bind(org)
    .bind(model_type)
    .bind(model)
    .fetch_all(db)
    .await?;
    Ok((rows.first().map(|r| r.job_id), rows))
}

/// The anomaly job whose scores the dashboards show: the latest succeeded
/// anomaly-detection job of the organization that wrote scores, with the
/// model they came from.
pub async fn latest_anomaly_job(
    db: impl PgExecutor<'_>,
    org: OrgId,
) -> Result<Option<(JobId, Uuid, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as(
        "select j.id, f.model_id, j.finished_at
         from ml_training_jobs j
         join lateral (select model_id from ml_anomaly_flags where job_id = j.id limit 1) f on true
         where j.organization_id = $1 and j.model_type = 'anomaly_detection'
           and j.status = 'succeeded' and j.finished_at is not null
         order by j.created_at desc, j.id desc limit 1",
    )
    .bind(org)
    .fetch_optional(db)
    .await
}

/// One day of anomaly scores (a day may hold several rows: categories).
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct AnomalyDay {
    pub date: NaiveDate,
    /// The day's highest score and the threshold it was judged against.
    pub score: f64,
    pub threshold: f64,
    pub rows: i64,
    pub flagged_rows: i64,
    /// Why the day's flagged rows were flagged (null kinds: rows written
    /// before kinds existed).
    pub kinds: Vec<String>,
}

/// The daily scores a job wrote between `from` and `to` (inclusive).
pub async fn anomaly_days(
    db: impl PgExecutor<'_>,
    job: JobId,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<AnomalyDay>, sqlx::Error> {
    sqlx::query_as(
        "select date, max(score) as score,
                (array_agg(threshold order by score desc))[1] as threshold,
                count(*) as rows, count(*) filter (where is_anomaly) as flagged_rows,
                coalesce(array_agg(distinct kind) filter (where is_anomaly and kind is not null),
                         '{}') as kinds
         from ml_anomaly_flags
         where job_id = $1 and date between $2 and $3
         group by date order by date",
    )
    .bind(job)
    .bind(from)
    .bind(to)
    .fetch_all(db)
    .await
}

/// One flagged row.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AnomalyFlagRow {
    pub date: NaiveDate,
    pub metrics_data_id: Option<i64>,
    pub score: f64,
    pub threshold: f64,
    pub kind: Option<String>,
}

/// The rows a job flagged between `from` and `to` (inclusive).
pub async fn anomaly_flags(
    db: impl PgExecutor<'_>,
    job: JobId,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<AnomalyFlagRow>, sqlx::Error> {
    sqlx::query_as(
        "select date, metrics_data_id, score, threshold, kind from ml_anomaly_flags
         where job_id = $1 and is_anomaly and date between $2 and $3
         order by date, metrics_data_id",
    )
    .bind(job)
    .bind(from)
    .bind(to)
    .fetch_all(db)
    .await
}
