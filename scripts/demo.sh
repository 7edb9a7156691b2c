#!/usr/bin/env bash
# Installs what worlds needs on Debian 12, builds it, and walks through the
# main job on the built-in busybox root. It makes a root world, sprouts a
# child, changes files in the running child, shows what the child read and
# wrote and the diff, merges the child into its parent and takes the merge
# back.
#
# Usage: scripts/demo.sh [--keep]
#   --keep  leave the demo store in place (it is removed by default)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/setup.sh

keep=false
case "${1:-}" in
    --keep) keep=true ;;
    "") ;;
    *) echo "error: unknown option \`$1\`; the only option is --keep" >&2; exit 2 ;;
esac

require_root
ensure_packages "${WORLDS_RUNTIME_PACKAGES[@]}" "${WORLDS_BUILD_PACKAGES[@]}"
require_rust
cargo build --release --quiet
world=$PWD/target/release/world

folder=$(mktemp -d /tmp/worlds-demo.XXXXXX)
export WORLDS_STORE=$folder/store
cleanup() {
    if $keep; then
        echo
        echo "The demo store is kept in $WORLDS_STORE. Remove it with:"
        echo "  $world --store $WORLDS_STORE store unmount && rm -rf $folder"
        return
    fi
    "$world" store unmount --quiet 2>/dev/null || umount "$WORLDS_STORE/pool" 2>/dev/null || true
    rm -rf "$folder"
}
trap cleanup EXIT

# Prints a command, quoted as a shell would need it, then runs it.
step() {
    printf '\n$'
    printf ' %q' "$@"
    printf '\n'
    "$@"
}

step "$world" init demo --busybox --pool-size 2G
step "$world" create demo-child demo
step "$world" create demo-grandchild demo-child

printf '\n# change files in the running child; worlds records what it reads, writes and runs\n'
step "$world" start demo-child --network none
step "$world" exec demo-child -- sh -c "echo 'hello from the child world' > /etc/motd && echo 'guest:x:1000:1000::/home/guest:/bin/sh' >> /etc/passwd && grep -c : /etc/group"
step "$world" set demo-child
step "$world" stop demo-child
step "$world" diff demo-child
step "$world" diff --patch demo-child
printf '\n# the parent is untouched until the merge\n'
parent_root=$("$world" show demo --json | sed -n 's/^  "path": "\(.*\)",$/\1/p')
step ls "$parent_root/etc"
step "$world" merge --dry-run demo-child
step "$world" merge demo-child
step cat "$parent_root/etc/motd"
step "$world" diff demo-child
step "$world" undo demo
step ls "$parent_root/etc"

step "$world" tree
step "$world" list
step "$world" show demo-child
step "$world" log
step "$world" store info
step "$world" delete --recursive demo-child
