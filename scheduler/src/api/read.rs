//! The GET routes of `/api/v1`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{json, Value};
use trainyard_shared::store::ops::{self, JobFilter};
use trainyard_shared::store::workers as presence;
use trainyard_shared::{CycleId, CycleStatus, JobId, JobStatus, ModelType, OrgId};

use super::problem::{ApiResult, Problem};
use super::{clip, decode_cursor, encode_cursor, parse_id, parse_limit, query_pairs, ApiState};

type Reply = ApiResult<Json<Value>>;

/// Only these parameters are accepted; anything else is a 400.
pub(crate) fn params(raw: Option<String>, allowed: &[&str]) -> ApiResult<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (k, v) in query_pairs(raw.as_deref()) {
        if !allowed.contains(&k.as_str()) {
            return Err(Problem::bad_request(format!(
                "unknown parameter `{}` (accepted: {})",
                clip(&k),
                allowed.join(", ")
            )));
        }
        if out.insert(k.clone(), v).is_some() {
            return Err(Problem::bad_request(format!(
                "parameter `{}` given twice",
                clip(&k)
            )));
        }
    }
    Ok(out)
}

pub(crate) fn parse_model_type(value: &str) -> ApiResult<ModelType> {
    value.parse().map_err(|_| {
        Problem::not_found(format!(
            "unknown model type `{}` (expected emissions_forecast, energy_forecast or anomaly_detection)",
            clip(value)
        ))
    })
}

/// The overview's throughput: jobs finished per 5 minutes over the last 2 hours.
const THROUGHPUT_BUCKET_SECS: i64 = 300;
const THROUGHPUT_BUCKETS: i64 = 24;

