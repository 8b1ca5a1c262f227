-- The ops API: every write it performs (who, what, target, why, result), the
-- answers kept for Idempotency-Key replays, when a model was made active by
-- an operator (so a rollback finds the previous active model), and the
-- indexes its job and cycle listings page through.

create table ops_audit (
    id bigserial primary key,
    at timestamptz not null default now(),
    -- the role of the token used, and its name (never the token itself)
    role text not null check (role in ('reader', 'operator')),
    actor text not null,
    action text not null,
    target text not null,
    reason text,
    result text not null,
    status_code integer not null,
    request_id text not null,
    detail jsonb
);

create index ops_audit_recent on ops_audit (id desc);

create table ops_idempotency (
    key text primary key,
    -- what was asked with this key; the same key with another request is refused
    request text not null,
    status_code integer not null,
    body jsonb not null,
    created_at timestamptz not null default now()
);

alter table ml_models add column activated_at timestamptz;

create index ml_training_jobs_recent on ml_training_jobs (created_at desc, id desc);
create index ml_training_jobs_org_recent
    on ml_training_jobs (organization_id, created_at desc, id desc);
create index ml_training_cycles_recent on ml_training_cycles (started_at desc, id desc);
