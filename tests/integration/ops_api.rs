//! The ops API on its axum `Router` against a seeded database: JSON shapes,
//! keyset pagination, qualifiers, the auth matrix, the one-live-job 409 from
//! the API and the command line, idempotent replay, dry-run then confirm,
//! promotion and rollback with their audit rows, and problem documents for
//! bad input.

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;
use trainyard_scheduler::api::{self, ApiSettings, ApiState};
use trainyard_tests::{binary, enqueue, insert_org, TestEnv};
use uuid::Uuid;

const READER: &str = "reader-secret-token";
const OPERATOR: &str = "operator-secret-token";

async fn app(
    env: &TestEnv,
    reader: Option<&str>,
    operator: Option<&str>,
) -> anyhow::Result<axum::Router> {
    let state = Arc::new(ApiState {
        pool: env.pool.clone(),
        redis: env.redis().await?,
        settings: env.scheduler_settings(),
        tokens: api::auth::Tokens::new(reader, operator),
    });
    Ok(api::router(state))
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> anyhow::Result<Answer> {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b.to_string()))?,
        None => req.body(Body::empty())?,
    };
    let res = app.clone().oneshot(req).await?;
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await?.to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| anyhow::anyhow!("{path}: {e}: {}", String::from_utf8_lossy(&bytes)))?
    };
    Ok(Answer {
        status,
        headers,
        body,
    })
}

