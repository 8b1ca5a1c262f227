-- The trigram index on `reason` holds only jobs that have one. A job is
-- written three times before its outcome (created, pushed to Redis,
-- claimed) with no reason yet; with every row indexed, each of those
-- versions added a null entry to the GIN pending list (and to its later
-- merge) for nothing a search can find. `reason ilike '%…%'` implies
-- `reason is not null`, so the `/jobs` `reason:` qualifier reads this index
-- exactly as before.
drop index ml_training_jobs_reason_trgm;
create index ml_training_jobs_reason_trgm
    on ml_training_jobs using gin (reason gin_trgm_ops)
    where reason is not null;
