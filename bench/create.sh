#!/usr/bin/env bash
# Times `world create` of a child of a root world that holds the Linux 6.1
# source tree against a child of an empty busybox world, and against the
# floor of one plain `btrfs subvolume snapshot`. A snapshot costs the same
# whatever the size of its source, so the two medians should be close.
#
# Usage: sudo bench/create.sh [--write]
#
# Prints a Markdown section on stdout and progress on stderr. With --write it
# also replaces the section between the create markers in docs/benchmarks.md.
#
# Environment:
#   WORLDS_BENCH_RUNS   timed runs of each command (default 21)
#   WORLDS_BENCH_CACHE  where the linux-source .deb and its tarball are kept
#                       between runs (default /var/tmp/worlds-bench)
#   CARGO_TARGET_DIR    where the release build goes (default
#                       /tmp/worlds-bench-target, apart from debug builds)
#
# It needs root, apt-get and about 2 GB of free space in the cache and in
# the temporary folder.
set -euo pipefail

readonly SOURCE_PACKAGE=linux-source-6.1
readonly BEGIN_MARKER='<!-- create:begin -->'
readonly END_MARKER='<!-- create:end -->'

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
runs=${WORLDS_BENCH_RUNS:-21}
cache=${WORLDS_BENCH_CACHE:-/var/tmp/worlds-bench}
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
[[ $EUID -eq 0 ]] || die "run as root: worlds mounts its pool and makes btrfs snapshots"

