//! The trainyard worker: the training core (`training`), the queue consumer
//! that runs it for the distributed cycle (`consumer`), and the command line.

#![allow(clippy::field_reassign_with_default, clippy::needless_range_loop)]

pub mod cli;
pub mod consumer;
pub mod training;
