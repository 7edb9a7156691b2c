#!/usr/bin/env bash
# Puts the figures of the other benchmarks into one table, one row per
# command, next to the original system's figures. That system ran LXC with
# aufs and a patched kernel, and its figures were measured in 2015 on other
# hardware with a Linux stable patch of 2,511 files. This script measures
# nothing itself. It reads the
# figures that bench/create.sh, diff.sh, exec.sh, merge.sh and patch.sh
# kept in the results folder, so run them first; scripts/bench.sh runs them
# all, then this script.
#
# Usage: bench/summary.sh [--write]
#
# Prints a Markdown section on stdout and progress on stderr. With --write it
# also replaces the section between the summary markers in docs/benchmarks.md.
#
# Environment:
#   WORLDS_BENCH_VERSIONS  the two package versions of the workload, older
#                          first (default: see bench/patch.sh)
#   WORLDS_BENCH_CACHE     where the packages, their trees and the patch are
#                          kept (default /var/tmp/worlds-bench)
#   WORLDS_BENCH_RESULTS   where the other benchmarks kept their figures
#                          (default: results/ in the cache)
#   WORLDS_BENCH_STARTED   the Unix time at which scripts/bench.sh started,
#                          to report how long the whole run took
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

readonly BEGIN_MARKER='<!-- summary:begin -->'
readonly END_MARKER='<!-- summary:end -->'

parse_arguments "$@"

[[ -d $results ]] || die "no results in $results; run scripts/bench.sh, or the benchmarks in bench/ first"

# Prints the median of the figures of result NAME and their range, such as
# "12.3 ms (10.1–15.2)", or "not measured" when there is no such result.
cell() {
    local file=$results/$1 median min max
    if [[ ! -s $file ]]; then
        printf 'not measured'
        return
    fi
    read -r median min max < <(summarize "$file")
    printf '%s ms (%s–%s)' "$median" "$min" "$max"
}

# Prints the ratio of the medians of results NAME and BASELINE, such as
# "1.25×", or "–" when either is missing.
ratio_cell() {
    if [[ -s $results/$1 && -s $results/$2 ]]; then
        printf '%s×' "$(median_ratio "$results/$1" "$results/$2")"
    else
        printf '–'
    fi
}

# Prints one row: LABEL, the worlds result, the original system's method
# reproduced and the floor (result names, or "" for none), the two ratios
# of the worlds result to them, and the original system's figure.
row() {
    local label=$1 ours=$2 original=$3 floor=$4 paper=$5 original_cell=– floor_cell=–
    local over_original=– over_floor=–
    if [[ -n $original ]]; then
        original_cell="$(cell "$original")"
        over_original=$(ratio_cell "$ours" "$original")
    fi
    if [[ -n $floor ]]; then
        floor_cell="$(cell "$floor")"
        over_floor=$(ratio_cell "$ours" "$floor")
    fi
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$label" "$(cell "$ours")" \
        "$original_cell" "$over_original" "$floor_cell" "$over_floor" "$paper"
}

prepare_workload
runs=$(for file in "$results"/*; do wc -l <"$file"; done | sort -n | head -n 1)
set_trial_note "$runs"
oldest=$(find "$results" -type f -printf '%T@ %p\n' | sort -n | head -n 1 | cut -d ' ' -f 2-)
duration=
if [[ -n ${WORLDS_BENCH_STARTED:-} ]]; then
    duration="
- The whole run of \`scripts/bench.sh\` took $((($(date +%s) - WORLDS_BENCH_STARTED + 30) / 60)) minutes."
fi

table=$(
    printf '| command | worlds | original method on this machine | worlds / original | floor | worlds / floor | original system, 2015 |\n'
    printf '| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n'
    row "create a child of the tree" create-create-linux create-overlay-linux create-snapshot-linux "2.84 s"
    row "apply the patch in the child, no tracking" patch-world-off patch-overlay patch-bare "3.03 s bare, +6 % in a child"
    row "apply the patch in the child, tracking on" patch-world-on patch-overlay-audit patch-bare "+14 % with auditing"
    row "list the changes (\`world diff\`)" diff-fast diff-upper diff-walk "0.71 s"
    row "list the access set (\`world set\`)" patch-set "" "" "–"
    row "merge the child into its parent" merge-worlds merge-overlay merge-floor "1.21 s"
    row "delete the patched child" patch-delete-world "" patch-delete-snapshot "0.05 s"
    row "delete an unchanged child" create-delete-linux create-overlay-delete-linux create-snapshot-delete-linux "–"
    row "run \`true\` in a running world" exec-world "" exec-nsenter "–"
)

section=$(cat <<EOF
## Summary: every command next to the original system

${trial}The workload is the one of the original system's evaluation: a Linux
stable update applied to a kernel tree in a child, whose changes are then
listed and merged into its parent. Here the tree is Debian's
\`$SOURCE_PACKAGE\` $old_version and the update is the difference to
$new_version, made with \`diff -ruN --no-dereference\` between the two
package versions fetched with \`apt-get download\`. It touches $patch_files
files ($patch_size). The original system's patch touched 2,511 files (4.7 MB).

Each cell is the median with the range (min to max) in brackets, from the
section of this page that measured it. The original method is the original
system's way of doing the same step, reproduced on this machine with
overlayfs in place of aufs and auditd for its access tracking, on the same
data in the same run. The floor is the least work that does the step
without worlds: a bare \`btrfs subvolume snapshot\`, \`patch\` outside any
world, a \`find\` metadata walk of the tree, \`cp --reflink\` of the changed
files, \`btrfs subvolume delete\` and \`nsenter\`. The last column contains
the original system's figures as its authors published them, measured in
2015 on other hardware. Its absolute times do not compare with ours, but
its overheads of the patch run do compare with our ratios to the floor.
Each section below gives the load average during its run.

$table

Where a row reads "not measured", the section of that command says why.

- Machine: $(describe_machine)
- Figures kept in \`$results\` by the benchmarks; the oldest was written
  $(date -u -r "$oldest" '+%Y-%m-%d %H:%M UTC').$duration
- To measure again and update this page: \`sudo scripts/bench.sh\`.
EOF
)

printf '%s\n' "$section"

if $write; then
    write_section "$BEGIN_MARKER" "$END_MARKER" "$section"
fi
