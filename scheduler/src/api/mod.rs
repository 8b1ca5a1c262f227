//! The ops HTTP server of the scheduler (`serve`, and `run` serves it too):
//! `/health`, `/ready`, the JSON API under `/api/v1` and the dashboard
//! pages ([`crate::web`]). It reads
//! PostgreSQL through [`trainyard_shared::store::ops`]; Redis is touched
//! only to enqueue through the normal path ([`trainyard_shared::jobs::top_up`])
//! and by the readiness probe.

pub mod auth;
pub mod drift;
pub mod figures;
pub mod metrics;
pub mod models;
pub mod openapi;
pub mod problem;
pub mod read;
pub mod write;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use apalis_redis::ConnectionManager;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use clap::Args;
use serde_json::json;
use sqlx::PgPool;
use trainyard_shared::queue;

use crate::settings::SchedulerSettings;
use auth::Tokens;
use problem::{ApiResult, Problem};

/// Where the ops server listens and who may use it.
#[derive(Clone, Args)]
pub struct ApiSettings {
    /// TCP port of the ops server (`/health`, `/ready`, `/api/v1`).
    #[arg(long = "port", env = "PORT", default_value_t = 8080)]
    pub port: u16,

    /// Address to listen on. Anything but loopback needs a token (use `::` on Railway).
    #[arg(long = "bind", env = "TRAINYARD_BIND", default_value = "127.0.0.1")]
    pub bind: IpAddr,

    /// Token of the read-only role (Bearer, or HTTP Basic password).
    #[arg(long, env = "TRAINYARD_READER_TOKEN", hide_env_values = true)]
    pub reader_token: Option<String>,

    /// Token of the operator role (reads and writes). Without it, writes answer 403.
    #[arg(long, env = "TRAINYARD_OPERATOR_TOKEN", hide_env_values = true)]
    pub operator_token: Option<String>,

    /// Seconds between computations of the queue and cycle gauges of `/metrics` (1–3600).
    #[arg(long, env = "TRAINYARD_METRICS_SECS", default_value_t = 15,
          value_parser = trainyard_shared::config::bounded::<u64>("TRAINYARD_METRICS_SECS", 1, 3600))]
    pub metrics_secs: u64,
}

impl std::fmt::Debug for ApiSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSettings")
            .field("port", &self.port)
            .field("bind", &self.bind)
            .field("metrics_secs", &self.metrics_secs)
            .field("reader_token", &self.reader_token.as_ref().map(|_| "set"))
            .field(
                "operator_token",
                &self.operator_token.as_ref().map(|_| "set"),
            )
            .finish()
    }
}

impl ApiSettings {
    pub fn tokens(&self) -> Tokens {
        Tokens::new(self.reader_token.as_deref(), self.operator_token.as_deref())
    }

    /// Refuses to serve an address other than loopback with no token.
    pub fn check(&self) -> anyhow::Result<()> {
        if !self.bind.is_loopback() && !self.tokens().any() {
            anyhow::bail!(
                "refusing to serve the ops API on {} without a token: set TRAINYARD_READER_TOKEN \
                 (and TRAINYARD_OPERATOR_TOKEN for writes), or listen on loopback with \
                 TRAINYARD_BIND=127.0.0.1",
                self.bind
            );
        }
        Ok(())
    }
}

/// What every handler shares.
pub struct ApiState {
    pub pool: PgPool,
    pub redis: ConnectionManager,
    pub settings: SchedulerSettings,
    pub tokens: Tokens,
}

impl ApiState {
    pub fn queue_config(&self) -> apalis_redis::Config {
        queue::queue_config(&self.settings.connection.queue)
    }
    /// A running job without a heartbeat for this long is stale.
    pub fn stale_after_secs(&self) -> f64 {
        self.settings.lease_timeout_secs as f64
    }
}

/// The whole app: probes, the API (authenticated), problem documents for
/// unknown routes and methods.
pub fn router(state: Arc<ApiState>) -> Router {
    let api = Router::new()
        .route("/overview", get(read::overview))
        .route("/cycles", get(read::cycles).post(write::create_cycle))
        .route("/cycles/{id}", get(read::cycle))
        .route("/cycles/{id}/matrix", get(read::matrix))
        .route("/cycles/{id}/retry-failed", post(write::retry_failed))
        .route("/jobs", get(read::jobs).post(write::enqueue))
        .route("/jobs/{id}", get(read::job))
        .route("/jobs/{id}/epochs", get(read::epochs))
        .route("/jobs/{id}/retry", post(write::retry))
        .route("/orgs", get(read::orgs))
        .route("/orgs/{id}", get(read::org))
        .route(
            "/orgs/{id}/models/{model_type}/versions",
            get(read::versions),
        )
        .route(
            "/orgs/{id}/models/{model_type}/compare",
            get(models::compare),
        )
        .route(
            "/orgs/{id}/models/{model_type}/forecast",
            get(models::forecast),
        )
        .route("/orgs/{id}/anomalies", get(models::anomalies))
        .route(
            "/orgs/{id}/models/{model_type}/promote",
            post(write::promote),
        )
        .route(
            "/orgs/{id}/models/{model_type}/rollback",
            post(write::rollback),
        )
        .route("/workers", get(read::workers))
        .route("/audit", get(read::audit))
        .route("/openapi.json", get(openapi::document))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .route_layer(axum::middleware::from_fn(metrics::track));
    let pages = crate::web::routes()
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .route_layer(axum::middleware::from_fn(metrics::track));
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics::render))
        .route("/assets/{file}", get(crate::web::assets::serve))
        .merge(pages)
        .nest("/api/v1", api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(crate::web::security_headers))
        .with_state(state)
}

