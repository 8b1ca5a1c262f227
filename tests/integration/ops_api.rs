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
        "GET /api/v1/orgs/{id}/models/{model_type}/compare",
        "GET /api/v1/orgs/{id}/models/{model_type}/forecast",
        "GET /api/v1/orgs/{id}/anomalies",
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
        ("trainyard_workers_alive", "gauge"),
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
    let allowed = ["route", "method", "status", "le", "direction"];
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

/// Inserts a model version of `org` (its own job id) and returns its id.
#[allow(clippy::too_many_arguments)]
async fn insert_model(
    env: &TestEnv,
    org: Uuid,
    model_type: &str,
    version: i32,
    status: &str,
    accuracy: f64,
    window: (&str, &str),
    cycle: Uuid,
) -> anyhow::Result<(Uuid, Uuid)> {
    let (id, job) = (Uuid::new_v4(), Uuid::new_v4());
    sqlx::query(
        "insert into ml_models (id, organization_id, model_type, algorithm, version, status,
             accuracy, mae, rmse, r2_score, training_samples, data_start, data_end, cycle_id, job_id)
         values ($1, $2, $3, 'ridge', $4, $5, $6, 100 - $6, 1, 0.5, 100, $7::date, $8::date, $9, $10)",
    )
    .bind(id)
    .bind(org)
    .bind(model_type)
    .bind(version)
    .bind(status)
    .bind(accuracy)
    .bind(window.0)
    .bind(window.1)
    .bind(cycle)
    .bind(job)
    .execute(&env.pool)
    .await?;
    Ok((id, job))
}

