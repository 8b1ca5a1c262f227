//! Prometheus metrics of the scheduler, on `/metrics` of the ops server.
//!
//! Names carry the `trainyard_` prefix, durations are in seconds and are
//! histograms with explicit buckets (summaries cannot be summed across
//! replicas), counters end in `_total`, and labels come only from small
//! closed sets (route templates, methods, status classes, job statuses) —
//! never an organization or job id. The queue and cycle gauges are computed
//! from PostgreSQL on a timer by the one process holding an advisory lock,
//! not on each scrape.

use std::time::{Duration, Instant};

use apalis_redis::ConnectionManager;
use axum::extract::{MatchedPath, Request};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::{PgConnection, PgPool};

/// The process's recorder, installed once.
pub fn handle() -> &'static PrometheusHandle {
    trainyard_shared::telemetry::prometheus(describe)
}

fn describe() {
    metrics::describe_counter!(
        "trainyard_api_requests_total",
        "Ops API requests by route template, method and status class"
    );
    metrics::describe_histogram!(
        "trainyard_api_request_duration_seconds",
        metrics::Unit::Seconds,
        "Ops API request duration by route template"
    );
    metrics::describe_gauge!("trainyard_jobs", "Live jobs by status (queued, running)");
    metrics::describe_gauge!(
        "trainyard_oldest_queued_job_age_seconds",
        metrics::Unit::Seconds,
        "Age of the oldest queued job (0 when none)"
    );
    metrics::describe_gauge!(
        "trainyard_workers_busy",
        "Workers with a running job and a fresh heartbeat"
    );
    metrics::describe_gauge!(
        "trainyard_workers_alive",
        "Worker replicas with a fresh presence row, idle ones included"
    );
    metrics::describe_gauge!(
        "trainyard_queue_drift_jobs",
        "Deliveries where PostgreSQL and Redis disagree, by direction \
         (missing_in_redis, unknown_to_postgres, dangling)"
    );
    metrics::describe_gauge!(
        "trainyard_running_jobs_stale",
        "Running jobs whose heartbeat is older than the lease"
    );
    metrics::describe_gauge!(
        "trainyard_cycle_jobs",
        "Jobs of the current cycle by status"
    );
    metrics::describe_gauge!(
        "trainyard_cycle_overdue",
        "1 when a running cycle is past its deadline"
    );
    metrics::describe_gauge!(
        "trainyard_last_completed_cycle_timestamp_seconds",
        metrics::Unit::Seconds,
        "When the last cycle that completed finished (Unix time)"
    );
    metrics::describe_histogram!(
        "trainyard_gauge_refresh_duration_seconds",
        metrics::Unit::Seconds,
        "Time to compute the gauges from PostgreSQL"
    );
}

/// `GET /metrics`: the text exposition format.
pub async fn render() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle().render(),
    )
        .into_response()
}

