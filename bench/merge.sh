#!/usr/bin/env bash
# Times `world merge` of a child of a world that contains the Linux 6.1
# source tree, after a real update of that tree was applied in the child.
# Two baselines are measured in the same run. The floor only clones the
# changed files into a parent with `cp --reflink=always` and deletes the
# deleted ones. The overlayfs method applies the same update in an overlay
# on a snapshot of the parent, then moves the files of the overlay's upper
# folder into it. Two more rows show the kernel's work alone on the files
# that the child modified (lib/examples/clone_floor.rs). One clones each
# file into the parent's file in place. The other clones it under a new
# name and renames that onto the parent's file, as `world merge` does.
#
# Usage: sudo bench/merge.sh [--write]
#
# Prints a Markdown section on stdout and progress on stderr. With --write it
# also replaces the section between the merge markers in docs/benchmarks.md.
#
# Environment:
#   WORLDS_BENCH_RUNS     timed runs of each method (default 5)
#   WORLDS_BENCH_VERSIONS the two package versions, older first, such as
#                         "6.1.176-1 6.1.192-3" (default: see
#                         bench/patch.sh)
#   WORLDS_BENCH_CACHE    where the packages, their trees and the patch are
#                         kept between runs (default /var/tmp/worlds-bench)
#   WORLDS_BENCH_RESULTS  where the figures are kept for bench/summary.sh
#                         (default: results/ in the cache)
#   WORLDS_BENCH_REVISION a commit to build and measure, such as HEAD, in
#                         place of the working tree
#   CARGO_TARGET_DIR      where the release build goes (default
#                         /tmp/worlds-bench-target, apart from debug builds)
#
# The workload is the one of bench/diff.sh and bench/patch.sh. The script
# downloads the packages, extracts their trees and makes the patch where the
# cache lacks them. It needs root, apt-get, about 4 GB of free space in the
# cache and 4 GB in the temporary folder. Caches stay warm: the script never
# drops them.
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

readonly BEGIN_MARKER='<!-- merge:begin -->'
readonly END_MARKER='<!-- merge:end -->'
# The minimum number of changes that the patched child must show, or the
# run fails.
readonly MIN_CHANGES=1000
# How many changed files each run compares between the child and the merged
# parent, spread over the list of changes. The first run compares the whole
# trees.
readonly SAMPLE_FILES=25
readonly METHODS=(worlds floor overlay inplace renamed)

# The overlayfs merge, as the original system did it: walk the upper folder
# and rename each entry into the same place in the parent's tree. A
# whiteout, a character device 0/0, deletes what the parent has at its
# place. A folder that the parent also has is merged entry by entry; any
# other entry replaces what the parent has. rename(2) is what `mv` calls for
# each file; doing it from one Perl process leaves out the start of one `mv`
# process per file. Arguments: the upper folder and the parent's tree.
# shellcheck disable=SC2016
readonly OVERLAY_MERGE='
use strict;
use warnings;
use File::Path qw(remove_tree);

sub remove_target {
    my ($path) = @_;
    return unless lstat $path;
    if (-d _) { remove_tree($path) } else { unlink $path or die "unlink $path: $!\n" }
}

sub merge_folder {
    my ($from, $to) = @_;
    opendir(my $folder, $from) or die "opendir $from: $!\n";
    my @names = grep { $_ ne "." && $_ ne ".." } readdir $folder;
    closedir $folder;
    for my $name (@names) {
        my ($source, $target) = ("$from/$name", "$to/$name");
        my @status = lstat $source or die "lstat $source: $!\n";
        if (-c _ && $status[6] == 0) {
            remove_target($target);
            unlink $source or die "unlink $source: $!\n";
        } elsif (-d _) {
            if (lstat $target and -d _) {
                merge_folder($source, $target);
                rmdir $source or die "rmdir $source: $!\n";
            } else {
                remove_target($target);
                rename $source, $target or die "rename $source: $!\n";
            }
        } else {
            remove_target($target) if lstat $target and -d _;
            rename $source, $target or die "rename $source: $!\n";
        }
    }
}

merge_folder(@ARGV);
'

runs=${WORLDS_BENCH_RUNS:-5}

parse_arguments "$@"
require_positive WORLDS_BENCH_RUNS "$runs"
require_root

install_missing btrfs-progs xz-utils patch jq attr perl
start_store
build_world clone_floor

