#!/usr/bin/env bash
# Times `world diff` on a child of a root world that contains the Linux 6.1
# source tree, after a real update of that tree was applied in the child.
# The update is the patch between two versions of Debian's linux-source-6.1
# package, which touches a few thousand files. It compares the fast path with
# `world diff --full-walk`, with a plain metadata walk of the child's tree,
# and with the original system's diff: a walk of the upper folder of an
# overlay in which the same patch was applied. It also times the fast path
# after a change to a single file.
#
# Usage: sudo bench/diff.sh [--write]
#
# Prints a Markdown section on stdout and progress on stderr. With --write it
# also replaces the section between the diff markers in docs/benchmarks.md.
#
# Environment:
#   WORLDS_BENCH_RUNS         runs with the patch applied (default 5)
#   WORLDS_BENCH_QUICK_RUNS   timed runs after a one-file change (default 21)
#   WORLDS_BENCH_VERSIONS     the two package versions, older first, such as
#                             "6.1.176-1 6.1.192-3" (default: see
#                             bench/patch.sh)
#   WORLDS_BENCH_CACHE        where the packages, their tarballs and trees
#                             and the patch are kept between runs (default
#                             /var/tmp/worlds-bench)
#   WORLDS_BENCH_RESULTS      where the figures are kept for
#                             bench/summary.sh (default: results/ in the
#                             cache)
#   WORLDS_BENCH_REVISION     a commit to build and measure, such as HEAD,
#                             in place of the working tree
#   CARGO_TARGET_DIR          where the release build goes (default
#                             /tmp/worlds-bench-target, apart from debug
#                             builds)
#
# It needs root, apt-get, about 4 GB of free space in the cache and 2 GB in
# the temporary folder. Caches stay warm: the script never drops them.
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

readonly BEGIN_MARKER='<!-- diff:begin -->'
readonly END_MARKER='<!-- diff:end -->'
# The minimum number of changes that the patched child must show, or the
# run fails.
readonly MIN_CHANGES=1000
# The baseline: find prints what lstat returns for every entry. Owners are
# printed as numbers because %u and %g make GNU find look up each owner's
# name, which opens /etc/passwd and /etc/group again for every entry.
readonly WALK_FORMAT='%i %C@ %s %m %U %G %p\n'

patch_runs=${WORLDS_BENCH_RUNS:-5}
one_file_runs=${WORLDS_BENCH_QUICK_RUNS:-21}

parse_arguments "$@"
require_positive WORLDS_BENCH_RUNS "$patch_runs"
require_positive WORLDS_BENCH_QUICK_RUNS "$one_file_runs"
require_root

install_missing btrfs-progs xz-utils patch jq
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
linux_root=$("$world" --store "$store" show linux --json | jq -er .path)
entries=$(find "$linux_root" -mindepth 1 | wc -l)
files=$(find "$linux_root" -type f | wc -l)
log "the linux world contains $entries entries, $files of them regular files"

# The paths that the patch changes, as `world diff` prints them: the new
# path without its first folder, which leaves /linux-source-6.1/...
patched_paths=$store/patched-paths
awk -F '\t' '/^\+\+\+ / { path = substr($1, 5); sub(/^[^\/]*/, "", path); print path }' "$patch_file" \
    | sort -u >"$patched_paths"

# Saves what `world diff NAME` and `world diff --full-walk NAME` list in
# fast.txt and full.txt in the store, and fails loudly unless both list the
# same changes, at least MIN of them. Sets `changes` to their number.
check_diff() {
    local name=$1 min=$2
    "$world" --store "$store" diff "$name" >"$store/fast.txt"
    "$world" --store "$store" diff --full-walk "$name" >"$store/full.txt"
    changes=$(wc -l <"$store/fast.txt")
    if ! cmp -s "$store/fast.txt" "$store/full.txt"; then
        local kept=$cache/mismatch-$name-$(date -u +%Y%m%dT%H%M%SZ)
        mkdir -p "$kept"
        cp "$store/fast.txt" "$store/full.txt" "$kept/"
        log "world diff $name lists $changes changes but world diff --full-walk $name lists $(wc -l <"$store/full.txt")"
        diff "$store/fast.txt" "$store/full.txt" | head -n 20 >&2 || true
        log "to reproduce: make a root world from $old_tree, create $name from it," \
            "make the same change in it and compare both commands"
        die "the fast path and the full walk disagree; both lists are in $kept"
    fi
    ((changes >= min)) || die "world diff $name lists only $changes changes, fewer than $min"
}

