#!/usr/bin/env bash
# Times `world diff` on a child of a root world that contains the Linux 6.1
# source tree, after a real update of that tree was applied in the child.
# The update is the patch between two versions of Debian's linux-source-6.1
# package, which touches a few thousand files. It compares the fast path with
# `world diff --full-walk` and with a plain metadata walk of the child's
# tree, and also times the fast path after a change to a single file.
#
# Usage: sudo bench/diff.sh [--write]
#
# Prints a Markdown section on stdout and progress on stderr. With --write it
# also replaces the section between the diff markers in docs/benchmarks.md.
#
# Environment:
#   WORLDS_BENCH_PATCH_RUNS   runs with the patch applied (default 7)
#   WORLDS_BENCH_RUNS         timed runs after a one-file change (default 21)
#   WORLDS_BENCH_DIFF_VERSIONS
#                             the two package versions, older first, such as
#                             "6.1.176-1 6.1.192-3" (default: the newest
#                             version that apt-cache lists, and the newest
#                             one at least 16 stable updates older)
#   WORLDS_BENCH_CACHE        where the packages, their tarballs and trees
#                             and the patch are kept between runs (default
#                             /var/tmp/worlds-bench)
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
# The minimum number of stable updates between the two default versions.
readonly MIN_UPDATES_APART=16
# The minimum number of changes that the patched child must show, or the
# run fails.
readonly MIN_CHANGES=1000
# The baseline: find prints what lstat returns for every entry. Owners are
# printed as numbers because %u and %g make GNU find look up each owner's
# name, which opens /etc/passwd and /etc/group again for every entry.
readonly WALK_FORMAT='%i %C@ %s %m %U %G %p\n'

patch_runs=${WORLDS_BENCH_PATCH_RUNS:-7}
one_file_runs=${WORLDS_BENCH_RUNS:-21}

parse_arguments "$@"
require_positive WORLDS_BENCH_PATCH_RUNS "$patch_runs"
require_positive WORLDS_BENCH_RUNS "$one_file_runs"
require_root

# Prints the versions of the source package that apt-cache lists, oldest
# first.
listed_versions() {
    apt-cache madison "$SOURCE_PACKAGE" | awk -F '|' '{ gsub(/ /, "", $2); print $2 }' | sort -uV
}

# Prints the older and the newer version to compare, on one line.
choose_versions() {
    if [[ -n ${WORLDS_BENCH_DIFF_VERSIONS:-} ]]; then
        read -r old new <<<"$WORLDS_BENCH_DIFF_VERSIONS"
        [[ -n ${new:-} ]] || die "WORLDS_BENCH_DIFF_VERSIONS must name two versions, not \`$WORLDS_BENCH_DIFF_VERSIONS\`"
        printf '%s %s\n' "$old" "$new"
        return
    fi
    local versions
    versions=$(listed_versions)
    if (($(grep -c . <<<"$versions") < 2)); then
        log "apt-cache lists fewer than two versions of $SOURCE_PACKAGE; updating the package lists"
        apt-get update >&2
        versions=$(listed_versions)
    fi
    (($(grep -c . <<<"$versions") >= 2)) \
        || die "apt-cache lists fewer than two versions of $SOURCE_PACKAGE; set WORLDS_BENCH_DIFF_VERSIONS"
    # A version reads 6.1.STABLE-DEBIAN. Take the newest, and the newest
    # whose stable update is at least MIN_UPDATES_APART older, or else the
    # oldest listed.
    awk -v apart="$MIN_UPDATES_APART" '
        { version[NR] = $0; split($0, part, /[.-]/); update[NR] = part[3] + 0 }
        END {
            old = version[1]
            for (i = 1; i < NR; i++)
                if (update[i] <= update[NR] - apart) old = version[i]
            print old, version[NR]
        }' <<<"$versions"
}

# Prints the folder in the cache that contains the extracted tree of VERSION,
# as linux-source-6.1/ inside it, extracting it the first time.
source_tree() {
    local version=$1 deb tarball tree
    tree=$cache/${SOURCE_PACKAGE}_$version
    if [[ ! -d $tree ]]; then
        deb=$(fetch_source_deb "$version")
        tarball=$(source_tarball "$deb")
        log "extracting $tarball into $tree"
        rm -rf "$tree.partial"
        mkdir "$tree.partial"
        tar -xf "$tarball" -C "$tree.partial"
        mv "$tree.partial" "$tree"
    fi
    [[ -d $tree/$SOURCE_PACKAGE ]] || die "$tree has no $SOURCE_PACKAGE folder; delete it to extract it again"
    printf '%s\n' "$tree"
}

# Prints the path of the cached patch from version OLD to version NEW, made
# with `diff -ruN` between their trees the first time. Its paths start with
# two folders, so it applies with -p2 inside the linux-source-6.1 folder.
make_patch() {
    local old=$1 new=$2 patch status
    patch=$cache/${SOURCE_PACKAGE}_${old}_to_$new.patch
    if [[ ! -f $patch ]]; then
        source_tree "$old" >/dev/null
        source_tree "$new" >/dev/null
        log "making $patch"
        # diff exits with 1 when the trees differ, which they should, and
        # with 2 when it fails.
        status=0
        (cd "$cache" && diff -ruN --no-dereference \
            "${SOURCE_PACKAGE}_$old/$SOURCE_PACKAGE" "${SOURCE_PACKAGE}_$new/$SOURCE_PACKAGE") \
            >"$patch.partial" || status=$?
        ((status == 1)) || die "diff between the trees of $old and $new exited with $status"
        mv "$patch.partial" "$patch"
    fi
    printf '%s\n' "$patch"
}

