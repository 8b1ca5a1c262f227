//! The shapes of the `/api/v1` answers the pages read. Every page is built
//! from the JSON of its API twin (the handler is called in-process, no
//! HTTP), so a page never shows what the API would not say; these structs
//! name only the fields a page uses, and the rendering tests fail if the API
//! changes under them.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use trainyard_shared::store::ops::{
    AuditRow, CycleRow, EpochRow, EvaluationRow, JobRow, ModelRow, OrgRow, ReasonGroup,
    StatusGroup, WorkerJob,
};
use trainyard_shared::{CycleId, JobId, JobStatus, ModelType, OrgId};

use crate::api::problem::Problem;

/// An API answer read as `T`; a mismatch is a 500 naming the page.
pub fn read<T: DeserializeOwned>(what: &str, value: serde_json::Value) -> Result<T, Problem> {
    serde_json::from_value(value).map_err(|e| {
        tracing::error!(error = %e, page = what, "an API answer did not have the shape its page reads");
        Problem::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "page-shape",
            format!("the {what} page could not read its data: {e}"),
        )
    })
}

#[derive(Debug, Deserialize)]
pub struct Overview {
    pub generated_at: DateTime<Utc>,
    pub current: Option<Current>,
    pub queue: Queue,
    pub workers: Workers,
    pub eta: Option<Eta>,
    pub attention: Vec<Attention>,
    pub throughput: Throughput,
}

#[derive(Debug, Deserialize)]
pub struct Current {
    pub cycle: CycleRow,
    pub progress: Vec<StatusGroup>,
}

#[derive(Debug, Deserialize)]
pub struct Queue {
    pub queued: i64,
    pub running: i64,
    pub oldest_queued_at: Option<DateTime<Utc>>,
    pub oldest_queued_age_seconds: Option<f64>,
}

#[derive(Debug, Deserialize)]
pub struct Workers {
    pub busy: i64,
    pub stale_jobs: i64,
}

#[derive(Debug, Deserialize)]
pub struct Eta {
    pub remaining_jobs: i64,
    pub median_job_seconds: Option<f64>,
    pub busy_slots: i64,
    pub seconds: Option<f64>,
    pub finishes_at: Option<DateTime<Utc>>,
    pub finish_by: Option<DateTime<Utc>>,
    pub slots_needed: Option<i64>,
    pub replicas_needed: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub struct Attention {
    pub kind: String,
    pub severity: String,
    pub detail: String,
    #[serde(default)]
    pub count: Option<i64>,
    #[serde(default)]
    pub cycle_id: Option<CycleId>,
}

#[derive(Debug, Deserialize)]
pub struct Throughput {
    pub bucket_seconds: i64,
    pub buckets: Vec<Bucket>,
}

#[derive(Debug, Deserialize)]
pub struct Bucket {
    pub at: DateTime<Utc>,
    pub finished: i64,
}

/// A keyset page of `T`.
#[derive(Debug, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

pub type CyclePage = Page<CycleRow>;
pub type JobPage = Page<JobRow>;
pub type OrgPage = Page<OrgRow>;
pub type AuditPage = Page<AuditRow>;

#[derive(Debug, Deserialize)]
pub struct CycleDetail {
    pub cycle: CycleRow,
    pub by_model_type_and_status: Vec<StatusGroup>,
    pub failure_reasons: Vec<ReasonGroup>,
}

#[derive(Debug, Deserialize)]
pub struct Matrix {
    pub rows: Vec<MatrixRow>,
    pub next: Option<OrgId>,
}

#[derive(Debug, Deserialize)]
pub struct MatrixRow {
    pub organization_id: OrgId,
    pub organization: Option<String>,
    pub cells: std::collections::BTreeMap<ModelType, Cell>,
}

/// One organization × model type cell of a cycle.
#[derive(Debug, Deserialize)]
pub struct Cell {
    pub job_id: JobId,
    pub status: JobStatus,
    pub accuracy: Option<f64>,
    pub incumbent_accuracy: Option<f64>,
    pub promoted: bool,
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct JobDetail {
    pub job: JobRow,
    pub candidates: Vec<EvaluationRow>,
    pub model: Option<ModelRow>,
    pub cli: String,
}

#[derive(Debug, Deserialize)]
pub struct Epochs {
    pub items: Vec<EpochRow>,
}

#[derive(Debug, Deserialize)]
pub struct OrgDetail {
    pub organization: OrgRow,
    pub active_models: Vec<ModelRow>,
    pub latest_jobs: Vec<JobRow>,
}

#[derive(Debug, Deserialize)]
pub struct Versions {
    pub items: Vec<ModelRow>,
}

#[derive(Debug, Deserialize)]
pub struct WorkerList {
    pub items: Vec<WorkerEntry>,
    pub stale_after_seconds: f64,
}

#[derive(Debug, Deserialize)]
pub struct WorkerEntry {
    pub worker: String,
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    pub stale: bool,
    pub jobs: Vec<WorkerJob>,
}
