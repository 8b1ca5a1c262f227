//! The write routes of `/api/v1` (operator only). Enqueueing goes through
//! [`cycles::create_cycle`] (the one-live-job rule) and [`jobs::top_up`]
//! like the command line; every attempt, allowed or not, leaves a row in
//! `ops_audit`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use trainyard_shared::cycles::{self, CreateOutcome, CycleKind, LiveJob, NewCycle};
use trainyard_shared::store::ops::{self, KeyClaim, NewAudit, OpsError};
use trainyard_shared::{jobs, CycleId, JobId, JobStatus, ModelType, OrgId};

use super::auth::{require_operator, Caller};
use super::problem::{ApiResult, Problem};
use super::read::parse_model_type;
use super::{clip, parse_id, ApiState};

type Outcome = ApiResult<(StatusCode, Value)>;

/// The most pairs one retry-failed request enqueues.
pub const MAX_RETRY_PAIRS: i64 = 10_000;

/// Answers, and records the attempt in the audit table.
async fn finish(
    state: &ApiState,
    caller: &Caller,
    action: &str,
    target: &str,
    reason: Option<&str>,
    outcome: Outcome,
) -> Response {
    let (code, result, detail) = match &outcome {
        Ok((code, body)) => (*code, "ok", Some(body.clone())),
        Err(p) => (p.status, p.kind, Some(p.body())),
    };
    let entry = NewAudit {
        role: caller.role.as_str(),
        actor: &caller.actor,
        action,
        target,
        reason,
        result,
        status_code: code.as_u16(),
        request_id: &caller.request_id,
        detail,
    };
    if let Err(e) = ops::insert_audit(&state.pool, &entry).await {
        tracing::error!(error = %e, action, target, request.id = %caller.request_id,
            "recording an ops write in the audit table failed");
    }
    match outcome {
        Ok((code, body)) => (code, Json(body)).into_response(),
        Err(p) => p.into_response(),
    }
}

/// A JSON body; an empty body reads as `{}`.
fn body<T: DeserializeOwned>(bytes: &Bytes) -> ApiResult<T> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(bytes).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            Problem::bad_request(format!("the body is not JSON: {e}"))
        } else {
            Problem::unprocessable(format!("the body does not fit: {e}"))
        }
    })
}

/// A required reason of 1 to 500 characters.
fn required_reason(reason: &Option<String>) -> ApiResult<String> {
    match reason.as_deref().map(str::trim) {
        Some(r) if !r.is_empty() && r.chars().count() <= 500 => Ok(r.to_string()),
        Some(r) if !r.is_empty() => Err(Problem::unprocessable(
            "reason takes at most 500 characters",
        )),
        _ => Err(Problem::unprocessable("a reason is required")),
    }
}

fn optional_reason(reason: &Option<String>) -> ApiResult<Option<String>> {
    match reason {
        None => Ok(None),
        Some(_) => required_reason(reason).map(Some),
    }
}

/// Creates an ad-hoc cycle the way `trainyard-scheduler enqueue` does:
/// Redis is checked before anything is committed, then the cycle is created
/// under the one-live-job rule and the Redis window topped up.
async fn start_cycle(
    state: &ApiState,
    caller: &Caller,
    org: Option<OrgId>,
    model_type: Option<ModelType>,
    pairs: Vec<(OrgId, ModelType)>,
) -> ApiResult<(CreateOutcome, bool)> {
    let mut redis = state.redis.clone();
    if redis::cmd("PING")
        .query_async::<String>(&mut redis)
        .await
        .is_err()
    {
        return Err(Problem::unavailable(
            "Redis does not answer; nothing was enqueued",
        ));
    }
    let s = &state.settings;
    let new = NewCycle {
        key: format!("adhoc-{}", uuid::Uuid::new_v4()),
        kind: CycleKind::Adhoc,
        cycle_date: chrono::Utc::now(),
        deadline: s.cycle.deadline(),
        requested_by: format!("api:{}:{}", caller.role.as_str(), caller.actor),
        org,
        model_type,
        pairs,
        min_days: s.cycle.min_days,
        max_attempts: s.cycle.max_attempts,
    };
    let outcome = cycles::create_cycle(&state.pool, &new)
        .await
        .map_err(|e| match e {
            cycles::CycleError::UnknownOrg(o) => {
                Problem::not_found(format!("organization {o} does not exist"))
            }
            cycles::CycleError::UnknownCycle(c) => {
                Problem::not_found(format!("cycle {c} does not exist"))
            }
            cycles::CycleError::Db(e) => Problem::from(e),
        })?;
    let pushed = match outcome {
        CreateOutcome::Created { .. } => {
            match jobs::top_up(&state.pool, &mut redis, &state.queue_config(), s.window).await {
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "pushing after an API enqueue failed; the sweeper pushes");
                    false
                }
            }
        }
        _ => false,
    };
    Ok((outcome, pushed))
}

