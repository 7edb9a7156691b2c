#!/usr/bin/env bash
# Runs every benchmark in bench/ with --write, which updates docs/benchmarks.md.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
for script in "$repo"/bench/*.sh; do
    # bench/lib.sh contains helpers that the benchmarks source, so it is skipped.
    [[ $(basename "$script") == lib.sh ]] && continue
    echo "== ${script#"$repo"/}" >&2
    "$script" --write
done
