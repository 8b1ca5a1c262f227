//! The trainyard worker: the training core and the queue consumer that runs it.

pub mod training;
