-- What a finished job writes besides its model: summary log, epochs, evaluations,
-- forecasts and anomaly flags. All keyed by job so a redelivered job cannot write twice.
create table ml_training_logs (
    id bigserial primary key,
    model_id uuid not null,
    job_id uuid not null unique,
    organization_id uuid not null,
    model_type text not null,
    algorithm text not null,
    accuracy double precision not null,
    mae double precision not null,
    rmse double precision not null,
    r2_score double precision not null,
    training_samples integer not null,
    train_seconds double precision not null,
    data_report jsonb not null,
    created_at timestamptz not null default now()
);

create table ml_training_epochs (
    job_id uuid not null,
    algorithm text not null,
    epoch integer not null,
    epochs integer not null,
    train_loss double precision not null,
    val_loss double precision,
    seconds double precision not null,
    primary key (job_id, algorithm, epoch)
);

create table ml_evaluations (
    id bigserial primary key,
    job_id uuid not null,
    organization_id uuid not null,
    model_type text not null,
    algorithm text not null,
    -- 'candidate' for every model trained by the job, 'incumbent' for the active model re-scored
    role text not null check (role in ('candidate', 'incumbent')),
    model_id uuid,
    is_champion boolean not null default false,
    accuracy double precision not null,
    mae double precision not null,
    rmse double precision not null,
    r2_score double precision not null,
    mape double precision,
    mase double precision,
    precision_score double precision,
    recall double precision,
    f1 double precision,
    created_at timestamptz not null default now(),
    unique (job_id, role, algorithm)
);

create table ml_predictions (
    id bigserial primary key,
    organization_id uuid not null,
    model_type text not null,
    model_id uuid not null,
    job_id uuid not null,
    prediction_date date not null,
    predicted_value double precision not null,
    created_at timestamptz not null default now(),
    unique (job_id, prediction_date)
);

create index ml_predictions_org on ml_predictions (organization_id, model_type, prediction_date);

create table ml_anomaly_flags (
    id bigserial primary key,
    organization_id uuid not null,
    model_id uuid not null,
    job_id uuid not null,
    metrics_data_id bigint,
    date date not null,
    score double precision not null,
    threshold double precision not null,
    is_anomaly boolean not null,
    created_at timestamptz not null default now()
);

create index ml_anomaly_flags_job on ml_anomaly_flags (job_id);
create index ml_anomaly_flags_org on ml_anomaly_flags (organization_id, date) where is_anomaly;
