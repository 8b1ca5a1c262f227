//! Integration tests against real PostgreSQL, real Redis and real worker
//! processes. Each test makes its own database and Redis key prefix.

#![allow(clippy::type_complexity)]

mod anomaly_flags;
mod api_bench;
mod chaos;
mod cycle;
mod dashboard;
mod dashboard_browser;
mod data_prep;
mod faults;
mod hostile_data;
mod lifecycle;
mod ops_api;
mod queue_health;
mod races;
mod scheduling;
mod security;
