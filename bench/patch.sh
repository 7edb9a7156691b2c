#!/usr/bin/env bash
# Times applying the workload's patch, a stable update that touches a few
# thousand files of the Linux 6.1 source tree, in six setups on the same
# data in the same run:
#   bare               GNU patch on a btrfs snapshot of the tree, outside
#                      any world
#   world, no tracking the same patch run by `world exec` in a running
#                      child world started with --no-track (in a build
#                      without access tracking, a plain `world start`)
#   world, tracking    the same in a child started with tracking on, then
#                      `world set CHILD` and `world set --json CHILD`
#   overlay            the original system's method: patch inside an
#                      overlayfs mount whose lower layer is the tree
#   auditd             patch on a snapshot watched by an auditd rule,
#                      `auditctl -w DIR -p rwxa`, the original's tracking
#   overlay + auditd   patch inside the overlay, watched by that rule
# A build without `--no-track` in `world start --help`, or without
# `world set`, gets the rows of tracking and `world set` marked as skipped,
# with the reason.
#
# Usage: sudo bench/patch.sh [--write]
#
# Prints a Markdown section on stdout and progress on stderr. With --write it
# also replaces the section between the patch markers in docs/benchmarks.md.
#
# Environment:
#   WORLDS_BENCH_RUNS      timed runs of each setup (default 5)
#   WORLDS_BENCH_SETUPS    the setups to time, such as "world-off world-on"
#                          (default: all, "bare" always runs)
#   WORLDS_BENCH_VERSIONS  the two package versions, older first, such as
#                          "6.1.176-1 6.1.192-3" (default: those of the
#                          newest patch in the cache, else two that
#                          apt-cache lists, 16 stable updates apart)
#   WORLDS_BENCH_CACHE     where the packages, their trees and the patch are
#                          kept between runs (default /var/tmp/worlds-bench)
#   WORLDS_BENCH_RESULTS   where the figures are kept for bench/summary.sh
#                          (default: results/ in the cache)
#   WORLDS_BENCH_REVISION  a commit to build and measure, such as HEAD,
#                          instead of the working tree
#   CARGO_TARGET_DIR       where the release build goes (default
#                          /tmp/worlds-bench-target, apart from debug builds)
#
# It needs root, apt-get (it installs auditd when it is missing), about 4 GB
# of free space in the cache and 3 GB in the temporary folder. When auditd
# does not run, it starts one of its own that logs into the temporary
# folder, and stops it at the end. It removes its audit rules and restores
# the kernel's audit settings on exit, even after a failure.
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

readonly BEGIN_MARKER='<!-- patch:begin -->'
readonly END_MARKER='<!-- patch:end -->'
# Where the tree sits in the root world, and where GNU patch goes there.
readonly TREE=/usr/src/linux
readonly WORLD_PATCH=/usr/local/bin/patch
# The setups, in the order of the table. The first one is the baseline.
readonly SETUPS=(bare world-off world-on overlay audit overlay-audit)
# The original system's figures for the same kind of run (a Linux stable
# patch of 2,511 files), measured in 2015 on other hardware.
declare -rA PAPER=(
    [bare]="3.03 s"
    [world-off]="–"
    [world-on]="–"
    [overlay]="+6 %"
    [audit]="+10 %"
    [overlay-audit]="+14 %"
)
declare -rA LABELS=(
    [bare]="bare: \`patch\` on a btrfs snapshot"
    [world-off]="world, no tracking: \`world exec CHILD patch\`"
    [world-on]="world, tracking on: \`world exec CHILD patch\`"
    [overlay]="overlayfs: \`patch\` in the overlay"
    [audit]="auditd: \`patch\` on a watched snapshot"
    [overlay-audit]="overlayfs + auditd: \`patch\` in the watched overlay"
)

runs=${WORLDS_BENCH_RUNS:-5}
audit_key=worlds-bench-$$

parse_arguments "$@"
require_positive WORLDS_BENCH_RUNS "$runs"
require_root

# Prints the path of the root of world NAME.
world_root() {
    "$world" --store "$store" show "$1" --json | jq -er .path
}

# Copies the host's PROGRAM and the shared libraries that ldd lists for it
# into the root folder ROOT, the program as TARGET.
copy_program() {
    local program=$1 root=$2 target=$3 library
    mkdir -p "$root$(dirname "$target")"
    cp "$program" "$root$target"
    for library in $(ldd "$program" | grep -o '/[^ ]*'); do
        mkdir -p "$root$(dirname "$library")"
        cp -L "$library" "$root$library"
    done
}

