//! The seeded world of `cycle-bench api`: organizations, two years of
//! monthly cycles and their jobs, models, evaluations, epochs, forecasts,
//! anomaly flags, daily data and audit rows, written with set-based SQL
//! (`generate_series`, `insert … select`) so a million jobs take a minute or
//! two, not an hour.
//!
//! Ids are derived from numbers (`md5('org-7')::uuid`, `md5('cycle-3')::uuid`,
//! `md5('job-3-7-2')::uuid`) so every statement can find the rows of the
//! previous ones without a lookup, and each row's attributes come from a hash
//! of its id: the same arguments seed the same world.

use std::time::Instant;

use sqlx::PgPool;

/// The size of the seeded world.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    pub jobs: i64,
    pub orgs: i64,
    pub cycles: i64,
}

impl Scale {
    /// Organizations in each cycle, oldest first. The newest cycle (running)
    /// has every organization's three model types; the earlier ones grow
    /// linearly towards it, sized so the total is close to `jobs` (growth of
    /// the customer base: the oldest cycle has the fewest organizations).
    pub fn orgs_per_cycle(&self) -> Vec<i64> {
        let last = self.orgs.min((self.jobs / 3 / 2).max(1));
        let earlier = self.cycles - 1;
        let rest_orgs = (self.jobs - 3 * last).max(0) / 3;
        let weights: i64 = (1..=earlier).sum::<i64>().max(1);
        let mut plan: Vec<i64> = (1..=earlier)
            .map(|c| (rest_orgs * c / weights).clamp(1, self.orgs))
            .collect();
        plan.push(last);
        plan
    }

    /// Organizations with daily data, forecasts and anomaly flags.
    pub fn detailed_orgs(&self) -> i64 {
        self.orgs.min(1000)
    }
}

/// Seeds an empty, migrated database; returns the seconds each step took.
pub async fn seed(pool: &PgPool, scale: Scale) -> anyhow::Result<Vec<(&'static str, f64)>> {
    let plan = scale.orgs_per_cycle();
    let mut conn = pool.acquire().await?;
    sqlx::raw_sql(
        // JIT compiling the big statements costs more than it saves here.
        "set synchronous_commit = off; set work_mem = '256MB'; set maintenance_work_mem = '512MB';
         set jit = off;
         create temporary table bench_plan (c int primary key, orgs int not null)",
    )
    .execute(&mut *conn)
    .await?;
    let cs: Vec<i32> = (1..=plan.len() as i32).collect();
    let ns: Vec<i32> = plan.iter().map(|&n| n as i32).collect();
    sqlx::query("insert into bench_plan select * from unnest($1::int4[], $2::int4[])")
        .bind(&cs)
        .bind(&ns)
        .execute(&mut *conn)
        .await?;
    let mut timings = Vec::new();
    let started = Instant::now();
    let (mut jobs_indexes, mut other_indexes) = (Vec::new(), Vec::new());
    for table in BULK_TABLES {
        let restore = detach(&mut conn, table).await?;
        if JOB_TABLES.contains(&table) {
            jobs_indexes.extend(restore);
        } else {
            other_indexes.extend(restore);
        }
    }
    timings.push(("indexes dropped", started.elapsed().as_secs_f64()));
    // The jobs, models and evaluations get their indexes back before the
    // steps that look jobs up; the other tables at the end.
    let mut steps = steps(scale);
    let after = steps
        .iter()
        .position(|(label, _)| *label == "evaluations")
        .expect("an evaluations step")
        + 1;
    jobs_indexes.push(format!("analyze {}", JOB_TABLES.join(", ")));
    steps.insert(after, ("job indexes rebuilt", jobs_indexes.join(";\n")));
    let analyze = steps.pop().expect("the last step analyzes");
    steps.push(("other indexes rebuilt", other_indexes.join(";\n")));
    steps.push(analyze);
    for (label, sql) in steps {
        let started = Instant::now();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await
            .map_err(|e| anyhow::anyhow!("seeding {label}: {e}"))?;
        timings.push((label, started.elapsed().as_secs_f64()));
    }
    Ok(timings)
}

