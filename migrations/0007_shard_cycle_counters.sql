-- A cycle's counters split over 16 shards (a job counts in shard
-- abs(hashtext(job id)) % 16): the transaction that ends a job updates one
-- shard row, so concurrent completions of one cycle rarely wait on each
-- other's commit. The cycle row keeps the sums for dashboards: refreshed by
-- every sweeper pass while the cycle runs, exact from its finalization on.
create table ml_cycle_shards (
    cycle_id uuid not null references ml_training_cycles (id) on delete cascade,
    shard smallint not null,
    live_jobs integer not null default 0,
    successful_models integer not null default 0,
    failed_models integer not null default 0,
    skipped_models integer not null default 0,
    promoted_models integer not null default 0,
    primary key (cycle_id, shard)
);

-- Running cycles: count their jobs into shards once.
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
group by j.cycle_id, abs(hashtext(j.id::text)) % 16;