# Installs the Debian packages that are missing, updating the package lists
# only when something has to be installed.
install_missing() {
    local missing=() package
    for package in "$@"; do
        if [[ $(dpkg-query -W -f='${Status}' "$package" 2>/dev/null) != "install ok installed" ]]; then
            missing+=("$package")
        fi
    done
    if ((${#missing[@]} > 0)); then
        log "installing ${missing[*]}"
        apt-get update >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >&2
    fi
}

# Prints the path of the newest linux-source .deb in the cache, downloading
# one when the cache has none.
fetch_source_deb() {
    mkdir -p "$cache"
    local debs
    shopt -s nullglob
    debs=("$cache/${SOURCE_PACKAGE}"_*.deb)
    shopt -u nullglob
    if ((${#debs[@]} == 0)); then
        log "downloading $SOURCE_PACKAGE into $cache"
        # A stale package list names a version the archive no longer has.
        if ! (cd "$cache" && apt-get download "$SOURCE_PACKAGE" >&2); then
            log "download failed; updating the package lists and trying again"
            apt-get update >&2
            (cd "$cache" && apt-get download "$SOURCE_PACKAGE" >&2)
        fi
        shopt -s nullglob
        debs=("$cache/${SOURCE_PACKAGE}"_*.deb)
        shopt -u nullglob
        ((${#debs[@]} > 0)) || die "apt-get download left no $SOURCE_PACKAGE .deb in $cache"
    fi
    printf '%s\n' "${debs[@]}" | sort -V | tail -n 1
}

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
# nanoseconds. Bash's EPOCHREALTIME is read without starting a process, so
# the figure holds the command alone and no `date` of our own.
time_ns() {
    local start end
    start=$EPOCHREALTIME
    if ! "$@" >"$store/output" 2>&1; then
        log "failed: $*"
        cat "$store/output" >&2
        return 1
    fi
    end=$EPOCHREALTIME
    # EPOCHREALTIME is seconds with exactly six decimals, after a point or a
    # comma depending on the locale.
    echo $(( (${end//[.,]/} - ${start//[.,]/}) * 1000 ))
}

# Leaves the machine as it was: no pool mount, no loop device and no
# temporary folder, even after a failure.
cleanup() {
    local status=$?
    set +e
    if [[ -n ${store:-} && -d $store ]]; then
        if mountpoint -q "$store/pool"; then
            "$world" --store "$store" --quiet store unmount \
                || umount "$store/pool" \
                || log "could not unmount $store/pool"
        fi
        # The loop device detaches by itself once the pool is unmounted, but
        # the kernel may take a moment. One still attached to our image after
        # that is a leftover to detach by hand.
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
    if [[ -n ${loops_before+set} ]]; then
        if [[ $(losetup -a) != "$loops_before" ]]; then
            log "loop devices differ from before the run:"
            losetup -a >&2
            status=1
        fi
        if [[ $(grep btrfs /proc/self/mounts || true) != "$mounts_before" ]]; then
            log "btrfs mounts differ from before the run:"
            grep btrfs /proc/self/mounts >&2
            status=1
        fi
    fi
    exit "$status"
}

install_missing btrfs-progs busybox-static xz-utils

log "building the release binary in $CARGO_TARGET_DIR"
(cd "$repo" && cargo build --release --quiet -p world-cli) >&2
world=$CARGO_TARGET_DIR/release/world

deb=$(fetch_source_deb)
version=$(dpkg-deb -f "$deb" Version)
tarball=$cache/${SOURCE_PACKAGE}_$version.tar.xz
log "workload: $SOURCE_PACKAGE $version ($deb)"
if [[ ! -f $tarball ]]; then
    log "extracting usr/src/$SOURCE_PACKAGE.tar.xz from the .deb"
    dpkg-deb --fsys-tarfile "$deb" \
        | tar -xO -f - "./usr/src/$SOURCE_PACKAGE.tar.xz" >"$tarball.partial"
    mv "$tarball.partial" "$tarball"
fi

loops_before=$(losetup -a)
mounts_before=$(grep btrfs /proc/self/mounts || true)
trap cleanup EXIT
store=$(mktemp -d -t worlds-bench.XXXXXX)
pool=$store/pool
timings=$store/timings
mkdir "$timings"

log "creating root world linux from $tarball"
"$world" --store "$store" --quiet init linux --from-tar "$tarball" --pool-size 8G
log "creating root world empty with busybox"
"$world" --store "$store" --quiet init empty --busybox
linux_root=$("$world" --store "$store" show linux --json | jq -er .path)
entries=$(find "$linux_root" -mindepth 1 | wc -l)
files=$(find "$linux_root" -type f | wc -l)
log "the linux world holds $entries entries, $files of them regular files"

# Deleted subvolumes are cleaned up by a kernel thread, and a snapshot
# commits the pool's open transaction. Waiting for both after each run keeps
# the last run's deletion out of the next run's figure.
settle() {
    btrfs subvolume sync "$pool" >/dev/null
    btrfs filesystem sync "$pool" >/dev/null
}

create_child() {
    local parent=$1 label=$2
    time_ns "$world" --store "$store" --quiet create child "$parent" >>"$timings/$label"
    "$world" --store "$store" --quiet delete child
    settle
}

snapshot_floor() {
    time_ns btrfs subvolume snapshot "$linux_root" "$pool/floor" >>"$timings/floor"
    btrfs subvolume delete "$pool/floor" >/dev/null
    settle
}

log "warming up: one untimed run of each"
for label in linux empty; do
    "$world" --store "$store" --quiet create child "$label"
    "$world" --store "$store" --quiet delete child
done
btrfs subvolume snapshot "$linux_root" "$pool/floor" >/dev/null
btrfs subvolume delete "$pool/floor" >/dev/null
settle

log "timing $runs runs of each, interleaved"
for ((run = 1; run <= runs; run++)); do
    # Alternate which parent goes first, so neither always follows the
    # floor snapshot.
    if ((run % 2)); then
        create_child linux linux
        create_child empty empty
    else
        create_child empty empty
        create_child linux linux
    fi
    snapshot_floor
done

read -r linux_median linux_min linux_max < <(summarize "$timings/linux")
read -r empty_median empty_min empty_max < <(summarize "$timings/empty")
read -r floor_median floor_min floor_max < <(summarize "$timings/floor")
ratio=$(awk -v a="$linux_median" -v b="$empty_median" 'BEGIN { printf "%.2f", a / b }')

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
memory=$(awk '/^MemTotal:/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
store_fs=$(findmnt -n -o FSTYPE -T "$store")
commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=
if git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null | grep -q .; then
    dirty=", with uncommitted changes"
fi

section=$(cat <<EOF
## Creating a child world

\`world create CHILD PARENT\` makes two btrfs snapshots of PARENT and records
CHILD in the store's database, so its time should not depend on the size of
PARENT. Here PARENT is either a root world holding the Linux source tree
(Debian's \`$SOURCE_PACKAGE\` $version, $entries files and directories, $files
of them regular files) or an empty world built with \`--busybox\`. The floor
is one \`btrfs subvolume snapshot\` of the Linux world, one command making one
snapshot.

| command | median | min | max |
| --- | ---: | ---: | ---: |
| \`world create\` from the Linux world | $linux_median ms | $linux_min ms | $linux_max ms |
| \`world create\` from the empty world | $empty_median ms | $empty_min ms | $empty_max ms |
| \`btrfs subvolume snapshot\` of the Linux world | $floor_median ms | $floor_min ms | $floor_max ms |

Ratio of the medians, Linux over empty: **$ratio**.

Each figure covers $runs runs of the whole command, from its start to its
exit, after one untimed warm-up run. The runs of the three commands are
interleaved. After each run the child is deleted and the script waits until
btrfs has cleaned up the deleted subvolumes and committed its transaction,
outside the timed part.

- Script: \`bench/create.sh\`, worlds $commit$dirty, release build
- Machine: $(nproc) CPUs ($cpu), $memory of memory, Linux $(uname -r)
- Store: a temporary folder on $store_fs, so the pool is a btrfs image on a
  loop device ($(btrfs --version))
- Date: $(date -u +%Y-%m-%d)
EOF
)

printf '%s\n' "$section"

if $write; then
    doc=$repo/docs/benchmarks.md
    mkdir -p "$(dirname "$doc")"
    if [[ ! -f $doc ]]; then
        cat >"$doc" <<'EOF'
# Benchmarks

Measured performance of worlds. Each figure is the median of N runs with
the range (min to max) beside it, and each section was measured in one
session on the machine it describes. To measure again and update this page,
run `scripts/bench.sh` as root.
EOF
    fi
    if ! grep -qF "$BEGIN_MARKER" "$doc"; then
        printf '\n%s\n%s\n' "$BEGIN_MARKER" "$END_MARKER" >>"$doc"
    fi
    section_file=$store/section.md
    printf '%s\n' "$section" >"$section_file"
    awk -v begin="$BEGIN_MARKER" -v end="$END_MARKER" -v file="$section_file" '
        $0 == begin {
            print
            while ((getline line < file) > 0) print line
            skipping = 1
            next
        }
        $0 == end { skipping = 0 }
        !skipping { print }
    ' "$doc" >"$doc.new"
    mv "$doc.new" "$doc"
    log "updated $doc"
fi
