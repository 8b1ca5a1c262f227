-- The 80 % and 95 % prediction interval of every forecast day (nullable:
-- rows written before intervals existed, or a history too short to
-- calibrate one, have none). The dashboards' queries do not read them.
alter table ml_predictions
    add column lower_80 double precision,
    add column upper_80 double precision,
    add column lower_95 double precision,
    add column upper_95 double precision;