# Applies the patch with the host's GNU patch in FOLDER, the top of a tree.
patch_on_host() {
    patch -d "$1" -p2 -s <"$patch_file"
}

# Applies the patch inside world NAME with the same GNU patch, reading it
# from the standard input that `world exec` passes on.
patch_in_world() {
    "$world" --store "$store" exec "$1" "$WORLD_PATCH" -d "$TREE" -p2 -s <"$patch_file"
}

# The pid of the auditd that this script started, if it started one, and
# the kernel's audit settings from before the run, which stop_auditd
# restores.
auditd_pid=
audit_before=

# Prints the value of FIELD in the output of `auditctl -s`.
audit_status() {
    auditctl -s | awk -v field="$1" '$1 == field { print $2 }'
}

# Makes sure that auditd runs, starting one that logs into the store folder
# when none does, with the buffer settings of Debian's default rules.
start_auditd() {
    audit_before="$(audit_status enabled) $(audit_status backlog_limit) $(audit_status backlog_wait_time)"
    if [[ $(audit_status pid) != 0 ]]; then
        log "auditd runs already (pid $(audit_status pid)); using it"
        return
    fi
    mkdir "$store/audit"
    sed -e "s|^log_file = .*|log_file = $store/audit/audit.log|" \
        -e 's|^max_log_file = .*|max_log_file = 1024|' \
        /etc/audit/auditd.conf >"$store/audit/auditd.conf"
    chmod 600 "$store/audit/auditd.conf"
    auditd -c "$store/audit" || die "could not start auditd"
    local attempt
    for ((attempt = 0; attempt < 50; attempt++)); do
        auditd_pid=$(audit_status pid)
        [[ $auditd_pid != 0 ]] && break
        sleep 0.1
    done
    [[ $auditd_pid != 0 ]] || die "auditd started but did not register with the kernel"
    log "started auditd (pid $auditd_pid), logging into $store/audit"
    auditctl -b 8192 --backlog_wait_time 60000 >/dev/null
}

# Removes this script's audit rules, stops the auditd that it started and
# restores the kernel's audit settings. Runs on exit, before the store is
# cleaned up, because our auditd logs into the store folder.
stop_auditd() {
    command -v auditctl >/dev/null || return 0
    if auditctl -l 2>/dev/null | grep -cF "key=$audit_key" >/dev/null; then
        auditctl -D -k "$audit_key" >/dev/null || log "could not remove the audit rules with key $audit_key"
    fi
    if [[ -n $auditd_pid && $auditd_pid != 0 ]]; then
        kill -TERM "$auditd_pid"
        local attempt
        for ((attempt = 0; attempt < 100; attempt++)); do
            kill -0 "$auditd_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$auditd_pid" 2>/dev/null && log "auditd (pid $auditd_pid) did not stop"
        auditd_pid=
    fi
    if [[ -n $audit_before ]]; then
        local enabled backlog_limit backlog_wait_time
        read -r enabled backlog_limit backlog_wait_time <<<"$audit_before"
        auditctl -e "$enabled" -b "$backlog_limit" --backlog_wait_time "$backlog_wait_time" >/dev/null \
            || log "could not restore the audit settings: enabled $enabled, backlog limit $backlog_limit"
        audit_before=
    fi
}

# Runs COMMAND with an audit watch on FOLDER and removes the watch after.
with_audit_watch() {
    local folder=$1 status=0
    shift
    auditctl -w "$folder" -p rwxa -k "$audit_key" >/dev/null
    "$@" || status=$?
    auditctl -W "$folder" -p rwxa -k "$audit_key" >/dev/null
    return "$status"
}

# Mounts an overlay at $store/merged whose lower layer is the root world's
# tree and whose upper and work folders are in a fresh subvolume on the
# pool, beside the worlds.
mount_overlay() {
    btrfs subvolume create "$pool/overlay" >/dev/null
    mkdir "$pool/overlay/upper" "$pool/overlay/work"
    mount -t overlay overlay \
        -o "lowerdir=$linux_root$TREE,upperdir=$pool/overlay/upper,workdir=$pool/overlay/work" \
        "$store/merged"
}

unmount_overlay() {
    umount "$store/merged"
    btrfs subvolume delete "$pool/overlay" >/dev/null
}

