//! The dashboard pages on a database filled by real worker processes: every
//! page renders for the reader and the operator (HTML read through CSS
//! selectors), write buttons only for the operator, refusals as pages,
//! retry-failed through its confirmation, no external URL anywhere, and the
//! security headers. `browser` drives a real headless Chromium through the
//! same pages.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use http_body_util::BodyExt;
use scraper::{Html, Selector};
use tower::ServiceExt;
use trainyard_scheduler::api::{self, ApiState};
use trainyard_shared::ModelType;
use trainyard_tests::{enqueue, insert_org, TestEnv};
use uuid::Uuid;

pub const READER: &str = "dash-reader-token";
pub const OPERATOR: &str = "dash-operator-token";

/// What the seeded world holds.
pub struct World {
    pub good: Uuid,
    pub failing: Uuid,
    pub first_cycle: Uuid,
    pub failed_job: Uuid,
    pub trained_job: Uuid,
}

/// Two cycles trained by a real worker: a good organization (3 models, then
/// a second energy model), one whose training panics (3 failed jobs) and one
/// with too little data (3 skipped).
pub async fn seed_world(env: &mut TestEnv) -> anyhow::Result<World> {
    let good = insert_org(&env.pool, "Acme Foods", 240, 5).await?;
    let failing = insert_org(&env.pool, "Globex Steel", 240, 6).await?;
    insert_org(&env.pool, "Initech (new)", 100, 7).await?;
    let faults = format!("panic-org={failing}");
    env.spawn_worker(&[("TRAINYARD_FAULTS", faults.as_str())])?;
    let first_cycle = enqueue(env, None, None).await?;
    let status = env
        .wait_for_cycle(first_cycle, Duration::from_secs(240))
        .await?;
    assert_eq!(status, "completed_with_failures");
    let second = enqueue(env, Some(good), Some(ModelType::EnergyForecast)).await?;
    env.wait_for_cycle(second, Duration::from_secs(240)).await?;
    for w in env.workers().iter_mut() {
        let _ = w.kill();
        let _ = w.wait();
    }
    let failed_job: Uuid = sqlx::query_scalar(
        "select id from ml_training_jobs where status = 'failed' order by created_at limit 1",
    )
    .fetch_one(&env.pool)
    .await?;
    let trained_job: Uuid = sqlx::query_scalar(
        "select j.id from ml_training_jobs j
         where j.status = 'succeeded' and j.model_type = 'energy_forecast'
           and exists (select 1 from ml_training_epochs e where e.job_id = j.id)
         order by j.created_at limit 1",
    )
    .fetch_one(&env.pool)
    .await?;
    Ok(World {
        good,
        failing,
        first_cycle,
        failed_job,
        trained_job,
    })
}

/// Every page of the world, by name (also the screenshot names).
pub fn pages(w: &World) -> Vec<(&'static str, String)> {
    vec![
        ("now", "/".to_string()),
        ("cycles", "/cycles".to_string()),
        ("cycle", format!("/cycles/{}", w.first_cycle)),
        (
            "cycle-change",
            format!("/cycles/{}?colour=change", w.first_cycle),
        ),
        ("jobs", "/jobs?q=status%3Afailed".to_string()),
        ("job", format!("/jobs/{}", w.trained_job)),
        ("failed-job", format!("/jobs/{}", w.failed_job)),
        ("orgs", "/orgs".to_string()),
        ("org", format!("/orgs/{}", w.good)),
        ("model", format!("/orgs/{}/models/energy_forecast", w.good)),
        (
            "anomaly-model",
            format!("/orgs/{}/models/anomaly_detection", w.good),
        ),
        ("workers", "/workers".to_string()),
        ("audit", "/audit".to_string()),
    ]
}

pub async fn app(env: &TestEnv) -> anyhow::Result<axum::Router> {
    let state = Arc::new(ApiState {
        pool: env.pool.clone(),
        redis: env.redis().await?,
        settings: env.scheduler_settings(),
        tokens: api::auth::Tokens::new(Some(READER), Some(OPERATOR)),
    });
    Ok(api::router(state))
}