# Applies the patch in an overlay whose lower layer is the Linux world's
# tree and whose upper and work folders are in a fresh subvolume on the
# pool, then unmounts the overlay. Its upper folder then contains what the
# patch changed: the original system's record of a child's changes.
patch_overlay() {
    btrfs subvolume create "$pool/overlay" >/dev/null
    mkdir "$pool/overlay/upper" "$pool/overlay/work"
    mount -t overlay overlay \
        -o "lowerdir=$linux_root,upperdir=$pool/overlay/upper,workdir=$pool/overlay/work" \
        "$store/merged"
    (cd "$store/merged/$SOURCE_PACKAGE" && patch -p2 -s <"$patch_file") \
        || die "the patch does not apply to the tree of $old_version in the overlay"
    umount "$store/merged"
}

# Times the four commands on the patched child and the overlay in an order
# that rotates from run to run. Each one has run once untimed just before.
time_patched() {
    local run=$1 root=$2 command
    local -a commands=(fast full walk upper) order
    order=("${commands[@]:run % 4}" "${commands[@]:0:run % 4}")
    for command in "${order[@]}"; do
        case $command in
            fast)
                # With debug logs, the fast path logs the time of its parts,
                # which time_ns leaves in $store/errors.
                # Not in a subshell, which would keep cpu_ns to itself.
                export WORLDS_LOG=worlds=debug
                time_ns "$world" --store "$store" diff patched >>"$timings/fast"
                unset WORLDS_LOG
                sed 's/\x1b\[[0-9;]*m//g' "$store/errors" | awk '
                    { for (i = 1; i <= NF; i++) if (split($i, pair, "=") == 2 && pair[1] ~ /_ms$/) ms[pair[1]] = pair[2] }
                    END { print ms["search_ms"] + 0, ms["paths_ms"] + 0, ms["compare_ms"] + 0 }
                ' >>"$timings/parts"
                ;;
            full) time_ns "$world" --store "$store" diff --full-walk patched >>"$timings/full" ;;
            walk) time_ns find "$root" -printf "$WALK_FORMAT" >>"$timings/walk" ;;
            upper) time_ns find "$pool/overlay/upper" -printf "$WALK_FORMAT" >>"$timings/upper" ;;
        esac
        echo "$cpu_ns" >>"$timings/$command.cpu"
    done
}

log "timing $patch_runs runs with the patch applied"
for ((run = 1; run <= patch_runs; run++)); do
    "$world" --store "$store" --quiet create patched linux
    patched_root=$("$world" --store "$store" show patched --json | jq -er .path)
    (cd "$patched_root/$SOURCE_PACKAGE" && patch -p2 -s <"$patch_file") \
        || die "the patch does not apply to the tree of $old_version in world patched"
    patch_overlay
    # Write the patched files out now, so that no timed command pays for it.
    btrfs filesystem sync "$pool" >/dev/null

    # The warm-up: one untimed run of each command, whose output is checked.
    find "$patched_root" -printf "$WALK_FORMAT" >/dev/null
    upper_entries=$(find "$pool/overlay/upper" -printf "$WALK_FORMAT" | wc -l)
    check_diff patched "$MIN_CHANGES"
    missing=$(cut -f 2- "$store/fast.txt" | sort -u | comm -23 "$patched_paths" - | head -n 5)
    [[ -z $missing ]] || die "world diff patched misses paths that the patch changed, such as: $missing"

    time_patched "$run" "$patched_root"
    log "run $run: $changes changes, fast $(tail -n 1 "$timings/fast") ns," \
        "full walk $(tail -n 1 "$timings/full") ns, find $(tail -n 1 "$timings/walk") ns," \
        "find in the overlay's upper folder $(tail -n 1 "$timings/upper") ns ($upper_entries entries)"
    "$world" --store "$store" --quiet delete patched
    btrfs subvolume delete "$pool/overlay" >/dev/null
    settle "$pool"
