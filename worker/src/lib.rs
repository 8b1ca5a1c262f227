//! The trainyard worker: the training core (`training`), the queue consumer
//! that runs it for the distributed cycle (`consumer`), the local tools that
//! need no services (`lab`: train from a CSV, eval, bench, check, plot; the
//! consumer never depends on it), and the command line (`cli`).

#![allow(clippy::field_reassign_with_default, clippy::needless_range_loop)]

pub mod cli;
pub(crate) mod consumer;
pub(crate) mod lab;
pub mod training;
