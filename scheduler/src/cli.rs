//! The `trainyard-scheduler` command line.

use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use trainyard_shared::cycles::{self, CreateOutcome, CycleKind, CycleSummary, JobDetail, NewCycle};
use trainyard_shared::{jobs, queue, CycleId, ModelType, OrgId};

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
        /// Cron schedule in UTC with a seconds field.
        #[arg(long, env = "TRAINYARD_SCHEDULE", default_value = DEFAULT_SCHEDULE)]
        schedule: String,
        /// At start, create the latest scheduled cycle if it is missing and no older than this many days.
        #[arg(long, env = "TRAINYARD_CATCH_UP_DAYS", default_value_t = 14)]
        catch_up_days: i64,
    },
    /// Start an ad-hoc cycle now and print its id.
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
        /// With --wait: give up after this many seconds (exit 3).
        #[arg(long, default_value_t = 3600)]
        timeout_secs: u64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Recent cycles, newest first.
    Cycles {
        #[arg(long, default_value_t = 20)]
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
    } = &cli.command
    {
        let schedule = Schedule::parse(schedule)?;
        crate::daemon::run(
            s.clone(),
            schedule,
            chrono::Duration::days(*catch_up_days),
            shutdown_signal(),
        )
        .await?;
        return Ok(0);
    }
    let pool = trainyard_shared::db::connect(&c.database_url, c.db_max_connections)
        .await
        .context("connecting to PostgreSQL")?;
    trainyard_shared::db::migrate(&pool)
        .await
        .context("running migrations")?;
    match cli.command {
        Command::Run { .. } => unreachable!("handled above"),
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
                print_cycles(&list);
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
                print_cycles(std::slice::from_ref(&summary));
                println!();
                print_jobs(&jobs);
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
            let new = NewCycle {
                key: format!("adhoc-{}", uuid::Uuid::new_v4()),
                kind: CycleKind::Adhoc,
                cycle_date: chrono::Utc::now(),
                deadline: s.cycle.deadline(),
                requested_by: std::env::var("USER").unwrap_or_else(|_| "ops".into()),
                org,
                model_type: model,
                min_days: s.cycle.min_days,
                max_attempts: s.cycle.max_attempts,
            };
            let outcome = cycles::create_cycle(&pool, &new).await?;
            let CreateOutcome::Created {
                cycle_id,
                total,
                queued,
                skipped,
            } = outcome
            else {
                anyhow::bail!("an ad-hoc cycle key collided; try again");
            };
            let mut redis = queue::connect(&c.redis_url, c.redis_timeout())
                .await
                .context("connecting to Redis")?;
            let qcfg = queue::queue_config(&c.queue);
            jobs::top_up(&pool, &mut redis, &qcfg, s.window).await?;
            if !json {
                println!("cycle {cycle_id}: {total} jobs ({queued} queued, {skipped} skipped)");
            }
            if !wait {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"cycle_id": cycle_id, "total": total, "queued": queued, "skipped": skipped})
                    );
                }
                return Ok(0);
            }
            let mut sweeper = jobs::Sweeper::new(s.sweep_settings());
            let deadline = std::time::Instant::now() + Duration::from_secs(timeout_secs);
            let mut last_live = -1;
            loop {
                let summary = cycles::cycle_summary(&pool, cycle_id).await?;
                if summary.status != "running" {
                    if json {
                        println!("{}", serde_json::to_string_pretty(&summary)?);
                    } else {
                        print_cycles(std::slice::from_ref(&summary));
                    }
                    return Ok(if summary.status == "completed" { 0 } else { 2 });
                }
                if std::time::Instant::now() > deadline {
                    eprintln!("cycle {cycle_id} still running after {timeout_secs} s");
                    return Ok(3);
                }
                let live = jobs::live_jobs(&pool, cycle_id).await?;
                if live != last_live && !json {
                    eprintln!(
                        "  {} succeeded, {} failed, {} skipped, {live} to go",
                        summary.successful_models, summary.failed_models, summary.skipped_models
                    );
                    last_live = live;
                }
                sweeper.pass(&pool, &mut redis, &qcfg).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    Ok(0)
}

fn print_cycles(list: &[CycleSummary]) {
    println!(
        "{:<36}  {:<14} {:<7} {:<24} {:>5} {:>4} {:>6} {:>7} {:>8} {:>8}",
        "cycle", "key", "kind", "status", "total", "ok", "failed", "skipped", "promoted", "minutes"
    );
    for c in list {
        let key: String = c.cycle_key.chars().take(14).collect();
        println!(
            "{:<36}  {:<14} {:<7} {:<24} {:>5} {:>4} {:>6} {:>7} {:>8} {:>8}",
            c.id.to_string(),
            key,
            c.kind,
            c.status,
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
}

fn print_jobs(jobs: &[JobDetail]) {
    println!(
        "{:<22} {:<19} {:<9} {:>3} {:>8} {:<20} {:>8} {:<8} reason",
        "organization", "model type", "status", "att", "secs", "champion", "accuracy", "promoted"
    );
    for j in jobs {
        let org: String = j
            .organization
            .clone()
            .unwrap_or_else(|| j.organization_id.to_string())
            .chars()
            .take(22)
            .collect();
        println!(
            "{:<22} {:<19} {:<9} {:>3} {:>8} {:<20} {:>8} {:<8} {}",
            org,
            j.model_type,
            j.status,
            j.attempts,
            j.duration_seconds
                .map(|d| format!("{d:.1}"))
                .unwrap_or_default(),
            j.algorithm.clone().unwrap_or_default(),
            j.accuracy.map(|a| format!("{a:.1}")).unwrap_or_default(),
            if j.promoted { "yes" } else { "" },
            j.reason.clone().unwrap_or_default()
        );
    }
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
