//! `cycle-bench api`: the latency of every GET route of the ops server
//! against a seeded database of production size.
//!
//! It creates a database (or reuses the one `--keep-db NAME` kept), seeds it
//! ([`super::seed`]), starts the real router of the scheduler in-process on
//! 127.0.0.1 with an operator token, and sends each route of [`ROUTES`]
//! over real HTTP, one request at a time: warm-up requests first, then the
//! measured ones. It prints p50, p95 and max per route, the body size, and
//! the plan of the main query of the slowest route that has one.
//!
//! A route that answers 404 (a page not built yet) is printed `absent`; any
//! other answer but 2xx makes the run fail once the table is printed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::Value;
use sqlx::{Connection as _, PgConnection, PgPool};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use trainyard_scheduler::api::{self, ApiState};

use super::seed::{self, Scale};

/// The operator token of the in-process server.
const TOKEN: &str = "apibench-operator-token";

/// One measured route: a label, the path with `{placeholders}` filled from
/// the seeded data ([`Picks`]), and optionally the SQL of its main query
/// (same placeholders) for the plan printed when it is the slowest.
pub struct Route {
    pub label: &'static str,
    pub path: &'static str,
    pub main_query: Option<&'static str>,
}

const fn route(label: &'static str, path: &'static str) -> Route {
    Route {
        label,
        path,
        main_query: None,
    }
}

const fn with_query(label: &'static str, path: &'static str, sql: &'static str) -> Route {
    Route {
        label,
        path,
        main_query: Some(sql),
    }
}

/// What `list_jobs` runs, up to its `where`.
macro_rules! jobs_sql {
    ($where:literal) => {
        concat!(
            "select j.id, j.cycle_id, j.organization_id, o.name, j.model_type, j.status, j.reason,
                    j.attempts, j.worker, j.created_at, j.finished_at, j.accuracy, j.promoted
             from ml_training_jobs j left join organizations o on o.id = j.organization_id
             where true ",
            $where,
            " order by j.created_at desc, j.id desc limit 51"
        )
    };
}

const CYCLE_GROUPS_SQL: &str = "select model_type, status, count(*) as jobs,
        percentile_cont(0.5) within group (
            order by extract(epoch from (finished_at - started_at))::float8) as median_seconds,
        percentile_cont(0.5) within group (order by accuracy) as median_accuracy
    from ml_training_jobs where cycle_id = '{cycle}'
    group by model_type, status order by model_type, status";

