//! Loom models of cdpmux cross-thread protocols (run with RUSTFLAGS="--cfg cdpmux_loom").