/// The 409 answer when the pair already has a live job; the same words as
/// the command line's.
fn already_live(jobs: &[LiveJob]) -> Problem {
    let first = &jobs[0];
    Problem::conflict("already-live", first.describe())
        .with("live_job_id", first.job_id.to_string())
        .with("live_cycle_id", first.cycle_id.to_string())
        .with("live_status", first.status.as_str())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnqueueBody {
    org_id: String,
    model_type: String,
    reason: Option<String>,
}

/// `POST /jobs`: one organization × model type now.
#[utoipa::path(
    post,
    path = "/api/v1/jobs",
    tag = "write",
    summary = "Train one organization and model type now",
    params(("Idempotency-Key" = Option<String>, Header, description = "replays the first answer for the same request")),
    responses((status = 201, description = "created", body = serde_json::Value), (status = 400, description = "malformed input", body = serde_json::Value, content_type = "application/problem+json"), (status = 401, description = "no or a wrong token", body = serde_json::Value, content_type = "application/problem+json"), (status = 403, description = "not the operator, or a cross-site request", body = serde_json::Value, content_type = "application/problem+json"), (status = 404, description = "no such row", body = serde_json::Value, content_type = "application/problem+json"), (status = 409, description = "a conflict, e.g. the pair already has a live job", body = serde_json::Value, content_type = "application/problem+json"), (status = 422, description = "a value out of range", body = serde_json::Value, content_type = "application/problem+json"))
)]
pub async fn enqueue(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let parsed: ApiResult<EnqueueBody> = body(&bytes);
    let target = parsed
        .as_ref()
        .map(|b| format!("org:{} model:{}", clip(&b.org_id), clip(&b.model_type)))
        .unwrap_or_else(|_| "jobs".to_string());
    let reason = parsed.as_ref().ok().and_then(|b| b.reason.clone());
    let key = headers
        .get("idempotency-key")
        .map(|v| v.to_str().unwrap_or("\u{0}").to_string());
    let outcome = enqueue_inner(&state, &caller, parsed, key.as_deref()).await;
    let replayed = matches!(&outcome, Ok((_, _, true)));
    let mut response = finish(
        &state,
        &caller,
        if replayed {
            "enqueue (replayed)"
        } else {
            "enqueue"
        },
        &target,
        reason.as_deref(),
        outcome.map(|(c, b, _)| (c, b)),
    )
    .await;
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

async fn enqueue_inner(
    state: &ApiState,
    caller: &Caller,
    parsed: ApiResult<EnqueueBody>,
    key: Option<&str>,
) -> ApiResult<(StatusCode, Value, bool)> {
    require_operator(state, caller)?;
    let b = parsed?;
    let org: OrgId = b.org_id.parse().map_err(|_| {
        Problem::unprocessable(format!("org_id `{}` is not a uuid", clip(&b.org_id)))
    })?;
    let model_type: ModelType = b.model_type.parse().map_err(|_| {
        Problem::unprocessable(format!(
            "unknown model type `{}` (expected emissions_forecast, energy_forecast or anomaly_detection)",
            clip(&b.model_type)
        ))
    })?;
    optional_reason(&b.reason)?;
    let Some(key) = key else {
        let (code, body) = enqueue_pair(state, caller, org, model_type).await?;
        return Ok((code, body, false));
    };
    if key.is_empty() || key.len() > 200 || key.chars().any(char::is_control) {
        return Err(Problem::bad_request(
            "Idempotency-Key takes 1 to 200 printable characters",
        ));
    }
    let request = format!("enqueue {org} {model_type}");
    let other_request =
        || Problem::unprocessable("this Idempotency-Key was used for another request");
    // Exactly one request per key is carried out: the one that claims it.
    // The others wait for its answer and replay it.
    let waiting_since = tokio::time::Instant::now();
    loop {
        match ops::claim_key(&state.pool, key, &request, KEY_ABANDONED_SECS).await? {
            KeyClaim::Claimed => break,
            KeyClaim::Done(stored) if stored.request != request => return Err(other_request()),
            KeyClaim::Done(stored) => {
                let code =
                    StatusCode::from_u16(stored.status_code as u16).unwrap_or(StatusCode::OK);
                return Ok((code, stored.body, true));
            }
            KeyClaim::InProgress { request: r } if r != request => return Err(other_request()),
            KeyClaim::InProgress { .. } if waiting_since.elapsed() >= KEY_WAIT => {
                return Err(Problem::conflict(
                    "idempotency-key-in-progress",
                    "a request with this Idempotency-Key is still being carried out; send it \
                     again shortly to get its answer",
                ))
            }
            KeyClaim::InProgress { .. } => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await
            }
        }
    }
    let outcome = enqueue_pair(state, caller, org, model_type).await;
    let recorded = match &outcome {
        Ok((code, body)) => ops::settle_key(&state.pool, key, code.as_u16(), body).await,
        Err(_) => ops::release_key(&state.pool, key).await,
    };
    if let Err(e) = recorded {
        tracing::error!(error = %e, request.id = %caller.request_id,
            "recording the answer of an Idempotency-Key failed; the key stays claimed until abandoned");
    }
    let (code, body) = outcome?;
    Ok((code, body, false))
}