#[utoipa::path(
    get,
    path = "/api/v1/overview",
    tag = "read",
    summary = "Current cycle progress, queue, workers, ETA and what needs attention",
    params(("finish_by" = Option<String>, Query, description = "RFC 3339 time for the replicas-needed estimate")),
    responses((status = 200, description = "the overview", body = serde_json::Value), (status = 400, description = "malformed input", body = serde_json::Value, content_type = "application/problem+json"), (status = 401, description = "no or a wrong token", body = serde_json::Value, content_type = "application/problem+json"), (status = 422, description = "a value out of range", body = serde_json::Value, content_type = "application/problem+json"))
)]
pub async fn overview(State(state): State<Arc<ApiState>>, RawQuery(raw): RawQuery) -> Reply {
    let p = params(raw, &["finish_by"])?;
    let finish_by = match p.get("finish_by") {
        Some(v) => Some(
            DateTime::parse_from_rfc3339(v)
                .map_err(|_| Problem::unprocessable("finish_by must be an RFC 3339 time"))?
                .with_timezone(&Utc),
        ),
        None => None,
    };
    let now = Utc::now();
    let stale = state.stale_after_secs();
    let queue = super::figures::queue(&state.pool, stale).await?;
    let current = ops::current_cycle(&state.pool).await?;
    let mut attention = Vec::new();
    let mut cycle_json = Value::Null;
    let mut eta = Value::Null;
    if let Some(c) = &current {
        let figures = super::figures::cycle(&state.pool, c).await?;
        let groups = &figures.groups;
        let (median, finished) = (figures.median_job_seconds, figures.finished_jobs_measured);
        let worse = figures.worse_models;
        let remaining = i64::from(c.live_jobs);
        if c.status == CycleStatus::Running {
            if c.deadline_at < now {
                attention.push(json!({"kind": "cycle_overdue", "severity": "critical",
                    "detail": format!("cycle {} is past its deadline {}", c.id, c.deadline_at.to_rfc3339()),
                    "cycle_id": c.id}));
            }
            // Without a chosen time, size the fleet for the cycle's deadline.
            let finish_by = finish_by.or((c.deadline_at > now).then_some(c.deadline_at));
            let busy_slots = queue.running - queue.stale_running;
            let (eta_seconds, slots_needed) = match median {
                Some(m) if remaining > 0 => {
                    let work = remaining as f64 * m;
                    let eta = if busy_slots > 0 {
                        Some(work / busy_slots as f64)
                    } else {
                        None
                    };
                    let needed = finish_by.map(|by| {
                        let left = (by - now).num_milliseconds() as f64 / 1000.0;
                        if left <= 0.0 {
                            Value::Null
                        } else {
                            json!((work / left).ceil() as i64)
                        }
                    });
                    (eta, needed)
                }
                _ => (None, None),
            };
            let per_worker = if queue.busy_workers > 0 {
                busy_slots as f64 / queue.busy_workers as f64
            } else {
                1.0
            };
            let replicas_needed = slots_needed
                .as_ref()
                .and_then(Value::as_i64)
                .map(|s| (s as f64 / per_worker.max(1.0)).ceil() as i64);
            eta = json!({
                "remaining_jobs": remaining,
                "median_job_seconds": median,
                "finished_jobs_measured": finished,
                "busy_slots": busy_slots,
                "seconds": eta_seconds,
                "finishes_at": eta_seconds.map(|s| (now + chrono::Duration::milliseconds((s * 1000.0) as i64)).to_rfc3339()),
                "finish_by": finish_by.map(|t| t.to_rfc3339()),
                "slots_needed": slots_needed,
                "replicas_needed": replicas_needed,
            });
        }
        if c.failed_models > 0 {
            attention.push(json!({"kind": "failed_jobs", "severity": "warning",
                "detail": format!("{} jobs of cycle {} failed", c.failed_models, c.id),
                "cycle_id": c.id, "count": c.failed_models}));
        }
        if worse > 0 {
            attention.push(json!({"kind": "models_got_worse", "severity": "info",
                "detail": format!("{worse} new models scored below the model active before them"),
                "cycle_id": c.id, "count": worse}));
        }
        cycle_json = json!({"cycle": c, "progress": groups});
    }
    if queue.stale_running > 0 {
        attention.push(json!({"kind": "stale_running_jobs", "severity": "warning",
            "detail": format!("{} running jobs have no heartbeat for {stale} s", queue.stale_running),
            "count": queue.stale_running}));
    }
    if let Some(item) =
        super::drift::attention(&state.pool, state.redis.clone(), &state.queue_config()).await
    {
        attention.push(item);
    }
    let since = now - chrono::Duration::seconds(THROUGHPUT_BUCKETS * THROUGHPUT_BUCKET_SECS);
    let buckets = super::figures::throughput(&state.pool, since, THROUGHPUT_BUCKET_SECS).await?;
    let throughput = json!({
        "bucket_seconds": THROUGHPUT_BUCKET_SECS,
        "buckets": buckets.iter().map(|(at, n)| json!({"at": at, "finished": n})).collect::<Vec<_>>(),
    });
    let oldest_age = queue
        .oldest_queued_at
        .map(|t| (now - t).num_milliseconds() as f64 / 1000.0);
    if queue.queued > 0 && queue.busy_workers == 0 && oldest_age.unwrap_or(0.0) > stale {
        attention.push(json!({"kind": "backlog_without_workers", "severity": "critical",
            "detail": format!("{} jobs are queued and no worker has sent a heartbeat", queue.queued),
            "count": queue.queued}));
    }
    Ok(Json(json!({
        "generated_at": now.to_rfc3339(),
        "current": cycle_json,
        "queue": {
            "queued": queue.queued,
            "running": queue.running,
            "oldest_queued_at": queue.oldest_queued_at,
            "oldest_queued_age_seconds": oldest_age,
        },
        "workers": {"alive": queue.alive_workers, "busy": queue.busy_workers, "stale_jobs": queue.stale_running},
        "eta": eta,
        "attention": attention,
        "throughput": throughput,
    })))
}

