-- Indexes that keep the ops API's reads fast with a million job rows
-- (measured by `cycle-bench api`, docs/ops-api.md "Speed at scale").
--
-- A cycle's jobs by status and model type, carrying what the cycle figures
-- aggregate (durations, accuracy): the overview and `/cycles/{id}` read the
-- index alone, without visiting ~90,000 heap rows of a monthly cycle. It
-- replaces the (cycle_id, status) index, a prefix of it.
create index ml_training_jobs_cycle_status_model
    on ml_training_jobs (cycle_id, status, model_type)
    include (started_at, finished_at, accuracy);
drop index ml_training_jobs_cycle_status;

-- `/jobs` pages newest first under one qualifier: with only the global
-- (created_at, id) index, `cycle:` of an older cycle, `status:` of a rare
-- status and `worker:` of a past worker walked the newer rows first.
create index ml_training_jobs_cycle_recent
    on ml_training_jobs (cycle_id, created_at desc, id desc);
create index ml_training_jobs_status_recent
    on ml_training_jobs (status, created_at desc, id desc);
create index ml_training_jobs_worker_recent
    on ml_training_jobs (worker, created_at desc, id desc) where worker is not null;

-- `reason:` is a case-insensitive substring (`ilike '%…%'`): trigrams let a
-- rare or absent text answer without reading every job. pg_trgm ships with
-- PostgreSQL (contrib) and is a trusted extension: the database owner may
-- create it.
create extension if not exists pg_trgm;
create index ml_training_jobs_reason_trgm
    on ml_training_jobs using gin (reason gin_trgm_ops);

-- A job's incumbent accuracy (the cycle matrix): one index-only probe. And
-- "models that got worse this cycle", which compares each succeeded job's
-- accuracy with its incumbent's: the incumbents scored since the cycle
-- started, an index-only range instead of every evaluation.
create index ml_evaluations_incumbent
    on ml_evaluations (job_id) include (accuracy) where role = 'incumbent';
create index ml_evaluations_incumbent_recent
    on ml_evaluations (created_at) include (job_id, accuracy) where role = 'incumbent';
