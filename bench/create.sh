#!/usr/bin/env bash
# Times `world create` and `world delete` of a child of a root world that
# contains the Linux 6.1 source tree, and of a child of an empty busybox
# world. In the same run it times what they replace. The floor is one plain
# `btrfs subvolume snapshot` and `btrfs subvolume delete` of each world.
# The original system's method mounts an overlay on the tree and removes
# it. An administrator without any tool runs `cp -a` of the tree and
# `rm -rf` of the copy. A snapshot costs about the same whatever the size of
# its source, so the medians from the two worlds should be close.
#
# Usage: sudo bench/create.sh [--write]
#
# Prints a Markdown section on stdout and progress on stderr. With --write it
# also replaces the section between the create markers in docs/benchmarks.md.
#
# Environment:
#   WORLDS_BENCH_QUICK_RUNS  timed runs of each command that takes
#                            milliseconds (default 31)
#   WORLDS_BENCH_RUNS        timed runs of `cp -a` and `rm -rf` of the
#                            tree (default 5)
#   WORLDS_BENCH_VERSIONS    the two package versions of the workload, older
#                            first; the tree is the older one (default: see
#                            bench/patch.sh)
#   WORLDS_BENCH_CACHE       where the packages, their trees and the patch
#                            are kept between runs (default
#                            /var/tmp/worlds-bench)
#   WORLDS_BENCH_RESULTS     where the figures are kept for bench/summary.sh
#                            (default: results/ in the cache)
#   WORLDS_BENCH_REVISION    a commit to build and measure, such as HEAD,
#                            instead of the working tree
#   CARGO_TARGET_DIR         where the release build goes (default
#                            /tmp/worlds-bench-target, apart from debug
#                            builds)
#
# It needs root, apt-get, about 4 GB of free space in the cache and 5 GB
# in the temporary folder.
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

readonly BEGIN_MARKER='<!-- create:begin -->'
readonly END_MARKER='<!-- create:end -->'

quick_runs=${WORLDS_BENCH_QUICK_RUNS:-31}
copy_runs=${WORLDS_BENCH_RUNS:-5}

parse_arguments "$@"
require_positive WORLDS_BENCH_QUICK_RUNS "$quick_runs"
require_positive WORLDS_BENCH_RUNS "$copy_runs"
require_root

# Converts the nanoseconds on standard input to milliseconds, two decimals.
ns_to_ms() {
    awk '{ printf "%.2f\n", $1 / 1e6 }'
}

# Times `world create` of a child of world PARENT, then `world delete` of
# that child.
create_child() {
    local parent=$1
    time_ns "$world" --store "$store" --quiet create child "$parent" >>"$timings/create-$parent"
    settle "$pool"
    time_ns "$world" --store "$store" --quiet delete child >>"$timings/delete-$parent"
    settle "$pool"
}

# Times one plain snapshot of world PARENT, then its deletion.
snapshot_plain() {
    local parent=$1
    time_ns btrfs subvolume snapshot "${roots[$parent]}" "$pool/floor" >>"$timings/snapshot-$parent"
    settle "$pool"
    time_ns btrfs subvolume delete "$pool/floor" >>"$timings/snapshot-delete-$parent"
    settle "$pool"
}

# The original system's child: an overlay whose lower layer is the tree of
# world PARENT, with empty upper and work folders on the pool.
mount_overlay() {
    mkdir "$pool/overlay" "$pool/overlay/upper" "$pool/overlay/work"
    mount -t overlay overlay \
        -o "lowerdir=${roots[$1]},upperdir=$pool/overlay/upper,workdir=$pool/overlay/work" \
        "$store/merged"
}

remove_overlay() {
    umount "$store/merged"
    rm -rf "$pool/overlay"
}

# Times the mount of an overlay on world PARENT, then its removal.
overlay_child() {
    local parent=$1
    time_ns mount_overlay "$parent" >>"$timings/overlay-$parent"
    settle "$pool"
    time_ns remove_overlay >>"$timings/overlay-delete-$parent"
    settle "$pool"
}

# Times `cp -a` of the Linux world's tree into a folder on the pool, then
# `rm -rf` of the copy.
copy_tree() {
    time_ns cp -a "${roots[linux]}" "$pool/copy" >>"$timings/copy"
    settle "$pool"
    time_ns rm -rf "$pool/copy" >>"$timings/copy-delete"
    settle "$pool"
}

