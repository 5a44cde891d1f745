#!/usr/bin/env bash
# The main job: installs Chromium if missing, builds, and crawls the embedded demo site
# with the cdpmux CLI: a progress bar while it runs, then a summary table. The JSON lines
# (one per page) go to target/demo-crawl.jsonl unless -o/--output is given.
# Extra arguments go to `cdpmux crawl`, e.g. `scripts/demo.sh --concurrency 32 --metrics prometheus`.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-chromium.sh
output=(-o target/demo-crawl.jsonl)
for arg in "$@"; do
  case "$arg" in
    -o|--output|--output=*|-o?*) output=() ;;
  esac
done
cargo run --release -p cdpmux-cli -- crawl --demo "${output[@]}" "$@"
