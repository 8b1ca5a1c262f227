//! `/health`: 200 when PostgreSQL and Redis both answer and the queue
//! consumer is serving, 503 otherwise. It says up or down for each and
//! nothing else (no URLs, no versions). `/metrics`: this replica's
//! Prometheus metrics (see [`super::metrics`]).

use std::time::Duration;

use axum::{extract::State, http::StatusCode, routing::get, Json, Router};
use serde_json::{json, Value};

use super::worker::WorkerState;
use std::sync::Arc;

pub fn router(state: Arc<WorkerState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(prometheus))
        .with_state(state)
}

async fn prometheus() -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        super::metrics::render(),
    )
}

async fn health(State(state): State<Arc<WorkerState>>) -> (StatusCode, Json<Value>) {
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
    let consumer = state.consumer.status();
    let up = |b: bool| if b { "up" } else { "down" };
    let ok = pg && redis && consumer.is_ok();
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(json!({
            "status": if ok { "ok" } else { "unavailable" },
            "postgres": up(pg),
            "redis": up(redis),
            "queue_consumer": match &consumer {
                Ok(()) => "up".to_string(),
                Err(why) => why.clone(),
            },
        })),
    )
}
