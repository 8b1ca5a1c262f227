//! The GET routes about what an organization's models say: two versions
//! compared on the same holdout, the active forecast beside recent actuals,
//! and the anomaly scores of a date range.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::Json;
use chrono::{NaiveDate, Utc};
use serde_json::{json, Value};
use trainyard_shared::domain::PROMOTION_MARGIN;
use trainyard_shared::store::ops::{self, EvaluationRow, ModelRow};
use trainyard_shared::{ModelStatus, ModelType, OrgId};

use super::problem::{ApiResult, Problem};
use super::read::{params, parse_model_type};
use super::{clip, parse_id, ApiState};

type Reply = ApiResult<Json<Value>>;

/// The forecasters' trivial baseline (the worker trains it beside every
/// forecaster; its name in `ml_evaluations`).
const FORECAST_BASELINE: &str = "seasonal_naive";

/// The widest `/anomalies` range, and the default one.
pub const MAX_ANOMALY_DAYS: i64 = 400;
pub const DEFAULT_ANOMALY_DAYS: i64 = 90;

/// `/forecast`'s `days` of actuals: 1 to this, default 90.
pub const MAX_ACTUAL_DAYS: i32 = 730;

async fn org_exists(state: &ApiState, id: OrgId) -> ApiResult<()> {
    match ops::org(&state.pool, id).await? {
        Some(_) => Ok(()),
        None => Err(Problem::not_found(format!(
            "organization {id} does not exist"
        ))),
    }
}

/// A version number parameter; missing or not a positive whole number → 400.
fn version_param(p: &std::collections::BTreeMap<String, String>, name: &str) -> ApiResult<i32> {
    let v = p.get(name).ok_or_else(|| {
        Problem::bad_request(format!(
            "parameter `{name}` is required: a version number (see …/versions)"
        ))
    })?;
    match v.parse::<i32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(Problem::bad_request(format!(
            "malformed version `{}` for `{name}`: expected a whole number from 1",
            clip(v)
        ))),
    }
}

async fn version_of(
    state: &ApiState,
    id: OrgId,
    model_type: ModelType,
    version: i32,
) -> ApiResult<ModelRow> {
    ops::model_version(&state.pool, id, model_type, version)
        .await?
        .ok_or_else(|| {
            Problem::not_found(format!(
                "organization {id} has no version {version} of its {model_type} model"
            ))
        })
}

/// Where the two versions' metrics come from.
struct Holdout {
    /// `incumbent_rescored`, `same_data_window` or `different`.
    basis: &'static str,
    same: bool,
    /// The job whose holdout both were scored on, for `incumbent_rescored`.
    job_id: Option<String>,
    older: Value,
    newer: Value,
    /// Accuracies on the metrics shown.
    accuracy: (f64, f64),
    /// MAE of each, and of the seasonal naive baseline on the newer's holdout.
    baseline_mae: Option<f64>,
    newer_mae: f64,
    detail: String,
}

fn metrics_of_model(m: &ModelRow) -> Value {
    json!({"accuracy": m.accuracy, "mae": m.mae, "rmse": m.rmse, "r2_score": m.r2_score,
        "mape": m.mape, "mase": m.mase, "training_samples": m.training_samples,
        "data_start": m.data_start, "data_end": m.data_end, "scored_on": "its own holdout"})
}

fn metrics_of_evaluation(e: &EvaluationRow, job: &str) -> Value {
    json!({"accuracy": e.accuracy, "mae": e.mae, "rmse": e.rmse, "r2_score": e.r2_score,
        "mape": e.mape, "mase": e.mase, "precision": e.precision_score, "recall": e.recall,
        "f1": e.f1, "role": e.role, "scored_on": format!("the holdout of job {job}")})
}