/// Counts and times every request by its route template.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method: &'static str = match *request.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        _ => "other",
    };
    let started = Instant::now();
    let response = next.run(request).await;
    let class = match response.status().as_u16() {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    metrics::counter!("trainyard_api_requests_total",
        "route" => route.clone(), "method" => method, "status" => class)
    .increment(1);
    metrics::histogram!("trainyard_api_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The key of the advisory lock whose holder computes the gauges.
const GAUGE_LOCK: &str = "trainyard:metrics-gauges";

/// Computes the gauges from PostgreSQL on one connection. Only live rows
/// and the current cycle's shards are read.
pub async fn refresh_gauges(
    conn: &mut sqlx::PgConnection,
    stale_after_secs: f64,
) -> Result<(), sqlx::Error> {
    use trainyard_shared::store::ops;
    let started = Instant::now();
    let q = ops::queue_figures(&mut *conn, stale_after_secs).await?;
    metrics::gauge!("trainyard_jobs", "status" => "queued").set(q.queued as f64);
    metrics::gauge!("trainyard_jobs", "status" => "running").set(q.running as f64);
    let age = q
        .oldest_queued_at
        .map(|t| (chrono::Utc::now() - t).num_milliseconds() as f64 / 1000.0)
        .unwrap_or(0.0);
    metrics::gauge!("trainyard_oldest_queued_job_age_seconds").set(age.max(0.0));
    metrics::gauge!("trainyard_workers_busy").set(q.busy_workers as f64);
    metrics::gauge!("trainyard_workers_alive").set(q.alive_workers as f64);
    metrics::gauge!("trainyard_running_jobs_stale").set(q.stale_running as f64);
    if let Some(c) = ops::current_cycle(&mut *conn).await? {
        for (status, n) in [
            ("live", c.live_jobs),
            ("succeeded", c.successful_models),
            ("failed", c.failed_models),
            ("skipped", c.skipped_models),
            ("promoted", c.promoted_models),
        ] {
            metrics::gauge!("trainyard_cycle_jobs", "status" => status).set(f64::from(n));
        }
        let overdue = c.status == trainyard_shared::CycleStatus::Running
            && c.deadline_at < chrono::Utc::now();
        metrics::gauge!("trainyard_cycle_overdue").set(if overdue { 1.0 } else { 0.0 });
    }
    if let Some(t) = ops::last_completed_cycle_at(&mut *conn).await? {
        metrics::gauge!("trainyard_last_completed_cycle_timestamp_seconds")
            .set(t.timestamp_millis() as f64 / 1000.0);
    }
    metrics::histogram!("trainyard_gauge_refresh_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    Ok(())
}

/// Sets `trainyard_queue_drift_jobs` from a comparison of PostgreSQL and
/// Redis ([`super::drift::measure`]). When it cannot be measured the gauge
/// keeps its last value and the error is returned.
pub async fn refresh_drift_gauge(
    conn: &mut sqlx::PgConnection,
    redis: &mut ConnectionManager,
    config: &apalis_redis::Config,
) -> Result<(), super::drift::DriftError> {
    let d = super::drift::measure(conn, redis, config).await?;
    metrics::gauge!("trainyard_queue_drift_jobs", "direction" => "missing_in_redis")
        .set(d.missing_in_redis as f64);
    if let Some(n) = d.unknown_to_postgres {
        metrics::gauge!("trainyard_queue_drift_jobs", "direction" => "unknown_to_postgres")
            .set(n as f64);
    }
    metrics::gauge!("trainyard_queue_drift_jobs", "direction" => "dangling").set(d.dangling as f64);
    Ok(())
}

/// Every `every`, the replica holding the gauge lock (a session advisory
/// lock on a connection it keeps) refreshes the gauges, drift included;
/// the others try to take the lock. Runs until the task is dropped.
pub async fn gauge_timer(
    pool: PgPool,
    mut redis: ConnectionManager,
    queue: apalis_redis::Config,
    every: Duration,
    stale_after_secs: f64,
) {
    // Detached from the pool: dropping it closes it, and the lock goes with it.
    let mut holder: Option<PgConnection> = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if holder.is_none() {
            match pool.acquire().await {
                Ok(conn) => {
                    let mut conn = conn.detach();
                    let got: Result<bool, _> =
                        sqlx::query_scalar("select pg_try_advisory_lock(hashtext($1))")
                            .bind(GAUGE_LOCK)
                            .fetch_one(&mut conn)
                            .await;
                    if matches!(got, Ok(true)) {
                        holder = Some(conn);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "metrics gauges: no connection"),
            }
        }
        if let Some(conn) = holder.as_mut() {
            if let Err(e) = refresh_gauges(conn, stale_after_secs).await {
                // The connection (and with it the lock) may be gone: start over.
                tracing::warn!(error = %e, "refreshing the metrics gauges failed");
                holder = None;
            } else if let Err(e) = refresh_drift_gauge(conn, &mut redis, &queue).await {
                tracing::warn!(error = %e, "measuring PostgreSQL/Redis drift failed");
                if matches!(e, super::drift::DriftError::Db(_)) {
                    holder = None;
                }
            }
        }
    }
}
