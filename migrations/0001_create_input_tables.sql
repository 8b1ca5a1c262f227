-- Input written by the app: organizations and their daily activity data.
create table if not exists organizations (
    id uuid primary key,
    name text not null,
    created_at timestamptz not null default now()
);

create table if not exists metrics_data (
    id bigserial primary key,
    organization_id uuid not null references organizations (id) on delete cascade,
    date date not null,
    category text not null,
    value double precision,
    unit text,
    co2e_kg double precision,
    grid_factor double precision,
    created_at timestamptz not null default now()
);

create index if not exists metrics_data_org_date on metrics_data (organization_id, date);