/// Finds the best common ground of two versions: a job that scored both
/// (the newer one's job re-scores the model active when it trained), else
/// an identical data window, else none.
async fn holdout_of(state: &ApiState, older: &ModelRow, newer: &ModelRow) -> ApiResult<Holdout> {
    for (judge, other) in [(newer, older), (older, newer)] {
        let Some(other_eval) =
            ops::evaluation_of_model(&state.pool, judge.job_id, other.id).await?
        else {
            continue;
        };
        let Some(judge_eval) =
            ops::evaluation_of_model(&state.pool, judge.job_id, judge.id).await?
        else {
            continue;
        };
        let job = judge.job_id.to_string();
        let (o, n) = if judge.id == newer.id {
            (&other_eval, &judge_eval)
        } else {
            (&judge_eval, &other_eval)
        };
        let baseline = ops::baseline_of_job(&state.pool, judge.job_id, FORECAST_BASELINE).await?;
        return Ok(Holdout {
            basis: "incumbent_rescored",
            same: true,
            detail: format!(
                "job {job} (which trained v{}) re-scored v{} on its own holdout",
                judge.version, other.version
            ),
            job_id: Some(job.clone()),
            older: metrics_of_evaluation(o, &job),
            newer: metrics_of_evaluation(n, &job),
            accuracy: (o.accuracy, n.accuracy),
            baseline_mae: baseline.filter(|_| judge.id == newer.id).map(|b| b.mae),
            newer_mae: n.mae,
        });
    }
    let same_window = older.data_start.is_some()
        && older.data_start == newer.data_start
        && older.data_end == newer.data_end;
    let baseline = ops::baseline_of_job(&state.pool, newer.job_id, FORECAST_BASELINE).await?;
    Ok(Holdout {
        basis: if same_window {
            "same_data_window"
        } else {
            "different"
        },
        same: same_window,
        detail: if same_window {
            "no job scored both, but both were trained on the same data window, so their \
             holdouts are the same days (rows edited in between are not detected)"
                .to_string()
        } else {
            format!(
                "no job scored both and their data windows differ ({:?}..{:?} vs {:?}..{:?}): \
                 each version's metrics are on its own holdout and are not comparable",
                older.data_start, older.data_end, newer.data_start, newer.data_end
            )
        },
        job_id: None,
        older: metrics_of_model(older),
        newer: metrics_of_model(newer),
        accuracy: (older.accuracy, newer.accuracy),
        baseline_mae: if same_window {
            baseline.map(|b| b.mae)
        } else {
            None
        },
        newer_mae: newer.mae,
    })
}