install_missing btrfs-progs busybox-static xz-utils jq
start_store
build_world
prepare_workload

load_before=$(cut -d ' ' -f 1-3 /proc/loadavg)
pool=$store/pool
timings=$store/timings
mkdir "$timings" "$store/merged"

# --from-dir copies the tree from the page cache, which is faster here than
# decompressing the tarball with --from-tar.
log "creating root world linux from $old_tree"
"$world" --store "$store" --quiet init linux --from-dir "$old_tree" --pool-size 12G
log "creating root world empty with busybox"
"$world" --store "$store" --quiet init empty --busybox
declare -A roots
for name in linux empty; do
    roots[$name]=$("$world" --store "$store" show "$name" --json | jq -er .path)
done
entries=$(find "${roots[linux]}" -mindepth 1 | wc -l)
files=$(find "${roots[linux]}" -type f | wc -l)
log "the linux world contains $entries entries, $files of them regular files"

# The first snapshot of a world just filled waits until btrfs has written its
# data, over a gigabyte for the Linux tree, so that run is reported apart.
log "warming up: one run of each, reported apart"
create_child linux
create_child empty
mv "$timings/create-linux" "$timings/warm-up-linux"
mv "$timings/create-empty" "$timings/warm-up-empty"
snapshot_plain linux
snapshot_plain empty
overlay_child linux
copy_tree
rm "$timings"/delete-* "$timings"/snapshot-* "$timings"/overlay-* "$timings"/copy*

log "timing $quick_runs runs of each command that takes milliseconds, interleaved"
for ((run = 1; run <= quick_runs; run++)); do
    # Alternate which world goes first, so that neither always runs right
    # after the other's commands.
    if ((run % 2)); then
        order=(linux empty)
    else
        order=(empty linux)
    fi
    for parent in "${order[@]}"; do
        create_child "$parent"
    done
    for parent in "${order[@]}"; do
        snapshot_plain "$parent"
    done
    overlay_child linux
    log "run $run/$quick_runs:" \
        "create from linux $(tail -n 1 "$timings/create-linux" | ns_to_ms) ms," \
        "from empty $(tail -n 1 "$timings/create-empty" | ns_to_ms) ms;" \
        "snapshot of linux $(tail -n 1 "$timings/snapshot-linux" | ns_to_ms) ms," \
        "of empty $(tail -n 1 "$timings/snapshot-empty" | ns_to_ms) ms;" \
        "overlay $(tail -n 1 "$timings/overlay-linux" | ns_to_ms) ms"
done

log "timing $copy_runs runs of cp -a and rm -rf of the tree"
for ((run = 1; run <= copy_runs; run++)); do
    copy_tree
    log "run $run/$copy_runs: cp -a $(tail -n 1 "$timings/copy" | ns_to_ms) ms," \
        "rm -rf $(tail -n 1 "$timings/copy-delete" | ns_to_ms) ms"
done
load_after=$(cut -d ' ' -f 1-3 /proc/loadavg)

for name in create-linux create-empty delete-linux delete-empty snapshot-linux snapshot-empty \
    snapshot-delete-linux snapshot-delete-empty overlay-linux overlay-delete-linux copy copy-delete; do
    record_result "create-$name" "$timings/$name"
done
create_ratio=$(median_ratio "$timings/create-linux" "$timings/create-empty")
snapshot_ratio=$(median_ratio "$timings/snapshot-linux" "$timings/snapshot-empty")
warm_up_linux=$(ns_to_ms <"$timings/warm-up-linux")
warm_up_empty=$(ns_to_ms <"$timings/warm-up-empty")
coreutils=$(cp --version | head -n 1)

