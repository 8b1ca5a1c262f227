-- Every worker replica, busy or idle: each upserts its row when it starts
-- and on every heartbeat tick, so an operator sees replicas that run no job
-- (GET /workers used to see workers only through their running jobs). A
-- replica that stops cleanly stamps `stopped_at`; rows not seen for a day
-- are deleted by the workers themselves, so the table stays as small as
-- the fleet.
create table worker_presence (
    replica text primary key,
    started_at timestamptz not null,
    last_seen timestamptz not null,
    concurrency integer not null,
    busy_slots integer not null default 0,
    stopped_at timestamptz
);

create index worker_presence_last_seen on worker_presence (last_seen);
