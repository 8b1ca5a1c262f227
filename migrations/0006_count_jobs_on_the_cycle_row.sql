-- The cycle row keeps its counts as counters, changed in the transaction
-- that makes a job terminal, so rolling a cycle up costs the same whatever
-- its size. `live_jobs` counts queued and running jobs; the cycle is
-- finalized when it reaches zero.
alter table ml_training_cycles add column live_jobs integer not null default 0;

-- Cycles running when this migration is applied: count once.
update ml_training_cycles c
set live_jobs = (select count(*) from ml_training_jobs j
                 where j.cycle_id = c.id and j.status in ('queued', 'running'))
where c.status = 'running';

-- When a recount at finalization (or the sweeper's audit) found the counters
-- wrong and repaired them: what they said before, for the record.
alter table ml_training_cycles add column counters_repaired jsonb;

-- Jobs whose delivery is in Redis (running, or queued and pushed): what the
-- Redis window is measured against. Small however large the backlog.
create index ml_training_jobs_in_redis on ml_training_jobs (id)
    where status = 'running' or (status = 'queued' and pushed_at is not null);

-- The window's refill takes the oldest unpushed jobs in (created_at, id)
-- order: an index in exactly that order lets it stop after `room` entries
-- however the statistics look (with created_at alone the planner sorted a
-- scan of the whole table when a fresh cycle made every row unpushed).
drop index ml_training_jobs_unpushed;
create index ml_training_jobs_unpushed on ml_training_jobs (created_at, id)
    where status = 'queued' and pushed_at is null;
