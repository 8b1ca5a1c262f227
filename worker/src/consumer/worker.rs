//! The worker process: one apalis worker over the Redis queue, a `/health`
//! server, and a graceful shutdown that stops taking jobs, lets the current
//! one finish (or hands it back) and exits.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use apalis::prelude::*;
use apalis_redis::{ConnectionManager, RedisStorage};
use sqlx::PgPool;
use tokio::sync::watch;

use super::handler::handle;
use super::settings::WorkerSettings;
use trainyard_shared::queue::{self, Delivery, DeliveryCodec, RearmingInterval};

/// Everything a job handler needs, shared by all of a process's jobs.
pub struct WorkerState {
    pub pool: PgPool,
    pub redis: ConnectionManager,
    pub queue: apalis_redis::Config,
    pub name: String,
    pub settings: WorkerSettings,
    pub train: crate::training::TrainSettings,
    /// Turns true when the process is asked to stop.
    pub shutdown: watch::Receiver<bool>,
    /// When it was asked to stop (the grace period counts from here).
    pub stopping_at: OnceLock<tokio::time::Instant>,
    pub in_flight: AtomicUsize,
    /// Jobs this process finished (paces the window's refills).
    pub finished: AtomicU64,
    pub faults: super::faults::Faults,
    pub consumer: ConsumerHealth,
}

impl WorkerState {
    pub fn stopping_since(&self) -> Option<tokio::time::Instant> {
        self.stopping_at.get().copied()
    }
}

/// Whether the queue consumer is serving: it is down between a crash and
/// its restart, and a consumer that keeps dying is unhealthy even while it
/// is briefly up (`/health` says 503 so the platform restarts the replica
/// and an operator sees it).
#[derive(Debug, Default)]
pub struct ConsumerHealth {
    running: AtomicBool,
    restarts: Mutex<VecDeque<std::time::Instant>>,
}

impl ConsumerHealth {
    /// Restarts within this window that make a consumer unhealthy.
    pub const WINDOW: Duration = Duration::from_secs(60);
    pub const MAX_RESTARTS: usize = 3;

    fn started(&self) {
        self.running.store(true, Ordering::SeqCst);
    }

    fn died(&self) {
        self.running.store(false, Ordering::SeqCst);
        let mut r = self.restarts.lock().unwrap_or_else(|p| p.into_inner());
        r.push_back(std::time::Instant::now());
        while r.len() > Self::MAX_RESTARTS {
            r.pop_front();
        }
    }

    /// `Ok` when serving; otherwise why not.
    pub fn status(&self) -> Result<(), String> {
        if !self.running.load(Ordering::SeqCst) {
            return Err("stopped".to_string());
        }
        let r = self.restarts.lock().unwrap_or_else(|p| p.into_inner());
        let recent = r.iter().filter(|t| t.elapsed() < Self::WINDOW).count();
        if recent >= Self::MAX_RESTARTS {
            return Err(format!(
                "restarting in a loop ({recent} restarts in {} s)",
                Self::WINDOW.as_secs()
            ));
        }
        Ok(())
    }
}

/// A name unique to this process: replicas may share a prefix.
pub fn unique_name(prefix: Option<&str>) -> String {
    let host = std::env::var("HOSTNAME")
        .or_else(|_| std::fs::read_to_string("/etc/hostname").map(|s| s.trim().to_string()))
        .unwrap_or_else(|_| "worker".to_string());
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..6];
    format!(
        "{}-{}-{suffix}",
        prefix.unwrap_or(&host),
        std::process::id()
    )
}

