#!/usr/bin/env bash
# The main job: installs Chromium if missing, builds, and runs the demo.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-chromium.sh
cargo run --release --example demo -- "$@"