# Prepares SETUP, times its patch run once, appends the figure to its file
# in the timings folder, and removes what it made.
time_setup() {
    local setup=$1 child
    case $setup in
        bare | audit)
            btrfs subvolume snapshot "$linux_root" "$pool/snapshot" >/dev/null
            settle "$pool"
            if [[ $setup == bare ]]; then
                time_ns patch_on_host "$pool/snapshot$TREE" >>"$timings/$setup"
            else
                time_ns with_audit_watch "$pool/snapshot$TREE" patch_on_host "$pool/snapshot$TREE" >>"$timings/$setup"
            fi
            if [[ $setup == bare ]]; then
                settle "$pool"
                time_ns btrfs subvolume delete "$pool/snapshot" >>"$timings/delete-snapshot"
            else
                btrfs subvolume delete "$pool/snapshot" >/dev/null
            fi
            ;;
        world-off | world-on)
            child=child-$setup
            "$world" --store "$store" --quiet create "$child" linux
            if [[ $setup == world-off ]]; then
                "$world" --store "$store" --quiet start "$child" "${no_track[@]}"
            else
                "$world" --store "$store" --quiet start "$child"
            fi
            settle "$pool"
            time_ns patch_in_world "$child" >>"$timings/$setup"
            if [[ $setup == world-on ]] && $has_set; then
                time_ns "$world" --store "$store" set "$child" >>"$timings/set"
                time_ns "$world" --store "$store" set --json "$child" >>"$timings/set-json"
            fi
            "$world" --store "$store" --quiet stop "$child" --time 2
            if [[ $setup == world-on ]]; then
                # The CPU time of the monitor and of init, which it logs
                # when init exits.
                sed -n 's/.*monitor_cpu_ms=\([0-9]*\).*init_cpu_ms=\([0-9]*\).*/\1 \2/p' \
                    "$store/logs/$child.log" | tail -n 1 >>"$timings/tracking-cpu"
            fi
            if [[ $setup == world-off ]]; then
                settle "$pool"
                time_ns "$world" --store "$store" --quiet delete "$child" >>"$timings/delete-world"
            else
                "$world" --store "$store" --quiet delete "$child"
            fi
            ;;
        overlay | overlay-audit)
            mount_overlay
            settle "$pool"
            if [[ $setup == overlay ]]; then
                time_ns patch_on_host "$store/merged" >>"$timings/$setup"
            else
                time_ns with_audit_watch "$store/merged" patch_on_host "$store/merged" >>"$timings/$setup"
            fi
            unmount_overlay
            ;;
    esac
    settle "$pool"
}

install_missing btrfs-progs busybox-static patch jq auditd
start_store
cleanup_hook=stop_auditd
build_world
prepare_workload

# The interface of access tracking: `world start --no-track` turns it off,
# and `world set NAME` lists the access set.
has_tracking=false
no_track=()
# The help goes into a variable: with pipefail, `grep -q` closing the pipe
# early would make the pipeline fail.
start_help=$("$world" start --help)
if [[ $start_help == *--no-track* ]]; then
    has_tracking=true
    no_track=(--no-track)
fi
has_set=false
if "$world" set --help >/dev/null 2>&1; then
    has_set=true
fi
log "access tracking in this build: $has_tracking; world set: $has_set"
setups=()
wanted=" bare ${WORLDS_BENCH_SETUPS:-${SETUPS[*]}} "
for setup in "${SETUPS[@]}"; do
    [[ $setup == world-on ]] && ! $has_tracking && continue
    [[ $wanted == *" $setup "* ]] || continue
    setups+=("$setup")
done

load_before=$(cut -d ' ' -f 1-3 /proc/loadavg)
pool=$store/pool
timings=$store/timings
mkdir "$timings" "$store/merged"

# A busybox root with GNU patch, so that the world runs the same patch
# program as the host, and the older tree at /usr/src/linux.
log "creating root world linux: busybox, GNU patch and the tree of $old_version at $TREE"
"$world" --store "$store" --quiet init linux --busybox --pool-size 12G
linux_root=$(world_root linux)
copy_program "$(command -v patch)" "$linux_root" "$WORLD_PATCH"
mkdir -p "$linux_root$(dirname "$TREE")"
cp -a "$old_tree/$SOURCE_PACKAGE" "$linux_root$TREE"
entries=$(find "$linux_root$TREE" -mindepth 1 | wc -l)
files=$(find "$linux_root$TREE" -type f | wc -l)
log "the tree contains $entries entries, $files of them regular files"
settle "$pool"

