# Shared helpers of the benchmark scripts in bench/: argument parsing, the
# release build, the Linux source workload, timing, the temporary store and
# its cleanup, and the sections of docs/benchmarks.md. Meant to be sourced
# after `set -euo pipefail`, not run.
#
# Globals set here: repo, cache, results, write and CARGO_TARGET_DIR. start_store
# sets store, the temporary store folder, and build_world sets world, the
# release binary copied into it, and revision, the code it was built from.

readonly SOURCE_PACKAGE=linux-source-6.1

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${WORLDS_BENCH_CACHE:-/var/tmp/worlds-bench}
results=${WORLDS_BENCH_RESULTS:-$cache/results}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/worlds-bench-target}
write=false

log() { printf '%s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Reads the arguments every benchmark takes: --write, or --help to print the
# header comment of the script.
parse_arguments() {
    local arg
    for arg in "$@"; do
        case $arg in
            --write) write=true ;;
            -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
            *) die "unknown argument \`$arg\`; the only option is --write" ;;
        esac
    done
}

require_root() {
    [[ $EUID -eq 0 ]] || die "run as root: worlds mounts its pool and makes btrfs snapshots"
}

# Fails unless VALUE, read from the environment variable NAME, is a positive
# integer.
require_positive() {
    local name=$1 value=$2
    [[ $value =~ ^[1-9][0-9]*$ ]] || die "$name must be a positive integer, not \`$value\`"
}

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

# Builds the release binary, copies it into the store folder and sets
# `world` to the copy and `revision` to what it was built from. Other
# worktrees may build into the same CARGO_TARGET_DIR during the run, and the
# copy keeps their binary out of it. With WORLDS_BENCH_REVISION set, it
# builds that commit, exported into the store folder, instead of the working
# tree, so that edits others make to the tree meanwhile stay out of the
# figures. Each argument names an example of the worlds crate, in
# lib/examples, to build as well. Its binary is copied into the store
# folder under its own name. Call start_store first.
build_world() {
    local source=$repo commit
    if [[ -n ${WORLDS_BENCH_REVISION:-} ]]; then
        commit=$(git -C "$repo" rev-parse --verify --short "$WORLDS_BENCH_REVISION^{commit}") \
            || die "WORLDS_BENCH_REVISION names no commit: \`$WORLDS_BENCH_REVISION\`"
        source=$store/source
        mkdir "$source"
        git -C "$repo" archive "$commit" | tar -x -C "$source"
        revision="worlds $commit"
    else
        revision=$(describe_revision)
    fi
    # The build needs the C toolchain and libseccomp that the test script
    # installs; their list is in scripts/lib/setup.sh.
    local build_packages
    read -r -a build_packages < <(bash -c '. "$1"; echo "${WORLDS_BUILD_PACKAGES[@]}"' _ "$repo/scripts/lib/setup.sh")
    install_missing "${build_packages[@]}"
    log "building the release binary of $revision in $CARGO_TARGET_DIR"
    (cd "$source" && cargo build --release --quiet -p world-cli) >&2
    cp "$CARGO_TARGET_DIR/release/world" "$store/world"
    world=$store/world
    local example
    for example in "$@"; do
        (cd "$source" && cargo build --release --quiet -p worlds --example "$example") >&2
        cp "$CARGO_TARGET_DIR/release/examples/$example" "$store/$example"
    done
}