/// Every GET route, and the pages of the dashboard (the same router serves
/// them once they exist). One line per route.
pub const ROUTES: &[Route] = &[
    route("/health", "/health"),
    route("/ready", "/ready"),
    route("/metrics", "/metrics"),
    route("/api/v1/openapi.json", "/api/v1/openapi.json"),
    with_query("/api/v1/overview", "/api/v1/overview", CYCLE_GROUPS_SQL),
    with_query(
        "/api/v1/overview?finish_by",
        "/api/v1/overview?finish_by={finish_by}",
        CYCLE_GROUPS_SQL,
    ),
    route("/api/v1/cycles", "/api/v1/cycles?limit=10"),
    route("/api/v1/cycles page 2", "/api/v1/cycles?limit=10&cursor={cycles_next}"),
    with_query("/api/v1/cycles/{running}", "/api/v1/cycles/{cycle}", CYCLE_GROUPS_SQL),
    route("/api/v1/cycles/{previous}", "/api/v1/cycles/{old_cycle}"),
    with_query(
        "/api/v1/cycles/{running}/matrix",
        "/api/v1/cycles/{cycle}/matrix",
        "with page as (
             select distinct organization_id from ml_training_jobs
             where cycle_id = '{cycle}' order by organization_id limit 51)
         select j.organization_id, o.name, j.model_type, j.id, j.status, j.accuracy, j.promoted, j.reason
         from ml_training_jobs j join page p on p.organization_id = j.organization_id
         left join organizations o on o.id = j.organization_id
         where j.cycle_id = '{cycle}' order by j.organization_id, j.model_type",
    ),
    route(
        "/api/v1/cycles/{running}/matrix page 2",
        "/api/v1/cycles/{cycle}/matrix?cursor={matrix_next}",
    ),
    with_query("/api/v1/jobs", "/api/v1/jobs", jobs_sql!("")),
    route("/api/v1/jobs page 2", "/api/v1/jobs?cursor={jobs_next}"),
    with_query(
        "/api/v1/jobs?q=org:",
        "/api/v1/jobs?q=org:{org}",
        jobs_sql!("and j.organization_id = '{org}'"),
    ),
    with_query(
        "/api/v1/jobs?q=model:",
        "/api/v1/jobs?q=model:anomaly_detection",
        jobs_sql!("and j.model_type = 'anomaly_detection'"),
    ),
    with_query(
        "/api/v1/jobs?q=status:failed",
        "/api/v1/jobs?q=status:failed",
        jobs_sql!("and j.status = 'failed'"),
    ),
    with_query(
        "/api/v1/jobs?q=status:running",
        "/api/v1/jobs?q=status:running",
        jobs_sql!("and j.status = 'running'"),
    ),
    with_query(
        "/api/v1/jobs?q=cycle:{previous}",
        "/api/v1/jobs?q=cycle:{old_cycle}",
        jobs_sql!("and j.cycle_id = '{old_cycle}'"),
    ),
    with_query(
        "/api/v1/jobs?q=cycle:{oldest}",
        "/api/v1/jobs?q=cycle:{oldest_cycle}",
        jobs_sql!("and j.cycle_id = '{oldest_cycle}'"),
    ),
    with_query(
        "/api/v1/jobs?q=reason:diverged",
        "/api/v1/jobs?q=reason:diverged",
        jobs_sql!("and j.reason ilike '%diverged%'"),
    ),
    with_query(
        "/api/v1/jobs?q=reason:(no match)",
        "/api/v1/jobs?q=reason:%22disk+quota%22",
        jobs_sql!("and j.reason ilike '%disk quota%'"),
    ),
    with_query(
        "/api/v1/jobs?q=worker:",
        "/api/v1/jobs?q=worker:{worker}",
        jobs_sql!("and j.worker = '{worker}'"),
    ),
    with_query(
        "/api/v1/jobs?q=since:2d",
        "/api/v1/jobs?q=since:2d",
        jobs_sql!("and j.created_at >= now() - interval '2 days'"),
    ),
    with_query(
        "/api/v1/jobs?q=status:failed+cycle:",
        "/api/v1/jobs?q=status:failed+cycle:{old_cycle}",
        jobs_sql!("and j.status = 'failed' and j.cycle_id = '{old_cycle}'"),
    ),
    with_query(
        "/api/v1/jobs?model=&status=&org=",
        "/api/v1/jobs?model=energy_forecast&status=succeeded&org={org}",
        jobs_sql!(
            "and j.organization_id = '{org}' and j.model_type = 'energy_forecast' and j.status = 'succeeded'"
        ),
    ),
    with_query(
        "/api/v1/jobs/{failed}",
        "/api/v1/jobs/{failed_job}",
        "select algorithm, role, accuracy from ml_evaluations where job_id = '{failed_job}'
         order by role, is_champion desc, accuracy desc, algorithm",
    ),
    route("/api/v1/jobs/{succeeded}", "/api/v1/jobs/{job}"),
    with_query(
        "/api/v1/jobs/{succeeded}/epochs",
        "/api/v1/jobs/{job}/epochs",
        "select algorithm, epoch, train_loss, val_loss from ml_training_epochs
         where job_id = '{job}' order by algorithm, epoch",
    ),
    route("/api/v1/orgs", "/api/v1/orgs"),
    route("/api/v1/orgs page 2", "/api/v1/orgs?cursor={orgs_next}"),
    with_query(
        "/api/v1/orgs/{busy}",
        "/api/v1/orgs/{org}",
        "select * from (select distinct on (j.model_type) j.id, j.model_type, j.created_at
                        from ml_training_jobs j where j.organization_id = '{org}'
                        order by j.model_type, j.created_at desc, j.id desc) latest order by model_type",
    ),
    with_query(
        "/api/v1/orgs/{busy}/models/…/versions",
        "/api/v1/orgs/{org}/models/energy_forecast/versions",
        "select id, version, status, accuracy from ml_models
         where organization_id = '{org}' and model_type = 'energy_forecast'
         order by version desc limit 50",
    ),
    route(
        "/api/v1/orgs/{busy}/models/…/compare",
        "/api/v1/orgs/{org}/models/energy_forecast/compare?a={model_a}&b={model_b}",
    ),
    route(
        "/api/v1/orgs/{busy}/models/…/forecast",
        "/api/v1/orgs/{org}/models/energy_forecast/forecast",
    ),
    route(
        "/api/v1/orgs/{busy}/anomalies",
        "/api/v1/orgs/{org}/anomalies?from={from}&to={to}",
    ),
    with_query(
        "/api/v1/workers",
        "/api/v1/workers",
        "select worker, id, started_at, heartbeat_at from ml_training_jobs
         where status = 'running' order by worker, started_at",
    ),
    route("/api/v1/audit", "/api/v1/audit"),
    route("/api/v1/audit page 2", "/api/v1/audit?cursor={audit_next}"),
    // The dashboard's pages.
    route("/ (page)", "/"),
    route("/now/live (page fragment)", "/now/live"),
    route("/cycles (page)", "/cycles"),
    route("/cycles/{running} (page)", "/cycles/{cycle}"),
    route("/cycles/{previous} (page)", "/cycles/{old_cycle}"),
    route("/jobs?q=status:failed (page)", "/jobs?q=status:failed"),
    route("/jobs?q=reason:diverged (page)", "/jobs?q=reason:diverged"),
    route("/jobs/{failed} (page)", "/jobs/{failed_job}"),
    route("/jobs/{succeeded} (page)", "/jobs/{job}"),
    route("/orgs (page)", "/orgs"),
    route("/orgs/{busy} (page)", "/orgs/{org}"),
    route(
        "/orgs/{busy}/models/energy_forecast (page)",
        "/orgs/{org}/models/energy_forecast",
    ),
    route("/workers (page)", "/workers"),
    route("/audit (page)", "/audit"),
];

