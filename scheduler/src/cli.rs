//! The `trainyard-scheduler` command line.

use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sqlx::PgPool;
use trainyard_shared::config::{bounded, redact_url};
use trainyard_shared::cycles::{self, CreateOutcome, CycleSummary, JobDetail, LiveJob, NewCycle};
use trainyard_shared::text::escape_for_terminal as shown;
use trainyard_shared::{jobs, queue, CycleId, CycleKind, CycleStatus, ModelType, OrgId};

use crate::schedule::{Schedule, DEFAULT_SCHEDULE};
use crate::settings::SchedulerSettings;

/// Creates the monthly training cycle (one job per organization × model type),
/// keeps the Redis queue fed from PostgreSQL, and lets operators start and
/// inspect cycles.
///
/// Configuration comes from the environment (DATABASE_URL, REDIS_URL,
/// TRAINYARD_*) or the flags below; passwords in URLs are never printed.
#[derive(Debug, Parser)]
#[command(name = "trainyard-scheduler", version, about, long_about)]
pub struct Cli {
    #[command(flatten)]
    pub settings: SchedulerSettings,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the scheduler daemon: monthly cycles on the schedule (a missed tick
    /// is caught up at start) and the sweeper. Safe with several replicas.
    Run {
        /// Cron schedule in UTC with a seconds field; at most one tick a month
        /// (cycles are keyed by month).
        #[arg(long, env = "TRAINYARD_SCHEDULE", default_value = DEFAULT_SCHEDULE,
              value_parser = Schedule::parse_monthly)]
        schedule: Schedule,
        /// At start, create the latest scheduled cycle if it is missing and no older than this many days (0–365).
        #[arg(long, env = "TRAINYARD_CATCH_UP_DAYS", default_value_t = 14,
              value_parser = bounded::<i64>("TRAINYARD_CATCH_UP_DAYS", 0, 365))]
        catch_up_days: i64,
        #[command(flatten)]
        api: crate::api::ApiSettings,
    },
    /// Serve the ops API only (`/health`, `/ready`, `/api/v1`); `run` serves it too.
    Serve {
        #[command(flatten)]
        api: crate::api::ApiSettings,
    },
    /// Start an ad-hoc cycle now and print its id. A pair (organization,
    /// model type) that already has a queued or running job is not enqueued
    /// again: the answer names that job.
    Enqueue {
        /// Every organization.
        #[arg(long, conflicts_with = "org", required_unless_present = "org")]
        all: bool,
        /// One organization (uuid).
        #[arg(long)]
        org: Option<OrgId>,
        /// Only this model type: emissions_forecast, energy_forecast or anomaly_detection.
        #[arg(long)]
        model: Option<ModelType>,
        /// Wait until the cycle is finalized (sweeping meanwhile), then print its summary.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds (exit 3; 1–604800).
        #[arg(long, default_value_t = 3600,
              value_parser = bounded::<u64>("--timeout-secs", 1, 604_800))]
        timeout_secs: u64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Recent cycles, newest first.
    Cycles {
        /// How many (1–10000).
        #[arg(long, default_value_t = 20, value_parser = bounded::<i64>("--limit", 1, 10_000))]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// One cycle: its summary and every job.
    Cycle {
        id: CycleId,
        #[arg(long)]
        json: bool,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Load the bundled demo organizations (real public series; see data/demo/README.md).
    SeedDemo {
        /// Load this CSV instead (columns organization,date,category,value,unit,co2e_kg,grid_factor).
        #[arg(long)]
        csv: Option<std::path::PathBuf>,
    },
}

pub async fn execute(cli: Cli) -> anyhow::Result<i32> {
    let s = cli.settings;
    let c = &s.connection;
    if let Command::Run {
        schedule,
        catch_up_days,
        api,
    } = cli.command
    {
        api.check()?;
        let serve = crate::api::run_serve(s.clone(), api, shutdown_signal());
        let daemon = crate::daemon::run(
            s.clone(),
            schedule,
            chrono::Duration::days(catch_up_days),
            shutdown_signal(),
        );
        tokio::try_join!(daemon, serve)?;
        return Ok(0);
    }
    if let Command::Serve { api } = cli.command {
        crate::api::run_serve(s, api, shutdown_signal()).await?;
        return Ok(0);
    }
    // The errors of connect and migrate name what failed and why.
    let pool = trainyard_shared::db::connect(&c.database_url, c.db_max_connections).await?;
    trainyard_shared::db::migrate(&pool).await?;
    match cli.command {
        Command::Run { .. } | Command::Serve { .. } => unreachable!("handled above"),
        Command::Migrate => {
            println!("migrations applied");
        }
        Command::SeedDemo { csv } => {
            let text = match csv {
                Some(p) => std::fs::read_to_string(&p)
                    .with_context(|| format!("reading {}", p.display()))?,
                None => crate::demo::DEMO_CSV.to_string(),
            };
            let (orgs, rows) = crate::demo::seed(&pool, &text).await?;
            println!("seeded {orgs} organizations with {rows} rows of daily data");
        }
        Command::Cycles { limit, json } => {
            let list = cycles::recent_cycles(&pool, limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", format_cycles(&list));
            }
        }
        Command::Cycle { id, json } => {
            let summary = cycles::cycle_summary(&pool, id).await?;
            let jobs = cycles::cycle_jobs(&pool, id).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"cycle": summary, "jobs": jobs})
                    )?
                );
            } else {
                print!("{}", format_cycles(std::slice::from_ref(&summary)));
                println!();
                print!("{}", format_jobs(&jobs));
            }
        }
        Command::Enqueue {
            all: _,
            org,
            model,
            wait,
            timeout_secs,
            json,
        } => {
            let request = EnqueueRequest {
                org,
                model,
                wait,
                timeout: Duration::from_secs(timeout_secs),
                json,
            };
            return enqueue(&pool, &s, &request).await;
        }
    }
    Ok(0)
}