#[utoipa::path(
    get,
    path = "/api/v1/cycles",
    tag = "read",
    summary = "Cycles, newest first",
    params(("limit" = Option<i64>, Query, description = "1 to 500, default 50"), ("cursor" = Option<String>, Query, description = "the `next` of the previous page")),
    responses((status = 200, description = "a page of cycles", body = serde_json::Value), (status = 400, description = "malformed input", body = serde_json::Value, content_type = "application/problem+json"), (status = 401, description = "no or a wrong token", body = serde_json::Value, content_type = "application/problem+json"), (status = 422, description = "a value out of range", body = serde_json::Value, content_type = "application/problem+json"))
)]
pub async fn cycles(State(state): State<Arc<ApiState>>, RawQuery(raw): RawQuery) -> Reply {
    let p = params(raw, &["limit", "cursor"])?;
    let limit = parse_limit(p.get("limit").map(String::as_str))?;
    let before = p.get("cursor").map(|c| decode_cursor(c)).transpose()?;
    let mut rows = ops::list_cycles(&state.pool, before, limit + 1).await?;
    let next = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|c| encode_cursor(c.started_at, c.id.0))
    } else {
        None
    };
    Ok(Json(json!({"items": rows, "next": next})))
}

#[utoipa::path(
    get,
    path = "/api/v1/cycles/{id}",
    tag = "read",
    summary = "One cycle with counts by model type and status",
    params(("id" = String, Path, description = "cycle id (uuid)")),
    responses((status = 200, description = "the cycle", body = serde_json::Value), (status = 400, description = "malformed input", body = serde_json::Value, content_type = "application/problem+json"), (status = 401, description = "no or a wrong token", body = serde_json::Value, content_type = "application/problem+json"), (status = 404, description = "no such row", body = serde_json::Value, content_type = "application/problem+json"))
)]
pub async fn cycle(State(state): State<Arc<ApiState>>, Path(id): Path<String>) -> Reply {
    let id: CycleId = parse_id("cycle", &id)?;
    let c = ops::cycle(&state.pool, id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("cycle {id} does not exist")))?;
    let figures = super::figures::cycle(&state.pool, &c).await?;
    let reasons = ops::failure_reasons(&state.pool, id, 20).await?;
    Ok(Json(
        json!({"cycle": c, "by_model_type_and_status": figures.groups, "failure_reasons": reasons}),
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/cycles/{id}/matrix",
    tag = "read",
    summary = "Organization by model type cells of a cycle",
    params(("id" = String, Path, description = "cycle id (uuid)"), ("limit" = Option<i64>, Query, description = "1 to 500, default 50"), ("cursor" = Option<String>, Query, description = "the `next` of the previous page")),
    responses((status = 200, description = "a page of organizations", body = serde_json::Value), (status = 400, description = "malformed input", body = serde_json::Value, content_type = "application/problem+json"), (status = 401, description = "no or a wrong token", body = serde_json::Value, content_type = "application/problem+json"), (status = 404, description = "no such row", body = serde_json::Value, content_type = "application/problem+json"), (status = 422, description = "a value out of range", body = serde_json::Value, content_type = "application/problem+json"))
)]
pub async fn matrix(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Reply {
    let id: CycleId = parse_id("cycle", &id)?;
    let p = params(raw, &["limit", "cursor"])?;
    let limit = parse_limit(p.get("limit").map(String::as_str))?;
    let after: Option<OrgId> = p
        .get("cursor")
        .map(|c| parse_id("cursor organization", c))
        .transpose()?;
    if ops::cycle(&state.pool, id).await?.is_none() {
        return Err(Problem::not_found(format!("cycle {id} does not exist")));
    }
    let cells = ops::cycle_matrix(&state.pool, id, after, limit + 1).await?;
    let mut orgs: Vec<Value> = Vec::new();
    let mut last: Option<OrgId> = None;
    for cell in cells {
        if last != Some(cell.organization_id) {
            last = Some(cell.organization_id);
            orgs.push(json!({"organization_id": cell.organization_id,
                "organization": cell.organization, "cells": {}}));
        }
        if let Some(cells) = orgs.last_mut().and_then(|o| o.get_mut("cells")) {
            cells[cell.model_type.as_str()] = json!({"job_id": cell.job_id, "status": cell.status,
                "accuracy": cell.accuracy, "incumbent_accuracy": cell.incumbent_accuracy,
                "promoted": cell.promoted, "reason": cell.reason});
        }
    }
    let next = if orgs.len() as i64 > limit {
        orgs.truncate(limit as usize);
        orgs.last().map(|o| o["organization_id"].clone())
    } else {
        None
    };
    Ok(Json(json!({"cycle_id": id, "rows": orgs, "next": next})))
}

/// `since:` accepts an RFC 3339 time, a date, or an age such as `36h` or `7d`.
fn parse_since(v: &str, now: DateTime<Utc>) -> ApiResult<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    let bad = || {
        Problem::unprocessable(format!(
            "since `{}`: expected an RFC 3339 time, a date (2026-12-01) or an age (36h, 7d)",
            clip(v)
        ))
    };
    let (n, unit) = v.split_at(v.len().saturating_sub(1));
    let n: i64 = n.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    if !(0..=36_500 * 86_400).contains(&n.saturating_mul(seconds)) {
        return Err(bad());
    }
    Ok(now - chrono::Duration::seconds(n * seconds))
}