install_missing btrfs-progs xz-utils patch jq
start_store
build_world

versions=$(choose_versions)
read -r old_version new_version <<<"$versions"
log "workload: $SOURCE_PACKAGE $old_version patched up to $new_version"
old_tree=$(source_tree "$old_version")
patch_file=$(make_patch "$old_version" "$new_version")
patch_files=$(grep -c '^diff ' "$patch_file")
# diff writes no patch for binary files and for symlinks whose targets
# differ, only a line saying so.
unpatched_files=$(grep -cE '^(Binary files |Symbolic links |File .* is a )' "$patch_file" || true)
log "the patch touches $patch_files files ($unpatched_files more differ but are not in it)"

load_before=$(cut -d ' ' -f 1-3 /proc/loadavg)
pool=$store/pool
timings=$store/timings
mkdir "$timings"

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

# Times the three commands on the patched child in an order that rotates
# from run to run. Each one has run once untimed just before.
time_patched() {
    local run=$1 root=$2 command
    local -a commands=(fast full walk) order
    order=("${commands[@]:run % 3}" "${commands[@]:0:run % 3}")
    for command in "${order[@]}"; do
        case $command in
            fast) time_ns "$world" --store "$store" diff patched >>"$timings/fast" ;;
            full) time_ns "$world" --store "$store" diff --full-walk patched >>"$timings/full" ;;
            walk) time_ns find "$root" -printf "$WALK_FORMAT" >>"$timings/walk" ;;
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
    # Write the patched files out now, so that no timed command pays for it.
    btrfs filesystem sync "$pool" >/dev/null

    # The warm-up: one untimed run of each command, whose output is checked.
    find "$patched_root" -printf "$WALK_FORMAT" >/dev/null
    check_diff patched "$MIN_CHANGES"
    missing=$(cut -f 2- "$store/fast.txt" | sort -u | comm -23 "$patched_paths" - | head -n 5)
    [[ -z $missing ]] || die "world diff patched misses paths that the patch changed, such as: $missing"

    time_patched "$run" "$patched_root"
    log "run $run: $changes changes, fast $(tail -n 1 "$timings/fast") ns," \
        "full walk $(tail -n 1 "$timings/full") ns, find $(tail -n 1 "$timings/walk") ns"
    "$world" --store "$store" --quiet delete patched
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

read -r fast_median fast_min fast_max < <(summarize "$timings/fast")
read -r full_median full_min full_max < <(summarize "$timings/full")
read -r walk_median walk_min walk_max < <(summarize "$timings/walk")
read -r one_median one_min one_max < <(summarize "$timings/one")
read -r fast_cpu _ < <(summarize "$timings/fast.cpu")
read -r full_cpu _ < <(summarize "$timings/full.cpu")
read -r walk_cpu _ < <(summarize "$timings/walk.cpu")
read -r one_cpu _ < <(summarize "$timings/one.cpu")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
fast_per_walk=$(ratio "$fast_median" "$walk_median")
fast_per_full=$(ratio "$fast_median" "$full_median")
fast_per_walk_cpu=$(ratio "$fast_cpu" "$walk_cpu")
fast_per_full_cpu=$(ratio "$fast_cpu" "$full_cpu")

section=$(cat <<EOF
## Listing a child's changes

\`world diff CHILD\` lists what CHILD changed since its base. Its fast path
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

| command | median | min | max | median CPU time |
| --- | ---: | ---: | ---: | ---: |
| \`world diff\`, patched child | $fast_median ms | $fast_min ms | $fast_max ms | $fast_cpu ms |
| \`world diff --full-walk\`, patched child | $full_median ms | $full_min ms | $full_max ms | $full_cpu ms |
| \`find\` metadata walk of the patched child | $walk_median ms | $walk_min ms | $walk_max ms | $walk_cpu ms |
| \`world diff\`, child with one changed file | $one_median ms | $one_min ms | $one_max ms | $one_cpu ms |

Ratios of the medians for the patched child, in elapsed time: fast path
over metadata walk **$fast_per_walk**, fast path over full walk
**$fast_per_full**. In CPU time: **$fast_per_walk_cpu** and
**$fast_per_full_cpu**.

Each figure covers the whole command, from its start to its exit, with its
output sent to /dev/null. The first three columns are elapsed time. The CPU
time is user plus system time of the command, as the shell's \`times\`
builtin reports it to the millisecond, and depends less on other work on
the machine. The caches are warm: the script never drops them,
and in each run every command ran once untimed just before the timed runs.
The patched child was measured in $patch_runs runs. Each run made a new child,
applied the patch, wrote it out with \`btrfs filesystem sync\`, and timed the
three commands once each, in an order that rotates from run to run. The
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
  WORLDS_BENCH_DIFF_VERSIONS picks other versions, and
  WORLDS_BENCH_REVISION=HEAD measures the last commit instead of the
  working tree.
EOF
)

printf '%s\n' "$section"

if $write; then
    write_section "$BEGIN_MARKER" "$END_MARKER" "$section"
fi
