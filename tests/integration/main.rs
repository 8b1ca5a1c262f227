//! Integration tests against real PostgreSQL, real Redis and real worker
//! processes. Each test makes its own database and Redis key prefix.

mod cycle;
mod faults;
mod scheduling;
