#!/usr/bin/env bash
# Times `world create` of a child of a root world that contains the Linux 6.1
# source tree against a child of an empty busybox world, and against the
# floor of one plain `btrfs subvolume snapshot` of each. A snapshot costs
# about the same whatever the size of its source, so the medians from the
# two worlds should be close.
#
# Usage: sudo bench/create.sh [--write]
#
# Prints a Markdown section on stdout and progress on stderr. With --write it
# also replaces the section between the create markers in docs/benchmarks.md.
#
# Environment:
#   WORLDS_BENCH_RUNS      timed runs of each command (default 31)
#   WORLDS_BENCH_CACHE     where the linux-source .deb and its tarball are
#                          kept between runs (default /var/tmp/worlds-bench)
#   WORLDS_BENCH_REVISION  a commit to build and measure, such as HEAD,
#                          instead of the working tree
#   CARGO_TARGET_DIR       where the release build goes (default
#                          /tmp/worlds-bench-target, apart from debug builds)
#
# It needs root, apt-get, about 300 MB of free space in the cache and 2 GB
# in the temporary folder.
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

readonly BEGIN_MARKER='<!-- create:begin -->'
readonly END_MARKER='<!-- create:end -->'

runs=${WORLDS_BENCH_RUNS:-31}

parse_arguments "$@"
require_positive WORLDS_BENCH_RUNS "$runs"
require_root

# Converts the nanoseconds on standard input to milliseconds, two decimals.
ns_to_ms() {
    awk '{ printf "%.2f\n", $1 / 1e6 }'
}

# Times `world create` of a child of world PARENT, then deletes the child.
create_child() {
    local parent=$1
    time_ns "$world" --store "$store" --quiet create child "$parent" >>"$timings/create-$parent"
    "$world" --store "$store" --quiet delete child
    settle "$pool"
}

# Times one plain snapshot of world PARENT, then deletes it.
snapshot_plain() {
    local parent=$1
    time_ns btrfs subvolume snapshot "${roots[$parent]}" "$pool/floor" >>"$timings/snapshot-$parent"
    btrfs subvolume delete "$pool/floor" >/dev/null
    settle "$pool"
}