start_auditd

# One untimed run of each setup first: it checks that the patch applies
# everywhere and reads the tree and the patch into the page cache.
log "warming up: one untimed run of each setup"
for setup in "${setups[@]}"; do
    time_setup "$setup" >/dev/null
done
rm -f "$timings"/*

log "timing $runs runs of each setup, in an order that rotates from run to run"
for ((run = 0; run < runs; run++)); do
    order=("${setups[@]:run % ${#setups[@]}}" "${setups[@]:0:run % ${#setups[@]}}")
    for setup in "${order[@]}"; do
        time_setup "$setup"
    done
    progress=
    for setup in "${setups[@]}"; do
        progress+=" $setup $(($(tail -n 1 "$timings/$setup") / 1000000)) ms,"
    done
    log "run $((run + 1))/$runs:${progress%,}"
done
load_after=$(cut -d ' ' -f 1-3 /proc/loadavg)
audit_lost=$(audit_status lost)

for setup in "${setups[@]}" set set-json delete-world delete-snapshot; do
    [[ -f $timings/$setup ]] && record_result "patch-$setup" "$timings/$setup"
done

table=$(
    table_header setup "original system (2015)"
    for setup in "${SETUPS[@]}"; do
        [[ $wanted == *" $setup "* ]] || continue
        if [[ -f $timings/$setup ]]; then
            table_row "${LABELS[$setup]}" "$timings/$setup" "$timings/bare" "${PAPER[$setup]}"
        else
            table_row_skipped "${LABELS[$setup]}" "\`world start --no-track\` is not available in this build" "${PAPER[$setup]}"
        fi
    done
)
if $has_set; then
    set_table=$(
        table_header
        table_row "\`world set CHILD\` after the patch" "$timings/set"
        table_row "\`world set --json CHILD\` after the patch" "$timings/set-json"
    )
else
    set_table=$(
        table_header
        table_row_skipped "\`world set CHILD\` after the patch" "\`world set\` is not available in this build"
    )
fi

delete_table=$(
    table_header
    table_row "\`world delete CHILD\` of the patched, stopped child" "$timings/delete-world" "$timings/delete-snapshot"
    table_row "\`btrfs subvolume delete\` of the patched snapshot" "$timings/delete-snapshot" "$timings/delete-snapshot"
)

# What tracking costs: the ratio of the medians, and the ratio of each
# run's tracked time to its untracked one, both setups having run in the
# same rotation.
tracking_note=
if [[ -f $timings/world-off ]]; then
    tracking_ratio=$(median_ratio "$timings/world-on" "$timings/world-off")
    read -r paired_median paired_min paired_max < <(
        paste "$timings/world-on" "$timings/world-off" | awk '{ printf "%.4f\n", $1 / $2 }' | sort -n | awk '
            { value[NR] = $1 }
            END {
                if (NR % 2) median = value[(NR + 1) / 2]
                else median = (value[NR / 2] + value[NR / 2 + 1]) / 2
                printf "%.2f %.2f %.2f\n", median, value[1], value[NR]
            }'
    )
    verdict="under"
    awk -v r="$tracking_ratio" 'BEGIN { exit !(r >= 1.05) }' && verdict="not under"
    tracking_note="Tracking on over tracking off: **$tracking_ratio** as the ratio of the
medians ($verdict the target of 1.05). Taken run by run, the tracked run
over the untracked one of the same run has a median of **$paired_median**,
from $paired_min to $paired_max.
"
    if [[ -s $timings/tracking-cpu ]]; then
        middle_of() { sort -n | awk '{ value[NR] = $1 } END { print value[int((NR + 1) / 2)] }'; }
        monitor_cpu=$(cut -d ' ' -f 1 "$timings/tracking-cpu" | middle_of)
        init_cpu=$(cut -d ' ' -f 2 "$timings/tracking-cpu" | middle_of)
        tracking_note+="In a tracked run, the world's monitor used a median of $monitor_cpu ms of CPU
time and its init, which reads the events, $init_cpu ms, counted from the
world's start to its stop.
"
    fi
    tracking_note+="
"
fi

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
## Applying an update in a world

${trial}The workload of the original system's evaluation: a Linux stable update
applied with \`patch\` to a kernel tree. Here the tree is Debian's
\`$SOURCE_PACKAGE\` $old_version ($entries files and directories, $files of
them regular files) at $TREE, and the patch brings it to $new_version
($patch_files files, $patch_size). Each run applies the patch once in each setup below,
to a fresh copy of the tree, with the host's GNU patch (\`patch -p2 -s\`).
The ratios are medians over the median of the bare run. The original
system's column was measured in 2015 on other hardware, with a patch of
2,511 files: its bare run took 3.03 s, and the other figures are its
overhead over that run.

$table

${tracking_note}- **bare**: a \`btrfs subvolume snapshot\` of the root world, outside any
  world, patched from the host.
- **world**: a child made with \`world create\` and started with
  \`world start\`, patched by \`world exec CHILD $WORLD_PATCH -d $TREE -p2 -s\`
  with the patch on standard input. The root world is a busybox root with
  the host's GNU patch and its libraries copied in, so that both sides run
  the same program. The figure includes the start of \`world exec\`, about
  10 ms (see the section on \`world exec\`). Tracking is off with
  \`world start --no-track\` and on by default.
- **overlayfs**: an overlay mounted with the root world's tree as its lower
  layer and empty upper and work folders in a fresh subvolume on the same
  pool, patched from the host through the overlay.
- **auditd**: a watch rule \`auditctl -w DIR -p rwxa -k KEY\` on the tree
  for the run, removed after it with \`auditctl -W\`. auditd ran with
  Debian's default configuration and buffer settings (\`-b 8192\`), writing
  its log to the temporary folder; the kernel reported $audit_lost lost
  audit records at the end.

Access sets, listed after the tracked run:

$set_table

How tracking records, and what each choice cost when it was tried on this
workload (runs on the same busy VM, so differences under about 5 % are
noise):

- The world's init reads a fanotify group that reports a directory file
  handle and a name per event, so no descriptor is opened per event, and
  keeps only events whose pid is in the world's pid namespace.
- Reading the group at every event woke init thousands of times per run
  and left the kernel nothing to merge: the tracked run took 20 % to 100 %
  longer than the untracked one. Reading every 50 ms lets a file's reads
  and its close merge into one queued event; that brought the tracked run
  to about 6 % to 8 % over the untracked one.
- Reporting writes at close (\`FAN_CLOSE_WRITE\`, one event a file)
  instead of at each write (\`FAN_MODIFY\`) made no difference that these
  runs could tell. It would also count files opened for writing but left
  unchanged, so writes are reported at each write.
- With the monitor's database writes left out, the same runs took about
  2 % longer with tracking than without, so most of the rest was the
  monitor. It now names paths as init's batches arrive (every 200 ms), but
  writes them in one SQLite transaction a second, without waiting for
  fsync, with prepared statements, and at the lowest CPU priority.
- On a machine of the same kind with AMD CPUs, the tracked run then took
  about 5 % longer than the untracked one. The run-by-run difference was
  bimodal there: no overhead in about half the runs, 7 % to 13 % in the
  others. Fewer commits and no WAL checkpoints during the run did not
  change that. Init, which reads the events, now runs at the lowest CPU
  priority too.
- The monitor named each new directory with \`BTRFS_IOC_INO_PATHS\`, which
  searches the world's tree once per level of the path while the world
  writes to the same tree. It now reads only the directory's own name, with
  a one-item search, and joins it to its parent's path, which it keeps. In
  21 paired runs of two setups alone (\`WORLDS_BENCH_SETUPS\`), the tracked
  run went from 1.06 to 1.03 of the untracked one. In such runs, marking
  only exec events cost nothing measurable, while reporting writes at close
  in place of each write, or leaving out read events, changed nothing.

Deleting what the patch run left, timed after the bare run and after the
world run without tracking:

$delete_table

Before each timed run the script waits until btrfs has committed its
transaction and cleaned up deleted subvolumes. One untimed run of each
setup came first. The caches are warm: the script never drops them.

$busy_note- Script: \`bench/patch.sh\`, $revision, release build
- Machine: $(describe_machine)
- Load average over 1, 5 and 15 minutes: $load_before at the start,
  $load_after at the end
- Store: $(describe_store)
- Tools: $(patch --version | head -n 1), $(auditctl -v)
- Date: $(date -u +%Y-%m-%d)
- To measure again and update this section: \`sudo bench/patch.sh --write\`,
  or \`sudo scripts/bench.sh\` for every benchmark.
EOF
)

printf '%s\n' "$section"

if $write; then
    write_section "$BEGIN_MARKER" "$END_MARKER" "$section"
fi