/// The promotion rule applied to the two versions: the newer replaces the
/// older only when it is useful (accuracy above 0, MAE below the seasonal
/// naive baseline's when one was scored on the same holdout) and beats the
/// older by more than [`PROMOTION_MARGIN`] points. Returns (preferred,
/// reason); `None` when the holdouts differ.
fn verdict(h: &Holdout, older: i32, newer: i32) -> (Option<i32>, String) {
    let (a_old, a_new) = h.accuracy;
    if !h.same {
        return (
            None,
            "not judged: the promotion rule compares versions on the same holdout only".into(),
        );
    }
    // NaN compares false: not useful either.
    let useful = a_new > 0.0;
    if !useful {
        return (
            Some(older),
            format!("v{newer}'s accuracy {a_new:.2} is no better than a trivial model"),
        );
    }
    if let Some(b) = h.baseline_mae {
        let beats_baseline = h.newer_mae < b;
        if !beats_baseline {
            return (
                Some(older),
                format!(
                    "v{newer} is no better than the {FORECAST_BASELINE} baseline on the same \
                     holdout (MAE {:.2} vs {b:.2})",
                    h.newer_mae
                ),
            );
        }
    }
    let margin = a_new - a_old;
    if margin > PROMOTION_MARGIN {
        (
            Some(newer),
            format!(
                "v{newer} beats v{older} by {margin:.2} accuracy points (more than \
                 {PROMOTION_MARGIN}) on the same holdout ({a_new:.2} vs {a_old:.2})"
            ),
        )
    } else {
        (
            Some(older),
            format!(
                "v{newer} does not beat v{older} by more than {PROMOTION_MARGIN} accuracy points \
                 on the same holdout ({a_new:.2} vs {a_old:.2}): the older is kept"
            ),
        )
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/orgs/{id}/models/{model_type}/compare",
    tag = "read",
    summary = "Two versions side by side, on the same holdout when one exists",
    params(("id" = String, Path, description = "organization id (uuid)"), ("model_type" = String, Path, description = "emissions_forecast, energy_forecast or anomaly_detection"), ("a" = i32, Query, description = "a version number"), ("b" = i32, Query, description = "another version number")),
    responses((status = 200, description = "the comparison", body = serde_json::Value), (status = 400, description = "malformed input", body = serde_json::Value, content_type = "application/problem+json"), (status = 401, description = "no or a wrong token", body = serde_json::Value, content_type = "application/problem+json"), (status = 404, description = "no such row", body = serde_json::Value, content_type = "application/problem+json"), (status = 422, description = "a value out of range", body = serde_json::Value, content_type = "application/problem+json"))
)]
pub async fn compare(
    State(state): State<Arc<ApiState>>,
    Path((id, model_type)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Reply {
    let id: OrgId = parse_id("organization", &id)?;
    let model_type = parse_model_type(&model_type)?;
    let p = params(raw, &["a", "b"])?;
    let (a, b) = (version_param(&p, "a")?, version_param(&p, "b")?);
    if a == b {
        return Err(Problem::unprocessable(
            "a and b name the same version: give two different versions",
        ));
    }
    org_exists(&state, id).await?;
    let (ma, mb) = (
        version_of(&state, id, model_type, a).await?,
        version_of(&state, id, model_type, b).await?,
    );
    let (older, newer) = if a < b { (&ma, &mb) } else { (&mb, &ma) };
    let h = holdout_of(&state, older, newer).await?;
    let (preferred, reason) = verdict(&h, older.version, newer.version);
    let (metrics_a, metrics_b, acc_a, acc_b) = if a < b {
        (&h.older, &h.newer, h.accuracy.0, h.accuracy.1)
    } else {
        (&h.newer, &h.older, h.accuracy.1, h.accuracy.0)
    };
    let label = |v: i32| if v == a { "a" } else { "b" };
    Ok(Json(json!({
        "organization_id": id,
        "model_type": model_type,
        "a": ma,
        "b": mb,
        "holdout": {
            "same": h.same,
            "basis": h.basis,
            "job_id": h.job_id,
            "detail": h.detail,
        },
        "metrics": {"a": metrics_a, "b": metrics_b},
        "comparison": {
            "accuracy_b_minus_a": acc_b - acc_a,
            "margin": PROMOTION_MARGIN,
            "rule": format!("a newer version replaces an older one only when it is better than \
                a trivial model and beats it by more than {PROMOTION_MARGIN} accuracy points on \
                the same holdout"),
            "preferred": preferred.map(label),
            "preferred_version": preferred,
            "reason": reason,
        },
    })))
}

#[utoipa::path(
    get,
    path = "/api/v1/orgs/{id}/models/{model_type}/forecast",
    tag = "read",
    summary = "Recent daily actuals and the active model's stored forecast with its intervals",
    params(("id" = String, Path, description = "organization id (uuid)"), ("model_type" = String, Path, description = "emissions_forecast or energy_forecast"), ("days" = Option<i32>, Query, description = "days of actuals, 1 to 730, default 90")),
    responses((status = 200, description = "actuals and forecast", body = serde_json::Value), (status = 400, description = "malformed input", body = serde_json::Value, content_type = "application/problem+json"), (status = 401, description = "no or a wrong token", body = serde_json::Value, content_type = "application/problem+json"), (status = 404, description = "no such row", body = serde_json::Value, content_type = "application/problem+json"), (status = 422, description = "a value out of range, or a model type that does not forecast", body = serde_json::Value, content_type = "application/problem+json"))
)]
pub async fn forecast(
    State(state): State<Arc<ApiState>>,
    Path((id, model_type)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Reply {
    let id: OrgId = parse_id("organization", &id)?;
    let model_type = parse_model_type(&model_type)?;
    let p = params(raw, &["days"])?;
    if !model_type.is_forecast() {
        return Err(Problem::unprocessable(format!(
            "{model_type} does not forecast: its scores are at GET /api/v1/orgs/{id}/anomalies"
        ))
        .with("see", format!("/api/v1/orgs/{id}/anomalies")));
    }
    let days = match p.get("days") {
        None => 90,
        Some(v) => match v.parse::<i32>() {
            Ok(n) if (1..=MAX_ACTUAL_DAYS).contains(&n) => n,
            _ => {
                return Err(Problem::unprocessable(format!(
                    "days must be a whole number from 1 to {MAX_ACTUAL_DAYS}"
                )))
            }
        },
    };
    org_exists(&state, id).await?;
    let column = model_type.reads();
    let actuals = ops::daily_actuals(&state.pool, id, column, days).await?;
    let active = ops::active_models(&state.pool, id)
        .await?
        .into_iter()
        .find(|m| m.model_type == model_type && m.status == ModelStatus::Active);
    let (job_id, predictions) = match &active {
        Some(m) => ops::latest_predictions(&state.pool, id, model_type, m.id).await?,
        None => (None, Vec::new()),
    };
    let note = match (&active, predictions.is_empty()) {
        (None, _) => Some("no model is active for this organization and model type"),
        (Some(_), true) => Some("the active model has no stored forecast"),
        (Some(_), false) if predictions.iter().all(|p| p.lower_80.is_none()) => {
            Some("the stored forecast has no prediction intervals (written before they existed, or too short a history to calibrate them)")
        }
        _ => None,
    };
    Ok(Json(json!({
        "organization_id": id,
        "model_type": model_type,
        "column": column.label(),
        "actuals": {"days": days, "items": actuals},
        "active_model": active,
        "forecast": {"job_id": job_id, "items": predictions},
        "note": note,
    })))
}

/// A `from`/`to` date; malformed → 422.
fn date_param(
    p: &std::collections::BTreeMap<String, String>,
    name: &str,
) -> ApiResult<Option<NaiveDate>> {
    p.get(name)
        .map(|v| {
            NaiveDate::parse_from_str(v, "%Y-%m-%d").map_err(|_| {
                Problem::unprocessable(format!(
                    "{name} `{}` is not a date: expected YYYY-MM-DD",
                    clip(v)
                ))
            })
        })
        .transpose()
}

#[utoipa::path(
    get,
    path = "/api/v1/orgs/{id}/anomalies",
    tag = "read",
    summary = "Daily anomaly scores and the flagged rows of a date range",
    params(("id" = String, Path, description = "organization id (uuid)"), ("from" = Option<String>, Query, description = "first date (YYYY-MM-DD), default 89 days before `to`"), ("to" = Option<String>, Query, description = "last date (YYYY-MM-DD), default today (UTC); at most 400 days after `from`")),
    responses((status = 200, description = "scores and flags", body = serde_json::Value), (status = 400, description = "malformed input", body = serde_json::Value, content_type = "application/problem+json"), (status = 401, description = "no or a wrong token", body = serde_json::Value, content_type = "application/problem+json"), (status = 404, description = "no such row", body = serde_json::Value, content_type = "application/problem+json"), (status = 422, description = "a bad date or range", body = serde_json::Value, content_type = "application/problem+json"))
)]
pub async fn anomalies(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Reply {
    let id: OrgId = parse_id("organization", &id)?;
    let p = params(raw, &["from", "to"])?;
    let to_given = date_param(&p, "to")?;
    let from_given = date_param(&p, "from")?;
    let out_of_range = || Problem::unprocessable("from/to: a date out of the supported range");
    let default_span = chrono::Duration::days(DEFAULT_ANOMALY_DAYS - 1);
    let to = match (to_given, from_given) {
        (Some(t), _) => t,
        (None, Some(f)) => f
            .checked_add_signed(default_span)
            .ok_or_else(out_of_range)?
            .min(Utc::now().date_naive().max(f)),
        (None, None) => Utc::now().date_naive(),
    };
    let from = match from_given {
        Some(f) => f,
        None => to
            .checked_sub_signed(default_span)
            .ok_or_else(out_of_range)?,
    };
    if from > to {
        return Err(Problem::unprocessable(format!(
            "from {from} is after to {to}"
        )));
    }
    let span = (to - from).num_days() + 1;
    if span > MAX_ANOMALY_DAYS {
        return Err(Problem::unprocessable(format!(
            "{from}..{to} spans {span} days; at most {MAX_ANOMALY_DAYS}"
        )));
    }
    org_exists(&state, id).await?;
    let model_type = ModelType::AnomalyDetection;
    let Some((job_id, model_id, scored_at)) = ops::latest_anomaly_job(&state.pool, id).await?
    else {
        return Ok(Json(json!({
            "organization_id": id, "from": from, "to": to,
            "job_id": null, "model_id": null, "days": [], "flagged": [],
            "note": format!("no {model_type} job of this organization has written scores"),
        })));
    };
    let days = ops::anomaly_days(&state.pool, job_id, from, to).await?;
    let flagged = ops::anomaly_flags(&state.pool, job_id, from, to).await?;
    let active = ops::active_models(&state.pool, id)
        .await?
        .into_iter()
        .find(|m| m.model_type == model_type)
        .map(|m| m.id);
    Ok(Json(json!({
        "organization_id": id,
        "from": from,
        "to": to,
        "job_id": job_id,
        "model_id": model_id,
        "model_is_active": active == Some(model_id),
        "scored_at": scored_at,
        "days": days,
        "flagged": flagged,
    })))
}
