#!/usr/bin/env bash
# Soak test on real Chromium (not run in CI): crawls a local demo site for SOAK_SECONDS
# (default 600) with 16 workers, sampling every SOAK_SAMPLE_SECONDS (default 10) this
# process's RSS, Chromium's PSS, open page targets vs the pool's sessions; then shuts
# down and checks no Chromium process is left. Exits non-zero on a mismatch or a leftover.
#
#   scripts/soak.sh                  # 10 minutes
#   SOAK_SECONDS=60 scripts/soak.sh  # a quick look
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --example soak
log="target/soak-$(date +%Y%m%d-%H%M%S).log"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores; log: $log"
status=0
target/release/examples/soak 2>&1 | tee "$log" || status=$?
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
exit "$status"
