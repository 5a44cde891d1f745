#!/usr/bin/env bash
# Every test: unit, integration (simulated and real Chromium), doc tests, examples
# built, and the loom models. Installs Chromium and redis-server first if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-chromium.sh
scripts/ensure-redis.sh
cargo test --all-features
if [ -f loom-tests/tests/models.rs ]; then
  # The loom models (loom-tests/README.md), in their own target dir so the loom
  # RUSTFLAGS do not invalidate the normal build. Deeper: LOOM_MAX_PREEMPTIONS=3 or 4.
  export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}"
  export RUSTFLAGS="--cfg cdpmux_loom" CARGO_TARGET_DIR=target/loom
  cargo test -p cdpmux-loom-tests --release
  # The same models in a mutant build (build.rs turns the variable into
  # --cfg cdpmux_loom_mutant for cdpmux and the models only): every model passes with no
  # bug on, and again with its own seeded bug on and only its own (`mod seeded`, each
  # `should_panic` with the message naming what broke).
  CDPMUX_LOOM_MUTANT=1 cargo test -p cdpmux-loom-tests --release
fi