/// Command-line options of `cycle-bench api`.
#[derive(Debug, Clone)]
pub struct Options {
    pub scale: Scale,
    /// Measured requests per route (after the warm-up).
    pub requests: usize,
    pub warmup: usize,
    /// Keep (or reuse, when it exists) the database of this name.
    pub keep_db: Option<String>,
}

impl Options {
    pub fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut o = Options {
            scale: Scale {
                jobs: 1_000_000,
                orgs: 30_000,
                cycles: 24,
            },
            requests: 200,
            warmup: 20,
            keep_db: None,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || {
                it.next()
                    .with_context(|| format!("{flag} needs a value"))
                    .cloned()
            };
            match flag.as_str() {
                "--jobs" => o.scale.jobs = value()?.parse().context("--jobs")?,
                "--orgs" => o.scale.orgs = value()?.parse().context("--orgs")?,
                "--cycles" => o.scale.cycles = value()?.parse().context("--cycles")?,
                "--requests" => o.requests = value()?.parse().context("--requests")?,
                "--warmup" => o.warmup = value()?.parse().context("--warmup")?,
                "--keep-db" => {
                    let name = value()?;
                    if name.is_empty()
                        || name.len() > 63
                        || !name
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                    {
                        bail!(
                            "--keep-db takes a database name of lower-case letters, digits and _"
                        );
                    }
                    o.keep_db = Some(name);
                }
                other => bail!("unknown option {other}"),
            }
        }
        let s = o.scale;
        if s.orgs < 1 || s.cycles < 2 || s.jobs < 3 * s.cycles || o.requests < 1 {
            bail!("need --orgs ≥ 1, --cycles ≥ 2, --jobs ≥ 3 × cycles and --requests ≥ 1");
        }
        Ok(o)
    }
}