/// The tables seeded in bulk: their indexes and constraints are dropped
/// before and built again after (one sort per index instead of a million
/// random insertions), with the definitions the migrations gave them.
const JOB_TABLES: [&str; 3] = ["ml_training_jobs", "ml_models", "ml_evaluations"];

const BULK_TABLES: [&str; 7] = [
    "ml_training_jobs",
    "ml_models",
    "ml_evaluations",
    "ml_training_epochs",
    "metrics_data",
    "ml_predictions",
    "ml_anomaly_flags",
];

/// Drops `table`'s constraints and indexes (but a key another table refers
/// to); returns the statements that create them again (keys first, then
/// indexes, then foreign keys).
async fn detach(conn: &mut sqlx::PgConnection, table: &str) -> anyhow::Result<Vec<String>> {
    let constraints: Vec<(String, String, String)> = sqlx::query_as(
        "select c.conname::text, c.contype::text, pg_get_constraintdef(c.oid) from pg_constraint c
         where c.conrelid = $1::regclass and c.contype in ('p', 'u', 'f')
           -- a key another table's foreign key points at stays
           and not exists (select 1 from pg_constraint r
                           where r.contype = 'f' and r.conindid = c.conindid
                             and r.conrelid <> c.conrelid)",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await?;
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "select indexrelid::regclass::text, pg_get_indexdef(indexrelid) from pg_index i
         where indrelid = $1::regclass
           and not exists (select 1 from pg_constraint c
                           where c.conindid = i.indexrelid and c.conrelid = i.indrelid)",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await?;
    let mut drop = Vec::new();
    let (mut keys, mut foreign) = (Vec::new(), Vec::new());
    for (name, kind, def) in &constraints {
        drop.push(format!("alter table {table} drop constraint {name}"));
        let add = format!("alter table {table} add constraint {name} {def}");
        if kind == "f" {
            foreign.push(add);
        } else {
            keys.push(add);
        }
    }
    for (name, _) in &indexes {
        drop.push(format!("drop index {name}"));
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(drop.join(";\n")))
        .execute(&mut *conn)
        .await?;
    keys.extend(indexes.into_iter().map(|(_, def)| def));
    keys.extend(foreign);
    Ok(keys)
}

/// The seeding statements in order. Every number formatted into them is one
/// of `scale`'s integers.
fn steps(scale: Scale) -> Vec<(&'static str, String)> {
    let orgs = scale.orgs;
    let last = scale.cycles;
    let detailed = scale.detailed_orgs();
    vec![
        ("organizations", format!(
            "insert into organizations (id, name, created_at)
             select md5('org-' || n)::uuid,
                    (array['Acme', 'Borealis', 'Cobalt', 'Delta', 'Evergreen', 'Fjord', 'Granite', 'Harbor'])[1 + n % 8]
                        || ' ' || (array['Energy', 'Logistics', 'Retail', 'Foods', 'Steel', 'Textiles', 'Paper'])[1 + n % 7]
                        || ' ' || n,
                    now() - interval '26 months' + n * interval '1 minute'
             from generate_series(1, {orgs}) n"
        )),
        // Monthly cycles; the newest started ten hours ago and is running.
        ("cycles", format!(
            "insert into ml_training_cycles
                 (id, cycle_key, kind, cycle_date, status, total_jobs, started_at, finished_at,
                  deadline_at, requested_by, scope)
             select md5('cycle-' || p.c)::uuid, to_char(d.at, 'YYYY-MM'), 'monthly', d.at,
                    case when p.c = {last} then 'running' else 'completed' end, p.orgs * 3,
                    s.at, case when p.c < {last} then s.at + p.orgs * 3 * interval '0.9 second' end,
                    s.at + interval '24 hours', 'schedule', '{{}}'::jsonb
             from bench_plan p
             cross join lateral (select date_trunc('month', now()) - ({last} - p.c) * interval '1 month' as at) d
             cross join lateral (select case when p.c = {last} then now() - interval '10 hours'
                                             else d.at + interval '5 minutes' end as at) s"
        )),
        // Jobs: 93 % succeeded, 4 % skipped, 3 % failed in finished cycles;
        // the running cycle is 45 % done. Timings spread over the cycle.
        ("jobs", format!(
            "insert into ml_training_jobs
                 (id, cycle_id, organization_id, model_type, status, reason, attempts, max_attempts,
                  push_seq, pushed_at, worker, heartbeat_at, started_at, finished_at, train_seconds,
                  model_id, champion_algorithm, accuracy, promoted, created_at)
             select x.id, x.cycle_id, x.org, x.model_type, x.status,
                    case x.status
                        when 'skipped' then format('insufficient data: %s usable days, at least 180 required', 30 + x.h % 149)
                        when 'failed' then (array[
                            'no candidate could be trained: lstm: training diverged: loss is NaN',
                            'invalid data: unreadable value ''n/a'' in metrics_data',
                            'lease expired: no heartbeat for 20 s after 3 attempts',
                            'corrupt model artifact: checksum mismatch',
                            'no candidate could be trained: mstl: too few values to train: have 12, need at least 14'])[1 + x.h / 100 % 5]
                        when 'succeeded' then case when x.promoted
                            then format('promoted: holdout accuracy %s beats the active model''s %s', round(x.acc::numeric, 3), round(x.acc::numeric - 0.02, 3))
                            else format('kept the active model: holdout accuracy %s is below its %s', round(x.acc::numeric, 3), round(x.acc::numeric + 0.01, 3)) end
                    end,
                    case when x.status = 'failed' then 3 when x.status in ('succeeded', 'skipped') then 1 + (x.h % 50 = 0)::int else 0 end,
                    3, case when x.status = 'queued' then 0 else 1 end,
                    case when x.status <> 'queued' then x.started end,
                    case when x.status in ('succeeded', 'failed') then
                        format('trainyard-worker-%s-%s', 1 + x.h % 12, substr(md5('w' || x.c || '-' || x.h % 12), 1, 6)) end,
                    null::timestamptz,
                    case when x.status in ('succeeded', 'failed') then x.started end,
                    case when x.status <> 'queued' then x.started + x.secs * interval '1 second' end,
                    case when x.status = 'succeeded' then x.secs - 1.5 end,
                    case when x.status = 'succeeded' then md5('model-' || x.id)::uuid end,
                    case when x.status = 'succeeded' then
                        case when x.model_type = 'anomaly_detection'
                             then (array['autoencoder', 'isolation_forest', 'pca'])[1 + x.h % 3]
                             else (array['lstm', 'mstl', 'stl_ets'])[1 + x.h % 3] end end,
                    case when x.status = 'succeeded' then x.acc end,
                    x.status = 'succeeded' and x.promoted,
                    x.created
             from (
                 select i.id, p.c, md5('cycle-' || p.c)::uuid as cycle_id, md5('org-' || n)::uuid as org,
                        m.model_type, i.h, 0.55 + (i.h % 4000) / 10000.0 as acc, i.h % 10 < 4 as promoted,
                        20 + i.h % 100 as secs, c.started_at as created,
                        case when p.c = {last} then
                                 case when i.h % 1000 < 450 then (case when i.h % 100 < 94 then 'succeeded' when i.h % 100 < 97 then 'skipped' else 'failed' end)
                                      else 'queued' end
                             when i.h % 100 < 93 then 'succeeded' when i.h % 100 < 97 then 'skipped' else 'failed' end as status,
                        c.started_at + coalesce(c.finished_at - c.started_at, now() - c.started_at) * ((i.h / 7 % 1000) / 1000.0) as started
                 from bench_plan p
                 join ml_training_cycles c on c.id = md5('cycle-' || p.c)::uuid
                 cross join generate_series(1, p.orgs) n
                 cross join (values (1, 'emissions_forecast'), (2, 'energy_forecast'), (3, 'anomaly_detection')) m(k, model_type)
                 cross join lateral (select md5('job-' || p.c || '-' || n || '-' || m.k)::uuid as id) j
                 cross join lateral (select j.id, abs(hashtext(j.id::text)) as h) i
             ) x;
             analyze ml_training_jobs"
        )),
        // The running cycle: 48 jobs running on 12 workers, the window's
        // 1000 next ones pushed, the rest waiting.
        ("running cycle", format!(
            "update ml_training_jobs j
             set status = 'running', attempts = 1, push_seq = 1,
                 pushed_at = now() - interval '3 minutes', started_at = now() - interval '2 minutes',
                 heartbeat_at = now() - (r.n % 5) * interval '1 second',
                 worker = format('trainyard-worker-%s-%s', 1 + r.n % 12, substr(md5('w' || {last} || '-' || r.n % 12), 1, 6))
             from (select id, row_number() over (order by created_at, id) as n
                   from ml_training_jobs
                   where cycle_id = md5('cycle-{last}')::uuid and status = 'queued'
                   order by created_at, id limit 48) r
             where j.id = r.id;
             update ml_training_jobs j set pushed_at = now() - interval '1 minute', push_seq = 1
             from (select id from ml_training_jobs
                   where cycle_id = md5('cycle-{last}')::uuid and status = 'queued'
                   order by created_at, id limit 1000) r
             where j.id = r.id"
        )),
        // A model per succeeded job, versions in cycle order; the first
        // version of a pair is always promoted, the newest promoted is active.
        ("models", "insert into ml_models
                 (id, organization_id, model_type, algorithm, version, status, accuracy, mae, rmse,
                  r2_score, mape, mase, training_samples, training_date, data_start, data_end,
                  cycle_id, job_id, promotion_reason)
             select j.model_id, j.organization_id, j.model_type, j.champion_algorithm,
                    row_number() over (partition by j.organization_id, j.model_type order by j.created_at),
                    case when j.promoted then 'archived' else 'candidate' end,
                    j.accuracy, 40 * (1 - j.accuracy), 55 * (1 - j.accuracy), j.accuracy - 0.1,
                    case when j.model_type <> 'anomaly_detection' then 100 * (1 - j.accuracy) end,
                    case when j.model_type <> 'anomaly_detection' then 1.4 - j.accuracy end,
                    300 + abs(hashtext(j.id::text)) % 400, j.finished_at,
                    (j.created_at - interval '400 days')::date, (j.created_at - interval '1 day')::date,
                    j.cycle_id, j.id, j.reason
             from ml_training_jobs j where j.status = 'succeeded';
             analyze ml_models;
             update ml_training_jobs j set promoted = true,
                    reason = 'promoted: no model was active for this organization and model type'
             from ml_models m where m.job_id = j.id and m.version = 1 and not j.promoted;
             update ml_models set status = 'archived',
                    promotion_reason = 'promoted: no model was active for this organization and model type'
             where version = 1 and status = 'candidate';
             update ml_models m set status = 'active'
             from (select distinct on (organization_id, model_type) id from ml_models
                   where status = 'archived' order by organization_id, model_type, version desc) a
             where m.id = a.id".to_string()),
        // Counters as the cycle rows and the running cycle's shards keep them.
        ("cycle counters", "with k as (
                 select cycle_id,
                        count(*) filter (where status in ('queued', 'running')) as live,
                        count(*) filter (where status = 'succeeded') as ok,
                        count(*) filter (where status = 'failed') as failed,
                        count(*) filter (where status = 'skipped') as skipped,
                        count(*) filter (where promoted) as promoted,
                        percentile_cont(0.5) within group (order by accuracy)
                            filter (where status = 'succeeded') as median_accuracy
                 from ml_training_jobs group by cycle_id)
             update ml_training_cycles c
             set live_jobs = k.live, successful_models = k.ok, failed_models = k.failed,
                 skipped_models = k.skipped, promoted_models = k.promoted,
                 status = case when k.live > 0 then 'running'
                               when k.failed > 0 then 'completed_with_failures' else 'completed' end,
                 total_time_minutes = extract(epoch from (coalesce(c.finished_at, now()) - c.started_at)) / 60.0,
                 median_accuracy = case when k.live = 0 then k.median_accuracy end
             from k where k.cycle_id = c.id;
             insert into ml_cycle_shards
                 (cycle_id, shard, live_jobs, successful_models, failed_models, skipped_models, promoted_models)
             select j.cycle_id, abs(hashtext(j.id::text)) % 16,
                    count(*) filter (where j.status in ('queued', 'running')),
                    count(*) filter (where j.status = 'succeeded'),
                    count(*) filter (where j.status = 'failed'),
                    count(*) filter (where j.status = 'skipped'),
                    count(*) filter (where j.promoted)
             from ml_training_jobs j join ml_training_cycles c on c.id = j.cycle_id
             where c.status = 'running'
             group by j.cycle_id, abs(hashtext(j.id::text)) % 16".to_string()),
        // Every candidate of every succeeded job, and the incumbent it was
        // compared with when a model was active before.
        ("evaluations", "insert into ml_evaluations
                 (job_id, organization_id, model_type, algorithm, role, model_id, is_champion,
                  accuracy, mae, rmse, r2_score, mape, mase, precision_score, recall, f1, created_at)
             select j.id, j.organization_id, j.model_type, a.alg, 'candidate',
                    case when a.alg = j.champion_algorithm then j.model_id end,
                    a.alg = j.champion_algorithm, e.acc, 40 * (1 - e.acc), 55 * (1 - e.acc), e.acc - 0.1,
                    case when j.model_type <> 'anomaly_detection' then 100 * (1 - e.acc) end,
                    case when j.model_type <> 'anomaly_detection' then 1.4 - e.acc end,
                    case when j.model_type = 'anomaly_detection' then e.acc end,
                    case when j.model_type = 'anomaly_detection' then e.acc - 0.05 end,
                    case when j.model_type = 'anomaly_detection' then e.acc - 0.02 end,
                    j.finished_at
             from ml_training_jobs j
             cross join lateral unnest(case when j.model_type = 'anomaly_detection'
                                            then array['autoencoder', 'isolation_forest', 'pca']
                                            else array['lstm', 'mstl', 'stl_ets'] end) a(alg)
             cross join lateral (select case when a.alg = j.champion_algorithm then j.accuracy
                                             else j.accuracy - 0.01 - (abs(hashtext(a.alg || j.id::text)) % 80) / 1000.0 end as acc) e
             where j.status = 'succeeded';
             insert into ml_evaluations
                 (job_id, organization_id, model_type, algorithm, role, model_id, is_champion,
                  accuracy, mae, rmse, r2_score, created_at)
             select j.id, j.organization_id, j.model_type, m.algorithm, 'incumbent', null, false,
                    e.acc, 40 * (1 - e.acc), 55 * (1 - e.acc), e.acc - 0.1, j.finished_at
             from ml_training_jobs j
             join ml_models m on m.job_id = j.id and m.version > 1
             cross join lateral (select case when j.promoted then j.accuracy - 0.02 else j.accuracy + 0.01 end as acc) e".to_string()),
        // Per-epoch losses of the neural candidates: every job of the first
        // organization and one job in 200 of the others.
        ("epochs", "insert into ml_training_epochs (job_id, algorithm, epoch, epochs, train_loss, val_loss, seconds)
             select j.id, a.alg, e, a.epochs, 1.0 / (1 + e * 0.3) + 0.02, 1.1 / (1 + e * 0.25) + 0.05, 0.4
             from ml_training_jobs j
             cross join lateral (select case when j.model_type = 'anomaly_detection' then 'autoencoder' else 'lstm' end as alg,
                                        case when j.model_type = 'anomaly_detection' then 30 else 50 end as epochs) a
             cross join lateral generate_series(1, a.epochs) e
             where j.status in ('succeeded', 'failed')
               and (j.organization_id = md5('org-1')::uuid or abs(hashtext(j.id::text)) % 200 = 0)".to_string()),
        // Two years of daily energy data for the detailed organizations.
        ("daily data", format!(
            "insert into metrics_data (organization_id, date, category, value, unit, co2e_kg, grid_factor)
             select md5('org-' || n)::uuid, d::date, 'energy', v.v, 'kWh', v.v * 0.3, 0.3
             from generate_series(1, {detailed}) n
             cross join generate_series(current_date - 730, current_date - 1, interval '1 day') d
             cross join lateral (select 1000 + n + 120 * sin(extract(doy from d) * 2 * pi() / 7)
                                        + (abs(hashtext(n || '-' || d::date)) % 60) - 30 as v) v"
        )),
        // Thirty-day forecasts with intervals from the last three cycles.
        ("forecasts", format!(
            "insert into ml_predictions
                 (organization_id, model_type, model_id, job_id, prediction_date, predicted_value,
                  lower_80, upper_80, lower_95, upper_95, created_at)
             select j.organization_id, j.model_type, j.model_id, j.id, (c.cycle_date + d * interval '1 day')::date,
                    v.v, v.v - 60, v.v + 60, v.v - 95, v.v + 95, j.finished_at
             from ml_training_jobs j
             join ml_training_cycles c on c.id = j.cycle_id
             cross join generate_series(0, 29) d
             cross join lateral (select 1000 + 120 * sin(d * 2 * pi() / 7) as v) v
             where j.status = 'succeeded' and j.model_type <> 'anomaly_detection'
               and j.cycle_id in (select md5('cycle-' || c)::uuid from generate_series({last} - 2, {last}) c)
               and j.organization_id in (select md5('org-' || n)::uuid from generate_series(1, {detailed}) n)"
        )),
        // A year of scored days per anomaly job of the last two cycles, 2 % flagged.
        ("anomaly flags", format!(
            "insert into ml_anomaly_flags
                 (organization_id, model_id, job_id, date, score, threshold, is_anomaly, kind, created_at)
             select j.organization_id, j.model_id, j.id, (c.cycle_date - d * interval '1 day')::date,
                    s.score, 3.0, s.score > 3.0,
                    case when s.score > 3.0 then (array['spike', 'dip', 'unusual', 'level_shift'])[1 + d % 4] end,
                    j.finished_at
             from ml_training_jobs j
             join ml_training_cycles c on c.id = j.cycle_id
             cross join generate_series(1, 365) d
             cross join lateral (select case when abs(hashtext(j.id::text || d)) % 50 = 0 then 3.5 + d % 3
                                             else (abs(hashtext(d || j.id::text)) % 250) / 100.0 end as score) s
             where j.status = 'succeeded' and j.model_type = 'anomaly_detection'
               and j.cycle_id in (select md5('cycle-' || c)::uuid from generate_series({last} - 1, {last}) c)
               and j.organization_id in (select md5('org-' || n)::uuid from generate_series(1, {detailed}) n)"
        )),
        // Operators' writes over two years.
        ("audit", format!(
            "insert into ops_audit (at, role, actor, action, target, reason, result, status_code, request_id, detail)
             select now() - (5000 - n) * interval '3 hours', 'operator', 'operator',
                    a.action, case when a.action = 'retry_job' then 'job:' || md5('job-1-' || (1 + n % {orgs}) || '-1')::uuid
                                   when a.action = 'retry_failed' then 'cycle:' || md5('cycle-1')::uuid
                                   else 'org:' || md5('org-' || (1 + n % {orgs}))::uuid || ' model:energy_forecast' end,
                    'audit row ' || n || ': re-run after the data was fixed', 'ok', 200,
                    md5('req-' || n), jsonb_build_object('n', n)
             from generate_series(1, 5000) n
             cross join lateral (select (array['retry_job', 'enqueue', 'promote', 'rollback', 'retry_failed'])[1 + n % 5] as action) a"
        )),
        // As autovacuum leaves a database that has lived for two years:
        // statistics, and the visibility map that index-only scans need.
        ("vacuum analyze", "vacuum analyze".to_string()),
    ]
}
