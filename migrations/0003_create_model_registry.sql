-- Every trained champion is a versioned model; its artifact is stored beside it.
create table ml_models (
    id uuid primary key,
    organization_id uuid not null,
    model_type text not null,
    algorithm text not null,
    version integer not null,
    status text not null check (status in ('candidate', 'active', 'archived')),
    accuracy double precision not null,
    mae double precision not null,
    rmse double precision not null,
    r2_score double precision not null,
    mape double precision,
    mase double precision,
    training_samples integer not null,
    training_date timestamptz not null default now(),
    data_start date,
    data_end date,
    cycle_id uuid not null,
    job_id uuid not null unique,
    promotion_reason text,
    unique (organization_id, model_type, version)
);

create unique index ml_models_one_active on ml_models (organization_id, model_type)
    where status = 'active';

create table ml_model_storage (
    model_id uuid primary key references ml_models (id) on delete cascade,
    format text not null,
    artifact bytea not null,
    sha256 text not null,
    size_bytes integer not null,
    created_at timestamptz not null default now()
);
