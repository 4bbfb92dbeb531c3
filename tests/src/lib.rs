//! Intentionally empty: the integration tests live in `tests/it/`.
