//! Support for the integration tests in `integration/`: a fresh database and
//! Redis key prefix per test, generated organization data, and real worker
//! processes.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use chrono::NaiveDate;
use rand::{Rng, SeedableRng};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

/// The admin URL: `DATABASE_URL` (set by deploy/local/services.sh) or the local default.
pub fn admin_database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string())
}

/// One test's world: its own database (random name) and queue prefix.
pub struct TestEnv {
    pub database_url: String,
    pub db_name: String,
    pub redis_url: String,
    pub queue: String,
    pub pool: PgPool,
    workers: Vec<Child>,
}

impl TestEnv {
    pub async fn new() -> anyhow::Result<Self> {
        Self::on(&admin_database_url()).await
    }

    /// A test world on the PostgreSQL server behind `admin` (e.g. an [`OwnPostgres`]).
    pub async fn on(admin: &str) -> anyhow::Result<Self> {
        let admin = admin.to_string();
        let db_name = format!("trainyard_test_{}", Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&admin)
            .await
            .context("connecting to the admin database; is deploy/local/services.sh up?")?;
        sqlx::query(sqlx::AssertSqlSafe(format!("create database {db_name}")))
            .execute(&mut conn)
            .await?;
        let mut url = url::Url::parse(&admin)?;
        url.set_path(&db_name);
        let database_url = url.to_string();
        let pool = trainyard_shared::db::connect(&database_url, 5).await?;
        trainyard_shared::db::migrate(&pool).await?;
        Ok(Self {
            database_url,
            db_name,
            redis_url: redis_url(),
            queue: format!("trainyard-test:{}", Uuid::new_v4().simple()),
            pool,
            workers: Vec::new(),
        })
    }

    pub fn connection_settings(&self) -> trainyard_shared::config::ConnectionSettings {
        trainyard_shared::config::ConnectionSettings {
            database_url: self.database_url.clone(),
            redis_url: self.redis_url.clone(),
            queue: self.queue.clone(),
            redis_timeout_secs: 10,
            db_max_connections: 5,
        }
    }

    pub fn cycle_settings(&self) -> trainyard_scheduler::settings::CycleSettings {
        trainyard_scheduler::settings::CycleSettings {
            min_days: 180,
            max_attempts: 3,
            deadline_hours: 1.0,
        }
    }

    pub fn scheduler_settings(&self) -> trainyard_scheduler::settings::SchedulerSettings {
        trainyard_scheduler::settings::SchedulerSettings {
            connection: self.connection_settings(),
            cycle: self.cycle_settings(),
            window: 1000,
            lease_timeout_secs: 5,
            sweep_secs: 1,
        }
    }

    pub async fn redis(&self) -> anyhow::Result<apalis_redis::ConnectionManager> {
        Ok(trainyard_shared::queue::connect(&self.redis_url, Duration::from_secs(10)).await?)
    }

    pub fn queue_config(&self) -> apalis_redis::Config {
        trainyard_shared::queue::queue_config(&self.queue)
    }

