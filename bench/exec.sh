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
#   WORLDS_BENCH_RUNS   timed runs of each command (default 201)
#   CARGO_TARGET_DIR    where the release build goes (default
#                       /tmp/worlds-bench-target, apart from debug builds)
#
# It needs root and util-linux's nsenter.
set -euo pipefail

readonly BEGIN_MARKER='<!-- exec:begin -->'
readonly END_MARKER='<!-- exec:end -->'

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
runs=${WORLDS_BENCH_RUNS:-201}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/worlds-bench-target}
write=false

log() { printf '%s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for arg in "$@"; do
    case $arg in
        --write) write=true ;;
        -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        *) die "unknown argument \`$arg\`; the only option is --write" ;;
    esac
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "WORLDS_BENCH_RUNS must be a positive integer, not \`$runs\`"
[[ $EUID -eq 0 ]] || die "run as root: worlds mounts its pool and runs containers"
command -v nsenter >/dev/null || die "nsenter not found; install util-linux"

# Prints the median, min and max of the nanosecond figures in FILE, in
# milliseconds with two decimals, separated by spaces.
summarize() {
    sort -n "$1" | awk '
        { value[NR] = $1 }
        END {
            if (NR % 2) median = value[(NR + 1) / 2]
            else median = (value[NR / 2] + value[NR / 2 + 1]) / 2
            printf "%.2f %.2f %.2f\n", median / 1e6, value[1] / 1e6, value[NR] / 1e6
        }'
}

# Runs a command with its output discarded and prints how long it took in
# nanoseconds, read from bash's EPOCHREALTIME without starting a process.
time_ns() {
    local start end
    start=$EPOCHREALTIME
    if ! "$@" >"$store/output" 2>&1; then
        log "failed: $*"
        cat "$store/output" >&2
        return 1
    fi
    end=$EPOCHREALTIME
    echo $(( (${end//[.,]/} - ${start//[.,]/}) * 1000 ))
}

# Stops the world and removes the store, its pool mount and loop device,
# even after a failure.
cleanup() {
    local status=$?
    set +e
    if [[ -n ${store:-} && -d $store ]]; then
        "$world" --store "$store" --quiet stop --all --time 2
        if mountpoint -q "$store/pool"; then
            umount "$store/pool" || log "could not unmount $store/pool"
        fi
        local device attempt
        for ((attempt = 0; attempt < 50; attempt++)); do
            [[ -z $(losetup -j "$store/pool.img" 2>/dev/null) ]] && break
            sleep 0.1
        done
        for device in $(losetup --list --noheadings --output NAME -j "$store/pool.img" 2>/dev/null); do
            log "detaching leftover loop device $device"
            losetup -d "$device"
        done
        if mountpoint -q "$store/pool"; then
            log "kept $store because its pool is still mounted"
            status=1
        else
            rm -rf "$store"
        fi
    fi
    exit "$status"
}

log "building the release binary in $CARGO_TARGET_DIR"
(cd "$repo" && cargo build --release --quiet -p world-cli) >&2
world=$CARGO_TARGET_DIR/release/world

trap cleanup EXIT
store=$(mktemp -d -t worlds-bench-exec.XXXXXX)
timings=$store/timings
mkdir "$timings"
"$world" --store "$store" --quiet init bench --busybox --pool-size 1G
"$world" --store "$store" --quiet start bench
init_pid=$("$world" --store "$store" show bench --json \
    | sed -n 's/^ *"init_pid": \([0-9]*\),*$/\1/p')
[[ -n $init_pid ]] || die "could not read the init pid of world bench"

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
read -r world_median world_min world_max < <(summarize "$timings/world")
read -r nsenter_median nsenter_min nsenter_max < <(summarize "$timings/nsenter")

kernel=$(uname -r)
cpus=$(nproc)
commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
section=$(cat <<EOF
## Running a command in a world

\`bench/exec.sh\` times \`world exec NAME true\` on a running busybox world
against \`nsenter\` into the same world's mount, uts, ipc, pid and cgroup
namespaces and its root, $runs runs each, interleaved, in one run of the
script. Times are wall clock in milliseconds, from bash's EPOCHREALTIME
around each command.

| command | median | min | max |
| --- | ---: | ---: | ---: |
| \`world exec bench true\` | $world_median | $world_min | $world_max |
| \`nsenter ... /bin/true\` | $nsenter_median | $nsenter_min | $nsenter_max |

Measured at commit $commit, kernel $kernel, $cpus CPUs, release build.
\`world exec\` also opens the store's database, loads libcontainer's state,
joins the world's cgroups and sets capabilities, which nsenter does not.
EOF
)
printf '%s\n' "$section"

if $write; then
    doc=$repo/docs/benchmarks.md
    [[ -f $doc ]] || printf '# Benchmarks\n' >"$doc"
    if ! grep -qF "$BEGIN_MARKER" "$doc"; then
        printf '\n%s\n%s\n' "$BEGIN_MARKER" "$END_MARKER" >>"$doc"
    fi
    section_file=$store/section.md
    printf '%s\n' "$section" >"$section_file"
    awk -v begin="$BEGIN_MARKER" -v end="$END_MARKER" -v file="$section_file" '
        $0 == begin { print; while ((getline line < file) > 0) print line; skipping = 1; next }
        $0 == end { skipping = 0 }
        !skipping { print }
    ' "$doc" >"$doc.new"
    mv "$doc.new" "$doc"
    log "wrote the exec section of $doc"
fi