create_table=$(
    table_header
    table_row "\`world create\` from the Linux world" "$timings/create-linux" "$timings/snapshot-linux"
    table_row "\`world create\` from the empty world" "$timings/create-empty" "$timings/snapshot-empty"
    table_row "overlayfs: \`mkdir\` upper and work, \`mount -t overlay\` on the Linux tree" "$timings/overlay-linux" "$timings/snapshot-linux"
    table_row "\`cp -a\` of the Linux world" "$timings/copy" "$timings/snapshot-linux"
    table_row "floor: \`btrfs subvolume snapshot\` of the Linux world" "$timings/snapshot-linux" "$timings/snapshot-linux"
    table_row "floor: \`btrfs subvolume snapshot\` of the empty world" "$timings/snapshot-empty" "$timings/snapshot-empty"
)
delete_table=$(
    table_header
    table_row "\`world delete\` of a child of the Linux world" "$timings/delete-linux" "$timings/snapshot-delete-linux"
    table_row "\`world delete\` of a child of the empty world" "$timings/delete-empty" "$timings/snapshot-delete-empty"
    table_row "overlayfs: \`umount\`, then \`rm -rf\` of upper and work" "$timings/overlay-delete-linux" "$timings/snapshot-delete-linux"
    table_row "\`rm -rf\` of the \`cp -a\` copy" "$timings/copy-delete" "$timings/snapshot-delete-linux"
    table_row "floor: \`btrfs subvolume delete\` of a snapshot of the Linux world" "$timings/snapshot-delete-linux" "$timings/snapshot-delete-linux"
    table_row "floor: \`btrfs subvolume delete\` of a snapshot of the empty world" "$timings/snapshot-delete-empty" "$timings/snapshot-delete-empty"
)

# Other work on the machine inflates the absolute times more than the
# ratios, so the section of a busy run adds a note about it.
busy_note=
if awk -v load="${load_before%% *}" -v cpus="$(nproc)" 'BEGIN { exit !(load >= cpus) }'; then
    busy_note="Other work kept the machine busy during this run (a load average above
its CPU count), which inflates the absolute times more than the ratios.

"
fi

set_trial_note "$((quick_runs < copy_runs ? quick_runs : copy_runs))"
section=$(cat <<EOF
## Creating and deleting a child world

${trial}\`world create CHILD PARENT\` makes two btrfs snapshots of PARENT and records
CHILD in the store's database, so its time should not depend on the size of
PARENT. Here PARENT is either a root world containing the Linux source tree
(Debian's \`$SOURCE_PACKAGE\` $old_version, $entries files and directories,
$files of them regular files) or an empty world built with \`--busybox\`.
The floor is one \`btrfs subvolume snapshot\` of the same world: one command
making one snapshot. btrfs commits a transaction for each snapshot, and
\`world create\` makes two and also writes the database, so it should take
over twice the floor. The ratios are medians over the median of the floor
of the same world.

$create_table

Ratio of the medians, Linux over empty: **$create_ratio** for \`world create\`,
$snapshot_ratio for the plain snapshot. A snapshot copies the root block of
the source's tree and adds a reference to each block or extent that this
block points to (\`btrfs_copy_root\` in the kernel's fs/btrfs/ctree.c). The
root block of a larger tree can point to more of them, so its snapshot can
cost a little more, but never more than one full block of references,
whatever the number of files.

\`world delete CHILD\` deletes the child's two subvolumes and its record.
The child is unchanged here; the section on applying an update times it
after a patch.

$delete_table

- **overlayfs**, the original system's child: an overlay mounted on a
  folder of the store, with the Linux world's tree as its lower layer and
  empty upper and work folders made on the pool. Its deletion unmounts it
  and removes the two folders.
- **\`cp -a\`** copies the Linux world's tree into a folder on the same
  pool. $coreutils clones file data on btrfs by default
  (\`--reflink=auto\`), so the copy writes metadata only.

The commands that take milliseconds ran $quick_runs times each, interleaved;
\`cp -a\` and its \`rm -rf\` ran $copy_runs times. Each figure covers the
whole command, from its start to its exit, with its output sent to
/dev/null. Before each timed command the script waits until btrfs has
cleaned up the deleted subvolumes and committed its transaction.

One warm-up run of each command comes first and is left out of the
tables, because the first snapshot of a world that was just filled waits
until btrfs has written its data. \`world create\` took $warm_up_linux ms
there from the Linux world and $warm_up_empty ms from the empty one.

$busy_note- Script: \`bench/create.sh\`, $revision, release build
- Machine: $(describe_machine)
- Load average over 1, 5 and 15 minutes: $load_before at the start,
  $load_after at the end
- Store: $(describe_store)
- Date: $(date -u +%Y-%m-%d)
- To measure again and update this section: \`sudo bench/create.sh --write\`,
  or \`sudo scripts/bench.sh\` for every benchmark.
  WORLDS_BENCH_REVISION=HEAD measures the last commit instead of the
  working tree.
EOF
)

printf '%s\n' "$section"

if $write; then
    write_section "$BEGIN_MARKER" "$END_MARKER" "$section"
fi
