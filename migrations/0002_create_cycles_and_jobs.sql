-- One row per training cycle (the dashboards read it) and one per job.
create table ml_training_cycles (
    id uuid primary key,
    -- unique per scheduled run (e.g. '2026-12'); the replica whose insert wins enqueues
    cycle_key text not null unique,
    kind text not null check (kind in ('monthly', 'adhoc')),
    cycle_date timestamptz not null,
    status text not null default 'running'
        check (status in ('running', 'completed', 'completed_with_failures', 'timed_out')),
    total_jobs integer not null default 0,
    successful_models integer not null default 0,
    failed_models integer not null default 0,
    skipped_models integer not null default 0,
    promoted_models integer not null default 0,
    started_at timestamptz not null default now(),
    finished_at timestamptz,
    deadline_at timestamptz not null,
    total_time_minutes double precision,
    requested_by text not null,
    scope jsonb not null default '{}'::jsonb
);

create index ml_training_cycles_running on ml_training_cycles (status) where status = 'running';

create table ml_training_jobs (
    id uuid primary key,
    cycle_id uuid not null references ml_training_cycles (id) on delete cascade,
    -- no foreign key: an organization deleted mid-cycle must not erase the job's record
    organization_id uuid not null,
    model_type text not null
        check (model_type in ('emissions_forecast', 'energy_forecast', 'anomaly_detection')),
    status text not null default 'queued'
        check (status in ('queued', 'running', 'succeeded', 'failed', 'skipped')),
    reason text,
    attempts integer not null default 0,
    max_attempts integer not null,
    -- bumped whenever the job needs a fresh delivery; part of the Redis task id
    push_seq integer not null default 0,
    pushed_at timestamptz,
    worker text,
    heartbeat_at timestamptz,
    started_at timestamptz,
    finished_at timestamptz,
    train_seconds double precision,
    model_id uuid,
    champion_algorithm text,
    accuracy double precision,
    promoted boolean not null default false,
    created_at timestamptz not null default now(),
    unique (cycle_id, organization_id, model_type)
);

create index ml_training_jobs_cycle_status on ml_training_jobs (cycle_id, status);
create index ml_training_jobs_unpushed on ml_training_jobs (created_at)
    where status = 'queued' and pushed_at is null;
create index ml_training_jobs_live on ml_training_jobs (status)
    where status in ('queued', 'running');
