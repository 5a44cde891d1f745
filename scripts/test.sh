#!/usr/bin/env bash
# Every test: unit, integration (simulated and real Chromium), doc tests, examples
# built, and the loom models. Installs Chromium first if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-chromium.sh
cargo test --all-features
if [ -f loom-tests/tests/models.rs ]; then
  # A separate target dir keeps the loom build from invalidating the normal one.
  RUSTFLAGS="--cfg cdpmux_loom" LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}" \
    CARGO_TARGET_DIR=target/loom cargo test -p cdpmux-loom-tests --release
fi