/// The figures of one route.
struct Measured {
    label: &'static str,
    outcome: Outcome,
}

enum Outcome {
    Ok {
        p50: f64,
        p95: f64,
        max: f64,
        bytes: usize,
        main_query: Option<String>,
    },
    Absent,
    Skipped(String),
    Failed(String),
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    let admin = trainyard_tests::admin_database_url();
    let name = opts.keep_db.clone().unwrap_or_else(|| {
        format!(
            "trainyard_apibench_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        )
    });
    let mut admin_conn = PgConnection::connect(&admin)
        .await
        .context("connecting to the admin database; is deploy/local/services.sh up?")?;
    let exists: bool =
        sqlx::query_scalar("select exists(select 1 from pg_database where datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin_conn)
            .await?;
    if !exists {
        sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
            .execute(&mut admin_conn)
            .await?;
    }
    let mut url = url::Url::parse(&admin)?;
    url.set_path(&name);
    let database_url = url.to_string();
    let result = bench(&opts, &name, &database_url, exists).await;
    if opts.keep_db.is_none() {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "drop database if exists {name} with (force)"
        )))
        .execute(&mut admin_conn)
        .await?;
    } else {
        eprintln!("kept database {name} (pass --keep-db {name} again to reuse it)");
    }
    result
}

async fn bench(
    opts: &Options,
    name: &str,
    database_url: &str,
    existed: bool,
) -> anyhow::Result<()> {
    let pool = trainyard_shared::db::connect(database_url, 5).await?;
    trainyard_shared::db::migrate(&pool).await?;
    let seeded: i64 = sqlx::query_scalar("select count(*) from ml_training_cycles")
        .fetch_one(&pool)
        .await?;
    if existed && seeded > 0 {
        println!("reusing the seeded database {name} (new migrations applied; `analyze` run)");
        sqlx::query("analyze").execute(&pool).await?;
    } else {
        let s = opts.scale;
        eprintln!(
            "seeding {name}: {} jobs asked, {} organizations, {} cycles ...",
            s.jobs, s.orgs, s.cycles
        );
        let started = Instant::now();
        let steps = seed::seed(&pool, s).await?;
        let detail: Vec<String> = steps
            .iter()
            .map(|(label, secs)| format!("{label} {secs:.1}"))
            .collect();
        println!(
            "seeded in {:.1} s ({} s)",
            started.elapsed().as_secs_f64(),
            detail.join(", ")
        );
    }
    print_sizes(&pool).await?;

    let state = Arc::new(ApiState {
        pool: pool.clone(),
        redis: trainyard_shared::queue::connect(
            &trainyard_tests::redis_url(),
            Duration::from_secs(10),
        )
        .await
        .context(
            "connecting to Redis (the readiness probe pings it); is deploy/local/services.sh up?",
        )?,
        settings: scheduler_settings(database_url),
        tokens: api::auth::Tokens::new(None, Some(TOKEN)),
    });
    // The recorder `/metrics` renders, installed as `serve` does.
    api::metrics::handle();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, api::router(state)).await });

    let picks = Picks::load(&pool, addr).await?;
    println!(
        "routes measured one request at a time over HTTP on {addr}: {} warm-up + {} measured each",
        opts.warmup, opts.requests
    );
    let mut results = Vec::new();
    for r in ROUTES {
        let outcome = measure(addr, r, &picks, opts).await;
        results.push(Measured {
            label: r.label,
            outcome,
        });
    }
    server.abort();
    print_table(&results);
    explain_slowest(&pool, &results).await?;
    let failures: Vec<String> = results
        .iter()
        .filter_map(|m| match &m.outcome {
            Outcome::Failed(why) => Some(format!("{}: {why}", m.label)),
            _ => None,
        })
        .collect();
    if !failures.is_empty() {
        bail!("routes that failed:\n  {}", failures.join("\n  "));
    }
    Ok(())
}