async fn insert_evaluation(
    env: &TestEnv,
    job: Uuid,
    org: Uuid,
    (algorithm, role, model, champion): (&str, &str, Option<Uuid>, bool),
    accuracy: f64,
    mae: f64,
) -> anyhow::Result<()> {
    sqlx::query(
        "insert into ml_evaluations (job_id, organization_id, model_type, algorithm, role, model_id,
             is_champion, accuracy, mae, rmse, r2_score)
         values ($1, $2, 'energy_forecast', $3, $4, $5, $6, $7, $8, 1, 0.5)",
    )
    .bind(job)
    .bind(org)
    .bind(algorithm)
    .bind(role)
    .bind(model)
    .bind(champion)
    .bind(accuracy)
    .bind(mae)
    .execute(&env.pool)
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_forecast_and_anomalies_read_what_the_models_stored() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let org = insert_org(&env.pool, "acme", 200, 120).await?;
    let cycle = Uuid::new_v4();
    let app = app(&env, Some(READER), Some(OPERATOR)).await?;
    let w1 = ("2026-01-01", "2026-06-30");
    let w2 = ("2026-02-01", "2026-10-31");
    // v1 was active when v2 trained: v2's job re-scored it on v2's holdout
    // (81 there, against 80 on its own). v3 trained on v2's very window but
    // no job scored both.
    let (v1, _) =
        insert_model(&env, org, "energy_forecast", 1, "archived", 80.0, w1, cycle).await?;
    let (v2, job2) =
        insert_model(&env, org, "energy_forecast", 2, "active", 84.0, w2, cycle).await?;
    insert_model(
        &env,
        org,
        "energy_forecast",
        3,
        "candidate",
        90.0,
        w2,
        cycle,
    )
    .await?;
    insert_evaluation(
        &env,
        job2,
        org,
        ("ridge", "candidate", Some(v2), true),
        84.0,
        16.0,
    )
    .await?;
    insert_evaluation(
        &env,
        job2,
        org,
        ("lstm", "incumbent", Some(v1), false),
        81.0,
        19.0,
    )
    .await?;
    insert_evaluation(
        &env,
        job2,
        org,
        ("seasonal_naive", "candidate", None, false),
        70.0,
        30.0,
    )
    .await?;

    let compare = |q: &str| format!("/api/v1/orgs/{org}/models/energy_forecast/compare?{q}");
    let a = call(&app, "GET", &compare("a=2&b=1"), Some(READER), &[], None).await?;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["holdout"]["same"], true, "{}", a.body);
    assert_eq!(a.body["holdout"]["basis"], "incumbent_rescored");
    assert_eq!(a.body["holdout"]["job_id"], job2.to_string());
    assert_eq!(a.body["metrics"]["a"]["accuracy"], 84.0);
    assert_eq!(
        a.body["metrics"]["b"]["accuracy"], 81.0,
        "v1 as re-scored on v2's holdout, not its own 80"
    );
    assert_eq!(a.body["comparison"]["accuracy_b_minus_a"], -3.0);
    assert_eq!(a.body["comparison"]["preferred"], "a", "{}", a.body);
    assert_eq!(a.body["comparison"]["preferred_version"], 2);
    assert_eq!(a.body["a"]["version"], 2);

    let a = call(&app, "GET", &compare("a=2&b=3"), Some(READER), &[], None).await?;
    assert_eq!(a.body["holdout"]["same"], true, "{}", a.body);
    assert_eq!(a.body["holdout"]["basis"], "same_data_window");
    assert_eq!(a.body["comparison"]["preferred"], "b", "{}", a.body);

    let a = call(&app, "GET", &compare("a=1&b=3"), Some(READER), &[], None).await?;
    assert_eq!(a.body["holdout"]["same"], false, "{}", a.body);
    assert_eq!(a.body["holdout"]["basis"], "different");
    assert!(a.body["comparison"]["preferred"].is_null(), "{}", a.body);
    assert_eq!(a.body["metrics"]["a"]["accuracy"], 80.0);
    assert_eq!(a.body["metrics"]["b"]["accuracy"], 90.0);

    // The forecast: 90 days of actuals up to the last day with data, and
    // the active model's stored predictions with their intervals.
    let other_job = Uuid::new_v4();
    for (job, model, shift) in [(job2, v2, 0.0), (other_job, v1, 500.0)] {
        sqlx::query(
            "insert into ml_predictions (organization_id, model_type, model_id, job_id,
                 prediction_date, predicted_value, lower_80, upper_80, lower_95, upper_95)
             select $1, 'energy_forecast', $2, $3, date '2026-11-01' + g, 1000 + $4 + g,
                    990 + g, 1010 + g, 980 + g, 1020 + g
             from generate_series(0, 29) g",
        )
        .bind(org)
        .bind(model)
        .bind(job)
        .bind(shift)
        .execute(&env.pool)
        .await?;
    }
    let forecast = format!("/api/v1/orgs/{org}/models/energy_forecast/forecast");
    let a = call(&app, "GET", &forecast, Some(READER), &[], None).await?;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let actuals = a.body["actuals"]["items"].as_array().unwrap();
    assert_eq!(actuals.len(), 90, "{}", a.body);
    assert_eq!(actuals[89]["date"], "2026-10-31");
    assert!(actuals[0]["value"].as_f64().unwrap() > 500.0);
    assert_eq!(a.body["active_model"]["id"], v2.to_string());
    assert_eq!(a.body["forecast"]["job_id"], job2.to_string());
    let points = a.body["forecast"]["items"].as_array().unwrap();
    assert_eq!(points.len(), 30);
    assert_eq!(points[0]["predicted_value"], 1000.0);
    assert_eq!(points[0]["lower_95"], 980.0);
    assert_eq!(points[29]["upper_80"], 1039.0);
    let a = call(
        &app,
        "GET",
        &format!("{forecast}?days=7"),
        Some(READER),
        &[],
        None,
    )
    .await?;
    assert_eq!(a.body["actuals"]["items"].as_array().unwrap().len(), 7);
    let a = call(
        &app,
        "GET",
        &format!("/api/v1/orgs/{org}/models/emissions_forecast/forecast"),
        Some(READER),
        &[],
        None,
    )
    .await?;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(a.body["active_model"].is_null());
    assert_eq!(a.body["column"], "co2e_kg");
    assert_eq!(a.body["actuals"]["items"].as_array().unwrap().len(), 90);

    // Anomalies: daily score and threshold, flagged rows with their kind,
    // from the latest anomaly job of the organization.
    let (model, anomaly_job) = (Uuid::new_v4(), Uuid::new_v4());
    sqlx::query(
        "insert into ml_training_cycles (id, cycle_key, kind, cycle_date, status, deadline_at,
             requested_by)
         values ($1, 'test', 'adhoc', now(), 'completed', now(), 'test')",
    )
    .bind(cycle)
    .execute(&env.pool)
    .await?;
    sqlx::query(
        "insert into ml_training_jobs (id, cycle_id, organization_id, model_type, status,
             max_attempts, finished_at, model_id)
         values ($1, $2, $3, 'anomaly_detection', 'succeeded', 3, now(), $4)",
    )
    .bind(anomaly_job)
    .bind(cycle)
    .bind(org)
    .bind(model)
    .execute(&env.pool)
    .await?;
    sqlx::query(
        "insert into ml_anomaly_flags (organization_id, model_id, job_id, metrics_data_id, date,
             score, threshold, is_anomaly, kind)
         select $1, $2, $3, g, date '2026-10-01' + (g / 2), g * 0.1, 3.0, g in (40, 41, 50),
                case when g = 40 then 'spike' when g = 41 then 'stuck' when g = 50 then null end
         from generate_series(0, 61) g",
    )
    .bind(org)
    .bind(model)
    .bind(anomaly_job)
    .execute(&env.pool)
    .await?;
    let anomalies = format!("/api/v1/orgs/{org}/anomalies");
    let a = call(
        &app,
        "GET",
        &format!("{anomalies}?from=2026-10-15&to=2026-10-31"),
        Some(READER),
        &[],
        None,
    )
    .await?;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["job_id"], anomaly_job.to_string());
    let days = a.body["days"].as_array().unwrap();
    assert_eq!(days.len(), 17, "{}", a.body);
    let d20 = days.iter().find(|d| d["date"] == "2026-10-21").unwrap();
    assert_eq!(d20["rows"], 2);
    assert_eq!(d20["flagged_rows"], 2);
    assert_eq!(d20["kinds"], json!(["spike", "stuck"]));
    assert_eq!(d20["threshold"], 3.0);
    let flagged = a.body["flagged"].as_array().unwrap();
    assert_eq!(flagged.len(), 3, "{}", a.body);
    assert_eq!(flagged[0]["kind"], "spike");
    assert!(flagged[2]["kind"].is_null());
    let a = call(&app, "GET", &anomalies, Some(READER), &[], None).await?;
    assert_eq!(a.status, StatusCode::OK, "default range: {}", a.body);
    assert_eq!(a.body["to"], chrono::Utc::now().date_naive().to_string());

    // Bad input: problem documents, never a 500.
    let unknown = Uuid::new_v4();
    for (path, status) in [
        (compare("a=x&b=1"), 400),
        (compare("a=1"), 400),
        (compare("a=0&b=1"), 400),
        (compare("a=1&b=1"), 422),
        (compare("a=1&b=9"), 404),
        (compare("a=1&b=2&c=3"), 400),
        (
            format!("/api/v1/orgs/{org}/models/lstm/compare?a=1&b=2"),
            404,
        ),
        (
            "/api/v1/orgs/nope/models/energy_forecast/compare?a=1&b=2".to_string(),
            400,
        ),
        (
            format!("/api/v1/orgs/{unknown}/models/energy_forecast/compare?a=1&b=2"),
            404,
        ),
        (format!("{forecast}?days=0"), 422),
        (format!("{forecast}?days=abc"), 422),
        (
            format!("/api/v1/orgs/{unknown}/models/energy_forecast/forecast"),
            404,
        ),
        (format!("/api/v1/orgs/{org}/models/lstm/forecast"), 404),
        (format!("{anomalies}?from=2026-13-01"), 422),
        (format!("{anomalies}?from=2026-10-31&to=2026-10-01"), 422),
        (format!("{anomalies}?from=2025-01-01&to=2026-10-01"), 422),
        (format!("{anomalies}?to=yesterday"), 422),
        (format!("{anomalies}?to=-262143-01-01"), 422),
        (format!("{anomalies}?since=2026-01-01"), 400),
        ("/api/v1/orgs/42/anomalies".to_string(), 400),
        (format!("/api/v1/orgs/{unknown}/anomalies"), 404),
    ] {
        let a = call(&app, "GET", &path, Some(READER), &[], None).await?;
        is_problem(&a, status);
    }
    let a = call(
        &app,
        "GET",
        &format!("/api/v1/orgs/{org}/models/anomaly_detection/forecast"),
        Some(READER),
        &[],
        None,
    )
    .await?;
    is_problem(&a, 422);
    assert_eq!(a.body["see"], format!("/api/v1/orgs/{org}/anomalies"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_between_postgres_and_redis_is_reported_and_measured() -> anyhow::Result<()> {
    use trainyard_scheduler::api::metrics;
    let env = TestEnv::new().await?;
    for i in 0..2 {
        insert_org(&env.pool, &format!("org-{i}"), 200, 130 + i).await?;
    }
    let cycle = enqueue(&env, None, None).await?;
    let app = app(&env, Some(READER), Some(OPERATOR)).await?;
    let drift_items = |body: &Value| -> Vec<Value> {
        body["attention"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["kind"] == "queue_drift")
            .cloned()
            .collect()
    };
    let a = call(&app, "GET", "/api/v1/overview", Some(READER), &[], None).await?;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(drift_items(&a.body), Vec::<Value>::new(), "{}", a.body);

    // Pushed a minute ago (past the grace), then Redis loses one delivery.
    sqlx::query(
        "update ml_training_jobs set pushed_at = now() - interval '1 minute' where cycle_id = $1",
    )
    .bind(cycle)
    .execute(&env.pool)
    .await?;
    let (lost, seq): (Uuid, i32) = sqlx::query_as(
        "select id, push_seq from ml_training_jobs where cycle_id = $1 and status = 'queued'
         order by id limit 1",
    )
    .bind(cycle)
    .fetch_one(&env.pool)
    .await?;
    let mut redis = env.redis().await?;
    trainyard_shared::queue::forget_delivery(
        &mut redis,
        &env.queue_config(),
        trainyard_shared::JobId(lost),
        seq,
    )
    .await?;
    // And PostgreSQL ends another job that Redis still carries.
    let ended: Uuid = sqlx::query_scalar(
        "update ml_training_jobs set status = 'failed', finished_at = now(), reason = 'test'
         where id = (select id from ml_training_jobs where cycle_id = $1 and status = 'queued'
                     and id <> $2 order by id limit 1)
         returning id",
    )
    .bind(cycle)
    .bind(lost)
    .fetch_one(&env.pool)
    .await?;
    assert_ne!(ended, lost);

    let a = call(&app, "GET", "/api/v1/overview", Some(READER), &[], None).await?;
    let items = drift_items(&a.body);
    assert_eq!(items.len(), 1, "{}", a.body);
    let d = &items[0]["drift"];
    assert_eq!(d["missing_in_redis"], 1, "{}", a.body);
    assert_eq!(d["unknown_to_postgres"], 1, "{}", a.body);
    assert_eq!(d["missing_sample"], json!([lost.to_string()]));
    assert_eq!(items[0]["count"], 2);

    // The same figures as a gauge, computed by the gauge timer's function.
    metrics::handle();
    let mut conn = env.pool.acquire().await?;
    metrics::refresh_drift_gauge(&mut conn, &mut redis, &env.queue_config()).await?;
    let text = metrics::handle().render();
    assert!(
        text.contains("trainyard_queue_drift_jobs{direction=\"missing_in_redis\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("trainyard_queue_drift_jobs{direction=\"unknown_to_postgres\"} 1"),
        "{text}"
    );

    // The sweeper gives the lost job a fresh delivery; the delivery of the
    // ended job waits for a worker to fetch and drop it.
    let mut sweeper = trainyard_shared::jobs::Sweeper::new(trainyard_shared::jobs::SweepSettings {
        window: 1000,
        lease_timeout: std::time::Duration::from_secs(60),
        push_grace: std::time::Duration::from_secs(10),
    });
    let report = sweeper
        .pass(&env.pool, &mut redis, &env.queue_config())
        .await;
    assert_eq!(report.map(|r| r.restored), Some(1));
    let a = call(&app, "GET", "/api/v1/overview", Some(READER), &[], None).await?;
    let items = drift_items(&a.body);
    assert_eq!(items[0]["drift"]["missing_in_redis"], 0, "{}", a.body);
    assert_eq!(items[0]["drift"]["unknown_to_postgres"], 1, "{}", a.body);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_worker_replica_is_listed_busy_or_idle_and_old_rows_are_pruned() -> anyhow::Result<()>
{
    let mut env = TestEnv::new().await?;
    sqlx::query(
        "insert into worker_presence (replica, started_at, last_seen, concurrency)
         values ('long-gone', now() - interval '3 days', now() - interval '2 days', 1),
                ('lost-an-hour-ago', now() - interval '2 hours', now() - interval '1 hour', 2)",
    )
    .execute(&env.pool)
    .await?;
    let pid = env.spawn_worker(&[("TRAINYARD_CONCURRENCY", "2")])?;
    let app = app(&env, Some(READER), Some(OPERATOR)).await?;
    let started = std::time::Instant::now();
    let mine = loop {
        let a = call(&app, "GET", "/api/v1/workers", Some(READER), &[], None).await?;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        let items = a.body["items"].as_array().unwrap().clone();
        let found = items.iter().find(|w| {
            w["presence"] == true
                && !w["worker"].as_str().unwrap().starts_with("lost")
                && w["worker"] != "long-gone"
        });
        if let (Some(w), false) = (found, items.iter().any(|w| w["worker"] == "long-gone")) {
            break w.clone();
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "no presence row for the worker (or the day-old row was not pruned): {}",
            a.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(mine["busy_slots"], 0, "an idle worker is listed: {mine}");
    assert_eq!(mine["concurrency"], 2);
    assert_eq!(mine["stale"], false);
    assert!(mine["stopped_at"].is_null());
    let a = call(&app, "GET", "/api/v1/workers", Some(READER), &[], None).await?;
    let lost = a.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["worker"] == "lost-an-hour-ago")
        .cloned()
        .unwrap();
    assert_eq!(lost["stale"], true, "{lost}");
    let a = call(&app, "GET", "/api/v1/overview", Some(READER), &[], None).await?;
    assert_eq!(a.body["workers"]["alive"], 1, "{}", a.body);
    assert_eq!(a.body["workers"]["busy"], 0, "{}", a.body);

    // Its heartbeat tick keeps the row fresh; a clean stop stamps it.
    let first_seen = mine["last_seen"].as_str().unwrap().to_string();
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let last_seen: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("select last_seen from worker_presence where replica = $1")
            .bind(mine["worker"].as_str().unwrap())
            .fetch_one(&env.pool)
            .await?;
    assert!(
        last_seen > chrono::DateTime::parse_from_rfc3339(&first_seen)?,
        "last_seen did not move"
    );
    trainyard_tests::signal(pid, nix::sys::signal::Signal::SIGTERM)?;
    let started = std::time::Instant::now();
    loop {
        let stopped: Option<chrono::DateTime<chrono::Utc>> =
            sqlx::query_scalar("select stopped_at from worker_presence where replica = $1")
                .bind(mine["worker"].as_str().unwrap())
                .fetch_one(&env.pool)
                .await?;
        if stopped.is_some() {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "a stopped worker was not stamped"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // The overview's queue figures are shared for up to 5 s (api::figures).
    tokio::time::sleep(trainyard_scheduler::api::figures::MAX_AGE).await;
    let a = call(&app, "GET", "/api/v1/overview", Some(READER), &[], None).await?;
    assert_eq!(a.body["workers"]["alive"], 0, "{}", a.body);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_posts_with_one_idempotency_key_enqueue_once() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let org = insert_org(&env.pool, "acme", 200, 140).await?;
    let app = app(&env, Some(READER), Some(OPERATOR)).await?;
    let body = json!({"org_id": org, "model_type": "energy_forecast"});
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let mut calls = Vec::new();
    for _ in 0..8 {
        let (app, body, barrier) = (app.clone(), body.clone(), barrier.clone());
        calls.push(tokio::spawn(async move {
            barrier.wait().await;
            call(
                &app,
                "POST",
                "/api/v1/jobs",
                Some(OPERATOR),
                &[("idempotency-key", "one-key")],
                Some(body),
            )
            .await
        }));
    }
    let mut answers = Vec::new();
    for c in calls {
        answers.push(c.await??);
    }
    for a in &answers {
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        assert_eq!(a.body, answers[0].body, "every answer is the first one");
    }
    let fresh = answers
        .iter()
        .filter(|a| a.headers.get("idempotent-replayed").is_none())
        .count();
    assert_eq!(fresh, 1, "exactly one request was carried out");
    let cycles: i64 = sqlx::query_scalar("select count(*) from ml_training_cycles")
        .fetch_one(&env.pool)
        .await?;
    assert_eq!(cycles, 1);
    let pending: i64 =
        sqlx::query_scalar("select count(*) from ops_idempotency where status_code = 0")
            .fetch_one(&env.pool)
            .await?;
    assert_eq!(pending, 0);
    Ok(())
}