/// What `enqueue` was asked.
#[derive(Debug, Clone)]
struct EnqueueRequest {
    org: Option<OrgId>,
    model: Option<ModelType>,
    wait: bool,
    timeout: Duration,
    json: bool,
}

/// Creates an ad-hoc cycle and pushes its first window. Redis is reached
/// before anything is committed, so an unreachable Redis leaves nothing
/// behind and a retry is never a duplicate; if the push fails after the
/// commit, the cycle exists and its id is printed: the sweeper pushes it.
async fn enqueue(
    pool: &PgPool,
    s: &SchedulerSettings,
    req: &EnqueueRequest,
) -> anyhow::Result<i32> {
    let c = &s.connection;
    let mut redis = queue::connect(&c.redis_url, c.redis_timeout())
        .await
        .with_context(|| {
            format!(
                "nothing was enqueued (REDIS_URL {})",
                redact_url(&c.redis_url)
            )
        })?;
    let qcfg = queue::queue_config(&c.queue);
    let new = NewCycle {
        key: format!("adhoc-{}", uuid::Uuid::new_v4()),
        kind: CycleKind::Adhoc,
        cycle_date: chrono::Utc::now(),
        deadline: s.cycle.deadline(),
        requested_by: std::env::var("USER").unwrap_or_else(|_| "ops".into()),
        org: req.org,
        model_type: req.model,
        pairs: Vec::new(),
        min_days: s.cycle.min_days,
        max_attempts: s.cycle.max_attempts,
    };
    let cycles_to_wait = match cycles::create_cycle(pool, &new).await? {
        CreateOutcome::Created {
            cycle_id,
            total,
            queued,
            skipped,
            already_live,
        } => {
            let pushed = jobs::top_up(pool, &mut redis, &qcfg, s.window).await;
            if req.json {
                if !req.wait {
                    println!(
                        "{}",
                        serde_json::json!({"cycle_id": cycle_id, "total": total, "queued": queued,
                            "skipped": skipped, "already_live": already_live,
                            "pushed": pushed.is_ok()})
                    );
                }
            } else {
                let busy = if already_live > 0 {
                    format!(", {already_live} of them already being trained by another cycle")
                } else {
                    String::new()
                };
                println!(
                    "cycle {cycle_id}: {total} jobs ({queued} queued, {skipped} skipped{busy})"
                );
            }
            if let Err(e) = pushed {
                // Committed: say so, and never make the operator retry into a duplicate.
                eprintln!(
                    "cycle {cycle_id} is created but pushing its jobs to Redis failed ({}); \
                     the scheduler's sweeper pushes them once Redis answers: do not enqueue again",
                    shown(&format!("{:#}", anyhow::Error::from(e)))
                );
            }
            vec![cycle_id]
        }
        CreateOutcome::AlreadyLive { jobs } => {
            if req.json {
                if !req.wait {
                    println!(
                        "{}",
                        serde_json::json!({"cycle_id": null, "already_live": jobs})
                    );
                }
            } else {
                print!("{}", format_already_live(&jobs));
            }
            let mut ids: Vec<CycleId> = jobs.iter().map(|j| j.cycle_id).collect();
            ids.sort_by_key(|id| id.0);
            ids.dedup();
            ids
        }
        CreateOutcome::AlreadyExists { .. } => {
            anyhow::bail!("an ad-hoc cycle key collided; try again")
        }
    };
    if !req.wait {
        return Ok(0);
    }
    let deadline = std::time::Instant::now() + req.timeout;
    let mut code = 0;
    for cycle_id in cycles_to_wait {
        code = code.max(wait_for_cycle(pool, s, &mut redis, cycle_id, deadline, req.json).await?);
    }
    Ok(code)
}

