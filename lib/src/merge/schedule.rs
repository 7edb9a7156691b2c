//! Splitting the steps of an apply among threads.
//!
//! Steps are carried out in stages, one after the other. A stage is either
//! one range of steps that runs in order on one thread, or a few ranges
//! that run at the same time, one thread each. Only puts and metadata
//! steps share a stage. A stage is cut only before a step that no earlier
//! put of the stage must precede, because a step whose path, or a directory
//! above it, is put in an earlier range could find that directory missing.
//! Removals always run in order, because a directory is removed after its
//! contents.
#![expect(
    clippy::single_range_in_vec_init,
    reason = "a stage is a list of ranges, and a stage of one range is common"
)]

use std::collections::HashMap;
use std::ops::Range;

use super::apply::Step;

/// Returns the stages of carrying out `steps` on up to `threads` threads.
/// A run of puts and metadata steps shorter than `min_steps` stays on one
/// thread.
pub(super) fn stages(steps: &[Step], threads: usize, min_steps: usize) -> Vec<Vec<Range<usize>>> {
    let mut stages: Vec<Vec<Range<usize>>> = Vec::new();
    let mut index = 0;
    while index < steps.len() {
        let end = if matches!(steps[index], Step::Remove(_)) {
            index + 1
        } else {
            let length = steps[index..]
                .iter()
                .take_while(|step| !matches!(step, Step::Remove(_)))
                .count();
            index + length
        };
        let ranges = if end - index >= min_steps.max(2) && threads > 1 {
            split(steps, index..end, threads)
        } else {
            vec![index..end]
        };
        // Consecutive one-thread ranges join into one stage.
        match (stages.last_mut(), ranges.as_slice()) {
            (Some(last), [range]) if last.len() == 1 && last[0].end == range.start => {
                last[0].end = range.end;
            }
            _ => stages.push(ranges),
        }
        index = end;
    }
    stages
}

/// Splits the run of puts and metadata steps `run` into up to `threads`
/// ranges of about equal length, cutting only where no later step depends
/// on a put before the cut.
fn split(steps: &[Step], run: Range<usize>, threads: usize) -> Vec<Range<usize>> {
    // The latest earlier put that each step depends on: one of its own
    // path or of a directory above it.
    let mut last_put: HashMap<&[u8], usize> = HashMap::new();
    let mut depends_on = Vec::with_capacity(run.len());
    for index in run.clone() {
        let path = steps[index].path().as_bytes();
        let prefixes = std::iter::once(0)
            .chain(
                path.iter()
                    .enumerate()
                    .filter(|(_, byte)| **byte == b'/')
                    .map(|(slash, _)| slash),
            )
            .chain(std::iter::once(path.len()));
        let dependency = prefixes
            .filter_map(|end| last_put.get(&path[..end]).copied())
            .max();
        depends_on.push(dependency);
        if matches!(steps[index], Step::Put(_)) {
            last_put.insert(path, index);
        }
    }

    // A cut before step `k` is safe when no step from `k` on depends on a
    // put before `k`: the smallest dependency from `k` on is at `k` or later.
    let mut earliest_dependency = vec![usize::MAX; run.len() + 1];
    for offset in (0..run.len()).rev() {
        let dependency = depends_on[offset].unwrap_or(usize::MAX);
        earliest_dependency[offset] = earliest_dependency[offset + 1].min(dependency);
    }
    let safe = |cut: usize| earliest_dependency[cut - run.start] >= cut;

    let mut cuts = vec![run.start];
    for part in 1..threads {
        let even = run.start + run.len() * part / threads;
        let cut = (even.max(cuts[cuts.len() - 1] + 1)..run.end).find(|&cut| safe(cut));
        match cut {
            Some(cut) => cuts.push(cut),
            None => break,
        }
    }
    cuts.push(run.end);
    cuts.windows(2).map(|pair| pair[0]..pair[1]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::WorldPath;

    fn put(text: &str) -> Step {
        Step::Put(WorldPath::from_bytes(text.as_bytes()))
    }

    fn remove(text: &str) -> Step {
        Step::Remove(WorldPath::from_bytes(text.as_bytes()))
    }

    fn metadata(text: &str) -> Step {
        Step::SetMetadata(WorldPath::from_bytes(text.as_bytes()))
    }

    #[test]
    fn short_run_stays_on_one_thread() {
        let steps = [remove("b/x"), put("a"), put("b/y")];
        assert_eq!(stages(&steps, 4, 16), vec![vec![0..3]]);
    }

    #[test]
    fn long_run_split_evenly() {
        let steps: Vec<Step> = (0..8).map(|n| put(&format!("d/f{n}"))).collect();
        assert_eq!(stages(&steps, 2, 4), vec![vec![0..4, 4..8]]);
        assert_eq!(stages(&steps, 4, 4), vec![vec![0..2, 2..4, 4..6, 6..8]]);
        assert_eq!(stages(&steps, 1, 4), vec![vec![0..8]]);
    }

    #[test]
    fn cut_waits_for_directory_put() {
        // `new` is a directory put at 2, so nothing below it may start
        // before it: the cut moves past its contents.
        let steps = [
            put("a/1"),
            put("a/2"),
            put("new"),
            put("new/1"),
            put("new/2"),
            put("z/1"),
        ];
        assert_eq!(stages(&steps, 2, 4), vec![vec![0..5, 5..6]]);
    }

    #[test]
    fn byte_order_between_directory_and_contents() {
        // `a-x` sorts between `a` and `a/b`, so `a/b` still depends on the
        // put of `a` across it.
        let steps = [put("a"), put("a-x"), put("a/b"), put("c")];
        assert_eq!(stages(&steps, 2, 2), vec![vec![0..3, 3..4]]);
    }

    #[test]
    fn metadata_step_is_no_dependency() {
        let steps = [metadata("d"), put("d/1"), metadata("e"), put("e/1")];
        assert_eq!(stages(&steps, 2, 2), vec![vec![0..2, 2..4]]);
    }

    #[test]
    fn removals_run_alone_in_order() {
        let mut steps = vec![remove("x/1"), remove("x")];
        steps.extend((0..4).map(|n| put(&format!("f{n}"))));
        steps.push(remove("y"));
        assert_eq!(
            stages(&steps, 2, 4),
            vec![vec![0..2], vec![2..4, 4..6], vec![6..7]]
        );
    }

    #[test]
    fn no_safe_cut_keeps_one_range() {
        let steps = [put(""), put("a"), put("b"), put("c")];
        assert_eq!(stages(&steps, 2, 2), vec![vec![0..4]]);
    }
}