# Prints the cached linux-source .deb files of VERSION, or of every version
# without one, oldest first.
cached_source_debs() {
    local version=${1:-} debs
    shopt -s nullglob
    # The version stays inside the quotes, so that characters such as `+` or
    # `~` in it match only themselves. The glob outside the quotes matches
    # the architecture, and the version too when none was given.
    if [[ -n $version ]]; then
        debs=("$cache/${SOURCE_PACKAGE}_${version}"_*.deb)
    else
        debs=("$cache/${SOURCE_PACKAGE}"_*.deb)
    fi
    shopt -u nullglob
    if ((${#debs[@]} > 0)); then
        printf '%s\n' "${debs[@]}" | sort -V
    fi
}

# Prints the path of the linux-source .deb of VERSION in the cache,
# downloading it when the cache has none. Without VERSION it prints the
# newest .deb in the cache, or downloads the newest version when the cache
# has none.
fetch_source_deb() {
    local version=${1:-}
    local request=$SOURCE_PACKAGE${version:+=$version}
    mkdir -p "$cache"
    if [[ -z $(cached_source_debs "$version") ]]; then
        log "downloading $request into $cache"
        # A stale package list names a version the archive no longer has.
        if ! (cd "$cache" && apt-get download "$request" >&2); then
            log "download failed; updating the package lists and trying again"
            apt-get update >&2
            (cd "$cache" && apt-get download "$request" >&2)
        fi
        [[ -n $(cached_source_debs "$version") ]] \
            || die "apt-get download left no .deb of $request in $cache"
    fi
    cached_source_debs "$version" | tail -n 1
}

# Prints the path of the source tarball inside DEB, extracting it into the
# cache the first time.
source_tarball() {
    local deb=$1 version tarball
    version=$(dpkg-deb -f "$deb" Version)
    tarball=$cache/${SOURCE_PACKAGE}_$version.tar.xz
    if [[ ! -f $tarball ]]; then
        log "extracting usr/src/$SOURCE_PACKAGE.tar.xz from $deb"
        dpkg-deb --fsys-tarfile "$deb" \
            | tar -xO -f - "./usr/src/$SOURCE_PACKAGE.tar.xz" >"$tarball.partial"
        mv "$tarball.partial" "$tarball"
    fi
    printf '%s\n' "$tarball"
}

# The minimum number of stable updates between the two versions that
# choose_versions picks by itself.
readonly MIN_UPDATES_APART=16
# The range of files that a patch between the two versions should touch:
# the workload is an update of a few thousand files.
readonly MIN_PATCH_FILES=1000
readonly MAX_PATCH_FILES=20000

# Prints the versions of the source package that apt-cache lists, oldest
# first.
listed_versions() {
    apt-cache madison "$SOURCE_PACKAGE" | awk -F '|' '{ gsub(/ /, "", $2); print $2 }' | sort -uV
}

# Prints the older and the newer version of the workload on one line. They
# are those of WORLDS_BENCH_VERSIONS, else those of the newest patch in the
# cache, so that reruns reuse it. Else they are two that apt-cache lists:
# the newest, and the newest one at least MIN_UPDATES_APART stable updates
# older.
choose_versions() {
    local old new patches newest versions
    if [[ -n ${WORLDS_BENCH_VERSIONS:-} ]]; then
        read -r old new <<<"$WORLDS_BENCH_VERSIONS"
        [[ -n ${new:-} ]] || die "WORLDS_BENCH_VERSIONS must name two versions, older first, not \`$WORLDS_BENCH_VERSIONS\`"
        log "versions $old and $new, from WORLDS_BENCH_VERSIONS"
        printf '%s %s\n' "$old" "$new"
        return
    fi

    shopt -s nullglob
    patches=("$cache/${SOURCE_PACKAGE}"_*_to_*.patch)
    shopt -u nullglob
    if ((${#patches[@]} > 0)); then
        newest=$(printf '%s\n' "${patches[@]}" | sort -V | tail -n 1)
        newest=${newest##*/}
        newest=${newest#"${SOURCE_PACKAGE}"_}
        newest=${newest%.patch}
        log "versions ${newest%%_to_*} and ${newest##*_to_}, those of the newest patch in $cache"
        printf '%s %s\n' "${newest%%_to_*}" "${newest##*_to_}"
        return
    fi

    versions=$(listed_versions)
    if (($(grep -c . <<<"$versions") < 2)); then
        log "apt-cache lists fewer than two versions of $SOURCE_PACKAGE; updating the package lists"
        apt-get update >&2
        versions=$(listed_versions)
    fi
    (($(grep -c . <<<"$versions") >= 2)) \
        || die "apt-cache lists fewer than two versions of $SOURCE_PACKAGE; set WORLDS_BENCH_VERSIONS"
    # A version reads 6.1.STABLE-DEBIAN. Take the newest, and the newest
    # whose stable update is at least MIN_UPDATES_APART older, or else the
    # oldest listed.
    read -r old new < <(awk -v apart="$MIN_UPDATES_APART" '
        { version[NR] = $0; split($0, part, /[.-]/); update[NR] = part[3] + 0 }
        END {
            old = version[1]
            for (i = 1; i < NR; i++)
                if (update[i] <= update[NR] - apart) old = version[i]
            print old, version[NR]
        }' <<<"$versions")
    log "versions $old and $new: the newest that apt-cache lists, and the newest" \
        "at least $MIN_UPDATES_APART stable updates older (set WORLDS_BENCH_VERSIONS for others)"
    printf '%s %s\n' "$old" "$new"
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
# with `diff -ruN --no-dereference` between their trees the first time.
# Without --no-dereference, diff follows the symlinks under scripts/dtc and
# the patch then fails to apply. Its paths start with two folders, so it
# applies with -p2 inside the linux-source-6.1 folder.
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

# Downloads, extracts and diffs the two versions of the workload where the
# cache lacks them, and prints which versions it uses. Sets old_version,
# new_version, old_tree (the folder that contains linux-source-6.1/),
# patch_file, patch_files (files in the patch), patch_size (such as
# "10.9 MB") and unpatched_files (files that differ but that diff writes no
# patch for: binary files and symlinks whose targets differ).
prepare_workload() {
    read -r old_version new_version < <(choose_versions)
    old_tree=$(source_tree "$old_version")
    patch_file=$(make_patch "$old_version" "$new_version")
    patch_files=$(grep -c '^diff ' "$patch_file")
    patch_size=$(stat -c %s "$patch_file" | awk '{ printf "%.1f MB", $1 / 1e6 }')
    unpatched_files=$(grep -cE '^(Binary files |Symbolic links |File .* is a )' "$patch_file" || true)
    log "workload: $SOURCE_PACKAGE $old_version patched up to $new_version," \
        "$patch_files files in the patch ($unpatched_files more differ but are not in it), $patch_size"
    if ((patch_files < MIN_PATCH_FILES || patch_files > MAX_PATCH_FILES)); then
        log "warning: the patch touches $patch_files files, outside the $MIN_PATCH_FILES to" \
            "$MAX_PATCH_FILES that the figures assume; set WORLDS_BENCH_VERSIONS to two other versions"
    fi
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

# Prints the ratio of the medians of the nanosecond figures in FILE and
# BASELINE, with two decimals.
median_ratio() {
    local median baseline_median
    read -r median _ < <(summarize "$1")
    read -r baseline_median _ < <(summarize "$2")
    awk -v a="$median" -v b="$baseline_median" 'BEGIN { printf "%.2f\n", a / b }'
}

# Prints the header of the tables that table_row fills. FIRST names the
# first column (default: command), and EXTRA, when given, a last column.
table_header() {
    local first=${1:-command} extra=${2:-}
    printf '| %s | runs | median | range (min–max) | ratio to baseline |%s\n' "$first" "${extra:+ $extra |}"
    printf '| --- | ---: | ---: | ---: | ---: |%s\n' "${extra:+ ---: |}"
}

# Prints a table row for the nanosecond figures in FILE: LABEL, the number
# of runs, the median and the range in milliseconds, and the ratio of the
# median to that of BASELINE, then EXTRA when given. The ratio reads
# "baseline" when BASELINE is FILE itself and stays empty without BASELINE.
table_row() {
    local label=$1 file=$2 baseline=${3:-} extra=${4:-} median min max ratio=
    read -r median min max < <(summarize "$file")
    if [[ $baseline == "$file" ]]; then
        ratio=baseline
    elif [[ -n $baseline ]]; then
        ratio="$(median_ratio "$file" "$baseline")×"
    fi
    printf '| %s | %s | %s ms | %s–%s ms | %s |%s\n' "$label" "$(wc -l <"$file")" "$median" "$min" "$max" "$ratio" \
        "${extra:+ $extra |}"
}

# Prints a table row for a command that was not measured: LABEL, the
# REASON, and EXTRA when given.
table_row_skipped() {
    local label=$1 reason=$2 extra=${3:-}
    printf '| %s | 0 | not measured: %s | | |%s\n' "$label" "$reason" "${extra:+ $extra |}"
}

# Sets `trial` to a paragraph that marks a section as a trial run when
# RUNS, the fewest runs behind any of its figures, is below five, and to
# nothing otherwise.
set_trial_note() {
    trial=
    if (($1 < 5)); then
        trial="**Trial run.** Some figures in this section come from $1 runs, fewer
than five, which only checks that the script works. Run it with the
default run counts to measure.

"
    fi
}

# Keeps a copy of the nanosecond figures in FILE under NAME in the results
# folder, where bench/summary.sh reads them.
record_result() {
    local name=$1 file=$2
    mkdir -p "$results"
    cp "$file" "$results/$name"
}

# Sets `children_cpu_ns` to the user plus system CPU time of this shell's
# finished child processes so far. The `times` builtin must run in this
# shell and not in a subshell, which counts only its own children, so its
# output goes through a file and the figure through a global. Only
# builtins run here, so that no child of our own adds to the figure.
read_children_cpu() {
    times >"$store/times"
    local lines figure total=0
    mapfile -t lines <"$store/times"
    # The second line contains the children's user and system time, each like
    # 1m2.345s with a point or a comma.
    for figure in ${lines[1]}; do
        [[ $figure =~ ^([0-9]+)m([0-9]+)[.,]([0-9]{3})s$ ]] \
            || die "unexpected figure \`$figure\` from the times builtin"
        total=$((total + BASH_REMATCH[1] * 60000 + 10#${BASH_REMATCH[2]} * 1000 + 10#${BASH_REMATCH[3]}))
    done
    children_cpu_ns=$((total * 1000000))
}

# Runs a command with its standard output sent to /dev/null and prints how
# long it took in nanoseconds. Bash's EPOCHREALTIME is read without starting
# a process, so the figure covers the command alone and no `date` of our own.
# It also sets `cpu_ns` to the CPU time that the command used, user plus
# system, with the millisecond resolution of `times`. That figure depends
# less on other work on the machine. Standard error goes to a file in the
# store, shown if the command fails.
time_ns() {
    local start end cpu_before
    read_children_cpu
    cpu_before=$children_cpu_ns
    start=$EPOCHREALTIME
    if ! "$@" >/dev/null 2>"$store/errors"; then
        log "failed: $*"
        cat "$store/errors" >&2
        return 1
    fi
    end=$EPOCHREALTIME
    read_children_cpu
    cpu_ns=$((children_cpu_ns - cpu_before))
    # EPOCHREALTIME is seconds with exactly six decimals, after a point or a
    # comma depending on the locale.
    echo $(( (${end//[.,]/} - ${start//[.,]/}) * 1000 ))
}

# Makes the temporary store folder, sets `store` to it, and arranges for
# cleanup to run on exit.
start_store() {
    trap cleanup EXIT
    # Turn signals into an exit, so the cleanup runs on them too.
    trap 'exit 130' INT
    trap 'exit 143' TERM
    store=$(mktemp -d -t worlds-bench.XXXXXX)
}

# Leaves the machine as it was: no running world, no mount, no loop device
# and no temporary folder, even after a failure. A script that changes more
# sets `cleanup_hook` to a function that undoes it, which runs first. Only
# the loop devices and mounts of our own store are checked, because other
# programs on the machine may attach and detach theirs at any time.
cleanup() {
    local status=$?
    set +e
    if [[ -n ${cleanup_hook:-} ]]; then
        "$cleanup_hook"
    fi
    if [[ -n ${store:-} && -d $store ]]; then
        if [[ -x ${world:-} && -f $store/worlds.db ]] && mountpoint -q "$store/pool"; then
            "$world" --store "$store" --quiet stop --all --time 2 \
                || log "could not stop the worlds of $store"
        fi
        # Mounts of our own inside the store, such as overlays, go before the
        # pool that contains their folders, the last mounted first.
        local mount_point
        for mount_point in $(awk -v prefix="$store/" 'index($2, prefix) == 1 && $2 != prefix "pool" { print $2 }' /proc/self/mounts | tac); do
            umount "$mount_point" || log "could not unmount $mount_point"
        done
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
        if grep -qF " $store/" /proc/self/mounts; then
            log "kept $store because something in it is still mounted:"
            grep -F " $store/" /proc/self/mounts >&2
            status=1
        else
            rm -rf "$store"
        fi
        if losetup -a | grep -cF "$store/" >/dev/null; then
            log "loop devices of $store are still attached:"
            losetup -a | grep -F "$store/" >&2
            status=1
        fi
    fi
    exit "$status"
}

# Waits until btrfs has cleaned up the deleted subvolumes of the pool at
# POOL and committed its open transaction, so that neither happens during
# the next timed command. A kernel thread does the cleanup in the
# background, and it starts at a commit: without the first sync it would
# wait for the next periodic one (every 30 seconds by default).
settle() {
    btrfs filesystem sync "$1" >/dev/null
    btrfs subvolume sync "$1" >/dev/null
    btrfs filesystem sync "$1" >/dev/null
}

# Prints the machine for the bullet list of a section: CPUs, memory,
# kernel, the disk under the temporary folder, and whether it is a virtual
# machine.
describe_machine() {
    local cpu memory source disk kind=
    cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
    memory=$(awk '/^MemTotal:/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
    source=$(findmnt -n -o SOURCE -T "${TMPDIR:-/tmp}")
    disk=$(lsblk -d -n -o SIZE,ROTA "$source" 2>/dev/null \
        | awk '{ printf "%s, %s", $1, ($2 == "1" ? "reported as rotational" : "reported as solid state") }')
    # The kernel sets the hypervisor flag when it runs under one.
    if grep -qw hypervisor /proc/cpuinfo; then
        kind="a virtual machine whose host runs other work, so figures vary from run to run; "
    fi
    printf '%s%s CPUs (%s), %s of memory, Linux %s; the temporary folder is on %s (%s)\n' \
        "$kind" "$(nproc)" "$cpu" "$memory" "$(uname -r)" "$source" "${disk:-size unknown}"
}

# Prints the commit of the repository that was measured, noting uncommitted
# changes to the code that the release build was made from.
describe_revision() {
    local commit dirty=
    commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
    if git -C "$repo" status --porcelain -- Cargo.toml Cargo.lock lib cli 2>/dev/null | grep -c . >/dev/null; then
        dirty=", with uncommitted changes to the code"
    fi
    printf 'worlds %s%s\n' "$commit" "$dirty"
}

# Prints where the store was for the bullet list of a section.
describe_store() {
    local store_fs
    store_fs=$(findmnt -n -o FSTYPE -T "$store")
    printf 'a temporary folder on %s, so the pool is a btrfs image on a\n  loop device (%s)\n' \
        "$store_fs" "$(btrfs --version)"
}

# Replaces the lines between BEGIN and END in docs/benchmarks.md with
# SECTION, making the page or appending the two markers first where they are
# missing. The other sections stay as they are.
write_section() {
    local begin=$1 end=$2 section=$3
    local doc=$repo/docs/benchmarks.md
    mkdir -p "$(dirname "$doc")"
    if [[ ! -f $doc ]]; then
        cat >"$doc" <<'EOF'
# Benchmarks

Measured performance of worlds, next to the baselines that each command
replaces, measured in the same run on the same data. Each figure is the
median of its runs with the range (min to max) beside it, and each ratio
is a median over the median of the baseline that its table names. Each
section was measured in one session on the machine it describes. To
measure again and update this page, run `sudo scripts/bench.sh`.
EOF
    fi
    if ! grep -qF "$begin" "$doc"; then
        printf '\n%s\n%s\n' "$begin" "$end" >>"$doc"
    fi
    local section_file
    section_file=$(mktemp)
    printf '%s\n' "$section" >"$section_file"
    awk -v begin="$begin" -v end="$end" -v file="$section_file" '
        $0 == begin {
            print
            while ((getline line < file) > 0) print line
            skipping = 1
            next
        }
        $0 == end { skipping = 0 }
        !skipping { print }
    ' "$doc" >"$doc.new"
    rm -f "$section_file"
    mv "$doc.new" "$doc"
    log "updated $doc"
}