/// Splits `q` into qualifiers; `reason:"two words"` may quote its value.
fn qualifiers(q: &str) -> ApiResult<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = q.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once(':') else {
            return Err(Problem::bad_request(format!(
                "`{}` is not a qualifier: use org: model: status: cycle: reason: worker: since:",
                clip(rest)
            )));
        };
        if key.contains(char::is_whitespace) {
            return Err(Problem::bad_request(format!(
                "`{}` is not a qualifier: use org: model: status: cycle: reason: worker: since:",
                clip(key)
            )));
        }
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted
                .find('"')
                .ok_or_else(|| Problem::bad_request("unterminated quote in q"))?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            match after.find(char::is_whitespace) {
                Some(i) => (&after[..i], &after[i..]),
                None => (after, ""),
            }
        };
        out.push((key.to_string(), value.to_string()));
        rest = next.trim_start();
    }
    Ok(out)
}

/// The job filter of `/jobs`, from `q` qualifiers and plain parameters alike.
pub(crate) fn job_filter(pairs: &[(String, String)], now: DateTime<Utc>) -> ApiResult<JobFilter> {
    let mut f = JobFilter::default();
    let mut seen = std::collections::HashSet::new();
    for (k, v) in pairs {
        if !seen.insert(k.clone()) {
            return Err(Problem::bad_request(format!("`{}` given twice", clip(k))));
        }
        match k.as_str() {
            "org" => f.org = Some(parse_id("organization", v)?),
            "model" => {
                f.model = Some(v.parse().map_err(|_| {
                    Problem::unprocessable(format!(
                        "unknown model type `{}` (expected emissions_forecast, energy_forecast or anomaly_detection)",
                        clip(v)
                    ))
                })?)
            }
            "status" => {
                f.status = Some(v.parse::<JobStatus>().map_err(|e| {
                    Problem::unprocessable(format!(
                        "unknown job status `{}` (expected one of: {})",
                        clip(v),
                        e.expected.trim()
                    ))
                })?)
            }
            "cycle" => f.cycle = Some(parse_id("cycle", v)?),
            "reason" if !v.is_empty() && v.len() <= 200 => f.reason = Some(v.clone()),
            "reason" => return Err(Problem::unprocessable("reason: takes 1 to 200 characters")),
            "worker" if !v.is_empty() && v.len() <= 200 => f.worker = Some(v.clone()),
            "worker" => return Err(Problem::unprocessable("worker: takes 1 to 200 characters")),
            "since" => f.since = Some(parse_since(v, now)?),
            other => {
                return Err(Problem::bad_request(format!(
                    "unknown qualifier `{}` (accepted: org, model, status, cycle, reason, worker, since)",
                    clip(other)
                )))
            }
        }
    }
    Ok(f)
}

