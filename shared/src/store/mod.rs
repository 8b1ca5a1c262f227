//! SQL, one module per user of the database, each function generic over the
//! executor so callers choose a pool, a connection or a transaction.

pub mod ops;
