-- Why a row was flagged: a built-in data-quality detector (ratio_break,
-- stuck, level_shift, negative, missing, absurd, future_dated) or the model
-- (spike, dip, unusual). Null when the row was not flagged, and on rows
-- written before this column existed.
alter table ml_anomaly_flags add column kind text;