# Prints the version of the source package to measure: the newest one in
# the cache, so that reruns reuse it, or else the one that apt would install.
choose_version() {
    local debs candidate
    shopt -s nullglob
    debs=("$cache/${SOURCE_PACKAGE}"_*.deb)
    shopt -u nullglob
    if ((${#debs[@]} > 0)); then
        dpkg-deb -f "$(printf '%s\n' "${debs[@]}" | sort -V | tail -n 1)" Version
        return
    fi
    candidate=$(apt-cache policy "$SOURCE_PACKAGE" | awk '/Candidate:/ { print $2 }')
    if [[ -z $candidate || $candidate == "(none)" ]]; then
        log "apt-cache lists no $SOURCE_PACKAGE; updating the package lists"
        apt-get update >&2
        candidate=$(apt-cache policy "$SOURCE_PACKAGE" | awk '/Candidate:/ { print $2 }')
    fi
    [[ -n $candidate && $candidate != "(none)" ]] \
        || die "$SOURCE_PACKAGE not found in the package lists, even after apt-get update"
    printf '%s\n' "$candidate"
}

install_missing btrfs-progs busybox-static xz-utils jq
start_store
build_world

version=$(choose_version)
deb=$(fetch_source_deb "$version")
tarball=$(source_tarball "$deb")
log "workload: $SOURCE_PACKAGE $version, from $deb"

load_before=$(cut -d ' ' -f 1-3 /proc/loadavg)
pool=$store/pool
timings=$store/timings
mkdir "$timings"

log "creating root world linux from $tarball"
"$world" --store "$store" --quiet init linux --from-tar "$tarball" --pool-size 8G
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
rm "$timings"/snapshot-*

log "timing $runs runs of each, interleaved"
for ((run = 1; run <= runs; run++)); do
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
    log "run $run/$runs:" \
        "create from linux $(tail -n 1 "$timings/create-linux" | ns_to_ms) ms," \
        "from empty $(tail -n 1 "$timings/create-empty" | ns_to_ms) ms;" \
        "snapshot of linux $(tail -n 1 "$timings/snapshot-linux" | ns_to_ms) ms," \
        "of empty $(tail -n 1 "$timings/snapshot-empty" | ns_to_ms) ms"
done
load_after=$(cut -d ' ' -f 1-3 /proc/loadavg)

read -r create_linux_median create_linux_min create_linux_max < <(summarize "$timings/create-linux")
read -r create_empty_median create_empty_min create_empty_max < <(summarize "$timings/create-empty")
read -r snapshot_linux_median snapshot_linux_min snapshot_linux_max < <(summarize "$timings/snapshot-linux")
read -r snapshot_empty_median snapshot_empty_min snapshot_empty_max < <(summarize "$timings/snapshot-empty")
create_ratio=$(awk -v a="$create_linux_median" -v b="$create_empty_median" 'BEGIN { printf "%.2f", a / b }')
snapshot_ratio=$(awk -v a="$snapshot_linux_median" -v b="$snapshot_empty_median" 'BEGIN { printf "%.2f", a / b }')
warm_up_linux=$(ns_to_ms <"$timings/warm-up-linux")
warm_up_empty=$(ns_to_ms <"$timings/warm-up-empty")

# Other work on the machine inflates the absolute times more than the
# ratios, so the section of a busy run adds a note about it.
busy_note=
if awk -v load="${load_before%% *}" -v cpus="$(nproc)" 'BEGIN { exit !(load >= cpus) }'; then
    busy_note="Other work kept the machine busy during this run (a load average above
its CPU count), which inflates the absolute times more than the ratios.

"
fi

section=$(cat <<EOF
## Creating a child world

\`world create CHILD PARENT\` makes two btrfs snapshots of PARENT and records
CHILD in the store's database, so its time should not depend on the size of
PARENT. Here PARENT is either a root world containing the Linux source tree
(Debian's \`$SOURCE_PACKAGE\` $version, $entries files and directories, $files
of them regular files) or an empty world built with \`--busybox\`. The floor
is one \`btrfs subvolume snapshot\` of the same world: one command making one
snapshot. btrfs commits a transaction for each snapshot, and \`world create\`
makes two and also writes the database, so it should take over twice the
floor.

| command | median | min | max |
| --- | ---: | ---: | ---: |
| \`world create\` from the Linux world | $create_linux_median ms | $create_linux_min ms | $create_linux_max ms |
| \`world create\` from the empty world | $create_empty_median ms | $create_empty_min ms | $create_empty_max ms |
| \`btrfs subvolume snapshot\` of the Linux world | $snapshot_linux_median ms | $snapshot_linux_min ms | $snapshot_linux_max ms |
| \`btrfs subvolume snapshot\` of the empty world | $snapshot_empty_median ms | $snapshot_empty_min ms | $snapshot_empty_max ms |

Ratio of the medians, Linux over empty: **$create_ratio** for \`world create\`,
$snapshot_ratio for the plain snapshot. A snapshot copies the root block of
the source's tree and adds a reference to each block or extent that this
block points to (\`btrfs_copy_root\` in the kernel's fs/btrfs/ctree.c). The
root block of a larger tree can point to more of them, so its snapshot can
cost a little more, but never more than one full block of references,
whatever the number of files.

Each figure covers $runs runs of the whole command, from its start to its
exit, with its output sent to /dev/null. The runs of the four commands are
interleaved. After each run the child is deleted and the script waits until
btrfs has cleaned up the deleted subvolumes and committed its transaction,
outside the timed part.

One warm-up run of \`world create\` from each world comes first and is left
out of the table, because the first snapshot of a world that was just filled
waits until btrfs has written its data. It took $warm_up_linux ms from the
Linux world and $warm_up_empty ms from the empty one.

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