prepare_workload

load_before=$(cut -d ' ' -f 1-3 /proc/loadavg)
pool=$store/pool
timings=$store/timings
mkdir "$timings" "$store/merged"

log "creating root world linux from $old_tree"
"$world" --store "$store" --quiet init linux --from-dir "$old_tree" --pool-size 12G
linux_root=$("$world" --store "$store" show linux --json | jq -er .path)
entries=$(find "$linux_root" -mindepth 1 | wc -l)
files=$(find "$linux_root" -type f | wc -l)
log "the linux world contains $entries entries, $files of them regular files"
settle "$pool"

# Prints the path of the root of world NAME.
world_root() {
    "$world" --store "$store" show "$1" --json | jq -er .path
}

# Applies the patch in FOLDER, the linux-source-6.1 folder of a tree.
apply_patch() {
    (cd "$1" && patch -p2 -s <"$patch_file") || die "the patch does not apply in $1"
}

# Clones the files that the child added or changed into the floor parent,
# making their folders as needed, then deletes what the child deleted. This
# is the floor. The lists were made from `world diff -z` before the timing.
floor_merge() {
    (cd "$child_root" && cp --reflink=always --no-dereference --preserve=all --parents \
        -- "${copied[@]}" "$floor_root/")
    if ((${#deleted[@]} > 0)); then
        (cd "$floor_root" && rm -rf -- "${deleted[@]}")
    fi
}

# Clones the files that the child modified into the tree at ROOT with
# lib/examples/clone_floor.rs, in MODE: in-place or rename.
clone_modified() {
    local root=$1 mode=$2
    "$store/clone_floor" "$child_root" "$root" "$mode" <"$store/modified" >/dev/null
}

overlay_merge() {
    perl -e "$OVERLAY_MERGE" "$overlay_snapshot/upper" "$overlay_snapshot/$SOURCE_PACKAGE"
}

# Fails unless the tree at ROOT has the same content as the patched child,
# compared with `diff -r --no-dereference`. With FULL true it compares the
# whole linux-source-6.1 folder, else the sample of changed files, and it
# checks that the deleted paths are gone.
check_same() {
    local method=$1 root=$2 full=$3 path
    if $full; then
        diff -r --no-dereference -q "$child_root/$SOURCE_PACKAGE" "$root/$SOURCE_PACKAGE" >"$store/check" 2>&1 \
            || { head -n 20 "$store/check" >&2; die "after the $method merge of run $run, the parent differs from the child"; }
        return
    fi
    for path in "${sample[@]}"; do
        diff -r --no-dereference -q "$child_root/$path" "$root/$path" >"$store/check" 2>&1 \
            || { cat "$store/check" >&2; die "after the $method merge of run $run, $path differs from the child's"; }
    done
    for path in "${deleted[@]}"; do
        [[ ! -e $root/$path && ! -L $root/$path ]] \
            || die "after the $method merge of run $run, $path is still there"
    done
}

# Waits until btrfs is idle, then times METHOD once on the worlds of this run.
time_method() {
    local method=$1
    settle "$pool"
    case $method in
        worlds)
            # With debug logs, the merge logs the time of its phases, which
            # time_ns leaves in $store/errors.
            if ! (export WORLDS_LOG=worlds=debug && time_ns "$world" --store "$store" --quiet merge "child-$run" >>"$timings/worlds"); then
                die "world --store $store merge child-$run failed; to reproduce: make a root world from $old_tree," \
                    "create parent from it and child from parent, apply $patch_file with patch -p2 inside" \
                    "the child's $SOURCE_PACKAGE folder and merge child"
            fi
            sed 's/\x1b\[[0-9;]*m//g' "$store/errors" | awk '
                { for (i = 1; i <= NF; i++) if (split($i, pair, "=") == 2 && pair[1] ~ /_ms$/) ms[pair[1]] = pair[2] }
                END { print ms["plan_ms"] + 0, ms["prepare_ms"] + 0, ms["apply_ms"] + 0, ms["sync_ms"] + 0, ms["publish_ms"] + 0 }
            ' >>"$timings/phases"
            ;;
        floor) time_ns floor_merge >>"$timings/floor" ;;
        overlay) time_ns overlay_merge >>"$timings/overlay" ;;
        inplace) time_ns clone_modified "$inplace_root" in-place >>"$timings/inplace" ;;
        renamed) time_ns clone_modified "$renamed_root" rename >>"$timings/renamed" ;;
    esac
}

