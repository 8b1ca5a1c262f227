//! The trainyard worker: the training core (`training`), the queue consumer
//! that runs it for the distributed cycle (`consumer`), and the command line.

pub mod cli;
pub mod consumer;
pub mod training;
