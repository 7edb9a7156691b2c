#!/usr/bin/env bash
# Installs what the test suite needs on Debian 12, then runs all of it as
# root: formatting, lints, unit tests, and integration tests on real btrfs
# pools, loop devices and processes. Fails if a test leaves a mount or a
# loop device behind.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/setup.sh

require_root
ensure_packages "${WORLDS_RUNTIME_PACKAGES[@]}" "${WORLDS_BUILD_PACKAGES[@]}" "${WORLDS_TEST_PACKAGES[@]}"
require_rust

leftovers() {
    {
        losetup --list --noheadings --output NAME,BACK-FILE 2>/dev/null | grep -E 'worlds-(cli-)?test\.' || true
        grep -E ' /tmp/worlds-(cli-)?test\.' /proc/self/mounts || true
    }
}

before=$(leftovers)
if [ -n "$before" ]; then
    echo "warning: mounts or loop devices of an earlier test run are still there:" >&2
    echo "$before" >&2
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --no-fail-fast

after=$(leftovers)
if [ -n "$after" ] && [ "$after" != "$before" ]; then
    echo "error: the tests left mounts or loop devices behind:" >&2
    echo "$after" >&2
    exit 1
fi
