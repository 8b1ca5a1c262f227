//! The lab: the local tools of the `trainyard-worker` binary, which need no
//! Redis and no PostgreSQL. `train` fits every candidate on a CSV and writes
//! the champion, `eval` runs the rolling-origin evaluation on real series,
//! `eval-anomaly` scores anomaly detection on labelled and injected
//! cases, `bench` times training on the reference workload, `check` trains tiny
//! models to prove the ML stack, and `plot` draws the training plot.
//!
//! Nothing on the production path depends on this module: the queue
//! consumer (`crate::consumer`) and the training core (`crate::training`)
//! never import `crate::lab`; the lab calls the training core, and the
//! command line (`crate::cli`) dispatches to both.

pub mod anomaly_eval;
pub mod bench;
pub mod check;
pub mod eval;
pub mod plot;
pub mod train;
