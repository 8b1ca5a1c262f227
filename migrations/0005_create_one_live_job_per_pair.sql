-- At most one live (queued or running) job per organization and model type.
-- Concurrent jobs for one pair each decided promotion against the model
-- active before they trained, so the last writer won whatever its accuracy.
--
-- Pairs that already have several live jobs are resolved first: the job
-- that is running (else the oldest) keeps going, the others are skipped
-- with the reason, and the cycles they belong to are counted again.
with ranked as (
    select id,
           first_value(id) over pair as keeper,
           row_number() over pair as rank
    from ml_training_jobs
    where status in ('queued', 'running')
    window pair as (partition by organization_id, model_type
                    order by (status = 'running') desc, created_at, id)
)
update ml_training_jobs j
set status = 'skipped', finished_at = now(), heartbeat_at = null,
    reason = 'a job for this organization and model type was already live: ' || r.keeper
from ranked r
where j.id = r.id and r.rank > 1;

-- The roll-up of cycles::roll_up, for every running cycle (a no-op for
-- cycles the update above did not touch).
with counts as (
    select cycle_id,
           count(*) filter (where status in ('queued', 'running')) as live,
           count(*) filter (where status = 'succeeded') as ok,
           count(*) filter (where status = 'failed') as failed,
           count(*) filter (where status = 'skipped') as skipped,
           count(*) filter (where promoted) as promoted
    from ml_training_jobs
    group by cycle_id
)
update ml_training_cycles c
set successful_models = k.ok, failed_models = k.failed, skipped_models = k.skipped,
    promoted_models = k.promoted,
    status = case when k.live > 0 then c.status
                  when k.failed > 0 then 'completed_with_failures'
                  else 'completed' end,
    finished_at = case when k.live > 0 then null else now() end,
    total_time_minutes = extract(epoch from (now() - c.started_at)) / 60.0
from counts k
where k.cycle_id = c.id and c.status = 'running';

create unique index ml_training_jobs_one_live_per_pair
    on ml_training_jobs (organization_id, model_type)
    where status in ('queued', 'running');

-- Where the cycle row already keeps a live-job counter (0006 applied before
-- this migration on a development database), count it again too.
do $$
begin
    if exists (select 1 from information_schema.columns
               where table_name = 'ml_training_cycles' and column_name = 'live_jobs') then
        execute 'update ml_training_cycles c
                 set live_jobs = (select count(*) from ml_training_jobs j
                                  where j.cycle_id = c.id and j.status in (''queued'', ''running''))
                 where c.status = ''running''';
    end if;
end
$$;