async fn not_found() -> Problem {
    Problem::not_found("no such route; the API lives under /api/v1, the dashboard at /")
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "this route does not accept that method",
    )
}

#[utoipa::path(get, path = "/health", tag = "probes", summary = "Liveness (no auth)",
    responses((status = 200, description = "the process serves", body = serde_json::Value)))]
pub async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// 200 when PostgreSQL and Redis both answer within 2 s, 503 otherwise.
#[utoipa::path(get, path = "/ready", tag = "probes", summary = "Readiness: PostgreSQL and Redis (no auth)",
    responses((status = 200, description = "both answer", body = serde_json::Value),
              (status = 503, description = "one does not", body = serde_json::Value)))]
pub async fn ready(State(state): State<Arc<ApiState>>) -> impl IntoResponse {
    let limit = Duration::from_secs(2);
    let pg = tokio::time::timeout(limit, trainyard_shared::store::ops::ping(&state.pool))
        .await
        .map(|r| r.is_ok())
        .unwrap_or(false);
    let mut conn = state.redis.clone();
    let redis = tokio::time::timeout(limit, redis::cmd("PING").query_async::<String>(&mut conn))
        .await
        .map(|r| r.is_ok())
        .unwrap_or(false);
    let up = |b: bool| if b { "up" } else { "down" };
    let code = if pg && redis {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(json!({
            "status": if pg && redis { "ok" } else { "unavailable" },
            "postgres": up(pg),
            "redis": up(redis),
        })),
    )
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    state: Arc<ApiState>,
    api: &ApiSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    api.check()?;
    let addr = SocketAddr::new(api.bind, api.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr} (PORT, TRAINYARD_BIND)"))?;
    tracing::info!(%addr, reader = api.reader_token.is_some(), operator = api.operator_token.is_some(),
        "ops API listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving the ops API")
}

/// `trainyard-scheduler serve`: the ops server alone.
pub async fn run_serve(
    settings: SchedulerSettings,
    api: ApiSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    api.check()?;
    let c = &settings.connection;
    let pool = trainyard_shared::db::connect(&c.database_url, c.db_max_connections).await?;
    trainyard_shared::db::migrate(&pool).await?;
    let redis = queue::connect(&c.redis_url, c.redis_timeout())
        .await
        .with_context(|| {
            format!(
                "REDIS_URL {}",
                trainyard_shared::config::redact_url(&c.redis_url)
            )
        })?;
    let tokens = api.tokens();
    metrics::handle();
    let gauges = tokio::spawn(metrics::gauge_timer(
        pool.clone(),
        redis.clone(),
        queue::queue_config(&settings.connection.queue),
        Duration::from_secs(api.metrics_secs),
        settings.lease_timeout_secs as f64,
    ));
    let state = Arc::new(ApiState {
        pool,
        redis,
        settings,
        tokens,
    });
    let served = serve(state, &api, shutdown).await;
    gauges.abort();
    served
}

/// The query string as pairs; a malformed one is a 400.
pub(crate) fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The most rows one page may ask for.
pub const MAX_LIMIT: i64 = 500;

/// `limit` (1–500, default 50).
pub(crate) fn parse_limit(value: Option<&str>) -> ApiResult<i64> {
    match value {
        None => Ok(50),
        Some(v) => match v.parse::<i64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(Problem::unprocessable(format!(
                "limit must be a whole number from 1 to {MAX_LIMIT}"
            ))),
        },
    }
}

/// A keyset cursor `(time, id)`, written `<microseconds>.<uuid>`.
pub(crate) fn encode_cursor(at: DateTime<Utc>, id: uuid::Uuid) -> String {
    format!("{}.{}", at.timestamp_micros(), id.simple())
}

pub(crate) fn decode_cursor(value: &str) -> ApiResult<(DateTime<Utc>, uuid::Uuid)> {
    let bad = || Problem::bad_request("malformed cursor: pass back the `next` value of a page");
    let (micros, id) = value.split_once('.').ok_or_else(bad)?;
    let at = micros
        .parse::<i64>()
        .ok()
        .and_then(DateTime::<Utc>::from_timestamp_micros)
        .ok_or_else(bad)?;
    let id = uuid::Uuid::parse_str(id).map_err(|_| bad())?;
    Ok((at, id))
}

/// A path id; malformed → 400 naming what was expected.
pub(crate) fn parse_id<T: std::str::FromStr>(what: &str, value: &str) -> ApiResult<T> {
    value.parse().map_err(|_| {
        Problem::bad_request(format!(
            "malformed {what} id `{}`: expected a uuid",
            clip(value)
        ))
    })
}

/// At most 80 characters of a caller's value, for a problem's detail.
pub(crate) fn clip(value: &str) -> String {
    value.chars().take(80).collect()
}
