//! The queue consumer (`trainyard-worker run`): pulls training jobs from
//! Redis, trains them off the async runtime, writes results to PostgreSQL in
//! one transaction, and answers `/health`.

pub mod data;
pub mod faults;
pub mod handler;
pub mod health;
pub mod metrics;
pub mod promotion;
pub mod results;
pub mod settings;
pub mod worker;

pub use settings::WorkerSettings;
pub use worker::run;
