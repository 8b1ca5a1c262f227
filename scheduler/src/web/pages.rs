//! The GET pages. Each reads its `/api/v1` twin in-process and renders an
//! askama template; a problem from the API becomes an error page with the
//! same status.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_json::Value;
use trainyard_shared::store::ops::{
    AuditRow, CycleRow, EvaluationRow, JobRow, ModelRow, OrgRow, ReasonGroup, StatusGroup,
};
use trainyard_shared::{JobId, JobStatus, ModelType, OrgId};

use super::charts::{sparkline, Chart, Series};
use super::views::{self, Attention, Eta, Queue, Workers};
use super::{Nav, PageError};
use crate::api::auth::Caller;
use crate::api::problem::{ApiResult, Problem};
use crate::api::{query_pairs, read, ApiState};

type PageResult<T> = Result<T, PageError>;

/// Calls an API handler and reads its answer as `T`.
async fn api<T: DeserializeOwned>(
    what: &str,
    call: impl Future<Output = ApiResult<Json<Value>>>,
) -> PageResult<T> {
    let Json(v) = call.await?;
    Ok(views::read(what, v)?)
}

/// A query string from pairs (`None` when empty).
fn query(pairs: &[(&str, &str)]) -> Option<String> {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (k, v) in pairs {
        if !v.is_empty() {
            s.append_pair(k, v);
            any = true;
        }
    }
    any.then(|| s.finish())
}