struct Page {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    html: String,
}

impl Page {
    fn doc(&self) -> Html {
        Html::parse_document(&self.html)
    }
    fn count(&self, selector: &str) -> usize {
        let s = Selector::parse(selector).unwrap();
        self.doc().select(&s).count()
    }
    fn text(&self, selector: &str) -> String {
        let s = Selector::parse(selector).unwrap();
        self.doc()
            .select(&s)
            .map(|e| e.text().collect::<String>())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

async fn send(
    app: &axum::Router,
    method: &str,
    path: &str,
    token: &str,
    form: Option<&str>,
) -> anyhow::Result<Page> {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("ops:{token}"));
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1")
        .header("authorization", format!("Basic {basic}"));
    let req = match form {
        Some(f) => req
            .header("content-type", "application/x-www-form-urlencoded")
            .header("sec-fetch-site", "same-origin")
            .body(Body::from(f.to_string()))?,
        None => {
            req = req.header("sec-fetch-site", "none");
            req.body(Body::empty())?
        }
    };
    let res = app.clone().oneshot(req).await?;
    let status = res.status();
    let headers = res.headers().clone();
    let html = String::from_utf8(res.into_body().collect().await?.to_bytes().to_vec())?;
    Ok(Page {
        status,
        headers,
        html,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_renders_for_both_roles_and_only_operators_get_write_forms() -> anyhow::Result<()>
{
    let mut env = TestEnv::new().await?;
    let w = seed_world(&mut env).await?;
    let app = app(&env).await?;

    for (name, path) in pages(&w) {
        for token in [READER, OPERATOR] {
            let p = send(&app, "GET", &path, token, None).await?;
            assert_eq!(p.status, StatusCode::OK, "{name} {path}: {}", p.html);
            let ct = p.headers.get("content-type").unwrap().to_str()?;
            assert!(ct.starts_with("text/html"), "{name}: {ct}");
            let csp = p.headers.get("content-security-policy").unwrap().to_str()?;
            assert!(
                csp.contains("script-src 'self'") && !csp.contains("unsafe"),
                "{csp}"
            );
            // Nothing leaves the host: no absolute URL at all in a page.
            assert!(
                !p.html.contains("http://")
                    && !p.html.contains("https://")
                    && !p.html.contains("//cdn"),
                "{name}: an external URL in the page"
            );
            // No inline script or style (the policy would block it anyway).
            assert_eq!(p.count("script:not([src])"), 0, "{name}: inline script");
            assert_eq!(p.count("style, [style]"), 0, "{name}: inline style");
            assert_eq!(p.count("header.top nav a"), 6, "{name}: navigation");
            assert_eq!(p.count("input#search"), 1, "{name}: search box");
            let forms = p.count("form[method=post]");
            if token == READER {
                assert_eq!(forms, 0, "{name}: a reader sees a write form");
                assert_eq!(p.text(".role"), "reader");
            }
            assert!(p.html.len() < 150_000, "{name}: {} bytes", p.html.len());
        }
    }

    // What each page shows, read through selectors.
    let now = send(&app, "GET", "/", READER, None).await?;
    assert_eq!(now.count("#live[data-poll][hx-get][hx-trigger]"), 1);
    assert_eq!(now.count("svg.spark polyline"), 1);
    assert_eq!(now.count("script[src^='/assets/htmx-']"), 1);
    let fragment = send(&app, "GET", "/now/live", READER, None).await?;
    assert_eq!(fragment.count("#live"), 1);
    assert!(
        !fragment.html.contains("<html"),
        "the fragment is not a whole page"
    );
    // The first cycle is not the latest; its failures appear on the cycle page.
    let cycle = send(
        &app,
        "GET",
        &format!("/cycles/{}", w.first_cycle),
        OPERATOR,
        None,
    )
    .await?;
    assert_eq!(cycle.count("#matrix tbody tr"), 3, "three organizations");
    assert_eq!(cycle.count("#matrix td.cell.s-failed"), 3);
    assert_eq!(cycle.count("#matrix td.cell.s-succeeded"), 3);
    assert_eq!(cycle.count("#matrix td.cell.s-skipped"), 3);
    assert!(
        cycle.text("#reasons").contains("injected fault"),
        "{}",
        cycle.text("#reasons")
    );
    assert_eq!(cycle.count("form#retry-failed"), 1);
    let change = send(
        &app,
        "GET",
        &format!("/cycles/{}?colour=change", w.first_cycle),
        READER,
        None,
    )
    .await?;
    assert_eq!(
        change.count("#matrix td.cell.same"),
        9,
        "no earlier model in the first cycle"
    );
    let cycles = send(&app, "GET", "/cycles", READER, None).await?;
    assert_eq!(cycles.count("#cycles tbody tr"), 2);
    assert_eq!(cycles.count(".chart[data-chart]"), 3, "trend charts");
    let jobs = send(&app, "GET", "/jobs?q=status%3Afailed", READER, None).await?;
    assert_eq!(jobs.count("#jobs tbody tr"), 3);
    let paged = send(&app, "GET", "/jobs?q=status%3Afailed&limit=2", READER, None).await?;
    assert_eq!(paged.count("#jobs tbody tr"), 2);
    assert_eq!(paged.count("a[rel=next]"), 1, "a keyset next link");
    let bad = send(&app, "GET", "/jobs?q=colour%3Ared", READER, None).await?;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        bad.text("main").contains("colour"),
        "the problem is shown: {}",
        bad.html
    );
    let job = send(
        &app,
        "GET",
        &format!("/jobs/{}", w.trained_job),
        OPERATOR,
        None,
    )
    .await?;
    assert_eq!(job.count("#epochs-chart[data-chart]"), 1);
    assert!(job.count("#candidates tbody tr") >= 2);
    assert!(job
        .text("#cli")
        .starts_with("trainyard-scheduler enqueue --org "));
    assert_eq!(
        job.count("form#retry"),
        0,
        "a succeeded job has no retry button"
    );
    assert!(job.count("#timeline li") >= 3);
    let failed = send(
        &app,
        "GET",
        &format!("/jobs/{}", w.failed_job),
        OPERATOR,
        None,
    )
    .await?;
    assert_eq!(failed.count("form#retry"), 1);
    assert!(failed.text("#reason").contains("injected fault"));
    let model = send(
        &app,
        "GET",
        &format!("/orgs/{}/models/energy_forecast", w.good),
        OPERATOR,
        None,
    )
    .await?;
    assert_eq!(model.count("#versions tbody tr"), 2);
    assert_eq!(model.count("#accuracy-chart[data-chart]"), 1);
    assert_eq!(
        model.count("#series-chart[data-chart]"),
        1,
        "the forecast chart"
    );
    assert!(
        model.html.contains("upper 95"),
        "the forecast has its intervals"
    );
    let anomaly = send(
        &app,
        "GET",
        &format!("/orgs/{}/models/anomaly_detection", w.good),
        READER,
        None,
    )
    .await?;
    assert_eq!(
        anomaly.count("#series-chart[data-chart]"),
        1,
        "the anomaly score chart"
    );
    assert!(anomaly.html.contains("threshold"));
    let workers = send(&app, "GET", "/workers", READER, None).await?;
    assert!(
        workers.count("#workers tbody tr") >= 1,
        "the stopped worker is listed"
    );
    assert!(
        model.count("#compare tbody tr") >= 2,
        "champion and challengers"
    );
    assert_eq!(model.count("form#rollback"), 1);
    assert_eq!(model.count("form.promote"), 1, "one version is not active");
    let unknown = send(
        &app,
        "GET",
        &format!("/orgs/{}/models/lstm", w.good),
        READER,
        None,
    )
    .await?;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let missing = send(
        &app,
        "GET",
        &format!("/jobs/{}", Uuid::new_v4()),
        READER,
        None,
    )
    .await?;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    // A reader posting anyway is refused with a page, and it is audited.
    let refused = send(
        &app,
        "POST",
        &format!("/jobs/{}/retry", w.failed_job),
        READER,
        Some("reason=x"),
    )
    .await?;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.html);
    // A cross-site post is refused even for the operator.
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("ops:{OPERATOR}"));
    let res = app
        .clone()
        .oneshot(
            Request::builder()
                .method("POST")
                .uri(format!("/jobs/{}/retry", w.failed_job))
                .header("host", "127.0.0.1")
                .header("authorization", format!("Basic {basic}"))
                .header("sec-fetch-site", "cross-site")
                .body(Body::from("reason=x"))?,
        )
        .await?;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    // Retry failed: the count first, then the retry, then the audit row.
    let path = format!("/cycles/{}/retry-failed", w.first_cycle);
    let confirm = send(&app, "POST", &path, OPERATOR, Some("")).await?;
    assert_eq!(confirm.status, StatusCode::OK, "{}", confirm.html);
    assert!(
        confirm.text("#confirm-count").contains('3'),
        "{}",
        confirm.text("#confirm-count")
    );
    assert_eq!(
        confirm.count("form#confirm-form input[name=confirm][value=yes]"),
        1
    );
    let jobs_before: i64 = sqlx::query_scalar("select count(*) from ml_training_jobs")
        .fetch_one(&env.pool)
        .await?;
    let done = send(
        &app,
        "POST",
        &path,
        OPERATOR,
        Some("confirm=yes&reason=panic+fixed"),
    )
    .await?;
    assert_eq!(done.status, StatusCode::OK, "{}", done.html);
    assert_eq!(done.count("#done"), 1);
    let jobs_after: i64 = sqlx::query_scalar("select count(*) from ml_training_jobs")
        .fetch_one(&env.pool)
        .await?;
    assert_eq!(
        jobs_after - jobs_before,
        3,
        "the three failed pairs were enqueued"
    );
    let audit = send(&app, "GET", "/audit", READER, None).await?;
    let text = audit.text("#audit");
    assert!(
        text.contains("retry_failed") && text.contains("panic fixed"),
        "{text}"
    );
    assert!(text.contains("retry_failed (dry run)"));
    assert!(
        text.contains("forbidden"),
        "the reader's refused post is audited: {text}"
    );
    // Promote the version that is not active: still exactly one active model.
    let other: i32 = sqlx::query_scalar(
        "select version from ml_models where organization_id = $1 and model_type = 'energy_forecast' and status <> 'active'",
    )
    .bind(w.good)
    .fetch_one(&env.pool)
    .await?;
    let promote = send(
        &app,
        "POST",
        &format!("/orgs/{}/models/energy_forecast/promote", w.good),
        OPERATOR,
        Some(&format!("version={other}&reason=compare+in+production")),
    )
    .await?;
    assert_eq!(promote.status, StatusCode::OK, "{}", promote.html);
    let active: i64 = sqlx::query_scalar(
        "select count(*) from ml_models where organization_id = $1 and model_type = 'energy_forecast' and status = 'active'",
    )
    .bind(w.good)
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(active, 1);
    let no_reason = send(
        &app,
        "POST",
        &format!("/orgs/{}/models/energy_forecast/rollback", w.good),
        OPERATOR,
        Some(""),
    )
    .await?;
    assert_eq!(
        no_reason.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a reason is required"
    );

    // Assets: embedded, versioned, cacheable; anything else is a 404.
    for path in [
        "/assets/htmx-2.0.11.min.js",
        "/assets/uPlot-1.6.32.iife.min.js",
        "/assets/uPlot-1.6.32.min.css",
    ] {
        let res = app
            .clone()
            .oneshot(Request::builder().uri(path).body(Body::empty())?)
            .await?;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert!(res
            .headers()
            .get("cache-control")
            .unwrap()
            .to_str()?
            .contains("immutable"));
    }
    let res = app
        .clone()
        .oneshot(
            Request::builder()
                .uri("/assets/app.js")
                .body(Body::empty())?,
        )
        .await?;
    assert_eq!(
        res.status(),
        StatusCode::NOT_FOUND,
        "only the versioned name is served"
    );
    let _ = w.failing;
    Ok(())
}
