#!/usr/bin/env bash
# Runs every benchmark in bench/ with --write, which updates
# docs/benchmarks.md, then bench/summary.sh, which puts all commands in one
# table next to the original system's figures. The first benchmark
# downloads and prepares the workload where the cache lacks it.
#
# Usage: sudo scripts/bench.sh
#
# The environment variables of the benchmarks pass through, such as
# WORLDS_BENCH_RUNS and WORLDS_BENCH_QUICK_RUNS for the number of runs; each
# script's --help lists them. Figures from fewer than five runs are marked
# as a trial run on the page.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${WORLDS_BENCH_CACHE:-/var/tmp/worlds-bench}
export WORLDS_BENCH_RESULTS=${WORLDS_BENCH_RESULTS:-$cache/results}
export WORLDS_BENCH_STARTED=${WORLDS_BENCH_STARTED:-$(date +%s)}

# The summary reads every figure in the results folder, so the figures of
# an earlier run go first.
rm -rf "$WORLDS_BENCH_RESULTS"

for name in create diff exec merge patch summary; do
    echo "== bench/$name.sh, after $SECONDS s" >&2
    "$repo/bench/$name.sh" --write >/dev/null
done
echo "== all benchmarks ran in $((SECONDS / 60)) min $((SECONDS % 60)) s" >&2
