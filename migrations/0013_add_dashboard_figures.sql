-- The dashboard's figures that must not scan a cycle's jobs on every view.
--
-- The median holdout accuracy of a cycle's successful jobs, written once
-- when the cycle is finalized (by the same recount that proves its counters),
-- so the cycle list and its trend chart read one row per cycle.
alter table ml_training_cycles add column median_accuracy double precision;

-- Jobs finished in the last hours (the throughput sparkline of the Now page).
create index ml_training_jobs_finished on ml_training_jobs (finished_at)
    where finished_at is not null;