fn is_problem(a: &Answer, status: u16) {
    assert_eq!(a.status.as_u16(), status, "{}", a.body);
    assert_eq!(
        a.headers.get("content-type").unwrap(),
        "application/problem+json",
        "{}",
        a.body
    );
    assert_eq!(a.body["status"], status, "{}", a.body);
    assert!(a.body["type"]
        .as_str()
        .unwrap()
        .starts_with("urn:trainyard:problem:"));
    assert!(!a.body["detail"].as_str().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_pages_filters_and_refuses_bad_input_with_problems() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let mut orgs = Vec::new();
    for i in 0..4 {
        orgs.push(insert_org(&env.pool, &format!("org-{i}"), 200, 70 + i).await?);
    }
    insert_org(&env.pool, "short", 100, 79).await?;
    let cycle = enqueue(&env, None, None).await?;
    let app = app(&env, Some(READER), Some(OPERATOR)).await?;

    // Health is open; the API is not.
    let a = call(&app, "GET", "/health", None, &[], None).await?;
    assert_eq!(a.status, StatusCode::OK);
    let a = call(&app, "GET", "/ready", None, &[], None).await?;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let a = call(&app, "GET", "/api/v1/cycles", None, &[], None).await?;
    is_problem(&a, 401);
    let challenges: Vec<&str> = a
        .headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(
        challenges.iter().any(|c| c.starts_with("Bearer"))
            && challenges.iter().any(|c| c.starts_with("Basic")),
        "{challenges:?}"
    );
    let a = call(&app, "GET", "/api/v1/cycles", Some("wrong"), &[], None).await?;
    is_problem(&a, 401);
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("alice:{READER}"))
    );
    let a = call(
        &app,
        "GET",
        "/api/v1/cycles",
        None,
        &[("authorization", &basic)],
        None,
    )
    .await?;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);

    // Cycles and one cycle.
    let a = call(&app, "GET", "/api/v1/cycles", Some(READER), &[], None).await?;
    assert_eq!(a.body["items"][0]["id"], cycle.to_string());
    assert_eq!(a.body["items"][0]["total_jobs"], 15);
    assert_eq!(a.body["items"][0]["live_jobs"], 12);
    let a = call(
        &app,
        "GET",
        &format!("/api/v1/cycles/{cycle}"),
        Some(READER),
        &[],
        None,
    )
    .await?;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let groups = a.body["by_model_type_and_status"].as_array().unwrap();
    let queued: i64 = groups
        .iter()
        .filter(|g| g["status"] == "queued")
        .map(|g| g["jobs"].as_i64().unwrap())
        .sum();
    assert_eq!(queued, 12, "{}", a.body);

    // The matrix: one row per organization, a cell per model type, paged.
    let a = call(
        &app,
        "GET",
        &format!("/api/v1/cycles/{cycle}/matrix?limit=3"),
        Some(READER),
        &[],
        None,
    )
    .await?;
    assert_eq!(a.body["rows"].as_array().unwrap().len(), 3, "{}", a.body);
    assert!(a.body["rows"][0]["cells"]["energy_forecast"]["job_id"].is_string());
    let next = a.body["next"].as_str().unwrap().to_string();
    let b = call(
        &app,
        "GET",
        &format!("/api/v1/cycles/{cycle}/matrix?limit=3&cursor={next}"),
        Some(READER),
        &[],
        None,
    )
    .await?;
    assert_eq!(b.body["rows"].as_array().unwrap().len(), 2, "{}", b.body);
    assert!(b.body["next"].is_null());

    // Keyset pagination over jobs: every job once, no gaps.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/jobs?limit=4&cursor={c}"),
            None => "/api/v1/jobs?limit=4".to_string(),
        };
        let a = call(&app, "GET", &path, Some(READER), &[], None).await?;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        for j in a.body["items"].as_array().unwrap() {
            seen.push(j["id"].as_str().unwrap().to_string());
        }
        match a.body["next"].as_str() {
            Some(n) => cursor = Some(n.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 15);
    assert_eq!(
        seen.iter().collect::<HashSet<_>>().len(),
        15,
        "no duplicates"
    );

    // Qualifiers and the same as plain parameters.
    let q = |s: &str| {
        s.replace(' ', "%20")
            .replace(':', "%3A")
            .replace('"', "%22")
    };
    let a = call(
        &app,
        "GET",
        &format!(
            "/api/v1/jobs?q={}",
            q("status:skipped model:energy_forecast")
        ),
        Some(READER),
        &[],
        None,
    )
    .await?;
    assert_eq!(a.body["items"].as_array().unwrap().len(), 1, "{}", a.body);
    assert_eq!(a.body["items"][0]["organization"], "short");
    let a = call(
        &app,
        "GET",
        "/api/v1/jobs?status=queued&model=anomaly_detection",
        Some(READER),
        &[],
        None,
    )
    .await?;
    assert_eq!(a.body["items"].as_array().unwrap().len(), 4, "{}", a.body);
    let org0 = orgs[0];
    let a = call(
        &app,
        "GET",
        &format!(
            "/api/v1/jobs?q={}",
            q(&format!("org:{org0} cycle:{cycle} since:1d"))
        ),
        Some(READER),
        &[],
        None,
    )
    .await?;
    assert_eq!(a.body["items"].as_array().unwrap().len(), 3, "{}", a.body);
    let a = call(
        &app,
        "GET",
        &format!("/api/v1/jobs?q={}", q("reason:\"insufficient data\"")),
        Some(READER),
        &[],
        None,
    )
    .await?;
    assert_eq!(a.body["items"].as_array().unwrap().len(), 3, "{}", a.body);
    let a = call(
        &app,
        "GET",
        "/api/v1/jobs?worker=nobody",
        Some(READER),
        &[],
        None,
    )
    .await?;
    assert_eq!(a.body["items"].as_array().unwrap().len(), 0, "{}", a.body);

    // One job: detail, the command line that reproduces it, epochs.
    let job_id = &seen[0];
    let a = call(
        &app,
        "GET",
        &format!("/api/v1/jobs/{job_id}"),
        Some(READER),
        &[],
        None,
    )
    .await?;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(a.body["cli"]
        .as_str()
        .unwrap()
        .starts_with("trainyard-scheduler enqueue --org "));
    assert!(a.body["candidates"].is_array() && a.body["timings"]["created_at"].is_string());
    let a = call(
        &app,
        "GET",
        &format!("/api/v1/jobs/{job_id}/epochs"),
        Some(READER),
        &[],
        None,
    )
    .await?;
    assert_eq!(a.body["items"], json!([]));

    // Organizations, versions, workers, overview, audit.
    let a = call(&app, "GET", "/api/v1/orgs?limit=2", Some(READER), &[], None).await?;
    assert_eq!(a.body["items"].as_array().unwrap().len(), 2);
    assert!(a.body["next"].is_string());
    let a = call(
        &app,
        "GET",
        &format!("/api/v1/orgs/{org0}"),
        Some(READER),
        &[],
        None,
    )
    .await?;
    assert_eq!(
        a.body["latest_jobs"].as_array().unwrap().len(),
        3,
        "{}",
        a.body
    );
    let a = call(
        &app,
        "GET",
        &format!("/api/v1/orgs/{org0}/models/energy_forecast/versions"),
        Some(READER),
        &[],
        None,
    )
    .await?;
    assert_eq!(a.body["items"], json!([]));
    let a = call(&app, "GET", "/api/v1/workers", Some(READER), &[], None).await?;
    assert_eq!(a.body["items"], json!([]));
    let a = call(&app, "GET", "/api/v1/overview", Some(READER), &[], None).await?;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["current"]["cycle"]["id"], cycle.to_string());
    assert_eq!(a.body["queue"]["queued"], 12);
    assert!(a.body["queue"]["oldest_queued_age_seconds"].is_number());
    assert!(a.body["attention"].is_array());
    let a = call(&app, "GET", "/api/v1/audit", Some(READER), &[], None).await?;
    assert_eq!(a.body["items"], json!([]));

    // Bad input: problem documents, never a 500.
    for (path, status) in [
        ("/api/v1/jobs/not-a-uuid", 400),
        ("/api/v1/cycles/123", 400),
        (&format!("/api/v1/jobs/{}", Uuid::new_v4()), 404),
        (&format!("/api/v1/cycles/{}/matrix", Uuid::new_v4()), 404),
        ("/api/v1/jobs?q=colour%3Ared", 400),
        ("/api/v1/jobs?q=hello", 400),
        ("/api/v1/jobs?status=done", 422),
        ("/api/v1/jobs?model=lstm", 422),
        ("/api/v1/jobs?since=yesterday", 422),
        ("/api/v1/jobs?limit=99999999999999999999", 422),
        ("/api/v1/jobs?limit=0", 422),
        ("/api/v1/jobs?cursor=garbage", 400),
        ("/api/v1/jobs?colour=red", 400),
        ("/api/v1/cycles?cursor=1.nope", 400),
        (&format!("/api/v1/orgs/{org0}/models/lstm/versions"), 404),
        (&format!("/api/v1/orgs/{}", Uuid::new_v4()), 404),
        ("/api/v1/nothing-here", 404),
        ("/elsewhere", 404),
    ] {
        let a = call(&app, "GET", path, Some(READER), &[], None).await?;
        is_problem(&a, status);
    }
    let a = call(&app, "DELETE", "/api/v1/cycles", Some(OPERATOR), &[], None).await?;
    is_problem(&a, 405);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_need_the_operator_agree_with_the_cli_and_are_audited() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let org = insert_org(&env.pool, "acme", 200, 91).await?;
    let other = insert_org(&env.pool, "globex", 200, 92).await?;
    let app = app(&env, Some(READER), Some(OPERATOR)).await?;
    let enqueue_body =
        json!({"org_id": org, "model_type": "energy_forecast", "reason": "data fixed"});

    // The auth matrix of a write.
    let a = call(
        &app,
        "POST",
        "/api/v1/jobs",
        None,
        &[],
        Some(enqueue_body.clone()),
    )
    .await?;
    is_problem(&a, 401);
    let a = call(
        &app,
        "POST",
        "/api/v1/jobs",
        Some(READER),
        &[],
        Some(enqueue_body.clone()),
    )
    .await?;
    is_problem(&a, 403);
    let a = call(
        &app,
        "POST",
        "/api/v1/jobs",
        Some(OPERATOR),
        &[("sec-fetch-site", "cross-site")],
        Some(enqueue_body.clone()),
    )
    .await?;
    is_problem(&a, 403);
    let a = call(
        &app,
        "POST",
        "/api/v1/jobs",
        Some(OPERATOR),
        &[("origin", "https://evil.example")],
        Some(enqueue_body.clone()),
    )
    .await?;
    is_problem(&a, 403);

    // Operator: created; the same Idempotency-Key replays the same answer.
    let key = [("idempotency-key", "enqueue-acme-1")];
    let a = call(
        &app,
        "POST",
        "/api/v1/jobs",
        Some(OPERATOR),
        &key,
        Some(enqueue_body.clone()),
    )
    .await?;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let job_id = a.body["job"]["id"].as_str().unwrap().to_string();
    assert_eq!(a.body["job"]["status"], "queued");
    let replay = call(
        &app,
        "POST",
        "/api/v1/jobs",
        Some(OPERATOR),
        &key,
        Some(enqueue_body.clone()),
    )
    .await?;
    assert_eq!(replay.status, StatusCode::CREATED);
    assert_eq!(replay.body, a.body);
    assert_eq!(replay.headers.get("idempotent-replayed").unwrap(), "true");
    let other_request = json!({"org_id": other, "model_type": "energy_forecast"});
    let a = call(
        &app,
        "POST",
        "/api/v1/jobs",
        Some(OPERATOR),
        &key,
        Some(other_request),
    )
    .await?;
    is_problem(&a, 422);

    // A second request for the live pair: 409 naming the live job, from the
    // API and from the command line alike.
    let a = call(
        &app,
        "POST",
        "/api/v1/jobs",
        Some(OPERATOR),
        &[],
        Some(enqueue_body.clone()),
    )
    .await?;
    is_problem(&a, 409);
    assert_eq!(a.body["live_job_id"], job_id.as_str());
    let out = std::process::Command::new(binary("trainyard-scheduler")?)
        .args([
            "enqueue",
            "--org",
            &org.to_string(),
            "--model",
            "energy_forecast",
        ])
        .env("DATABASE_URL", &env.database_url)
        .env("REDIS_URL", &env.redis_url)
        .env("TRAINYARD_QUEUE", &env.queue)
        .stdin(std::process::Stdio::null())
        .output()?;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.trim_end() == a.body["detail"].as_str().unwrap(),
        "CLI: {said}\nAPI: {}",
        a.body
    );

    // Bad write bodies are problems too.
    for (body, status) in [
        (
            json!({"org_id": "nope", "model_type": "energy_forecast"}),
            422,
        ),
        (json!({"org_id": org, "model_type": "lstm"}), 422),
        (json!({"org_id": org}), 422),
        (
            json!({"org_id": Uuid::new_v4(), "model_type": "energy_forecast"}),
            404,
        ),
    ] {
        let a = call(
            &app,
            "POST",
            "/api/v1/jobs",
            Some(OPERATOR),
            &[],
            Some(body),
        )
        .await?;
        is_problem(&a, status);
    }
    let raw = Request::builder()
        .method("POST")
        .uri("/api/v1/jobs")
        .header("authorization", format!("Bearer {OPERATOR}"))
        .body(Body::from("{not json"))?;
    assert_eq!(
        app.clone().oneshot(raw).await?.status(),
        StatusCode::BAD_REQUEST
    );

    // Retry: a failed job of a cycle; dry run first, then confirm.
    let failed: Uuid = sqlx::query_scalar(
        "update ml_training_jobs set status = 'failed', reason = 'test failure', finished_at = now()
         where id = $1 returning cycle_id",
    )
    .bind(Uuid::parse_str(&job_id)?)
    .fetch_one(&env.pool)
    .await?;
    let path = format!("/api/v1/cycles/{failed}/retry-failed");
    let a = call(
        &app,
        "POST",
        &path,
        Some(OPERATOR),
        &[],
        Some(json!({"dry_run": true})),
    )
    .await?;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["would_enqueue"], 1);
    let live: i64 =
        sqlx::query_scalar("select count(*) from ml_training_jobs where status = 'queued'")
            .fetch_one(&env.pool)
            .await?;
    assert_eq!(live, 0, "a dry run enqueues nothing");
    let a = call(
        &app,
        "POST",
        &path,
        Some(OPERATOR),
        &[],
        Some(json!({"reason": "flaky disk"})),
    )
    .await?;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["queued"], 1);
    let a = call(
        &app,
        "POST",
        &format!("/api/v1/jobs/{job_id}/retry"),
        Some(OPERATOR),
        &[],
        None,
    )
    .await?;
    is_problem(&a, 409);

    // Promotion and rollback leave exactly one active model.
    let mut ids = Vec::new();
    for (version, status) in [(1, "archived"), (2, "active"), (3, "candidate")] {
        let id = Uuid::new_v4();
        sqlx::query(
            "insert into ml_models (id, organization_id, model_type, algorithm, version, status,
                 accuracy, mae, rmse, r2_score, training_samples, training_date, cycle_id, job_id)
             values ($1, $2, 'emissions_forecast', 'ridge', $3, $4, 80, 1, 1, 0.5, 100,
                     now() - (10 - $3) * interval '1 day', $5, gen_random_uuid())",
        )
        .bind(id)
        .bind(org)
        .bind(version)
        .bind(status)
        .bind(failed)
        .execute(&env.pool)
        .await?;
        ids.push(id);
    }
    let active = || async {
        sqlx::query_scalar::<_, Uuid>(
            "select id from ml_models where organization_id = $1 and model_type = 'emissions_forecast'
             and status = 'active'",
        )
        .bind(org)
        .fetch_all(&env.pool)
        .await
    };
    let models = format!("/api/v1/orgs/{org}/models/emissions_forecast");
    let a = call(
        &app,
        "POST",
        &format!("{models}/promote"),
        Some(OPERATOR),
        &[],
        Some(json!({"version": 3})),
    )
    .await?;
    is_problem(&a, 422);
    let a = call(
        &app,
        "POST",
        &format!("{models}/promote"),
        Some(OPERATOR),
        &[],
        Some(json!({"version": 3, "reason": "better holdout"})),
    )
    .await?;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(active().await?, vec![ids[2]]);
    let a = call(
        &app,
        "POST",
        &format!("{models}/rollback"),
        Some(OPERATOR),
        &[],
        Some(json!({"reason": "tenant complaint"})),
    )
    .await?;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(
        active().await?,
        vec![ids[1]],
        "back to the model active before"
    );
    let a = call(
        &app,
        "POST",
        &format!("{models}/promote"),
        Some(OPERATOR),
        &[],
        Some(json!({"version": 9, "reason": "x"})),
    )
    .await?;
    is_problem(&a, 404);
    let a = call(
        &app,
        "POST",
        &format!("/api/v1/orgs/{org}/models/lstm/rollback"),
        Some(OPERATOR),
        &[],
        Some(json!({"reason": "x"})),
    )
    .await?;
    is_problem(&a, 404);
    let a = call(
        &app,
        "GET",
        &format!("{models}/versions"),
        Some(READER),
        &[],
        None,
    )
    .await?;
    assert_eq!(a.body["items"].as_array().unwrap().len(), 3);

    // Every write attempt left an audit row with its role and request id;
    // no token appears in them.
    let a = call(
        &app,
        "GET",
        "/api/v1/audit?limit=500",
        Some(READER),
        &[],
        None,
    )
    .await?;
    let rows = a.body["items"].as_array().unwrap().clone();
    let text = a.body.to_string();
    assert!(!text.contains(OPERATOR) && !text.contains(READER));
    let count = |action: &str, result: &str| {
        rows.iter()
            .filter(|r| r["action"] == action && r["result"] == result)
            .count()
    };
    assert_eq!(count("promote", "ok"), 1);
    assert_eq!(count("rollback", "ok"), 1);
    assert_eq!(count("enqueue", "ok"), 1);
    assert_eq!(count("enqueue (replayed)", "ok"), 1);
    assert_eq!(count("enqueue", "already-live"), 1);
    assert_eq!(count("retry_failed (dry run)", "ok"), 1);
    assert_eq!(count("retry_failed", "ok"), 1);
    assert!(rows
        .iter()
        .any(|r| r["role"] == "reader" && r["status_code"] == 403));
    let promote = rows
        .iter()
        .find(|r| r["action"] == "promote" && r["result"] == "ok")
        .unwrap();
    assert_eq!(promote["reason"], "better holdout");
    assert_eq!(promote["role"], "operator");
    assert!(!promote["request_id"].as_str().unwrap().is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_off_without_an_operator_token_and_open_binds_need_a_token() -> anyhow::Result<()>
{
    let env = TestEnv::new().await?;
    let org = insert_org(&env.pool, "acme", 200, 93).await?;
    let app = app(&env, None, None).await?;
    let a = call(&app, "GET", "/api/v1/cycles", None, &[], None).await?;
    assert_eq!(a.status, StatusCode::OK, "loopback without tokens reads");
    let a = call(
        &app,
        "POST",
        "/api/v1/jobs",
        None,
        &[],
        Some(json!({"org_id": org, "model_type": "energy_forecast"})),
    )
    .await?;
    is_problem(&a, 403);
    assert!(a.body["detail"]
        .as_str()
        .unwrap()
        .contains("TRAINYARD_OPERATOR_TOKEN"));

    let open = |reader: Option<&str>| ApiSettings {
        port: 0,
        bind: "::".parse().unwrap(),
        reader_token: reader.map(str::to_string),
        operator_token: None,
        metrics_secs: 15,
    };
    let e = open(None).check().unwrap_err().to_string();
    assert!(
        e.contains("TRAINYARD_READER_TOKEN") && e.contains("TRAINYARD_BIND"),
        "{e}"
    );
    assert!(open(Some("t")).check().is_ok());
    assert!(!format!("{:?}", open(Some("t0ken-value"))).contains("t0ken-value"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_route() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let app = app(&env, Some(READER), Some(OPERATOR)).await?;
    let a = call(&app, "GET", "/api/v1/openapi.json", Some(READER), &[], None).await?;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(
        a.body["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        a.body["openapi"]
    );
    assert!(a.body["components"]["securitySchemes"]["bearer"].is_object());
    let mut listed = HashSet::new();
    for (path, item) in a.body["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path}"
            );
            listed.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    let routes = [
        "GET /health",
        "GET /ready",
        "GET /api/v1/openapi.json",
        "GET /api/v1/overview",
        "GET /api/v1/cycles",
        "POST /api/v1/cycles",
        "GET /api/v1/cycles/{id}",
        "GET /api/v1/cycles/{id}/matrix",
        "POST /api/v1/cycles/{id}/retry-failed",
        "GET /api/v1/jobs",
        "POST /api/v1/jobs",
        "GET /api/v1/jobs/{id}",
        "GET /api/v1/jobs/{id}/epochs",
        "POST /api/v1/jobs/{id}/retry",
        "GET /api/v1/orgs",
        "GET /api/v1/orgs/{id}",
        "GET /api/v1/orgs/{id}/models/{model_type}/versions",
        "POST /api/v1/orgs/{id}/models/{model_type}/promote",
        "POST /api/v1/orgs/{id}/models/{model_type}/rollback",
        "GET /api/v1/workers",
        "GET /api/v1/audit",
    ];
    let expected: HashSet<String> = routes.iter().map(|r| r.to_string()).collect();
    assert_eq!(listed, expected);
    // Every listed route exists on the router: none answers the 404 of an
    // unknown route (ids are made up, so rows may be missing).
    let some = Uuid::new_v4().to_string();
    for route in routes {
        let (method, path) = route.split_once(' ').unwrap();
        let path = path
            .replace("{id}", &some)
            .replace("{model_type}", "energy_forecast");
        let a = call(&app, method, &path, Some(READER), &[], None).await?;
        assert!(
            !(a.status == StatusCode::NOT_FOUND
                && a.body["detail"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("no such route"))),
            "{route} is not routed"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_histograms_with_closed_labels_and_gauges_from_postgres() -> anyhow::Result<()>
{
    use trainyard_scheduler::api::metrics;
    let env = TestEnv::new().await?;
    for i in 0..4 {
        insert_org(&env.pool, &format!("org-{i}"), 200, 110 + i).await?;
    }
    let cycle = enqueue(&env, None, None).await?;
    metrics::handle();
    let app = app(&env, Some(READER), Some(OPERATOR)).await?;
    for path in [
        "/api/v1/overview".to_string(),
        format!("/api/v1/cycles/{cycle}"),
        format!("/api/v1/cycles/{}", Uuid::new_v4()),
        "/api/v1/jobs?status=queued".to_string(),
    ] {
        call(&app, "GET", &path, Some(READER), &[], None).await?;
    }
    let mut conn = env.pool.acquire().await?;
    metrics::refresh_gauges(&mut conn, 5.0).await?;

    // /metrics needs no token and renders the text format.
    let res = app
        .clone()
        .oneshot(Request::builder().uri("/metrics").body(Body::empty())?)
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"]
        .to_str()?
        .starts_with("text/plain"));
    let text = String::from_utf8(res.into_body().collect().await?.to_bytes().to_vec())?;

    let mut kinds = std::collections::HashMap::new();
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut parts = line[7..].split(' ');
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        kinds.insert(name.to_string(), kind.to_string());
        assert!(name.starts_with("trainyard_"), "{line}");
        assert_ne!(
            kind, "summary",
            "{line}: summaries cannot be summed across replicas"
        );
        if name.ends_with("_duration_seconds") {
            assert_eq!(kind, "histogram", "{line}");
        }
        if kind == "counter" {
            assert!(name.ends_with("_total"), "{line}");
        }
    }
    for (name, kind) in [
        ("trainyard_api_requests_total", "counter"),
        ("trainyard_api_request_duration_seconds", "histogram"),
        ("trainyard_jobs", "gauge"),
        ("trainyard_oldest_queued_job_age_seconds", "gauge"),
        ("trainyard_workers_busy", "gauge"),
        ("trainyard_cycle_jobs", "gauge"),
        ("trainyard_cycle_overdue", "gauge"),
        ("trainyard_gauge_refresh_duration_seconds", "histogram"),
    ] {
        assert_eq!(
            kinds.get(name).map(String::as_str),
            Some(kind),
            "{name} in:\n{text}"
        );
    }
    let allowed = ["route", "method", "status", "le"];
    let hexish = |v: &str| v.chars().filter(|c| c.is_ascii_hexdigit()).count() >= 32;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        if let Some((_, rest)) = line.split_once('{') {
            let labels = rest.rsplit_once('}').unwrap().0;
            for pair in labels.split("\",") {
                let (k, v) = pair.split_once('=').unwrap();
                assert!(allowed.contains(&k), "label {k} in {line}");
                assert!(!hexish(v), "an id as a label value: {line}");
            }
        }
    }
    assert!(
        text.contains("trainyard_jobs{status=\"queued\"} 12"),
        "{text}"
    );
    assert!(text.contains("route=\"/api/v1/cycles/{id}\""), "{text}");
    assert!(
        text.contains("trainyard_api_request_duration_seconds_bucket{"),
        "{text}"
    );
    Ok(())
}