log "timing $runs runs of each method, interleaved, after ${SECONDS}s"
for ((run = 1; run <= runs; run++)); do
    # The worlds method: a fresh parent and a child of it, patched.
    "$world" --store "$store" --quiet create "parent-$run" linux
    "$world" --store "$store" --quiet create "child-$run" "parent-$run"
    child_root=$(world_root "child-$run")
    parent_root=$(world_root "parent-$run")
    apply_patch "$child_root/$SOURCE_PACKAGE"
    # The floor's parent, made the same way. The floor copies from the same
    # patched child.
    "$world" --store "$store" --quiet create "floor-$run" linux
    floor_root=$(world_root "floor-$run")
    # The parents of the two rows of kernel work alone.
    "$world" --store "$store" --quiet create "inplace-$run" linux
    inplace_root=$(world_root "inplace-$run")
    "$world" --store "$store" --quiet create "renamed-$run" linux
    renamed_root=$(world_root "renamed-$run")
    # The overlayfs method: a writable snapshot of linux as the lower layer,
    # with the upper and work folders beside its tree in the same subvolume,
    # so that moving a file from upper into the tree is a rename.
    overlay_snapshot=$pool/overlay-$run
    btrfs subvolume snapshot "$linux_root" "$overlay_snapshot" >/dev/null
    mkdir "$overlay_snapshot/upper" "$overlay_snapshot/work"
    mount -t overlay overlay \
        -o "lowerdir=$overlay_snapshot/$SOURCE_PACKAGE,upperdir=$overlay_snapshot/upper,workdir=$overlay_snapshot/work" \
        "$store/merged"
    apply_patch "$store/merged"
    umount "$store/merged"
    # An opaque folder in upper would replace the parent's folder, which
    # overlay_merge does not do. The patch makes none, and this check fails
    # if another one does.
    # getfattr fails for every file without the attribute, so its status
    # is ignored and only its output counts.
    if { getfattr -R --absolute-names -n trusted.overlay.opaque "$overlay_snapshot/upper" 2>/dev/null || true; } | grep -c . >/dev/null; then
        die "the overlay's upper folder has opaque folders, which this script does not merge"
    fi
    # Write everything out now, so that no timed command pays for it.
    btrfs filesystem sync "$pool" >/dev/null
    log "run $run/$runs: prepared after ${SECONDS}s"

    # The changes, listed before the timing: what the floor copies and
    # deletes, and the sample that the checks compare.
    "$world" --store "$store" diff -z "child-$run" >"$store/changes"
    copied=() deleted=() changed=() modified=()
    while IFS= read -r -d '' letter && IFS= read -r -d '' path; do
        path=${path#/}
        if [[ $letter == M && -f $child_root/$path && ! -L $child_root/$path ]]; then
            modified+=("$path")
        fi
        case $letter in
            D) deleted+=("$path") ;;
            A | M | T)
                changed+=("$path")
                [[ -d $child_root/$path && ! -L $child_root/$path ]] || copied+=("$path")
                ;;
        esac
    done <"$store/changes"
    printf '%s\0' "${modified[@]}" >"$store/modified"
    changes=$(tr -cd '\0' <"$store/changes" | wc -c)
    changes=$((changes / 2))
    ((changes >= MIN_CHANGES)) || die "world diff child-$run lists only $changes changes, fewer than $MIN_CHANGES"
    step=$(((${#changed[@]} + SAMPLE_FILES - 1) / SAMPLE_FILES))
    sample=()
    for ((i = 0; i < ${#changed[@]}; i += step)); do
        sample+=("${changed[i]}")
    done

    order=("${METHODS[@]:run % ${#METHODS[@]}}" "${METHODS[@]:0:run % ${#METHODS[@]}}")
    for method in "${order[@]}"; do
        time_method "$method"
    done

    # The checks, outside the timed part.
    log "run $run/$runs: timed after ${SECONDS}s"
    leftover=$("$world" --store "$store" diff "child-$run")
    [[ -z $leftover ]] || die "after world merge child-$run, world diff child-$run still lists changes: $(head -n 5 <<<"$leftover")"
    full=false
    ((run == 1)) && full=true
    check_same worlds "$parent_root" "$full"
    check_same floor "$floor_root" "$full"
    check_same overlay "$overlay_snapshot" "$full"
    [[ -z $(find "$overlay_snapshot/upper" -mindepth 1 -print -quit) ]] \
        || die "the overlay merge of run $run left entries in the upper folder"

    log "run $run/$runs (${order[*]}), checked after ${SECONDS}s: $changes changes, ${#copied[@]} files copied, ${#deleted[@]} deleted;" \
        "worlds $(tail -n 1 "$timings/worlds") ns, floor $(tail -n 1 "$timings/floor") ns," \
        "overlay $(tail -n 1 "$timings/overlay") ns, in place $(tail -n 1 "$timings/inplace") ns," \
        "renamed $(tail -n 1 "$timings/renamed") ns"

    "$world" --store "$store" --quiet delete "child-$run"
    "$world" --store "$store" --quiet delete "parent-$run"
    "$world" --store "$store" --quiet delete "floor-$run"
    "$world" --store "$store" --quiet delete "inplace-$run"
    "$world" --store "$store" --quiet delete "renamed-$run"
    btrfs subvolume delete "$overlay_snapshot" >/dev/null
    settle "$pool"
done
load_after=$(cut -d ' ' -f 1-3 /proc/loadavg)
# The kinds of the last run's changes, counted by status letter.
kinds=$(tr '\0' '\n' <"$store/changes" | awk 'NR % 2' | sort | uniq -c | sort -rn | awk '
    BEGIN { kind["A"] = "added"; kind["M"] = "modified"; kind["D"] = "deleted"
            kind["T"] = "type changed"; kind["m"] = "metadata only" }
    { printf "%s%s %s", (NR > 1 ? ", " : ""), $1, ($2 in kind ? kind[$2] : $2) }')
copied_count=${#copied[@]}
modified_count=${#modified[@]}
deleted_count=${#deleted[@]}

for method in "${METHODS[@]}"; do
    record_result "merge-$method" "$timings/$method"
done
worlds_per_floor=$(median_ratio "$timings/worlds" "$timings/floor")
worlds_per_overlay=$(median_ratio "$timings/worlds" "$timings/overlay")
renamed_per_inplace=$(median_ratio "$timings/renamed" "$timings/inplace")
# The median of each phase of `world merge`, in the order the merge logs
# them: planning, pre-merge snapshot and journal, applying, syncfs and
# publishing.
phase_median() {
    cut -d ' ' -f "$1" "$timings/phases" | sort -n | awk '{ value[NR] = $1 } END { print value[int((NR + 1) / 2)] }'
}
read -r plan_ms prepare_ms apply_ms sync_ms publish_ms <<<"$(phase_median 1) $(phase_median 2) $(phase_median 3) $(phase_median 4) $(phase_median 5)"
table=$(
    table_header method
    table_row "\`world merge child\`" "$timings/worlds" "$timings/floor"
    table_row "overlayfs: rename the upper folder's entries into the parent" "$timings/overlay" "$timings/floor"
    table_row "floor: \`cp --reflink=always\` of the changed files" "$timings/floor" "$timings/floor"
    table_row "kernel work alone: clone each modified file in place" "$timings/inplace" "$timings/floor"
    table_row "kernel work alone: clone each modified file under a new name, rename it into place" "$timings/renamed" "$timings/floor"
)
verdict="within"
awk -v r="$worlds_per_floor" 'BEGIN { exit !(r > 2) }' && verdict="not within"

# Other work on the machine inflates the absolute times more than the
# ratios, so the section of a busy run adds a note about it.
busy_note=
if awk -v load="${load_before%% *}" -v cpus="$(nproc)" 'BEGIN { exit !(load >= cpus) }'; then
    busy_note="Other work kept the machine busy during this run (a load average above
its CPU count), which inflates the absolute times more than the ratios.

"
fi

set_trial_note "$runs"
section=$(cat <<EOF
## Merging a child world

${trial}\`world merge CHILD\` applies the changes that CHILD made since its base to
its parent, all or nothing. It takes a pre-merge snapshot of the parent and
journals the plan. Then it clones the data of each changed file into the
parent with a reflink, renames it into place, syncs, and moves the child's
base. The target is to stay within twice the floor below.

The root world \`linux\` contains the Linux source tree of Debian's
\`$SOURCE_PACKAGE\` $old_version ($entries files and directories, $files of
them regular files). Each run makes a fresh parent with \`world create
parent linux\` and a child with \`world create child parent\`, and applies
in the child, with \`patch\`, the difference between that tree and the one of
$new_version made with \`diff -ruN\` ($patch_files files). \`world diff\` then
lists $changes changes ($kinds).

$table

Ratios of the medians: worlds over floor **$worlds_per_floor** ($verdict the
target of 2), worlds over overlayfs **$worlds_per_overlay**, and for the
kernel's work alone, renamed over in place **$renamed_per_inplace**.

\`world merge\` logs the time of its phases with
\`WORLDS_LOG=worlds=debug\`. Their medians: planning $plan_ms ms (the diffs
of the child and of the parent since the base, and the plan), the
pre-merge snapshot and the journal $prepare_ms ms, applying $apply_ms ms,
syncfs $sync_ms ms, and publishing the child's new base $publish_ms ms.
The rest is the start of the process and the store's database.

- **worlds**: the whole \`world merge child\` command, from its start to its
  exit, with its output sent to /dev/null.
- **floor**: the least work that gives the parent the child's files. The
  parent is a fresh \`world create\` of \`linux\`, and the source is the same
  patched child. Before the timing, the script takes the list of changes
  from \`world diff -z child\`. The timed part runs one
  \`cp --reflink=always --no-dereference --preserve=all --parents\` inside
  the child's root, with the parent's root as the target. It copies every
  path that was added, modified or changed type and is not a folder
  ($copied_count files). Then one \`rm -rf\` inside the parent deletes the
  $deleted_count deleted paths. It makes no
  snapshot, writes no journal and does not sync.
- **overlayfs**, the original system's method: the parent is a writable
  \`btrfs subvolume snapshot\` of \`linux\`. Its tree is the lower layer of an
  overlay mounted with an empty upper and work folder, both in the same
  snapshot beside the tree, and the patch is applied inside the overlay,
  which is then unmounted. The timed part is one Perl process that walks the
  upper folder. It renames each entry into the same place in the parent's
  tree with rename(2), the call that \`mv\` makes, and merges the folders
  that both have. Each whiteout (a character device 0/0) becomes a deletion
  in the parent. It makes no snapshot, writes no journal and does not sync, and an
  interruption leaves the parent half merged.
- **kernel work alone**: one process of \`lib/examples/clone_floor.rs\` on
  the $modified_count regular files that the child modified, each into a
  fresh \`world create\` of \`linux\`. Per file it opens the source, makes
  the target, clones the data with FICLONE and sets the mode and times,
  with nothing else. **In place** truncates the parent's file and clones
  into it, as \`cp\` does. **Renamed** clones into a new file beside it and
  renames that onto the parent's file, which is how \`world merge\` makes
  each file switch at once: btrfs then creates an inode per file and frees
  the old one inside rename(2). These rows do not add or delete files and
  are not checked.

In each of the $runs runs the script made the five parents and applied the
patch twice, in the child and in the overlay. It wrote everything out with
\`btrfs filesystem sync\`, then timed the five methods once each, in an
order that rotates from run to run. Before each timed command it waits
until btrfs has committed its transaction and cleaned up deleted
subvolumes. After the timing it checks that \`world diff child\` is empty
and that each parent has the child's content. The first run compares the
whole tree with \`diff -r --no-dereference\`. The others compare
$SAMPLE_FILES changed files spread over the list and check that the deleted
paths are gone. Then it deletes the worlds and the snapshot. The caches are warm:
the script never drops them.

$busy_note- Script: \`bench/merge.sh\`, $revision, release build
- Machine: $(describe_machine)
- Load average over 1, 5 and 15 minutes: $load_before at the start,
  $load_after at the end
- Store: $(describe_store)
- Tools: $(cp --version | head -n 1), $(patch --version | head -n 1), perl $(perl -e 'print $^V')
- Date: $(date -u +%Y-%m-%d)
- To measure again and update this section: \`sudo bench/merge.sh --write\`,
  or \`sudo scripts/bench.sh\` for every benchmark.
  WORLDS_BENCH_VERSIONS picks other versions, WORLDS_BENCH_RUNS
  the number of runs, and WORLDS_BENCH_REVISION=HEAD measures the last
  commit instead of the working tree.
EOF
)

printf '%s\n' "$section"

if $write; then
    write_section "$BEGIN_MARKER" "$END_MARKER" "$section"
fi