#[utoipa::path(
    get,
    path = "/api/v1/jobs",
    tag = "read",
    summary = "Job search with qualifiers",
    params(("q" = Option<String>, Query, description = "qualifiers org: model: status: cycle: reason: worker: since:"), ("limit" = Option<i64>, Query, description = "1 to 500, default 50"), ("cursor" = Option<String>, Query, description = "the `next` of the previous page"), ("org" = Option<String>, Query, description = "the qualifier of the same name, as a parameter"), ("model" = Option<String>, Query, description = "the qualifier of the same name, as a parameter"), ("status" = Option<String>, Query, description = "the qualifier of the same name, as a parameter"), ("cycle" = Option<String>, Query, description = "the qualifier of the same name, as a parameter"), ("reason" = Option<String>, Query, description = "the qualifier of the same name, as a parameter"), ("worker" = Option<String>, Query, description = "the qualifier of the same name, as a parameter"), ("since" = Option<String>, Query, description = "the qualifier of the same name, as a parameter")),
    responses((status = 200, description = "a page of jobs", body = serde_json::Value), (status = 400, description = "malformed input", body = serde_json::Value, content_type = "application/problem+json"), (status = 401, description = "no or a wrong token", body = serde_json::Value, content_type = "application/problem+json"), (status = 422, description = "a value out of range", body = serde_json::Value, content_type = "application/problem+json"))
)]
pub async fn jobs(State(state): State<Arc<ApiState>>, RawQuery(raw): RawQuery) -> Reply {
    let p = params(
        raw,
        &[
            "q", "limit", "cursor", "org", "model", "status", "cycle", "reason", "worker", "since",
        ],
    )?;
    let limit = parse_limit(p.get("limit").map(String::as_str))?;
    let before = p.get("cursor").map(|c| decode_cursor(c)).transpose()?;
    let mut pairs: Vec<(String, String)> = p
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "q" | "limit" | "cursor"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(q) = p.get("q") {
        pairs.extend(qualifiers(q)?);
    }
    let filter = job_filter(&pairs, Utc::now())?;
    let mut rows = ops::list_jobs(&state.pool, &filter, before, limit + 1).await?;
    let next = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|j| encode_cursor(j.created_at, j.id.0))
    } else {
        None
    };
    Ok(Json(json!({"items": rows, "next": next})))
}

/// The command line that runs this job's organization and model type again.
pub(crate) fn cli_line(org: OrgId, model_type: ModelType) -> String {
    format!("trainyard-scheduler enqueue --org {org} --model {model_type}")
}

#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}",
    tag = "read",
    summary = "One job: attempts, timings, candidates, model, CLI line",
    params(("id" = String, Path, description = "job id (uuid)")),
    responses((status = 200, description = "the job", body = serde_json::Value), (status = 400, description = "malformed input", body = serde_json::Value, content_type = "application/problem+json"), (status = 401, description = "no or a wrong token", body = serde_json::Value, content_type = "application/problem+json"), (status = 404, description = "no such row", body = serde_json::Value, content_type = "application/problem+json"))
)]
pub async fn job(State(state): State<Arc<ApiState>>, Path(id): Path<String>) -> Reply {
    let id: JobId = parse_id("job", &id)?;
    let j = ops::job(&state.pool, id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("job {id} does not exist")))?;
    let evaluations = ops::job_evaluations(&state.pool, id).await?;
    let model = ops::job_model(&state.pool, id).await?;
    let secs = |a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>| match (a, b) {
        (Some(a), Some(b)) => Some((b - a).num_milliseconds() as f64 / 1000.0),
        _ => None,
    };
    let timings = json!({
        "created_at": j.created_at,
        "pushed_at": j.pushed_at,
        "started_at": j.started_at,
        "heartbeat_at": j.heartbeat_at,
        "finished_at": j.finished_at,
        "queued_seconds": secs(Some(j.created_at), j.started_at),
        "run_seconds": secs(j.started_at, j.finished_at),
        "train_seconds": j.train_seconds,
    });
    let cli = cli_line(j.organization_id, j.model_type);
    Ok(Json(json!({
        "job": j,
        "attempts": {"made": j.attempts, "max": j.max_attempts},
        "timings": timings,
        "reason": j.reason,
        "candidates": evaluations,
        "model": model,
        "cli": cli,
    })))
}

#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}/epochs",
    tag = "read",
    summary = "Per-epoch losses of a job",
    params(("id" = String, Path, description = "job id (uuid)")),
    responses((status = 200, description = "the epochs", body = serde_json::Value), (status = 400, description = "malformed input", body = serde_json::Value, content_type = "application/problem+json"), (status = 401, description = "no or a wrong token", body = serde_json::Value, content_type = "application/problem+json"), (status = 404, description = "no such row", body = serde_json::Value, content_type = "application/problem+json"))
)]
pub async fn epochs(State(state): State<Arc<ApiState>>, Path(id): Path<String>) -> Reply {
    let id: JobId = parse_id("job", &id)?;
    if ops::job(&state.pool, id).await?.is_none() {
        return Err(Problem::not_found(format!("job {id} does not exist")));
    }
    let rows = ops::job_epochs(&state.pool, id).await?;
    Ok(Json(json!({"job_id": id, "items": rows})))
}

