#!/usr/bin/env bash
# Times `world exec NAME true` on a running busybox world against nsenter
# into the same world's namespaces, in the same run. nsenter is the floor:
# it joins the namespaces and execs, while `world exec` also opens the
# store, loads the container state, joins the cgroup, drops capabilities
# and waits for the command.
#
# Usage: sudo bench/exec.sh [--write]
#
# Prints a Markdown section on stdout and progress on stderr. With --write it
# also replaces the section between the exec markers in docs/benchmarks.md.
#
# Environment:
#   WORLDS_BENCH_QUICK_RUNS  timed runs of each command (default 201)
#   WORLDS_BENCH_RESULTS     where the figures are kept for bench/summary.sh
#                            (default: results/ in /var/tmp/worlds-bench)
#   WORLDS_BENCH_REVISION    a commit to build and measure, such as HEAD,
#                            instead of the working tree
#   CARGO_TARGET_DIR         where the release build goes (default
#                            /tmp/worlds-bench-target, apart from debug
#                            builds)
#
# It needs root and util-linux's nsenter.
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

readonly BEGIN_MARKER='<!-- exec:begin -->'
readonly END_MARKER='<!-- exec:end -->'

runs=${WORLDS_BENCH_QUICK_RUNS:-201}

parse_arguments "$@"
require_positive WORLDS_BENCH_QUICK_RUNS "$runs"
require_root
command -v nsenter >/dev/null || die "nsenter not found; install util-linux"

install_missing busybox-static jq
start_store
build_world

load_before=$(cut -d ' ' -f 1-3 /proc/loadavg)
timings=$store/timings
mkdir "$timings"
"$world" --store "$store" --quiet init bench --busybox --pool-size 1G
"$world" --store "$store" --quiet start bench
init_pid=$("$world" --store "$store" show bench --json | jq -er .init_pid) \
    || die "could not read the init pid of world bench"

# nsenter joins the same namespaces as `world exec` (mount, uts, ipc, pid,
# cgroup; the network is the host's) and the world's root and directory.
nsenter_true=(nsenter --target "$init_pid" --mount --uts --ipc --pid --cgroup --root --wd /bin/true)
world_true=("$world" --store "$store" exec bench true)
"${nsenter_true[@]}" || die "nsenter into the world failed"
"${world_true[@]}" || die "world exec failed"

log "timing $runs runs of each, interleaved"
for ((run = 0; run < runs; run++)); do
    time_ns "${world_true[@]}" >>"$timings/world"
    time_ns "${nsenter_true[@]}" >>"$timings/nsenter"
done
load_after=$(cut -d ' ' -f 1-3 /proc/loadavg)

record_result exec-world "$timings/world"
record_result exec-nsenter "$timings/nsenter"
table=$(
    table_header
    table_row "\`world exec bench true\`" "$timings/world" "$timings/nsenter"
    table_row "floor: \`nsenter ... /bin/true\`" "$timings/nsenter" "$timings/nsenter"
)

set_trial_note "$runs"
section=$(cat <<EOF
## Running a command in a world

${trial}\`bench/exec.sh\` times \`world exec NAME true\` on a running busybox world
against \`nsenter\` into the same world's mount, uts, ipc, pid and cgroup
namespaces and its root, $runs runs each, interleaved, in one run of the
script. Times are wall clock, from bash's EPOCHREALTIME around each
command.

$table

\`world exec\` also opens the store's database, loads libcontainer's state,
joins the world's cgroups and sets capabilities, which nsenter does not.

- Script: \`bench/exec.sh\`, $revision, release build
- Machine: $(describe_machine)
- Load average over 1, 5 and 15 minutes: $load_before at the start,
  $load_after at the end
- Date: $(date -u +%Y-%m-%d)
- To measure again and update this section: \`sudo bench/exec.sh --write\`,
  or \`sudo scripts/bench.sh\` for every benchmark.
EOF
)
printf '%s\n' "$section"

if $write; then
    write_section "$BEGIN_MARKER" "$END_MARKER" "$section"
fi