/// Runs until `shutdown` resolves, then drains within the grace period.
pub async fn run(
    settings: WorkerSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let conn = &settings.connection;
    let pool = trainyard_shared::db::connect(&conn.database_url, conn.db_max_connections)
        .await
        .context("connecting to PostgreSQL")?;
    trainyard_shared::db::migrate(&pool)
        .await
        .context("running migrations")?;
    let redis = queue::connect(&conn.redis_url, conn.redis_timeout())
        .await
        .context("connecting to Redis")?;

    let name = unique_name(settings.worker_name.as_deref());
    let queue_config = queue::queue_config(&conn.queue)
        .batch_size(1)
        .heartbeat_interval(settings.heartbeat())
        .missed_heartbeats(settings.missed_heartbeats);
    let (stop_tx, stop_rx) = watch::channel(false);
    let state = Arc::new(WorkerState {
        pool: pool.clone(),
        redis: redis.clone(),
        queue: queue_config.clone(),
        name: name.clone(),
        train: settings.training.train_settings(),
        settings: settings.clone(),
        shutdown: stop_rx.clone(),
        stopping_at: OnceLock::new(),
        in_flight: AtomicUsize::new(0),
        finished: AtomicU64::new(0),
        faults: super::faults::Faults::from_env(),
        consumer: ConsumerHealth::default(),
    });
    if state.faults.is_set() {
        tracing::warn!(faults = ?state.faults, "fault injection is on (TRAINYARD_FAULTS)");
    }
    crate::training::neural::limit_threads(settings.train_threads);

    let listener = tokio::net::TcpListener::bind(("0.0.0.0", settings.port))
        .await
        .with_context(|| format!("binding the health port {} (PORT)", settings.port))?;
    super::metrics::handle();
    let health = super::health::router(state.clone());
    let mut health_stop = stop_rx.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, health)
            .with_graceful_shutdown(async move {
                let _ = health_stop.wait_for(|s| *s).await;
            })
            .await;
    });

    tracing::info!(
        worker.name = %name,
        queue.name = %conn.queue,
        concurrency = settings.concurrency,
        port = settings.port,
        lstm.kernels = crate::training::forecast::fused::kernels(),
        "worker started"
    );

    // Fill the window in case the queue was left empty (e.g. Redis restarted).
    let mut c = redis.clone();
    if let Err(e) =
        trainyard_shared::jobs::top_up(&pool, &mut c, &queue_config, settings.window).await
    {
        tracing::warn!(error = %e, "initial queue top-up failed");
    }

    // The sweeper: every replica runs it, so the fleet heals itself (dead
    // workers' jobs, deliveries Redis lost) even without a scheduler daemon.
    // Every step is a guarded update, so replicas sweeping at once is safe.
    let sweeper = {
        let pool = pool.clone();
        let mut conn = redis.clone();
        let qcfg = queue_config.clone();
        let every = Duration::from_secs(settings.sweep_secs.max(1));
        let mut sweeper =
            trainyard_shared::jobs::Sweeper::new(trainyard_shared::jobs::SweepSettings {
                window: settings.window,
                lease_timeout: settings.lease_timeout(),
                push_grace: Duration::from_secs(10),
            });
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    _ = tokio::time::sleep(every) => {}
                }
                sweeper.pass(&pool, &mut conn, &qcfg).await;
            }
        })
    };

    {
        let state = state.clone();
        tokio::spawn(async move {
            shutdown.await;
            let _ = state.stopping_at.set(tokio::time::Instant::now());
            tracing::info!("shutdown requested: no new jobs will be taken");
            let _ = stop_tx.send(true);
        });
    }

    // Idle consumers fetch as soon as a push is announced.
    let wakeups = Arc::new(queue::Wakeups::default());
    let listener = queue::listen_for_pushes(conn.redis_url.clone(), &queue_config, wakeups.clone());

    // The queue worker; if it dies (e.g. Redis went away), start a new one
    // under a fresh name until shutdown. A dead generation is deregistered
    // first: what it had fetched goes back to the queue.
    let mut generation = 0u32;
    let mut worker_name;
    loop {
        worker_name = if generation == 0 {
            name.clone()
        } else {
            format!("{name}-r{generation}")
        };
        let storage: RedisStorage<Delivery> =
            RedisStorage::new(redis.clone()).with_config(queue_config.clone());
        let backend = storage.with_codec(DeliveryCodec).poll_with_strategy(
            RearmingInterval::new(Duration::from_millis(settings.poll_interval_ms.max(1)))
                .woken_by(wakeups.clone()),
        );
        let worker = WorkerBuilder::new(worker_name.clone())
            .backend(backend)
            .concurrency(settings.concurrency.max(1))
            .data(state.clone())
            .build(handle);
        let mut stop = stop_rx.clone();
        let signal = async move {
            let _ = stop.wait_for(|s| *s).await;
            Ok::<(), std::io::Error>(())
        };
        state.consumer.started();
        let result = worker.run_until(signal).await;
        if *stop_rx.borrow() {
            if let Err(e) = result {
                tracing::warn!(error = %e, "queue worker stopped with an error");
            }
            break;
        }
        state.consumer.died();
        generation += 1;
        match result {
            Err(e) => {
                tracing::error!(error = %e, generation, "queue worker died; restarting it in 1 s")
            }
            Ok(()) => tracing::warn!(
                generation,
                "queue worker ended unexpectedly; restarting it in 1 s"
            ),
        }
        deregister(&state, &worker_name).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // Let in-flight jobs finish or hand themselves back: the handlers bound
    // themselves by the grace period.
    let since = state
        .stopping_since()
        .unwrap_or_else(tokio::time::Instant::now);
    let deadline = since + settings.grace() + Duration::from_secs(1);
    while state.in_flight.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    deregister(&state, &worker_name).await;
    sweeper.abort();
    listener.abort();
    tracing::info!(worker.name = %name, "worker stopped");
    Ok(())
}

/// Takes a consumer generation out of Redis (bounded by a few seconds, so a
/// dead Redis cannot hold the shutdown).
async fn deregister(state: &WorkerState, worker: &str) {
    let mut conn = state.redis.clone();
    match tokio::time::timeout(
        Duration::from_secs(3),
        queue::deregister(&mut conn, &state.queue, worker),
    )
    .await
    {
        Ok(Ok(0)) => tracing::debug!(worker.name = %worker, "deregistered from the queue"),
        Ok(Ok(n)) => {
            tracing::info!(worker.name = %worker, returned = n, "deregistered; unhandled deliveries returned to the queue")
        }
        Ok(Err(e)) => {
            tracing::warn!(worker.name = %worker, error = %e, "deregistering failed; other workers re-queue what it held once its heartbeat is missed")
        }
        Err(_) => {
            tracing::warn!(worker.name = %worker, "deregistering timed out; other workers re-queue what it held once its heartbeat is missed")
        }
    }
}

/// Resolves on SIGTERM (Railway redeploys) or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
