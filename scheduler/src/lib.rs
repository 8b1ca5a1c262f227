//! The trainyard scheduler: monthly cycles on a cron schedule with catch-up,
//! the sweeper that keeps Redis fed from PostgreSQL, and the ops commands.

pub mod api;
pub mod cli;
pub mod daemon;
pub mod demo;
pub mod schedule;
pub mod settings;
pub mod web;
