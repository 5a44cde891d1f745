#!/usr/bin/env bash
# Coverage-guided fuzzing of the pure CDP layer (src/cdp/protocol.rs) with cargo-fuzz.
#
#   scripts/fuzz.sh                 # every target, FUZZ_RUNS (default 1,000,000) runs each
#   FUZZ_RUNS=50000 scripts/fuzz.sh classify
#
# cargo-fuzz needs nightly-only flags (-Z sanitizer); on a stable toolchain
# RUSTC_BOOTSTRAP=1 unlocks them. Install the tool once with `cargo install cargo-fuzz`.
# The corpus lives in fuzz/corpus/<target> and is minimised (cmin) after each run so it
# stays small enough to keep in the repository; crashes land in fuzz/artifacts/<target>.
#
# CI does not run it, not even a short smoke run: cargo-fuzz is not installed on the CI
# machine (a nightly toolchain is, but the tool is not part of it), and installing it
# needs the network and minutes of compiling. What CI runs instead, in every
# `cargo test`: the proptest properties of the same parsers (tests/protocol_props.rs,
# src/browser/endpoint.rs, src/browser/launch.rs, cli/src/metrics_http.rs). A smoke run
# by hand takes seconds per target: FUZZ_RUNS=20000 scripts/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

if ! cargo fuzz --help >/dev/null 2>&1; then
    echo "cargo-fuzz is not installed: run \`cargo install cargo-fuzz\` once (needs crates.io)" >&2
    exit 2
fi

runs="${FUZZ_RUNS:-1000000}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(classify round_trip)
fi
export RUSTC_BOOTSTRAP=1
mkdir -p target

for target in "${targets[@]}"; do
    # Frames past a few hundred bytes only repeat structure; short inputs keep the corpus
    # small enough for the repository.
    case "$target" in
        classify) max_len=1024 ;;
        *) max_len=256 ;;
    esac
    mkdir -p "corpus/$target"
    echo "== $target: $runs runs (corpus: $(ls "corpus/$target" | wc -l) files)"
    start=$(date +%s)
    set +e
    cargo fuzz run "$target" "corpus/$target" -- \
        -runs="$runs" -max_len="$max_len" -timeout=10 -print_final_stats=1 >"target/fuzz-$target.log" 2>&1
    status=$?
    set -e
    grep -E '^(#[0-9]+ +DONE|stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)|Done [0-9]+ runs|==[0-9]+== ERROR|thread .* panicked)' \
        "target/fuzz-$target.log" || true
    echo "== $target: exit $status after $(( $(date +%s) - start )) s"
    [ "$status" -eq 0 ] || exit "$status"
    # Keep one input per covered edge (hit counts ignored): a few hundred files.
    bin="target/$(rustc -vV | sed -n 's/^host: //p')/release/$target"
    kept=$(mktemp -d)
    "$bin" -merge=1 -use_counters=0 -max_len="$max_len" "$kept" "corpus/$target" >/dev/null 2>&1
    rm -rf "corpus/$target"
    mv "$kept" "corpus/$target"
    chmod 755 "corpus/$target"
    echo "== $target: corpus minimised to $(ls "corpus/$target" | wc -l) files"
done