/// How long a request waits for another request with the same
/// `Idempotency-Key` to finish before answering 409.
const KEY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A claimed key whose request has not settled it after this long was
/// abandoned (its process died): another request may take it over.
const KEY_ABANDONED_SECS: f64 = 120.0;

/// Enqueues one pair now: `201` with the cycle and the job, or the 409 of
/// the one-live-job rule.
async fn enqueue_pair(
    state: &ApiState,
    caller: &Caller,
    org: OrgId,
    model_type: ModelType,
) -> Outcome {
    let (outcome, pushed) =
        start_cycle(state, caller, Some(org), Some(model_type), Vec::new()).await?;
    match outcome {
        CreateOutcome::Created { cycle_id, .. } => {
            let job = ops::job_of_pair(&state.pool, cycle_id, org, model_type).await?;
            Ok((
                StatusCode::CREATED,
                json!({"cycle_id": cycle_id, "job": job, "pushed": pushed}),
            ))
        }
        CreateOutcome::AlreadyLive { jobs } if !jobs.is_empty() => Err(already_live(&jobs)),
        CreateOutcome::AlreadyLive { .. } | CreateOutcome::AlreadyExists { .. } => Err(
            Problem::conflict("retry", "the request collided with another; send it again"),
        ),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CycleBody {
    /// Organizations to train; absent: every organization.
    org_ids: Option<Vec<String>>,
    /// Model types to train; absent: every model type.
    model_types: Option<Vec<String>>,
    reason: Option<String>,
}

/// `POST /cycles`: an ad-hoc cycle of every organization, or of a list of
/// organizations and model types.
#[utoipa::path(
    post,
    path = "/api/v1/cycles",
    tag = "write",
    summary = "An ad-hoc cycle of every organization or of a list",
    responses((status = 201, description = "created", body = serde_json::Value), (status = 400, description = "malformed input", body = serde_json::Value, content_type = "application/problem+json"), (status = 401, description = "no or a wrong token", body = serde_json::Value, content_type = "application/problem+json"), (status = 403, description = "not the operator, or a cross-site request", body = serde_json::Value, content_type = "application/problem+json"), (status = 409, description = "a conflict, e.g. the pair already has a live job", body = serde_json::Value, content_type = "application/problem+json"), (status = 422, description = "a value out of range", body = serde_json::Value, content_type = "application/problem+json"))
)]
pub async fn create_cycle(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    bytes: Bytes,
) -> Response {
    let parsed: ApiResult<CycleBody> = body(&bytes);
    let reason = parsed.as_ref().ok().and_then(|b| b.reason.clone());
    let outcome = async {
        require_operator(&state, &caller)?;
        let b = parsed?;
        optional_reason(&b.reason)?;
        let types: Vec<ModelType> = match &b.model_types {
            None => ModelType::ALL.to_vec(),
            Some(list) if list.is_empty() => {
                return Err(Problem::unprocessable(
                    "model_types, when given, lists at least one",
                ))
            }
            Some(list) => list
                .iter()
                .map(|t| {
                    t.parse().map_err(|_| {
                        Problem::unprocessable(format!("unknown model type `{}`", clip(t)))
                    })
                })
                .collect::<ApiResult<_>>()?,
        };
        let pairs: Vec<(OrgId, ModelType)> = match &b.org_ids {
            None => Vec::new(),
            Some(list) if list.is_empty() || list.len() > 10_000 => {
                return Err(Problem::unprocessable(
                    "org_ids, when given, lists 1 to 10000 ids",
                ))
            }
            Some(list) => {
                let orgs: Vec<OrgId> = list
                    .iter()
                    .map(|o| {
                        o.parse().map_err(|_| {
                            Problem::unprocessable(format!("org_id `{}` is not a uuid", clip(o)))
                        })
                    })
                    .collect::<ApiResult<_>>()?;
                orgs.iter()
                    .flat_map(|o| types.iter().map(move |t| (*o, *t)))
                    .collect()
            }
        };
        let only_type = if b.model_types.is_some() && pairs.is_empty() {
            // Every organization, some model types: one cycle per type would
            // split the request, so a single type is passed directly.
            match types.as_slice() {
                [one] => Some(*one),
                _ => return Err(Problem::unprocessable(
                    "without org_ids, model_types takes one model type (or leave it out for all)",
                )),
            }
        } else {
            None
        };
        let (outcome, pushed) = start_cycle(&state, &caller, None, only_type, pairs).await?;
        match outcome {
            CreateOutcome::Created {
                cycle_id,
                total,
                queued,
                skipped,
                already_live,
            } => Ok((
                StatusCode::CREATED,
                json!({"cycle_id": cycle_id, "total": total, "queued": queued,
                    "skipped": skipped, "already_live": already_live, "pushed": pushed}),
            )),
            CreateOutcome::AlreadyLive { jobs } if !jobs.is_empty() => Err(already_live(&jobs)
                .with(
                    "live_jobs",
                    serde_json::to_value(&jobs).unwrap_or(Value::Null),
                )),
            _ => Err(Problem::conflict(
                "retry",
                "the request collided with another; send it again",
            )),
        }
    }
    .await;
    finish(
        &state,
        &caller,
        "create_cycle",
        "cycles",
        reason.as_deref(),
        outcome,
    )
    .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryBody {
    reason: Option<String>,
}

/// `POST /jobs/{id}/retry`: trains a failed or skipped job's organization
/// and model type again, in a new ad-hoc cycle.
#[utoipa::path(
    post,
    path = "/api/v1/jobs/{id}/retry",
    tag = "write",
    summary = "Train a failed or skipped job again",
    params(("id" = String, Path, description = "job id (uuid)")),
    responses((status = 201, description = "created", body = serde_json::Value), (status = 400, description = "malformed input", body = serde_json::Value, content_type = "application/problem+json"), (status = 401, description = "no or a wrong token", body = serde_json::Value, content_type = "application/problem+json"), (status = 403, description = "not the operator, or a cross-site request", body = serde_json::Value, content_type = "application/problem+json"), (status = 404, description = "no such row", body = serde_json::Value, content_type = "application/problem+json"), (status = 409, description = "a conflict, e.g. the pair already has a live job", body = serde_json::Value, content_type = "application/problem+json"))
)]
pub async fn retry(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Response {
    let parsed: ApiResult<RetryBody> = body(&bytes);
    let reason = parsed.as_ref().ok().and_then(|b| b.reason.clone());
    let target = format!("job:{}", clip(&id));
    let outcome = async {
        require_operator(&state, &caller)?;
        let id: JobId = parse_id("job", &id)?;
        let b = parsed?;
        optional_reason(&b.reason)?;
        let job = ops::job(&state.pool, id)
            .await?
            .ok_or_else(|| Problem::not_found(format!("job {id} does not exist")))?;
        if !matches!(job.status, JobStatus::Failed | JobStatus::Skipped) {
            return Err(Problem::conflict(
                "not-retryable",
                format!("job {id} is {}; only failed or skipped jobs are retried", job.status),
            ));
        }
        let (outcome, pushed) = start_cycle(
            &state,
            &caller,
            Some(job.organization_id),
            Some(job.model_type),
            Vec::new(),
        )
        .await?;
        match outcome {
            CreateOutcome::Created { cycle_id, .. } => {
                let new_job =
                    ops::job_of_pair(&state.pool, cycle_id, job.organization_id, job.model_type)
                        .await?;
                Ok((
                    StatusCode::CREATED,
                    json!({"retried_job_id": id, "cycle_id": cycle_id, "job": new_job, "pushed": pushed}),
                ))
            }
            CreateOutcome::AlreadyLive { jobs } if !jobs.is_empty() => Err(already_live(&jobs)),
            _ => Err(Problem::conflict(
                "retry",
                "the request collided with another; send it again",
            )),
        }
    }
    .await;
    finish(
        &state,
        &caller,
        "retry_job",
        &target,
        reason.as_deref(),
        outcome,
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryFailedBody {
    #[serde(default)]
    dry_run: bool,
    reason: Option<String>,
}

/// `POST /cycles/{id}/retry-failed`: with `dry_run`, how many failed pairs
/// (without a live job now) would be enqueued; otherwise one ad-hoc cycle
/// of them.
#[utoipa::path(
    post,
    path = "/api/v1/cycles/{id}/retry-failed",
    tag = "write",
    summary = "Retry the failed jobs of a cycle (dry_run first)",
    params(("id" = String, Path, description = "cycle id (uuid)")),
    responses((status = 200, description = "the dry run, or nothing to retry", body = serde_json::Value), (status = 201, description = "created", body = serde_json::Value), (status = 400, description = "malformed input", body = serde_json::Value, content_type = "application/problem+json"), (status = 401, description = "no or a wrong token", body = serde_json::Value, content_type = "application/problem+json"), (status = 403, description = "not the operator, or a cross-site request", body = serde_json::Value, content_type = "application/problem+json"), (status = 404, description = "no such row", body = serde_json::Value, content_type = "application/problem+json"), (status = 409, description = "a conflict, e.g. the pair already has a live job", body = serde_json::Value, content_type = "application/problem+json"), (status = 422, description = "a value out of range", body = serde_json::Value, content_type = "application/problem+json"))
)]
pub async fn retry_failed(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Response {
    let parsed: ApiResult<RetryFailedBody> = body(&bytes);
    let reason = parsed.as_ref().ok().and_then(|b| b.reason.clone());
    let dry = parsed.as_ref().map(|b| b.dry_run).unwrap_or(false);
    let target = format!("cycle:{}", clip(&id));
    let outcome = async {
        require_operator(&state, &caller)?;
        let id: CycleId = parse_id("cycle", &id)?;
        let b = parsed?;
        optional_reason(&b.reason)?;
        if ops::cycle(&state.pool, id).await?.is_none() {
            return Err(Problem::not_found(format!("cycle {id} does not exist")));
        }
        let pairs = ops::retryable_failed_pairs(&state.pool, id, MAX_RETRY_PAIRS + 1).await?;
        if pairs.len() as i64 > MAX_RETRY_PAIRS {
            return Err(Problem::unprocessable(format!(
                "more than {MAX_RETRY_PAIRS} failed jobs: retry them with POST /cycles instead"
            )));
        }
        if b.dry_run {
            return Ok((
                StatusCode::OK,
                json!({"cycle_id": id, "dry_run": true, "would_enqueue": pairs.len()}),
            ));
        }
        if pairs.is_empty() {
            return Ok((
                StatusCode::OK,
                json!({"cycle_id": id, "dry_run": false, "enqueued": 0, "new_cycle_id": null}),
            ));
        }
        let n = pairs.len();
        let (outcome, pushed) = start_cycle(&state, &caller, None, None, pairs).await?;
        match outcome {
            CreateOutcome::Created {
                cycle_id,
                queued,
                skipped,
                ..
            } => Ok((
                StatusCode::CREATED,
                json!({"cycle_id": id, "dry_run": false, "pairs": n, "new_cycle_id": cycle_id,
                    "queued": queued, "skipped": skipped, "pushed": pushed}),
            )),
            CreateOutcome::AlreadyLive { jobs } if !jobs.is_empty() => Err(already_live(&jobs)),
            _ => Err(Problem::conflict(
                "retry",
                "the request collided with another; send it again",
            )),
        }
    }
    .await;
    let action = if dry {
        "retry_failed (dry run)"
    } else {
        "retry_failed"
    };
    finish(&state, &caller, action, &target, reason.as_deref(), outcome).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    model_id: Option<String>,
    version: Option<i32>,
    reason: Option<String>,
}

/// `POST /orgs/{id}/models/{model_type}/promote`: makes a given version
/// (by `model_id` or `version`) the active model.
#[utoipa::path(
    post,
    path = "/api/v1/orgs/{id}/models/{model_type}/promote",
    tag = "write",
    summary = "Make a version the active model",
    params(("id" = String, Path, description = "organization id (uuid)"), ("model_type" = String, Path, description = "emissions_forecast, energy_forecast or anomaly_detection")),
    responses((status = 200, description = "promoted", body = serde_json::Value), (status = 400, description = "malformed input", body = serde_json::Value, content_type = "application/problem+json"), (status = 401, description = "no or a wrong token", body = serde_json::Value, content_type = "application/problem+json"), (status = 403, description = "not the operator, or a cross-site request", body = serde_json::Value, content_type = "application/problem+json"), (status = 404, description = "no such row", body = serde_json::Value, content_type = "application/problem+json"), (status = 409, description = "a conflict, e.g. the pair already has a live job", body = serde_json::Value, content_type = "application/problem+json"), (status = 422, description = "a value out of range", body = serde_json::Value, content_type = "application/problem+json"))
)]
pub async fn promote(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path((org, model_type)): Path<(String, String)>,
    bytes: Bytes,
) -> Response {
    let parsed: ApiResult<PromoteBody> = body(&bytes);
    let reason = parsed.as_ref().ok().and_then(|b| b.reason.clone());
    let target = format!("org:{} model:{}", clip(&org), clip(&model_type));
    let outcome = async {
        require_operator(&state, &caller)?;
        let org: OrgId = parse_id("organization", &org)?;
        let model_type = parse_model_type(&model_type)?;
        let b = parsed?;
        let why = required_reason(&b.reason)?;
        let versions = ops::model_versions(&state.pool, org, model_type, i64::MAX).await?;
        let chosen = match (&b.model_id, b.version) {
            (Some(id), None) => {
                let id: uuid::Uuid = id.parse().map_err(|_| {
                    Problem::unprocessable(format!("model_id `{}` is not a uuid", clip(id)))
                })?;
                versions.iter().find(|m| m.id == id)
            }
            (None, Some(v)) => versions.iter().find(|m| m.version == v),
            _ => {
                return Err(Problem::unprocessable(
                    "give exactly one of model_id and version",
                ))
            }
        }
        .ok_or_else(|| Problem::not_found("no such version of this organization's model"))?;
        let model = chosen.id;
        let mut tx = state.pool.begin().await?;
        let before = ops::promote(&mut tx, org, model_type, model, &why)
            .await
            .map_err(ops_problem)?;
        tx.commit().await.map_err(|e| ops_problem(e.into()))?;
        Ok((
            StatusCode::OK,
            json!({"organization_id": org, "model_type": model_type, "active_model_id": model,
                "version": chosen.version, "previous_active_model_id": before}),
        ))
    }
    .await;
    finish(
        &state,
        &caller,
        "promote",
        &target,
        reason.as_deref(),
        outcome,
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    reason: Option<String>,
}

/// `POST /orgs/{id}/models/{model_type}/rollback`: makes the previously
/// active model active again.
#[utoipa::path(
    post,
    path = "/api/v1/orgs/{id}/models/{model_type}/rollback",
    tag = "write",
    summary = "Make the previously active model active again",
    params(("id" = String, Path, description = "organization id (uuid)"), ("model_type" = String, Path, description = "emissions_forecast, energy_forecast or anomaly_detection")),
    responses((status = 200, description = "rolled back", body = serde_json::Value), (status = 400, description = "malformed input", body = serde_json::Value, content_type = "application/problem+json"), (status = 401, description = "no or a wrong token", body = serde_json::Value, content_type = "application/problem+json"), (status = 403, description = "not the operator, or a cross-site request", body = serde_json::Value, content_type = "application/problem+json"), (status = 404, description = "no such row", body = serde_json::Value, content_type = "application/problem+json"), (status = 409, description = "a conflict, e.g. the pair already has a live job", body = serde_json::Value, content_type = "application/problem+json"), (status = 422, description = "a value out of range", body = serde_json::Value, content_type = "application/problem+json"))
)]
pub async fn rollback(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path((org, model_type)): Path<(String, String)>,
    bytes: Bytes,
) -> Response {
    let parsed: ApiResult<RollbackBody> = body(&bytes);
    let reason = parsed.as_ref().ok().and_then(|b| b.reason.clone());
    let target = format!("org:{} model:{}", clip(&org), clip(&model_type));
    let outcome = async {
        require_operator(&state, &caller)?;
        let org: OrgId = parse_id("organization", &org)?;
        let model_type = parse_model_type(&model_type)?;
        let b = parsed?;
        let why = required_reason(&b.reason)?;
        let mut tx = state.pool.begin().await?;
        let (current, previous) = ops::rollback_target(&mut tx, org, model_type)
            .await
            .map_err(ops_problem)?;
        ops::promote(
            &mut tx,
            org,
            model_type,
            previous,
            &format!("rollback: {why}"),
        )
        .await
        .map_err(ops_problem)?;
        tx.commit().await.map_err(|e| ops_problem(e.into()))?;
        Ok((
            StatusCode::OK,
            json!({"organization_id": org, "model_type": model_type,
                "active_model_id": previous, "previous_active_model_id": current}),
        ))
    }
    .await;
    finish(
        &state,
        &caller,
        "rollback",
        &target,
        reason.as_deref(),
        outcome,
    )
    .await
}

fn ops_problem(e: OpsError) -> Problem {
    match e {
        OpsError::UnknownModel(_) => Problem::not_found(e.to_string()),
        OpsError::NothingToRollBack(why) => Problem::conflict("nothing-to-roll-back", why),
        OpsError::Db(sqlx::Error::Database(d)) if d.is_unique_violation() => Problem::conflict(
            "concurrent-change",
            "the active model changed at the same time (a worker promoted one); look again and retry",
        ),
        OpsError::Db(e) => Problem::from(e),
    }
}