    /// Environment for a worker process of this test: small, fast training.
    pub fn worker_env(&self) -> Vec<(String, String)> {
        [
            ("DATABASE_URL", self.database_url.as_str()),
            ("REDIS_URL", self.redis_url.as_str()),
            ("TRAINYARD_QUEUE", self.queue.as_str()),
            ("TRAINYARD_LSTM_EPOCHS", "2"),
            ("TRAINYARD_AE_EPOCHS", "3"),
            ("TRAINYARD_HEARTBEAT_SECS", "1"),
            ("TRAINYARD_MISSED_HEARTBEATS", "3"),
            ("TRAINYARD_LEASE_TIMEOUT_SECS", "4"),
            ("TRAINYARD_POLL_INTERVAL_MS", "50"),
            ("TRAINYARD_GRACE_SECS", "10"),
            ("TRAINYARD_DB_RETRY_SECS", "60"),
            ("RUST_LOG", "info"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Starts a real `trainyard-worker run` process; `extra` overrides the env.
    pub fn spawn_worker(&mut self, extra: &[(&str, &str)]) -> anyhow::Result<u32> {
        let mut cmd = Command::new(binary("trainyard-worker")?);
        cmd.arg("run")
            .env("PORT", free_port().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(&format!(
                "{}-worker-{}",
                self.db_name,
                self.workers.len()
            ))?);
        for (k, v) in self.worker_env() {
            cmd.env(k, v);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd.spawn().context("starting trainyard-worker")?;
        let pid = child.id();
        self.workers.push(child);
        Ok(pid)
    }

    pub fn workers(&mut self) -> &mut Vec<Child> {
        &mut self.workers
    }

    /// Polls until `cycle` is no longer running, or fails after `limit`.
    pub async fn wait_for_cycle(&self, cycle: Uuid, limit: Duration) -> anyhow::Result<String> {
        let start = Instant::now();
        loop {
            let status: String =
                sqlx::query_scalar("select status from ml_training_cycles where id = $1")
                    .bind(cycle)
                    .fetch_one(&self.pool)
                    .await?;
            if status != "running" {
                return Ok(status);
            }
            if start.elapsed() > limit {
                let jobs: Vec<(String, String, Option<String>)> = sqlx::query_as(
                    "select model_type, status, reason from ml_training_jobs where cycle_id = $1",
                )
                .bind(cycle)
                .fetch_all(&self.pool)
                .await?;
                bail!("cycle {cycle} still running after {limit:?}: {jobs:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        for w in &mut self.workers {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

/// A built binary of the workspace, next to the test executable's directory.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    // Tests run from target/<profile>/deps, bench binaries from target/<profile>.
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("locating the target directory")?;
    let mut path = dir.join(name);
    if !path.exists() {
        path = dir.parent().map(|d| d.join(name)).unwrap_or_default();
    }
    if !path.exists() {
        bail!(
            "{} is missing: build the binaries first (`cargo build --release --workspace --bins`, as deploy/local/test.sh does)",
            path.display()
        );
    }
    Ok(path)
}

/// Where worker logs of a test go (kept for diagnosis).
pub fn log_file(name: &str) -> anyhow::Result<std::fs::File> {
    let dir = std::env::temp_dir().join("trainyard-test-logs");
    std::fs::create_dir_all(&dir)?;
    Ok(std::fs::File::create(dir.join(format!("{name}.log")))?)
}

pub fn log_path(name: &str) -> PathBuf {
    std::env::temp_dir()
        .join("trainyard-test-logs")
        .join(format!("{name}.log"))
}

/// A plain HTTP GET on loopback, retried while the port is not yet open;
/// returns the whole response (status line, headers, body).
pub async fn http_get(port: &str, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = std::time::Instant::now();
    loop {
        match tokio::net::TcpStream::connect(format!("127.0.0.1:{port}")).await {
            Ok(mut s) => {
                s.write_all(
                    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await?;
                let mut buf = String::new();
                s.read_to_string(&mut buf).await?;
                return Ok(buf);
            }
            Err(e) if started.elapsed() > Duration::from_secs(20) => return Err(e.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A generated organization: `days` days of energy rows ending yesterday
/// (weekly pattern, slow trend, noise) with matching CO2e and grid factor.
pub async fn insert_org(pool: &PgPool, name: &str, days: usize, seed: u64) -> anyhow::Result<Uuid> {
    let id = Uuid::new_v4();
    sqlx::query("insert into organizations (id, name) values ($1, $2)")
        .bind(id)
        .bind(name)
        .execute(pool)
        .await?;
    insert_series(pool, id, days, seed).await?;
    Ok(id)
}

pub async fn insert_series(pool: &PgPool, org: Uuid, days: usize, seed: u64) -> anyhow::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let end = NaiveDate::from_ymd_opt(2026, 10, 31).expect("valid date");
    let mut dates = Vec::with_capacity(days);
    let mut values = Vec::with_capacity(days);
    let mut co2 = Vec::with_capacity(days);
    let mut grid = Vec::with_capacity(days);
    for i in 0..days {
        let date = end - chrono::Duration::days((days - 1 - i) as i64);
        let t = i as f64;
        let weekly = 120.0 * (2.0 * std::f64::consts::PI * t / 7.0).sin();
        let value = 1000.0 + 0.3 * t + weekly + rng.random_range(-30.0..30.0);
        let g = 0.3
            + 0.05 * (2.0 * std::f64::consts::PI * t / 365.0).sin()
            + rng.random_range(-0.01..0.01);
        dates.push(date);
        values.push(value);
        grid.push(g);
        co2.push(value * g);
    }
    sqlx::query(
        "insert into metrics_data (organization_id, date, category, value, unit, co2e_kg, grid_factor)
         select $1, u.d, 'energy', u.v, 'kWh', u.c, u.g
         from unnest($2::date[], $3::float8[], $4::float8[], $5::float8[]) as u(d, v, c, g)",
    )
    .bind(org)
    .bind(&dates)
    .bind(&values)
    .bind(&co2)
    .bind(&grid)
    .execute(pool)
    .await?;
    Ok(())
}

/// Creates an ad-hoc cycle the way `trainyard-scheduler enqueue` does and pushes it.
pub async fn enqueue(
    env: &TestEnv,
    org: Option<Uuid>,
    model: Option<trainyard_shared::ModelType>,
) -> anyhow::Result<Uuid> {
    use trainyard_shared::cycles::{create_cycle, CreateOutcome, CycleKind, NewCycle};
    let new = NewCycle {
        key: format!("adhoc-{}", Uuid::new_v4()),
        kind: CycleKind::Adhoc,
        cycle_date: chrono::Utc::now(),
        deadline: chrono::Duration::hours(1),
        requested_by: "test".into(),
        org: org.map(trainyard_shared::OrgId),
        model_type: model,
        pairs: Vec::new(),
        min_days: 180,
        max_attempts: 3,
    };
    let CreateOutcome::Created { cycle_id, .. } = create_cycle(&env.pool, &new).await? else {
        bail!("ad-hoc cycle not created");
    };
    let mut redis = env.redis().await?;
    trainyard_shared::jobs::top_up(&env.pool, &mut redis, &env.queue_config(), 1000).await?;
    Ok(cycle_id.0)
}

/// One cycle of `jobs` jobs for `jobs / 3` organizations without data (× 3
/// model types), created the way `enqueue` creates a cycle (rows in one
/// transaction, counters from one count) but not yet pushed. Each job is a
/// no-op for the real worker: the organization has no rows, so training is
/// refused at once and the job recorded `skipped`.
pub async fn noop_cycle(env: &TestEnv, jobs: usize) -> anyhow::Result<uuid::Uuid> {
    let cycle = uuid::Uuid::new_v4();
    let orgs = jobs.div_ceil(3);
    let mut tx = env.pool.begin().await?;
    sqlx::query(
        "insert into ml_training_cycles (id, cycle_key, kind, cycle_date, deadline_at, requested_by)
         values ($1, $2, 'adhoc', now(), now() + interval '1 day', 'cycle-bench')",
    )
    .bind(cycle)
    .bind(format!("bench-{cycle}"))
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "with o as (insert into organizations (id, name)
                    select gen_random_uuid(), 'noop-' || g from generate_series(1, $2) g
                    returning id),
              t as (select o.id as org, m.kind, row_number() over () as n
                    from o cross join unnest(array['emissions_forecast', 'energy_forecast',
                                                   'anomaly_detection']) as m(kind))
         insert into ml_training_jobs (id, cycle_id, organization_id, model_type, max_attempts)
         select gen_random_uuid(), $1, t.org, t.kind, 3 from t where t.n <= $3",
    )
    .bind(cycle)
    .bind(orgs as i64)
    .bind(jobs as i64)
    .execute(&mut *tx)
    .await?;
    trainyard_shared::cycles::recount(&mut tx, trainyard_shared::CycleId(cycle), None).await?;
    tx.commit().await?;
    if jobs > 1 {
        sqlx::query("analyze").execute(&env.pool).await?;
    }
    Ok(cycle)
}

/// Waits until some job of `cycle` is running and returns (job id, worker name).
pub async fn wait_for_running_job(
    env: &TestEnv,
    cycle: Uuid,
    limit: Duration,
) -> anyhow::Result<(Uuid, String)> {
    let start = Instant::now();
    loop {
        let row: Option<(Uuid, Option<String>)> = sqlx::query_as(
            "select id, worker from ml_training_jobs where cycle_id = $1 and status = 'running' limit 1",
        )
        .bind(cycle)
        .fetch_optional(&env.pool)
        .await?;
        if let Some((id, Some(worker))) = row {
            return Ok((id, worker));
        }
        if start.elapsed() > limit {
            bail!("no job of cycle {cycle} started within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends a signal to a process.
pub fn signal(pid: u32, sig: nix::sys::signal::Signal) -> anyhow::Result<()> {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig)?;
    Ok(())
}

/// A Redis server of the test's own, on a free loopback port, keeping nothing on disk.
pub struct OwnRedis {
    pub port: u16,
    child: Child,
    password: Option<String>,
}

impl OwnRedis {
    pub fn start(port: u16, password: Option<&str>) -> anyhow::Result<Self> {
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if let Some(p) = password {
            cmd.args(["--requirepass", p]);
        }
        let child = cmd.spawn().context("starting redis-server")?;
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if start.elapsed() > Duration::from_secs(10) {
                bail!("redis-server did not start on port {port}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self {
            port,
            child,
            password: password.map(str::to_string),
        })
    }

    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Kills the server (SIGKILL): everything it held is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A PostgreSQL server of the test's own (a fresh `initdb` in a temporary
/// directory, loopback only, on a free port) that the test may stop and
/// start again. With a password, password authentication is required.
pub struct OwnPostgres {
    pub port: u16,
    pub password: Option<String>,
    dir: PathBuf,
    bin: PathBuf,
    child: Option<Child>,
}

impl OwnPostgres {
    pub fn start(password: Option<&str>) -> anyhow::Result<Self> {
        let bin = pg_bindir()?;
        let dir = std::env::temp_dir().join(format!("trainyard-pg-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let data = dir.join("data");
        let mut initdb = as_pg_owner(&bin.join("initdb"));
        initdb.args([
            "-D",
            &data.to_string_lossy(),
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-locale",
        ]);
        if let Some(p) = password {
            let pwfile = dir.join("pw");
            std::fs::write(&pwfile, p)?;
            initdb.args([
                "--auth=scram-sha-256",
                "--pwfile",
                &pwfile.to_string_lossy(),
            ]);
        } else {
            initdb.arg("--auth=trust");
        }
        chown_to_pg_owner(&dir)?;
        let out = initdb
            .stdout(Stdio::null())
            .output()
            .context("running initdb")?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let mut pg = Self {
            port: free_port(),
            password: password.map(str::to_string),
            dir,
            bin,
            child: None,
        };
        pg.resume()?;
        Ok(pg)
    }

    /// The admin URL (database `postgres`).
    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("postgres://postgres:{p}@127.0.0.1:{}/postgres", self.port),
            None => format!("postgres://postgres@127.0.0.1:{}/postgres", self.port),
        }
    }

    /// Starts the server (again) on its port and waits until it accepts connections.
    pub fn resume(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let data = self.dir.join("data");
        let port = self.port.to_string();
        let child = as_pg_owner(&self.bin.join("postgres"))
            .args([
                "-D",
                &data.to_string_lossy(),
                "-p",
                &port,
                "-k",
                "",
                "-c",
                "listen_addresses=127.0.0.1",
                // fsync off is safe here (the OS keeps the page cache across a
                // server stop); synchronous_commit stays on, or an immediate
                // stop would lose commits the test relies on.
                "-c",
                "fsync=off",
                "-c",
                "max_connections=100",
            ])
            .stdout(Stdio::null())
            .stderr(log_file(&format!("pg-{}", self.port))?)
            .spawn()
            .context("starting postgres")?;
        self.child = Some(child);
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if start.elapsed() > Duration::from_secs(30) {
                bail!("postgres did not start on port {}", self.port);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Accepting TCP is not accepting queries: wait out the startup.
        std::thread::sleep(Duration::from_millis(300));
        Ok(())
    }

    /// Stops the server abruptly (`pg_ctl stop -m immediate`: no checkpoint,
    /// every client cut off). The server's own pid is signalled, not the
    /// `runuser` wrapper's, which would not pass the signal on.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let data = self.dir.join("data");
            let stopped = as_pg_owner(&self.bin.join("pg_ctl"))
                .args([
                    "-D",
                    &data.to_string_lossy(),
                    "stop",
                    "-m",
                    "immediate",
                    "-w",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !stopped {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The newest `/usr/lib/postgresql/N/bin` holding `postgres` and `initdb`.
fn pg_bindir() -> anyhow::Result<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL server binaries not found under /usr/lib/postgresql")?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop()
        .map(|(_, bin)| bin)
        .context("no /usr/lib/postgresql/N/bin with initdb")
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// initdb and postgres refuse to run as root: run them as `postgres` then.
fn as_pg_owner(program: &std::path::Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn chown_to_pg_owner(dir: &std::path::Path) -> anyhow::Result<()> {
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir)
            .status()?;
        if !status.success() {
            bail!("chown of {} to postgres failed", dir.display());
        }
    }
    Ok(())
}