/// Sweeps until the cycle is finalized (exit code 0 if `completed`, 2
/// otherwise) or `deadline` passes (3).
async fn wait_for_cycle(
    pool: &PgPool,
    s: &SchedulerSettings,
    redis: &mut apalis_redis::ConnectionManager,
    cycle_id: CycleId,
    deadline: std::time::Instant,
    json: bool,
) -> anyhow::Result<i32> {
    let qcfg = queue::queue_config(&s.connection.queue);
    let mut sweeper = jobs::Sweeper::new(s.sweep_settings());
    let mut last_live = -1;
    loop {
        let summary = cycles::cycle_summary(pool, cycle_id).await?;
        if summary.status != CycleStatus::Running {
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print!("{}", format_cycles(std::slice::from_ref(&summary)));
            }
            return Ok(if summary.status == CycleStatus::Completed {
                0
            } else {
                2
            });
        }
        if std::time::Instant::now() > deadline {
            eprintln!("cycle {cycle_id} still running at the --timeout-secs deadline");
            return Ok(3);
        }
        let live = jobs::live_jobs(pool, cycle_id).await?;
        if live != last_live && !json {
            eprintln!(
                "  {} succeeded, {} failed, {} skipped, {live} to go",
                summary.successful_models, summary.failed_models, summary.skipped_models
            );
            last_live = live;
        }
        sweeper.pass(pool, redis, &qcfg).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The answer to an ad-hoc request whose pairs are all being trained.
pub fn format_already_live(jobs: &[LiveJob]) -> String {
    const SHOWN: usize = 20;
    let mut out = String::new();
    for j in jobs.iter().take(SHOWN) {
        out += &shown(&j.describe());
        out.push('\n');
    }
    if jobs.len() > SHOWN {
        out += &format!(
            "… and {} more pairs already being trained; nothing was enqueued\n",
            jobs.len() - SHOWN
        );
    }
    out
}

/// The `cycles` table. Text that came from outside (keys, statuses) is
/// escaped for the terminal.
pub fn format_cycles(list: &[CycleSummary]) -> String {
    let mut out = format!(
        "{:<36}  {:<14} {:<7} {:<24} {:>5} {:>4} {:>6} {:>7} {:>8} {:>8}\n",
        "cycle", "key", "kind", "status", "total", "ok", "failed", "skipped", "promoted", "minutes"
    );
    for c in list {
        let key: String = shown(&c.cycle_key).chars().take(14).collect();
        out += &format!(
            "{:<36}  {:<14} {:<7} {:<24} {:>5} {:>4} {:>6} {:>7} {:>8} {:>8}\n",
            c.id.to_string(),
            key,
            c.kind.as_str(),
            c.status.as_str(),
            c.total_jobs,
            c.successful_models,
            c.failed_models,
            c.skipped_models,
            c.promoted_models,
            c.total_time_minutes
                .map(|m| format!("{m:.2}"))
                .unwrap_or_default()
        );
    }
    out
}

/// The jobs table of `cycle ID`. Organization names and reasons are the
/// tenants' text: escaped, so they cannot move the cursor or forge lines.
pub fn format_jobs(jobs: &[JobDetail]) -> String {
    let mut out = format!(
        "{:<22} {:<19} {:<9} {:>3} {:>8} {:<20} {:>8} {:<8} reason\n",
        "organization", "model type", "status", "att", "secs", "champion", "accuracy", "promoted"
    );
    for j in jobs {
        let org: String = match &j.organization {
            Some(name) => shown(name).chars().take(22).collect(),
            None => j.organization_id.to_string().chars().take(22).collect(),
        };
        out += &format!(
            "{:<22} {:<19} {:<9} {:>3} {:>8} {:<20} {:>8} {:<8} {}\n",
            org,
            j.model_type.as_str(),
            j.status.as_str(),
            j.attempts,
            j.duration_seconds
                .map(|d| format!("{d:.1}"))
                .unwrap_or_default(),
            shown(j.algorithm.as_deref().unwrap_or_default()),
            j.accuracy.map(|a| format!("{a:.1}")).unwrap_or_default(),
            if j.promoted { "yes" } else { "" },
            shown(j.reason.as_deref().unwrap_or_default())
        );
    }
    out
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, String> {
        Cli::try_parse_from(std::iter::once("trainyard-scheduler").chain(args.iter().copied()))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn out_of_range_settings_are_refused_naming_the_setting_and_its_range() {
        for (args, setting) in [
            (
                &["--deadline-hours", "1e300", "cycles"][..],
                "TRAINYARD_CYCLE_DEADLINE_HOURS",
            ),
            (
                &["--deadline-hours", "inf", "cycles"],
                "TRAINYARD_CYCLE_DEADLINE_HOURS",
            ),
            (
                &["--deadline-hours=-1", "cycles"],
                "TRAINYARD_CYCLE_DEADLINE_HOURS",
            ),
            (
                &["--deadline-hours", "NaN", "cycles"],
                "TRAINYARD_CYCLE_DEADLINE_HOURS",
            ),
            (&["--max-attempts", "0", "cycles"], "TRAINYARD_MAX_ATTEMPTS"),
            (&["--window", "0", "cycles"], "TRAINYARD_QUEUE_WINDOW"),
            (&["--min-days=-5", "cycles"], "TRAINYARD_MIN_DAYS"),
            (&["--sweep-secs", "0", "cycles"], "TRAINYARD_SWEEP_SECS"),
            (
                &["--lease-timeout-secs", "0", "cycles"],
                "TRAINYARD_LEASE_TIMEOUT_SECS",
            ),
            (
                &["run", "--catch-up-days", "99999999999999"],
                "TRAINYARD_CATCH_UP_DAYS",
            ),
            (&["run", "--schedule", "0 0 2 31 2 *"], "TRAINYARD_SCHEDULE"),
            (
                &["run", "--schedule", "0 0 2 1,15 * *"],
                "TRAINYARD_SCHEDULE",
            ),
            (&["cycles", "--limit=-1"], "--limit"),
            (
                &["enqueue", "--all", "--timeout-secs", "18446744073709551615"],
                "--timeout-secs",
            ),
        ] {
            let e = parse(args).unwrap_err();
            assert!(e.contains(setting), "{args:?}: {e}");
        }
        let ok = parse(&["--deadline-hours", "0.5", "run"]).unwrap();
        assert_eq!(ok.settings.cycle.deadline(), chrono::Duration::minutes(30));
    }

    #[test]
    fn names_and_reasons_are_escaped_in_the_jobs_table() {
        let job = JobDetail {
            id: trainyard_shared::JobId::new_random(),
            organization_id: OrgId::new_random(),
            organization: Some("Evil\u{1b}[2J\rCorp\nFAKE ROW".into()),
            model_type: ModelType::EnergyForecast,
            status: trainyard_shared::JobStatus::Failed,
            attempts: 1,
            duration_seconds: None,
            train_seconds: None,
            algorithm: None,
            accuracy: None,
            promoted: false,
            reason: Some("bad value in row 'x\u{1b}]0;pwned\u{7}'".into()),
            worker: None,
        };
        let table = format_jobs(&[job]);
        assert!(!table.contains('\u{1b}') && !table.contains('\r') && !table.contains('\u{7}'));
        assert_eq!(table.lines().count(), 2, "{table}");
        assert!(table.contains("Evil\\u{1b}[2J\\rCo"), "{table}");
        assert!(table.contains("x\\u{1b}]0;pwned\\u{7}"), "{table}");
    }
}