/// The value of one parameter of a page's query string.
fn param(raw: &Option<String>, key: &str) -> Option<String> {
    query_pairs(raw.as_deref())
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

// ---------------------------------------------------------------- errors

#[derive(Template, WebTemplate)]
#[template(path = "error.html")]
struct ErrorPage {
    nav: Nav,
    status: u16,
    kind: &'static str,
    detail: String,
}

/// The page of a problem (no caller known here: no write buttons).
pub fn error_page(p: &Problem) -> Response {
    let nav = Nav {
        here: "",
        role: "",
        operator: false,
        title: format!("{} {}", p.status.as_u16(), p.kind),
        css: super::assets::own("app", "css"),
        js: super::assets::own("app", "js"),
        htmx: false,
        charts: false,
        search: String::new(),
    };
    let page = ErrorPage {
        nav,
        status: p.status.as_u16(),
        kind: p.kind,
        detail: p.detail.clone(),
    };
    (p.status, page).into_response()
}

// ---------------------------------------------------------------- Now

/// One model type's progress in the current cycle.
pub struct ModelProgress {
    pub model_type: ModelType,
    pub total: i64,
    pub done: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub skipped: i64,
    pub running: i64,
    pub queued: i64,
    pub median_seconds: Option<f64>,
}

fn progress(groups: &[StatusGroup]) -> Vec<ModelProgress> {
    let mut out: Vec<ModelProgress> = Vec::new();
    for g in groups {
        let i = match out.iter().position(|p| p.model_type == g.model_type) {
            Some(i) => i,
            None => {
                out.push(ModelProgress {
                    model_type: g.model_type,
                    total: 0,
                    done: 0,
                    succeeded: 0,
                    failed: 0,
                    skipped: 0,
                    running: 0,
                    queued: 0,
                    median_seconds: None,
                });
                out.len() - 1
            }
        };
        let p = &mut out[i];
        p.total += g.jobs;
        match g.status {
            JobStatus::Succeeded => {
                p.succeeded += g.jobs;
                p.median_seconds = g.median_seconds;
            }
            JobStatus::Failed => p.failed += g.jobs,
            JobStatus::Skipped => p.skipped += g.jobs,
            JobStatus::Running => p.running += g.jobs,
            JobStatus::Queued => p.queued += g.jobs,
        }
        p.done = p.succeeded + p.failed + p.skipped;
    }
    out.sort_by_key(|p| p.model_type);
    out
}

#[derive(Template)]
#[template(path = "now_live.html")]
pub struct NowLive {
    poll_url: String,
    generated_at: DateTime<Utc>,
    attention: Vec<Attention>,
    cycle: Option<CycleRow>,
    progress: Vec<ModelProgress>,
    queued: i64,
    running: i64,
    oldest_age: Option<f64>,
    busy_workers: i64,
    alive_workers: i64,
    stale_jobs: i64,
    eta: Option<Eta>,
    spark: String,
    spark_total: i64,
    bucket_minutes: i64,
}

#[derive(Template, WebTemplate)]
#[template(path = "now.html")]
struct NowPage {
    nav: Nav,
    live: NowLive,
}

/// Severity first (critical, warning, info), then the API's order.
fn worst_first(mut items: Vec<Attention>) -> Vec<Attention> {
    let rank = |s: &str| match s {
        "critical" => 0,
        "warning" => 1,
        _ => 2,
    };
    items.sort_by_key(|a| rank(&a.severity));
    items
}

async fn now_data(state: &Arc<ApiState>, raw: Option<String>) -> PageResult<NowLive> {
    let finish_by = param(&raw, "finish_by");
    let o: views::Overview = api(
        "Now",
        read::overview(
            State(state.clone()),
            RawQuery(query(&[("finish_by", finish_by.as_deref().unwrap_or(""))])),
        ),
    )
    .await?;
    let counts: Vec<f64> = o
        .throughput
        .buckets
        .iter()
        .map(|b| b.finished as f64)
        .collect();
    let total: i64 = o.throughput.buckets.iter().map(|b| b.finished).sum();
    let spark = sparkline(
        &counts,
        &format!("{total} jobs finished in the last 2 hours"),
    );
    let views::Queue {
        queued,
        running,
        oldest_queued_age_seconds,
        ..
    }: Queue = o.queue;
    let Workers {
        alive,
        busy,
        stale_jobs,
    } = o.workers;
    let (cycle, progress) = match o.current {
        Some(c) => {
            let p = progress(&c.progress);
            (Some(c.cycle), p)
        }
        None => (None, Vec::new()),
    };
    Ok(NowLive {
        poll_url: format!(
            "/now/live{}",
            finish_by
                .as_deref()
                .and_then(|f| query(&[("finish_by", f)]))
                .map(|q| format!("?{q}"))
                .unwrap_or_default()
        ),
        generated_at: o.generated_at,
        attention: worst_first(o.attention),
        cycle,
        progress,
        queued,
        running,
        oldest_age: oldest_queued_age_seconds,
        busy_workers: busy,
        alive_workers: alive,
        stale_jobs,
        eta: o.eta,
        spark,
        spark_total: total,
        bucket_minutes: o.throughput.bucket_seconds / 60,
    })
}

/// `GET /`: what needs action first, then the current cycle.
pub async fn now(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> PageResult<Response> {
    let live = now_data(&state, raw).await?;
    let nav = Nav::new("now", "Now", &caller).with_htmx();
    Ok(NowPage { nav, live }.into_response())
}

/// `GET /now/live`: the part of Now that htmx swaps every 10 s.
pub async fn now_live(
    State(state): State<Arc<ApiState>>,
    RawQuery(raw): RawQuery,
) -> PageResult<Response> {
    let live = now_data(&state, raw).await?;
    let html = live
        .render()
        .map_err(|e| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "render", e.to_string()))?;
    Ok(axum::response::Html(html).into_response())
}

// ---------------------------------------------------------------- Cycles

#[derive(Template, WebTemplate)]
#[template(path = "cycles.html")]
struct CyclesPage {
    nav: Nav,
    rows: Vec<CycleRow>,
    next: Option<String>,
    charts: Vec<(&'static str, Chart)>,
}

/// `GET /cycles`: every cycle, and trends across them (oldest to newest).
pub async fn cycles(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> PageResult<Response> {
    let cursor = param(&raw, "cursor");
    let page: views::CyclePage = api(
        "Cycles",
        read::cycles(
            State(state.clone()),
            RawQuery(query(&[
                ("cursor", cursor.as_deref().unwrap_or("")),
                ("limit", "50"),
            ])),
        ),
    )
    .await?;
    let mut trend: Vec<&CycleRow> = page.items.iter().collect();
    trend.reverse();
    let x: Vec<f64> = trend
        .iter()
        .map(|c| c.started_at.timestamp() as f64)
        .collect();
    let col = |f: &dyn Fn(&CycleRow) -> Option<f64>| trend.iter().map(|c| f(c)).collect::<Vec<_>>();
    let mut charts = Vec::new();
    if trend.len() >= 2 {
        charts.push((
            "Jobs per cycle",
            Chart::new(true, x.clone(), "jobs")
                .with(Series::line(
                    "succeeded",
                    col(&|c| Some(c.successful_models as f64)),
                    "ok",
                ))
                .with(Series::line(
                    "failed",
                    col(&|c| Some(c.failed_models as f64)),
                    "bad",
                ))
                .with(
                    Series::line("promoted", col(&|c| Some(c.promoted_models as f64)), "c1")
                        .dashed(),
                ),
        ));
        charts.push((
            "Duration (minutes)",
            Chart::new(true, x.clone(), "minutes").with(Series::line(
                "duration",
                col(&|c| c.total_time_minutes),
                "c2",
            )),
        ));
        charts.push((
            "Median accuracy",
            Chart::new(true, x, "accuracy").with(Series::line(
                "median accuracy",
                col(&|c| c.median_accuracy),
                "c3",
            )),
        ));
    }
    Ok(CyclesPage {
        nav: Nav::new("cycles", "Cycles", &caller).with_charts(),
        rows: page.items,
        next: page.next,
        charts,
    }
    .into_response())
}

/// One cell of the matrix as drawn.
struct CellView {
    job_id: JobId,
    class: String,
    label: String,
    title: String,
}

struct MatrixRowView {
    org_id: OrgId,
    name: String,
    cells: Vec<Option<CellView>>,
}

#[derive(Template, WebTemplate)]
#[template(path = "cycle.html")]
struct CyclePage {
    nav: Nav,
    c: CycleRow,
    groups: Vec<StatusGroup>,
    reasons: Vec<ReasonGroup>,
    model_types: Vec<ModelType>,
    matrix: Vec<MatrixRowView>,
    matrix_next: Option<OrgId>,
    colour: &'static str,
}

fn cell_view(cell: &views::Cell, by_change: bool) -> CellView {
    let change = match (cell.accuracy, cell.incumbent_accuracy) {
        (Some(a), Some(b)) => Some(a - b),
        _ => None,
    };
    let class = if by_change {
        match change {
            Some(d) if d > 1e-9 => "better",
            Some(d) if d < -1e-9 => "worse",
            _ => "same",
        }
        .to_string()
    } else {
        format!("s-{}", cell.status)
    };
    let label = if by_change && change.is_some() {
        super::fmt::delta(change)
    } else {
        match cell.accuracy {
            Some(a) if cell.status == JobStatus::Succeeded => super::fmt::num(Some(a)),
            _ => cell.status.to_string(),
        }
    };
    let mut title = format!(
        "{}; accuracy {}",
        cell.status,
        super::fmt::num(cell.accuracy)
    );
    if let Some(i) = cell.incumbent_accuracy {
        title.push_str(&format!(
            ", model active before {}",
            super::fmt::num(Some(i))
        ));
    }
    if cell.promoted {
        title.push_str(", promoted");
    }
    if let Some(r) = &cell.reason {
        title.push_str(&format!("; {}", super::fmt::clip(r, 160)));
    }
    CellView {
        job_id: cell.job_id,
        class,
        label,
        title,
    }
}

/// `GET /cycles/{id}`: counts, failure groups, retry, and the matrix.
pub async fn cycle(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> PageResult<Response> {
    let detail: views::CycleDetail =
        api("Cycle", read::cycle(State(state.clone()), Path(id.clone()))).await?;
    let cursor = param(&raw, "cursor");
    let by_change = param(&raw, "colour").as_deref() == Some("change");
    let m: views::Matrix = api(
        "Cycle",
        read::matrix(
            State(state.clone()),
            Path(id),
            RawQuery(query(&[
                ("cursor", cursor.as_deref().unwrap_or("")),
                ("limit", "50"),
            ])),
        ),
    )
    .await?;
    let model_types = ModelType::ALL.to_vec();
    let matrix = m
        .rows
        .iter()
        .map(|r| MatrixRowView {
            org_id: r.organization_id,
            name: r
                .organization
                .clone()
                .unwrap_or_else(|| r.organization_id.to_string()),
            cells: model_types
                .iter()
                .map(|t| r.cells.get(t).map(|c| cell_view(c, by_change)))
                .collect(),
        })
        .collect();
    let c = detail.cycle;
    Ok(CyclePage {
        nav: Nav::new("cycles", format!("Cycle {}", c.cycle_key), &caller),
        c,
        groups: detail.by_model_type_and_status,
        reasons: detail.failure_reasons,
        model_types,
        matrix,
        matrix_next: m.next,
        colour: if by_change { "change" } else { "status" },
    }
    .into_response())
}

// ---------------------------------------------------------------- Jobs

#[derive(Template, WebTemplate)]
#[template(path = "jobs.html")]
struct JobsPage {
    nav: Nav,
    rows: Vec<JobRow>,
    next_url: Option<String>,
    first_url: String,
}

/// `GET /jobs?q=…`: the API's search, same qualifiers, keyset pages.
pub async fn jobs(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> PageResult<Response> {
    let pairs = query_pairs(raw.as_deref());
    let q = param(&raw, "q").unwrap_or_default();
    let page: views::JobPage = api(
        "Jobs",
        read::jobs(State(state.clone()), RawQuery(raw.clone())),
    )
    .await?;
    let keep: Vec<(&str, &str)> = pairs
        .iter()
        .filter(|(k, _)| k != "cursor")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let first_url = match query(&keep) {
        Some(qs) => format!("/jobs?{qs}"),
        None => "/jobs".to_string(),
    };
    let next_url = page.next.as_deref().map(|n| {
        let mut with = keep.clone();
        with.push(("cursor", n));
        format!("/jobs?{}", query(&with).unwrap_or_default())
    });
    let mut nav = Nav::new("jobs", "Jobs", &caller);
    nav.search = q;
    Ok(JobsPage {
        nav,
        rows: page.items,
        next_url,
        first_url,
    }
    .into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "job.html")]
struct JobPage {
    nav: Nav,
    j: JobRow,
    cli: String,
    retryable: bool,
    timeline: Vec<(&'static str, String, String)>,
    epochs: Option<Chart>,
    epoch_rows: usize,
    candidates: Vec<EvaluationRow>,
    model: Option<ModelRow>,
}

const COLOURS: [&str; 4] = ["c1", "c2", "c3", "c4"];

/// Training (solid) and validation (dashed) loss per epoch, one colour per algorithm.
fn epoch_chart(rows: &[trainyard_shared::store::ops::EpochRow]) -> Option<Chart> {
    let max = rows.iter().map(|r| r.epoch).max()?;
    let mut by_algorithm: BTreeMap<&str, Vec<&trainyard_shared::store::ops::EpochRow>> =
        BTreeMap::new();
    for r in rows {
        by_algorithm
            .entry(r.algorithm.as_str())
            .or_default()
            .push(r);
    }
    let x: Vec<f64> = (1..=max).map(f64::from).collect();
    let mut chart = Chart::new(false, x, "loss");
    for (i, (algorithm, rows)) in by_algorithm.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let mut train = vec![None; max as usize];
        let mut val = vec![None; max as usize];
        for r in rows {
            if r.epoch >= 1 {
                train[(r.epoch - 1) as usize] = Some(r.train_loss);
                val[(r.epoch - 1) as usize] = r.val_loss;
            }
        }
        chart = chart.with(Series::line(format!("{algorithm} training"), train, colour));
        if val.iter().any(Option::is_some) {
            chart =
                chart.with(Series::line(format!("{algorithm} validation"), val, colour).dashed());
        }
    }
    Some(chart)
}

/// `GET /jobs/{id}`.
pub async fn job(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> PageResult<Response> {
    let d: views::JobDetail = api("Job", read::job(State(state.clone()), Path(id.clone()))).await?;
    let e: views::Epochs = api("Job", read::epochs(State(state.clone()), Path(id))).await?;
    let j = d.job;
    let mut timeline = Vec::new();
    let mut last: Option<DateTime<Utc>> = None;
    for (label, t) in [
        ("created", Some(j.created_at)),
        ("pushed to Redis", j.pushed_at),
        ("started", j.started_at),
        ("last heartbeat", j.heartbeat_at),
        ("finished", j.finished_at),
    ] {
        if let Some(t) = t {
            let gap = last
                .map(|l| {
                    format!(
                        "+{}",
                        super::fmt::secs(Some((t - l).num_milliseconds() as f64 / 1000.0))
                    )
                })
                .unwrap_or_default();
            timeline.push((label, super::fmt::at(Some(t)), gap));
            last = Some(t);
        }
    }
    let retryable = matches!(j.status, JobStatus::Failed | JobStatus::Skipped);
    let chart = epoch_chart(&e.items);
    Ok(JobPage {
        nav: {
            let n = Nav::new("jobs", format!("Job {}", &j.id.to_string()[..8]), &caller);
            if chart.is_some() {
                n.with_charts()
            } else {
                n
            }
        },
        cli: d.cli,
        retryable,
        timeline,
        epochs: chart,
        epoch_rows: e.items.len(),
        candidates: d.candidates,
        model: d.model,
        j,
    }
    .into_response())
}

// ---------------------------------------------------------------- Organizations

#[derive(Template, WebTemplate)]
#[template(path = "orgs.html")]
struct OrgsPage {
    nav: Nav,
    rows: Vec<OrgRow>,
    next: Option<String>,
}

/// `GET /orgs`.
pub async fn orgs(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> PageResult<Response> {
    let cursor = param(&raw, "cursor");
    let page: views::OrgPage = api(
        "Organizations",
        read::orgs(
            State(state.clone()),
            RawQuery(query(&[
                ("cursor", cursor.as_deref().unwrap_or("")),
                ("limit", "100"),
            ])),
        ),
    )
    .await?;
    Ok(OrgsPage {
        nav: Nav::new("orgs", "Organizations", &caller),
        rows: page.items,
        next: page.next,
    }
    .into_response())
}

struct OrgModelRow {
    model_type: ModelType,
    version: String,
    accuracy: String,
    trained: String,
    job_id: Option<JobId>,
    job_status: String,
    job_when: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "org.html")]
struct OrgPage {
    nav: Nav,
    o: OrgRow,
    rows: Vec<OrgModelRow>,
}

/// `GET /orgs/{id}`: each model type's active model and latest job.
pub async fn org(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> PageResult<Response> {
    let d: views::OrgDetail =
        api("Organization", read::org(State(state.clone()), Path(id))).await?;
    let now = Utc::now();
    let rows = ModelType::ALL
        .iter()
        .map(|t| {
            let m = d.active_models.iter().find(|m| m.model_type == *t);
            let j = d.latest_jobs.iter().find(|j| j.model_type == *t);
            OrgModelRow {
                model_type: *t,
                version: m
                    .map(|m| format!("v{} ({})", m.version, m.algorithm))
                    .unwrap_or_else(|| "none".into()),
                accuracy: super::fmt::num(m.map(|m| m.accuracy)),
                trained: super::fmt::at(m.map(|m| m.training_date)),
                job_id: j.map(|j| j.id),
                job_status: j.map(|j| j.status.to_string()).unwrap_or_default(),
                job_when: super::fmt::ago(j.map(|j| j.created_at), now),
            }
        })
        .collect();
    Ok(OrgPage {
        nav: Nav::new("orgs", d.organization.name.clone(), &caller),
        o: d.organization,
        rows,
    }
    .into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "model.html")]
struct ModelPage {
    nav: Nav,
    org_id: OrgId,
    org_name: String,
    model_type: ModelType,
    versions: Vec<ModelRow>,
    accuracy_chart: Option<Chart>,
    latest_job: Option<JobRow>,
    candidates: Vec<EvaluationRow>,
    rule: Option<String>,
    series_chart: Option<Chart>,
    series_title: String,
    series_note: String,
}

/// `GET /orgs/{id}/models/{model_type}`: versions, champion vs challengers,
/// and operators' promote / roll back.
pub async fn model(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path((id, model_type)): Path<(String, String)>,
) -> PageResult<Response> {
    let d: views::OrgDetail =
        api("Model", read::org(State(state.clone()), Path(id.clone()))).await?;
    let v: views::Versions = api(
        "Model",
        read::versions(
            State(state.clone()),
            Path((id, model_type.clone())),
            RawQuery(Some("limit=100".into())),
        ),
    )
    .await?;
    let model_type = read::parse_model_type(&model_type)?;
    let latest_job = d
        .latest_jobs
        .into_iter()
        .find(|j| j.model_type == model_type);
    let (candidates, rule) = match &latest_job {
        Some(j) => {
            let jd: views::JobDetail = api(
                "Model",
                read::job(State(state.clone()), Path(j.id.to_string())),
            )
            .await?;
            (jd.candidates, jd.model.and_then(|m| m.promotion_reason))
        }
        None => (Vec::new(), None),
    };
    let mut oldest_first: Vec<&ModelRow> = v.items.iter().collect();
    oldest_first.reverse();
    let accuracy_chart = (oldest_first.len() >= 2).then(|| {
        let x = oldest_first
            .iter()
            .map(|m| m.training_date.timestamp() as f64)
            .collect();
        Chart::new(true, x, "accuracy").with(Series::line(
            "accuracy of each version",
            oldest_first.iter().map(|m| Some(m.accuracy)).collect(),
            "c1",
        ))
    });
    let org_id = d.organization.id.to_string();
    let (series_chart, series_title, series_note) = if model_type.is_forecast() {
        let f: views::Forecast = api(
            "Model",
            crate::api::models::forecast(
                State(state.clone()),
                Path((org_id, model_type.to_string())),
                RawQuery(None),
            ),
        )
        .await?;
        let note = f.note.clone().unwrap_or_else(|| {
            format!(
                "Daily {} of the last {} days, the active model's 30-day forecast, and its 80 % and 95 % intervals.",
                f.column,
                f.actuals.items.len()
            )
        });
        (forecast_chart(&f), "Forecast".to_string(), note)
    } else {
        let a: views::Anomalies = api(
            "Model",
            crate::api::models::anomalies(State(state.clone()), Path(org_id), RawQuery(None)),
        )
        .await?;
        let flagged: i64 = a.days.iter().map(|d| d.flagged_rows).sum();
        let note = a.note.clone().unwrap_or_else(|| {
            format!(
                "The daily anomaly score of the last 90 days against its threshold; {flagged} rows flagged."
            )
        });
        (anomaly_chart(&a), "Anomaly scores".to_string(), note)
    };
    let charts = accuracy_chart.is_some() || series_chart.is_some();
    let nav = Nav::new(
        "orgs",
        format!("{} {}", d.organization.name, model_type),
        &caller,
    );
    Ok(ModelPage {
        nav: if charts { nav.with_charts() } else { nav },
        org_id: d.organization.id,
        org_name: d.organization.name,
        model_type,
        versions: v.items,
        accuracy_chart,
        latest_job,
        candidates,
        rule,
        series_chart,
        series_title,
        series_note,
    }
    .into_response())
}

fn day_secs(d: chrono::NaiveDate) -> f64 {
    d.and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp() as f64)
        .unwrap_or(0.0)
}

/// Recent actuals, the forecast, and its 95 % and 80 % bands (filled).
fn forecast_chart(f: &views::Forecast) -> Option<Chart> {
    let mut days: BTreeMap<chrono::NaiveDate, [Option<f64>; 6]> = BTreeMap::new();
    for a in &f.actuals.items {
        days.entry(a.date).or_default()[0] = a.value;
    }
    for p in &f.forecast.items {
        let row = days.entry(p.prediction_date).or_default();
        row[1] = Some(p.predicted_value);
        row[2] = p.upper_95;
        row[3] = p.lower_95;
        row[4] = p.upper_80;
        row[5] = p.lower_80;
    }
    if days.is_empty() {
        return None;
    }
    let x = days.keys().map(|d| day_secs(*d)).collect();
    let col = |i: usize| days.values().map(|r| r[i]).collect::<Vec<_>>();
    let mut chart = Chart::new(true, x, f.column.clone())
        .with(Series::line("actual", col(0), "c1"))
        .with(Series::line("forecast", col(1), "c2"));
    if f.forecast.items.iter().any(|p| p.lower_95.is_some()) {
        chart = chart
            .with(Series::line("upper 95 %", col(2), "c2").band_edge())
            .with(Series::line("lower 95 %", col(3), "c2").band_edge())
            .band_between_last_two()
            .with(Series::line("upper 80 %", col(4), "c2").band_edge())
            .with(Series::line("lower 80 %", col(5), "c2").band_edge())
            .band_between_last_two();
    }
    (chart.points() > 0).then_some(chart)
}

/// The daily score, its threshold, and the flagged days as points.
fn anomaly_chart(a: &views::Anomalies) -> Option<Chart> {
    if a.days.is_empty() {
        return None;
    }
    let x = a.days.iter().map(|d| day_secs(d.date)).collect();
    let chart = Chart::new(true, x, "score")
        .with(Series::line(
            "score",
            a.days.iter().map(|d| Some(d.score)).collect(),
            "c1",
        ))
        .with(
            Series::line(
                "threshold",
                a.days.iter().map(|d| Some(d.threshold)).collect(),
                "bad",
            )
            .dashed(),
        )
        .with(
            Series::line(
                "flagged",
                a.days
                    .iter()
                    .map(|d| (d.flagged_rows > 0).then_some(d.score))
                    .collect(),
                "warn",
            )
            .points(),
        );
    Some(chart)
}

// ---------------------------------------------------------------- Workers, Audit

#[derive(Template, WebTemplate)]
#[template(path = "workers.html")]
struct WorkersPage {
    nav: Nav,
    workers: Vec<views::WorkerEntry>,
    stale_after: f64,
    now: DateTime<Utc>,
}

/// `GET /workers`.
pub async fn workers(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
) -> PageResult<Response> {
    let w: views::WorkerList = api(
        "Workers",
        read::workers(State(state.clone()), RawQuery(None)),
    )
    .await?;
    Ok(WorkersPage {
        nav: Nav::new("workers", "Workers", &caller),
        workers: w.items,
        stale_after: w.stale_after_seconds,
        now: Utc::now(),
    }
    .into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "audit.html")]
struct AuditPage {
    nav: Nav,
    rows: Vec<AuditRow>,
    next: Option<String>,
}

/// `GET /audit`.
pub async fn audit(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> PageResult<Response> {
    let cursor = param(&raw, "cursor");
    let page: views::AuditPage = api(
        "Audit",
        read::audit(
            State(state.clone()),
            RawQuery(query(&[
                ("cursor", cursor.as_deref().unwrap_or("")),
                ("limit", "100"),
            ])),
        ),
    )
    .await?;
    Ok(AuditPage {
        nav: Nav::new("audit", "Audit", &caller),
        rows: page.items,
        next: page.next,
    }
    .into_response())
}
