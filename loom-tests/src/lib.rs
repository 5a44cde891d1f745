//! Loom models of cdpmux's cross-thread protocols: see `tests/models.rs` and `README.md`.