#[utoipa::path(
    get,
    path = "/api/v1/orgs",
    tag = "read",
    summary = "Organizations by id",
    params(("limit" = Option<i64>, Query, description = "1 to 500, default 50"), ("cursor" = Option<String>, Query, description = "the `next` of the previous page")),
    responses((status = 200, description = "a page of organizations", body = serde_json::Value), (status = 400, description = "malformed input", body = serde_json::Value, content_type = "application/problem+json"), (status = 401, description = "no or a wrong token", body = serde_json::Value, content_type = "application/problem+json"), (status = 422, description = "a value out of range", body = serde_json::Value, content_type = "application/problem+json"))
)]
pub async fn orgs(State(state): State<Arc<ApiState>>, RawQuery(raw): RawQuery) -> Reply {
    let p = params(raw, &["limit", "cursor"])?;
    let limit = parse_limit(p.get("limit").map(String::as_str))?;
    let after: Option<OrgId> = p
        .get("cursor")
        .map(|c| parse_id("cursor organization", c))
        .transpose()?;
    let mut rows = ops::list_orgs(&state.pool, after, limit + 1).await?;
    let next = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|o| o.id.to_string())
    } else {
        None
    };
    Ok(Json(json!({"items": rows, "next": next})))
}

#[utoipa::path(
    get,
    path = "/api/v1/orgs/{id}",
    tag = "read",
    summary = "One organization with its active models and latest jobs",
    params(("id" = String, Path, description = "organization id (uuid)")),
    responses((status = 200, description = "the organization", body = serde_json::Value), (status = 400, description = "malformed input", body = serde_json::Value, content_type = "application/problem+json"), (status = 401, description = "no or a wrong token", body = serde_json::Value, content_type = "application/problem+json"), (status = 404, description = "no such row", body = serde_json::Value, content_type = "application/problem+json"))
)]
pub async fn org(State(state): State<Arc<ApiState>>, Path(id): Path<String>) -> Reply {
    let id: OrgId = parse_id("organization", &id)?;
    let o = ops::org(&state.pool, id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("organization {id} does not exist")))?;
    let active = ops::active_models(&state.pool, id).await?;
    let latest = ops::latest_jobs(&state.pool, id).await?;
    Ok(Json(
        json!({"organization": o, "active_models": active, "latest_jobs": latest}),
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/orgs/{id}/models/{model_type}/versions",
    tag = "read",
    summary = "Model versions, newest first",
    params(("id" = String, Path, description = "organization id (uuid)"), ("model_type" = String, Path, description = "emissions_forecast, energy_forecast or anomaly_detection"), ("limit" = Option<i64>, Query, description = "1 to 500, default 50")),
    responses((status = 200, description = "the versions", body = serde_json::Value), (status = 400, description = "malformed input", body = serde_json::Value, content_type = "application/problem+json"), (status = 401, description = "no or a wrong token", body = serde_json::Value, content_type = "application/problem+json"), (status = 404, description = "no such row", body = serde_json::Value, content_type = "application/problem+json"), (status = 422, description = "a value out of range", body = serde_json::Value, content_type = "application/problem+json"))
)]
pub async fn versions(
    State(state): State<Arc<ApiState>>,
    Path((id, model_type)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Reply {
    let id: OrgId = parse_id("organization", &id)?;
    let model_type = parse_model_type(&model_type)?;
    let p = params(raw, &["limit"])?;
    let limit = parse_limit(p.get("limit").map(String::as_str))?;
    if ops::org(&state.pool, id).await?.is_none() {
        return Err(Problem::not_found(format!(
            "organization {id} does not exist"
        )));
    }
    let rows = ops::model_versions(&state.pool, id, model_type, limit).await?;
    Ok(Json(
        json!({"organization_id": id, "model_type": model_type, "items": rows}),
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/workers",
    tag = "read",
    summary = "Every worker replica, busy or idle, with its current jobs",
    responses((status = 200, description = "the workers", body = serde_json::Value), (status = 400, description = "malformed input", body = serde_json::Value, content_type = "application/problem+json"), (status = 401, description = "no or a wrong token", body = serde_json::Value, content_type = "application/problem+json"))
)]
pub async fn workers(State(state): State<Arc<ApiState>>, RawQuery(raw): RawQuery) -> Reply {
    params(raw, &[])?;
    let stale_after = state.stale_after_secs();
    let present = presence::list(&state.pool, stale_after).await?;
    let jobs = ops::running_jobs(&state.pool, stale_after).await?;
    let mut by_worker: BTreeMap<String, Vec<&ops::WorkerJob>> = BTreeMap::new();
    for j in &jobs {
        by_worker.entry(j.worker.clone()).or_default().push(j);
    }
    let mut items: Vec<Value> = present
        .iter()
        .map(|p| {
            let jobs = by_worker.remove(&p.replica).unwrap_or_default();
            json!({
                "worker": p.replica,
                "presence": true,
                "started_at": p.started_at,
                "last_seen": p.last_seen,
                "concurrency": p.concurrency,
                "busy_slots": p.busy_slots,
                "stopped_at": p.stopped_at,
                "last_heartbeat_at": jobs.iter().filter_map(|j| j.heartbeat_at).max(),
                "stale": p.stale,
                "jobs": jobs,
            })
        })
        .collect();
    // Running jobs of a replica without a presence row (its row was pruned,
    // or it runs a build from before presence): seen through its jobs only.
    items.extend(by_worker.into_iter().map(|(worker, jobs)| {
        json!({
            "worker": worker,
            "presence": false,
            "last_heartbeat_at": jobs.iter().filter_map(|j| j.heartbeat_at).max(),
            "stale": jobs.iter().all(|j| j.stale),
            "jobs": jobs,
        })
    }));
    Ok(Json(json!({
        "items": items,
        "stale_after_seconds": stale_after,
    })))
}

#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "read",
    summary = "Every write, newest first",
    params(("limit" = Option<i64>, Query, description = "1 to 500, default 50"), ("cursor" = Option<String>, Query, description = "the `next` of the previous page")),
    responses((status = 200, description = "a page of audit rows", body = serde_json::Value), (status = 400, description = "malformed input", body = serde_json::Value, content_type = "application/problem+json"), (status = 401, description = "no or a wrong token", body = serde_json::Value, content_type = "application/problem+json"), (status = 422, description = "a value out of range", body = serde_json::Value, content_type = "application/problem+json"))
)]
pub async fn audit(State(state): State<Arc<ApiState>>, RawQuery(raw): RawQuery) -> Reply {
    let p = params(raw, &["limit", "cursor"])?;
    let limit = parse_limit(p.get("limit").map(String::as_str))?;
    let before = p
        .get("cursor")
        .map(|c| {
            c.parse::<i64>()
                .map_err(|_| Problem::bad_request("malformed cursor: pass back the `next` value"))
        })
        .transpose()?;
    let mut rows = ops::list_audit(&state.pool, before, limit + 1).await?;
    let next = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|a| a.id.to_string())
    } else {
        None
    };
    Ok(Json(json!({"items": rows, "next": next})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualifiers_split_with_quotes_and_refuse_free_text() {
        let q = qualifiers(r#"org:abc  status:failed reason:"no data" since:7d"#).unwrap();
        assert_eq!(
            q,
            vec![
                ("org".into(), "abc".into()),
                ("status".into(), "failed".into()),
                ("reason".into(), "no data".into()),
                ("since".into(), "7d".into()),
            ]
        );
        assert!(qualifiers("hello").is_err());
        assert!(qualifiers("reason:\"open").is_err());
        let now = Utc::now();
        let f = job_filter(&[("colour".into(), "red".into())], now).unwrap_err();
        assert_eq!(f.status.as_u16(), 400);
        let f = job_filter(&[("model".into(), "lstm".into())], now).unwrap_err();
        assert_eq!(f.status.as_u16(), 422);
        assert_eq!(
            parse_since("2d", now).unwrap(),
            now - chrono::Duration::days(2)
        );
        assert!(parse_since("99999999999d", now).is_err());
    }
}
