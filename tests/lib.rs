//! Support crate for the integration tests in `integration/`.
