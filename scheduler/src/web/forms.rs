//! The write forms of the pages: plain HTML POSTs (they work without
//! JavaScript), handed to the API's own write handlers in-process, so the
//! role check, the one-live-job rule, the audit row and every error are
//! exactly the API's. "Retry failed" first shows how many jobs it would
//! enqueue (the API's dry run) and asks for confirmation.

use std::sync::Arc;

use askama::Template;
use askama_web::WebTemplate;
use axum::body::{to_bytes, Bytes};
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::pages::error_page;
use super::Nav;
use crate::api::auth::Caller;
use crate::api::problem::Problem;
use crate::api::{clip, query_pairs, write, ApiState};

/// The fields of a posted form (last one wins), trimmed; empty ones dropped.
fn fields(body: &Bytes) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(body);
    query_pairs(Some(&text))
        .into_iter()
        .map(|(k, v)| (k, v.trim().to_string()))
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

fn field(fields: &[(String, String)], key: &str) -> Option<String> {
    fields
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

/// Runs an API write handler and reads its answer: the JSON body on
/// success, the problem (as a page) otherwise.
async fn call(response: Response) -> Result<(StatusCode, Value), Response> {
    let status = response.status();
    let bytes = to_bytes(response.into_body(), 1 << 20).await.map_err(|e| {
        error_page(&Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "read-answer",
            e.to_string(),
        ))
    })?;
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if status.is_success() {
        return Ok((status, body));
    }
    let detail = body
        .get("detail")
        .and_then(Value::as_str)
        .unwrap_or("the request was refused")
        .to_string();
    let kind = match status {
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not-found",
        StatusCode::CONFLICT => "conflict",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
        StatusCode::BAD_REQUEST => "bad-request",
        _ => "error",
    };
    Err(error_page(&Problem::new(status, kind, detail)))
}

fn json_body(v: Value) -> Bytes {
    Bytes::from(serde_json::to_vec(&v).expect("json serializes"))
}

#[derive(Template, WebTemplate)]
#[template(path = "confirm.html")]
struct ConfirmPage {
    nav: Nav,
    heading: String,
    message: String,
    count: i64,
    action: String,
    button: String,
    back: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "done.html")]
struct DonePage {
    nav: Nav,
    heading: String,
    message: String,
    links: Vec<(String, String)>,
}

fn done(caller: &Caller, heading: &str, message: String, links: Vec<(String, String)>) -> Response {
    DonePage {
        nav: Nav::new("", heading.to_string(), caller),
        heading: heading.to_string(),
        message,
        links,
    }
    .into_response()
}

/// `POST /cycles/{id}/retry-failed`: without `confirm=yes`, the dry run and
/// a confirmation form; with it, the retry.
pub async fn retry_failed(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let f = fields(&body);
    let confirmed = field(&f, "confirm").as_deref() == Some("yes");
    let reason = field(&f, "reason");
    let back = format!("/cycles/{}", clip(&id));
    let payload = json!({"dry_run": !confirmed, "reason": reason});
    let answer = call(
        write::retry_failed(
            State(state.clone()),
            Extension(caller.clone()),
            Path(id.clone()),
            json_body(payload),
        )
        .await,
    )
    .await;
    let (_, v) = match answer {
        Ok(a) => a,
        Err(page) => return page,
    };
    if !confirmed {
        let n = v.get("would_enqueue").and_then(Value::as_i64).unwrap_or(0);
        let message = if n == 0 {
            "No failed job of this cycle can be retried now (none failed, or each already has a live job).".to_string()
        } else {
            format!(
                "{n} failed organization × model type pairs of this cycle would be trained again, in one new ad-hoc cycle."
            )
        };
        return ConfirmPage {
            nav: Nav::new("cycles", "Retry failed", &caller),
            heading: "Retry the failed jobs?".into(),
            message,
            count: n,
            action: format!("/cycles/{}/retry-failed", clip(&id)),
            button: format!("Retry {n} jobs"),
            back,
        }
        .into_response();
    }
    let n = v.get("pairs").and_then(Value::as_i64).unwrap_or(0);
    let mut links = vec![("The retried cycle".to_string(), back)];
    if let Some(new) = v.get("new_cycle_id").and_then(Value::as_str) {
        links.insert(0, ("The new cycle".to_string(), format!("/cycles/{new}")));
    }
    links.push(("Audit".to_string(), "/audit".to_string()));
    done(
        &caller,
        "Retry enqueued",
        format!("{n} jobs enqueued again."),
        links,
    )
}

/// `POST /jobs/{id}/retry`.
pub async fn retry(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let f = fields(&body);
    let payload = json!({"reason": field(&f, "reason")});
    let answer = call(
        write::retry(
            State(state.clone()),
            Extension(caller.clone()),
            Path(id.clone()),
            json_body(payload),
        )
        .await,
    )
    .await;
    let (_, v) = match answer {
        Ok(a) => a,
        Err(page) => return page,
    };
    let mut links = Vec::new();
    if let Some(j) = v.pointer("/job/id").and_then(Value::as_str) {
        links.push(("The new job".to_string(), format!("/jobs/{j}")));
    }
    links.push((
        "The retried job".to_string(),
        format!("/jobs/{}", clip(&id)),
    ));
    links.push(("Audit".to_string(), "/audit".to_string()));
    done(
        &caller,
        "Job enqueued again",
        format!("Job {} will be trained again.", clip(&id)),
        links,
    )
}

/// `POST /orgs/{id}/models/{model_type}/promote` (`version`, `reason`).
pub async fn promote(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path((org, model_type)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let f = fields(&body);
    let version = match field(&f, "version").map(|v| v.parse::<i32>()) {
        Some(Ok(v)) => Value::from(v),
        _ => {
            return error_page(&Problem::unprocessable(
                "the form needs a whole-number version",
            ))
        }
    };
    let payload = json!({"version": version, "reason": field(&f, "reason")});
    let back = format!("/orgs/{}/models/{}", clip(&org), clip(&model_type));
    match call(
        write::promote(
            State(state.clone()),
            Extension(caller.clone()),
            Path((org, model_type)),
            json_body(payload),
        )
        .await,
    )
    .await
    {
        Ok((_, v)) => done(
            &caller,
            "Promoted",
            format!(
                "Version {} is now the active model.",
                v.get("version").cloned().unwrap_or(Value::Null)
            ),
            vec![
                ("The model".into(), back),
                ("Audit".into(), "/audit".into()),
            ],
        ),
        Err(page) => page,
    }
}

/// `POST /orgs/{id}/models/{model_type}/rollback` (`reason`).
pub async fn rollback(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path((org, model_type)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let f = fields(&body);
    let payload = json!({"reason": field(&f, "reason")});
    let back = format!("/orgs/{}/models/{}", clip(&org), clip(&model_type));
    match call(
        write::rollback(
            State(state.clone()),
            Extension(caller.clone()),
            Path((org, model_type)),
            json_body(payload),
        )
        .await,
    )
    .await
    {
        Ok(_) => done(
            &caller,
            "Rolled back",
            "The previously active version is active again.".to_string(),
            vec![
                ("The model".into(), back),
                ("Audit".into(), "/audit".into()),
            ],
        ),
        Err(page) => page,
    }
}