fn scheduler_settings(database_url: &str) -> trainyard_scheduler::settings::SchedulerSettings {
    trainyard_scheduler::settings::SchedulerSettings {
        connection: trainyard_shared::config::ConnectionSettings {
            database_url: database_url.to_string(),
            redis_url: trainyard_tests::redis_url(),
            queue: format!("trainyard-apibench:{}", uuid::Uuid::new_v4().simple()),
            redis_timeout_secs: 10,
            db_max_connections: 5,
        },
        cycle: trainyard_scheduler::settings::CycleSettings {
            min_days: 180,
            max_attempts: 3,
            deadline_hours: 24.0,
        },
        window: 1000,
        lease_timeout_secs: 20,
        sweep_secs: 5,
    }
}

async fn print_sizes(pool: &PgPool) -> anyhow::Result<()> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "select t, n from (values
             ('organizations', (select count(*) from organizations)),
             ('ml_training_cycles', (select count(*) from ml_training_cycles)),
             ('ml_training_jobs', (select count(*) from ml_training_jobs)),
             ('ml_models', (select count(*) from ml_models)),
             ('ml_evaluations', (select count(*) from ml_evaluations)),
             ('ml_training_epochs', (select count(*) from ml_training_epochs)),
             ('ml_predictions', (select count(*) from ml_predictions)),
             ('ml_anomaly_flags', (select count(*) from ml_anomaly_flags)),
             ('metrics_data', (select count(*) from metrics_data)),
             ('ops_audit', (select count(*) from ops_audit))) v(t, n)",
    )
    .fetch_all(pool)
    .await?;
    let line: Vec<String> = rows.iter().map(|(t, n)| format!("{t}={n}")).collect();
    println!("rows: {}", line.join(" "));
    Ok(())
}