done
patched_changes=$changes
# The kinds of the last run's changes, counted by status letter, such as
# "4546 modified, 68 deleted, 37 added".
patched_kinds=$(cut -f 1 "$store/fast.txt" | sort | uniq -c | sort -rn | awk '
    BEGIN { kind["A"] = "added"; kind["M"] = "modified"; kind["D"] = "deleted"
            kind["T"] = "type changed"; kind["m"] = "metadata only" }
    { printf "%s%s %s", (NR > 1 ? ", " : ""), $1, ($2 in kind ? kind[$2] : $2) }')

log "timing $one_file_runs runs after a one-file change"
"$world" --store "$store" --quiet create one linux
one_root=$("$world" --store "$store" show one --json | jq -er .path)
echo x >>"$one_root/$SOURCE_PACKAGE/Makefile"
btrfs filesystem sync "$pool" >/dev/null
check_diff one 1
one_changes=$(cat "$store/fast.txt")
[[ $one_changes == "M"$'\t'"/$SOURCE_PACKAGE/Makefile" ]] \
    || die "world diff one should list only /$SOURCE_PACKAGE/Makefile as modified, but it lists: $one_changes"
for ((run = 1; run <= one_file_runs; run++)); do
    time_ns "$world" --store "$store" diff one >>"$timings/one"
    echo "$cpu_ns" >>"$timings/one.cpu"
done
"$world" --store "$store" --quiet delete one

load_after=$(cut -d ' ' -f 1-3 /proc/loadavg)

for name in fast full walk upper one; do
    record_result "diff-$name" "$timings/$name"
done
read -r fast_cpu _ < <(summarize "$timings/fast.cpu")
read -r full_cpu _ < <(summarize "$timings/full.cpu")
read -r walk_cpu _ < <(summarize "$timings/walk.cpu")
read -r upper_cpu _ < <(summarize "$timings/upper.cpu")
read -r one_cpu _ < <(summarize "$timings/one.cpu")
fast_per_walk=$(median_ratio "$timings/fast" "$timings/walk")
fast_per_full=$(median_ratio "$timings/fast" "$timings/full")
fast_per_upper=$(median_ratio "$timings/fast" "$timings/upper")
fast_per_walk_cpu=$(median_ratio "$timings/fast.cpu" "$timings/walk.cpu")
fast_per_full_cpu=$(median_ratio "$timings/fast.cpu" "$timings/full.cpu")
# The median of each part of the fast path, in the order it logs them:
# the tree search, the paths, the comparisons.
part_median() {
    cut -d ' ' -f "$1" "$timings/parts" | sort -n | awk '{ value[NR] = $1 } END { print value[int((NR + 1) / 2)] }'
}
read -r search_ms paths_ms compare_ms <<<"$(part_median 1) $(part_median 2) $(part_median 3)"
walk_ms=$(summarize "$timings/walk" | cut -d ' ' -f 1)
search_per_walk=$(awk -v part="$search_ms" -v walk="$walk_ms" 'BEGIN { printf "%.2f", part / walk }')
table=$(
    table_header command "median CPU time"
    table_row "\`world diff\`, patched child" "$timings/fast" "$timings/walk" "$fast_cpu ms"
    table_row "\`world diff --full-walk\`, patched child" "$timings/full" "$timings/walk" "$full_cpu ms"
    table_row "overlayfs: \`find\` walk of the upper folder" "$timings/upper" "$timings/walk" "$upper_cpu ms"
    table_row "\`find\` metadata walk of the patched child" "$timings/walk" "$timings/walk" "$walk_cpu ms"
    table_row "\`world diff\`, child with one changed file" "$timings/one" "" "$one_cpu ms"
)

set_trial_note "$((patch_runs < one_file_runs ? patch_runs : one_file_runs))"
section=$(cat <<EOF
## Listing a child's changes

${trial}\`world diff CHILD\` lists what CHILD changed since its base. Its fast path
asks the btrfs tree of CHILD for the inodes written after the base was
taken, so its time should follow the size of the change and not the size of
the tree. \`--full-walk\` compares every path of both trees instead.

The parent is a root world containing the Linux source tree of Debian's
\`$SOURCE_PACKAGE\` $old_version ($entries files and directories, $files of
them regular files). Each run makes a child of it and applies, with
\`patch\`, the difference between that tree and the one of $new_version, made
with \`diff -ruN\`. It brings the upstream stable updates from
${old_version%-*} to ${new_version%-*}, and any change to Debian's own patches, and
touches $patch_files files. \`world diff\` then lists $patched_changes changes
($patched_kinds). The baseline is a plain metadata walk of the child's tree
that calls lstat on every entry: \`find ROOT -printf '$WALK_FORMAT'\`. It
prints owners as numbers, because with \`%u\` and \`%g\` GNU find opens
/etc/passwd and /etc/group again for every entry.

$table

The overlayfs row is the original system's diff: the same patch applied in
an overlay on the parent's tree, whose upper folder then contains the
changed files ($upper_entries entries, with their folders), walked with the
same \`find\`. It lists what changed but not how: telling a modified file
from an added one takes a second lookup in the lower layer.

Ratios of the medians for the patched child, in elapsed time: fast path
over metadata walk **$fast_per_walk**, fast path over full walk
**$fast_per_full**, fast path over the overlay's upper walk
**$fast_per_upper**. In CPU time, fast path over metadata walk
**$fast_per_walk_cpu** and fast path over full walk **$fast_per_full_cpu**.

The fast path logs the time of its parts with \`WORLDS_LOG=worlds=debug\`,
which the timed runs of the patched child set. Their medians: the search of
the btrfs tree $search_ms ms, building the paths $paths_ms ms, and comparing
the candidates with the base $compare_ms ms. The rest is the start of the
process and the store's database. The tree search alone takes
**$search_per_walk** of the metadata walk. The search returns every item of
each tree block written since the base, and a patch that replaces
thousands of files by rename rewrites blocks all over the tree.

Each figure covers the whole command, from its start to its exit, with its
output sent to /dev/null. The median and the range are elapsed time. The CPU
time is user plus system time of the command, as the shell's \`times\`
builtin reports it to the millisecond, and depends less on other work on
the machine. The caches are warm: the script never drops them,
and in each run every command ran once untimed just before the timed runs.
The patched child was measured in $patch_runs runs. Each run made a new child
and a new overlay, applied the patch in both, wrote it out with
\`btrfs filesystem sync\`, and timed the four commands once each, in an
order that rotates from run to run. The
child with one changed file, whose Makefile had a line appended, was
measured $one_file_runs times in a row. In every run the fast path and the full walk
listed the same changes, and the fast path listed every file of the patch.

- Script: \`bench/diff.sh\`, $revision, release build
- Machine: $(describe_machine)
- Load average over 1, 5 and 15 minutes: $load_before at the start,
  $load_after at the end
- Store: $(describe_store)
- Date: $(date -u +%Y-%m-%d)
- To measure again and update this section: \`sudo bench/diff.sh --write\`,
  or \`sudo scripts/bench.sh\` for every benchmark.
  WORLDS_BENCH_VERSIONS picks other versions, and
  WORLDS_BENCH_REVISION=HEAD measures the last commit instead of the
  working tree.
EOF
)

printf '%s\n' "$section"

if $write; then
    write_section "$BEGIN_MARKER" "$END_MARKER" "$section"
fi