/// The ids and cursors the routes' placeholders stand for, picked from the
/// seeded data as an operator would meet them.
struct Picks(HashMap<&'static str, String>);

impl Picks {
    async fn load(pool: &PgPool, addr: std::net::SocketAddr) -> anyhow::Result<Self> {
        let mut p = HashMap::new();
        let one = |sql: &'static str| async move {
            sqlx::query_scalar::<_, Option<String>>(sql)
                .fetch_optional(pool)
                .await
                .map(Option::flatten)
        };
        let picks: [(&'static str, &'static str); 9] = [
            // The newest cycle (running in the seeded world), the one before, the first.
            ("cycle", "select id::text from ml_training_cycles order by started_at desc, id desc limit 1"),
            ("old_cycle", "select id::text from ml_training_cycles order by started_at desc, id desc offset 1 limit 1"),
            ("oldest_cycle", "select id::text from ml_training_cycles order by started_at, id limit 1"),
            // The organization with the most jobs.
            ("org", "select organization_id::text from ml_training_jobs
                     group by organization_id order by count(*) desc, organization_id limit 1"),
            ("failed_job", "select j.id::text from ml_training_jobs j
                            where j.status = 'failed' order by j.created_at desc, j.id desc limit 1"),
            ("worker", "select worker from ml_training_jobs where status = 'running'
                        order by started_at desc limit 1"),
            ("finish_by", "select to_char((now() + interval '6 hours') at time zone 'utc',
                                          'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"),
            ("from", "select (current_date - 365)::text"),
            ("to", "select current_date::text"),
        ];
        for (key, sql) in picks {
            if let Some(v) = one(sql).await? {
                p.insert(key, v);
            }
        }
        if let Some(org) = p.get("org").cloned() {
            let org: uuid::Uuid = org.parse()?;
            // The busy organization's newest succeeded job with epochs (else any).
            let job: Option<String> = sqlx::query_scalar(
                "select j.id::text from ml_training_jobs j
                 where j.organization_id = $1 and j.status = 'succeeded'
                 order by exists(select 1 from ml_training_epochs e where e.job_id = j.id) desc,
                          j.created_at desc limit 1",
            )
            .bind(org)
            .fetch_optional(pool)
            .await?;
            if let Some(job) = job {
                p.insert("job", job);
            }
            let models: Vec<String> = sqlx::query_scalar(
                "select version::text from ml_models
                 where organization_id = $1 and model_type = 'energy_forecast'
                 order by version desc limit 2",
            )
            .bind(org)
            .fetch_all(pool)
            .await?;
            if let [a, b] = models.as_slice() {
                p.insert("model_a", a.clone());
                p.insert("model_b", b.clone());
            }
        }
        // Second pages: the `next` of the first.
        let mut picks = Picks(p);
        for (key, path) in [
            ("jobs_next", "/api/v1/jobs"),
            ("orgs_next", "/api/v1/orgs"),
            ("audit_next", "/api/v1/audit"),
            ("cycles_next", "/api/v1/cycles?limit=10"),
            ("matrix_next", "/api/v1/cycles/{cycle}/matrix"),
        ] {
            let Ok(path) = picks.fill(path) else { continue };
            let answer = get(addr, &path).await?;
            if answer.status != 200 {
                bail!("{path} answered {} while picking cursors", answer.status);
            }
            let body: Value = serde_json::from_slice(&answer.body)
                .with_context(|| format!("{path} did not answer JSON"))?;
            match &body["next"] {
                Value::String(s) => {
                    picks.0.insert(key, s.clone());
                }
                Value::Null => {}
                other => {
                    picks
                        .0
                        .insert(key, other.to_string().trim_matches('"').to_string());
                }
            }
        }
        Ok(picks)
    }

    /// `template` with its placeholders filled; names the first one not picked.
    fn fill(&self, template: &str) -> Result<String, String> {
        let mut out = String::new();
        let mut rest = template;
        while let Some(start) = rest.find('{') {
            let end = rest[start..]
                .find('}')
                .map(|e| start + e)
                .ok_or_else(|| format!("unclosed placeholder in {template}"))?;
            let key = &rest[start + 1..end];
            let value = self
                .0
                .get(key)
                .ok_or_else(|| format!("nothing seeded for {{{key}}}"))?;
            out.push_str(&rest[..start]);
            out.push_str(value);
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

async fn measure(addr: std::net::SocketAddr, r: &Route, picks: &Picks, opts: &Options) -> Outcome {
    let path = match picks.fill(r.path) {
        Ok(p) => p,
        Err(why) => return Outcome::Skipped(why),
    };
    let mut times = Vec::with_capacity(opts.requests);
    let mut bytes = 0;
    for i in 0..opts.warmup + opts.requests {
        let started = Instant::now();
        let answer = match get(addr, &path).await {
            Ok(a) => a,
            Err(e) => return Outcome::Failed(format!("{path}: {e:#}")),
        };
        let elapsed = started.elapsed().as_secs_f64() * 1000.0;
        match answer.status {
            200..=299 => {}
            404 => return Outcome::Absent,
            s => {
                let body = String::from_utf8_lossy(&answer.body);
                return Outcome::Failed(format!(
                    "{path} answered {s}: {}",
                    body.chars().take(300).collect::<String>()
                ));
            }
        }
        bytes = answer.body.len();
        if i >= opts.warmup {
            times.push(elapsed);
        }
    }
    times.sort_by(f64::total_cmp);
    let main_query = r.main_query.and_then(|q| picks.fill(q).ok());
    Outcome::Ok {
        p50: percentile(&times, 0.50),
        p95: percentile(&times, 0.95),
        max: times.last().copied().unwrap_or(0.0),
        bytes,
        main_query,
    }
}

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn print_table(results: &[Measured]) {
    println!(
        "{:<44} {:>8} {:>8} {:>8} {:>9}  result",
        "GET route", "p50 ms", "p95 ms", "max ms", "bytes"
    );
    for m in results {
        match &m.outcome {
            Outcome::Ok {
                p50,
                p95,
                max,
                bytes,
                ..
            } => println!(
                "{:<44} {p50:>8.2} {p95:>8.2} {max:>8.2} {bytes:>9}  {}",
                m.label,
                if *p95 <= 50.0 { "ok" } else { "over 50 ms" }
            ),
            Outcome::Absent => println!("{:<44} {:>37}  absent (404)", m.label, ""),
            Outcome::Skipped(why) => println!("{:<44} {:>37}  skipped: {why}", m.label, ""),
            Outcome::Failed(why) => println!("{:<44} {:>37}  FAILED: {why}", m.label, ""),
        }
    }
}

/// The plan of the main query of the slowest route that names one: which
/// scans it makes, on which indexes, and how long it runs.
async fn explain_slowest(pool: &PgPool, results: &[Measured]) -> anyhow::Result<()> {
    let slowest = results
        .iter()
        .filter_map(|m| match &m.outcome {
            Outcome::Ok {
                p95,
                main_query: Some(q),
                ..
            } => Some((m.label, *p95, q)),
            _ => None,
        })
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let Some((label, p95, sql)) = slowest else {
        return Ok(());
    };
    let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "explain (analyze, buffers) {sql}"
    )))
    .fetch_all(pool)
    .await
    .with_context(|| format!("explaining the main query of {label}"))?;
    println!("slowest route with a main query: {label} (p95 {p95:.2} ms); its plan:");
    let mut indexes = Vec::new();
    let mut seq_scans = Vec::new();
    for line in &plan {
        let node = line.trim_start().trim_start_matches("->").trim_start();
        if line.contains("Buffers:") || line.contains("Planning:") {
            continue;
        }
        if let Some(rest) = node.split(" using ").nth(1) {
            indexes.push(rest.split_whitespace().next().unwrap_or("").to_string());
        }
        if let Some(rest) = node
            .strip_prefix("Seq Scan on ")
            .or_else(|| node.strip_prefix("Parallel Seq Scan on "))
        {
            seq_scans.push(rest.split_whitespace().next().unwrap_or("").to_string());
        }
        if line.contains("->") || !line.starts_with(' ') {
            println!(
                "  {}",
                line.split("  (cost=").next().unwrap_or(line).trim_end()
            );
        }
    }
    println!(
        "  indexes used: {}; sequential scans: {}",
        if indexes.is_empty() {
            "none".to_string()
        } else {
            indexes.join(", ")
        },
        if seq_scans.is_empty() {
            "none".to_string()
        } else {
            seq_scans.join(", ")
        },
    );
    Ok(())
}

/// One answer: status and body (de-chunked).
struct Answer {
    status: u16,
    body: Vec<u8>,
}

/// A plain HTTP/1.1 GET with the operator token, one connection per request
/// (`Connection: close`), read to the end.
async fn get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<Answer> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(
        format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers in the answer")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status in the answer")?;
    let body = &raw[split + 4..];
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok(Answer { status, body })
}

fn dechunk(mut data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("truncated chunk size")?;
        let size_text = std::str::from_utf8(&data[..line_end])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .context("malformed chunk size")?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank_and_chunks_join() {
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 100.0);
        assert_eq!(percentile(&v, 0.95), 190.0);
        assert_eq!(percentile(&[7.0], 0.95), 7.0);
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
        assert!(dechunk(b"5\r\nab").is_err());
    }
}
