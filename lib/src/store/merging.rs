//! Merge, undo and the recovery of interrupted merges.
//!
//! A merge runs under the store lock in these steps, each recorded in the
//! journal (table `merges`) before the next starts:
//!
//! 1. plan from both sides' changes since the child's base; stop on
//!    conflicts or for a dry run, having changed nothing;
//! 2. journal the merge as `preparing` and take a read-only pre-merge
//!    snapshot of the parent, `premerge/ID.parent`;
//! 3. build the child's new base in `tmp/merge.ID.base` (old base plus the
//!    applied and identical changes);
//! 4. journal `applying`, then apply the steps to the parent, with its
//!    processes frozen if it runs, so they see every change at once;
//! 5. journal `publishing`, keep a snapshot of the old base as
//!    `premerge/ID.base` and put the new base in its place;
//! 6. journal `done` with the operation log entry in one transaction.
//!
//! A merge interrupted in `preparing` or `applying` is rolled back by the
//! next command: the parent returns to its pre-merge snapshot through the
//! same apply engine, and the child keeps its old base. One interrupted in
//! `publishing` is completed instead, since the parent already has every
//! change. Either way the command reports which.
//!
//! The plan's read-write conflicts come from the child's access set
//! ([`crate::track`]): the paths it read or executed since its base. When
//! that set has gaps, the outcome reports it, because a conflict may be
//! missed.
//! A published merge moves the child's base and empties its access set.
//!
//! # Limitations
//!
//! - `world undo` gives the child its old base back but not the access set
//!   that the merge emptied.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::{
    remove_quietly, remove_subvolume, Cleanup, DiffSubject, Result, Store, StoreError, TMP_DIR,
};
use crate::db::{MergeState, Since};
use crate::diff::{engine, DiffOptions};
use crate::merge::apply;
use crate::merge::plan::{self, Plan, PlanOptions};
use crate::name::WorldName;
use crate::path::WorldPath;
use crate::sys::beneath::Dir;
use crate::sys::btrfs;

/// The kind of the intent that a command records before it freezes a
/// world for a merge, an undo or a recovery.
pub(super) const THAW_INTENT: &str = "thaw";

/// The start of the key of a thaw intent, before the world's name. The key
/// names no path of the pool.
const THAW_KEY_PREFIX: &str = "thaw:";

/// Returns the key of the thaw intent of world `name`.
pub(super) fn thaw_intent(name: &WorldName) -> String {
    format!("{THAW_KEY_PREFIX}{name}")
}

/// Returns the world of thaw intent `key`, or `None` for another key.
pub(super) fn thaw_intent_world(key: &str) -> Option<WorldName> {
    WorldName::new(key.strip_prefix(THAW_KEY_PREFIX)?).ok()
}

/// Files larger than this are not merged line by line.
const TEXT_MERGE_BYTES_MAX: u64 = 16 << 20;

/// Directory of the pool that keeps pre-merge snapshots for undo.
pub(super) const PREMERGE_DIR: &str = "premerge";
/// How often a merge tries to freeze a running parent before it fails.
const FREEZE_ATTEMPTS: u32 = 3;
/// Applies of at least this many steps start writing out the parent when
/// they are half done. The number is a rough guess of where the syncfs
/// after a smaller apply is short anyway.
const EARLY_SYNC_MIN_STEPS: usize = 1024;
/// How many merges into one parent keep their pre-merge snapshots, unless
/// [`MergeOptions::keep`] sets another number.
pub const KEEP_PREMERGE: usize = 5;

/// Options of [`Store::merge`].
#[derive(Debug, Clone, Default)]
pub struct MergeOptions {
    pub plan: PlanOptions,
    /// Compute and return the plan without changing anything.
    pub dry_run: bool,
    /// Refuse unless the child's parent is this world.
    pub expected_parent: Option<WorldName>,
    /// How many of the newest merges into the parent keep their pre-merge
    /// snapshots for undo; [`KEEP_PREMERGE`] when `None`.
    pub keep: Option<usize>,
}

/// The outcome of [`Store::merge`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct MergeOutcome {
    pub child: WorldName,
    pub parent: WorldName,
    /// The journal id of the merge, when it was applied.
    pub merge_id: Option<i64>,
    pub applied: bool,
    /// Whether the child's access set has no gaps; without it, read-write
    /// conflicts may be missed.
    pub read_set_complete: bool,
    #[serde(flatten)]
    pub plan: Plan,
}

/// The outcome of [`Store::undo`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct UndoOutcome {
    pub parent: WorldName,
    pub child: String,
    pub merge_id: i64,
    /// Number of steps that took the parent back.
    pub steps: usize,
}

/// The outcome of [`Store::create_combined`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct CombineOutcome {
    pub world: WorldName,
    pub parent: WorldName,
    /// Whether the world was made; false when a sibling conflicted.
    pub created: bool,
    /// The plan of merging each sibling, in order, up to the first one with
    /// conflicts.
    pub merges: Vec<SiblingMerge>,
}

/// The plan of merging one sibling into a combined world.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SiblingMerge {
    pub sibling: WorldName,
    #[serde(flatten)]
    pub plan: Plan,
}

/// A report of apply progress: steps done and steps in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergeProgress {
    pub done: usize,
    pub total: usize,
}

impl Store {
    fn premerge_path(&self, id: i64, side: &str) -> PathBuf {
        self.pool.join(PREMERGE_DIR).join(format!("{id}.{side}"))
    }

    fn new_base_path(&self, id: i64) -> PathBuf {
        self.pool.join(TMP_DIR).join(format!("merge.{id}.base"))
    }

    /// Merges the changes that child world `child` made since its base
    /// into its parent, all or nothing.
    ///
    /// Conflicts are not errors: the outcome carries them and `applied`
    /// stays false, with nothing changed.
    pub fn merge(
        &mut self,
        child: &WorldName,
        options: &MergeOptions,
        progress: &dyn Fn(MergeProgress),
    ) -> Result<MergeOutcome> {
        let _lock = self.lock()?;
        self.reconcile()?;
        let record = self.world(child)?;
        let Some(parent) = record.parent.clone() else {
            return Err(StoreError::NoBase {
                name: child.clone(),
            });
        };
        if let Some(expected) = &options.expected_parent {
            if expected != &parent {
                return Err(StoreError::WrongParent {
                    child: child.clone(),
                    expected: expected.clone(),
                    actual: Some(parent),
                });
            }
        }

        // Plan against both sides as they are now. A running side is read
        // through a read-only snapshot. A stopped one is read in place,
        // where its inodes are likely in the kernel's cache. No process can
        // change it meanwhile, because starting a world takes the store
        // lock, which this merge holds until it ends.
        let started = std::time::Instant::now();
        let child_view = self.open_diff(child, DiffSubject::World)?;
        let parent_view = self.open_diff(child, DiffSubject::Parent)?;
        let ours = child_view.changes(&DiffOptions::default())?;
        let theirs = parent_view.changes(&DiffOptions::default())?;
        let access_set = self.access_set(child, None)?;
        let reads: BTreeSet<WorldPath> = access_set.reads().cloned().collect();
        let same_data = |path: &WorldPath| {
            engine::same_data(child_view.world_root(), parent_view.world_root(), path)
                .unwrap_or(false)
        };
        let mut plan = plan::build(&ours, &theirs, &reads, &options.plan, &same_data);
        let merged_texts = text_merge(
            &mut plan,
            &ours,
            &theirs,
            &self.base_path(child),
            child_view.world_root(),
            parent_view.world_root(),
        );
        tracing::debug!(
            plan_ms = started.elapsed().as_millis() as u64,
            "merge planned"
        );
        let mut outcome = MergeOutcome {
            child: child.clone(),
            parent: parent.clone(),
            merge_id: None,
            applied: false,
            read_set_complete: access_set.is_complete(),
            plan,
        };
        if options.dry_run || !outcome.plan.conflicts.is_empty() {
            return Ok(outcome);
        }
        // With no step and nothing that the parent already has, the merge
        // would change neither the parent nor the child's base, so it is
        // not made: it would only take a slot of the pre-merge snapshots.
        let plan = &outcome.plan;
        if plan.steps.is_empty() && plan.identical.is_empty() && plan.kept_parent.is_empty() {
            return Ok(outcome);
        }

        // Text-merged files come from a writable snapshot of the child
        // that contains the merged content, and the child's base still
        // takes the child's own version, so its diff stays honest.
        let staging = self
            .pool
            .join(TMP_DIR)
            .join(format!("merge-src.{}.{child}", std::process::id()));
        let apply_source = if merged_texts.is_empty() {
            child_view.world_root().to_path_buf()
        } else {
            let staged = snapshot(child_view.world_root(), &staging, false).and_then(|()| {
                let root = Dir::open(&staging)?;
                for (path, content) in &merged_texts {
                    let (parent, name) = path.parent_and_name().ok_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "invalid text-merge path: the root",
                        )
                    })?;
                    let mut file = root
                        .open_dir(parent)?
                        .truncate_file(OsStr::from_bytes(name))?;
                    file.write_all(content)?;
                }
                Ok(())
            });
            if let Err(source) = staged {
                remove_quietly(&staging);
                return Err(StoreError::Merge {
                    child: child.clone(),
                    parent,
                    source,
                });
            }
            staging.clone()
        };

        let keep = options.keep.unwrap_or(KEEP_PREMERGE);
        let applied = self.apply_merge(
            child,
            &parent,
            &outcome.plan,
            Sources {
                child: child_view.world_root(),
                read_at: child_view.read_at(),
                apply: &apply_source,
            },
            keep,
            progress,
        );
        if !merged_texts.is_empty() {
            remove_quietly(&staging);
        }
        let id = match applied {
            Ok(id) => id,
            Err(error) => {
                // Roll the parent back now rather than at the next command.
                if let Err(recovery) = self.recover_merges() {
                    tracing::warn!(error = %recovery, "rolling back the failed merge failed; the next command retries");
                }
                return Err(error);
            }
        };
        outcome.merge_id = Some(id);
        outcome.applied = true;
        tracing::info!(child = %child, parent = %parent, merge = id, steps = outcome.plan.steps.len(), "merge published");
        Ok(outcome)
    }

    fn apply_merge(
        &mut self,
        child: &WorldName,
        parent: &WorldName,
        plan: &Plan,
        sources: Sources<'_>,
        keep: usize,
        progress: &dyn Fn(MergeProgress),
    ) -> Result<i64> {
        let merge_error = |source| StoreError::Merge {
            child: child.clone(),
            parent: parent.clone(),
            source,
        };
        let (source, apply_source, read_at) = (sources.child, sources.apply, sources.read_at);
        // Where the child's diffs search afterwards. The new base is a
        // snapshot of the child as read for this merge (`source`), so its
        // unchanged files keep the child's inodes and ctimes, and a complete
        // merge lets the child's search start where that read ended. A
        // partial one reverts some paths to the old base, whose older
        // changes the search must still find. The parent's search never
        // moves: the new base is not a snapshot of the parent.
        let old_base = self.base_path(child);
        let old_since = File::open(&old_base)
            .and_then(|dir| btrfs::subvolume_info(&dir))
            .map_err(merge_error)?
            .otransid;
        let record = self.world(child)?;
        // Explicit values, because undo brings the old base back as a new
        // snapshot, whose own creation is too late a starting point.
        let previous = Since {
            world: Some(record.since_world.unwrap_or(old_since)),
            parent: Some(record.since_parent.unwrap_or(old_since)),
        };
        let next = Since {
            world: Some(if plan.revert_steps.is_empty() {
                read_at
            } else {
                previous.world.unwrap_or(old_since)
            }),
            parent: previous.parent,
        };
        let started = std::time::Instant::now();
        let summary = serde_json::json!({ "steps": plan.steps, "revert_steps": plan.revert_steps });
        let writer = self.db.transaction()?;
        let id = writer.insert_merge(parent, child, &summary, previous, next)?;
        writer.commit()?;
        self.crash_at(super::CrashPoint::MergeJournaled);

        // The pre-merge snapshot and the new base, before the parent changes.
        create_dir_if_missing(&self.pool.join(PREMERGE_DIR)).map_err(merge_error)?;
        let premerge = self.premerge_path(id, "parent");
        snapshot(&self.world_path(parent), &premerge, true).map_err(merge_error)?;
        let new_base = self.new_base_path(id);
        snapshot(source, &new_base, false).map_err(merge_error)?;
        apply::apply(&new_base, &old_base, &plan.revert_steps, &|_| {}).map_err(|error| {
            StoreError::Apply {
                world: child.clone(),
                source: error,
            }
        })?;
        self.crash_at(super::CrashPoint::MergePrepared);

        let writer = self.db.transaction()?;
        writer.set_merge_state(id, MergeState::Applying)?;
        writer.commit()?;
        let prepared = std::time::Instant::now();
        let total = plan.steps.len();
        let crash_mid_merge = self.crash_point == Some(super::CrashPoint::MidMerge);
        let target = self.world_path(parent);
        // Half way through a long apply, a thread starts writing out what
        // it made so far, so that the syncfs after it has less to wait for.
        // An early commit changes nothing for recovery, because the journal
        // still records the merge as `applying`.
        let target_dir = File::open(&target).map_err(merge_error)?;
        let early_sync = std::sync::Once::new();
        let applied = std::thread::scope(|scope| {
            self.frozen(parent, |_| {
                apply::apply(&target, apply_source, &plan.steps, &|done| {
                    if crash_mid_merge && done * 2 >= total {
                        std::process::abort();
                    }
                    if total >= EARLY_SYNC_MIN_STEPS && done * 2 >= total {
                        early_sync.call_once(|| {
                            scope.spawn(|| sync_quietly(&target_dir));
                        });
                    }
                    progress(MergeProgress { done, total })
                })
            })
        });
        applied?.map_err(|error| StoreError::Apply {
            world: parent.clone(),
            source: error,
        })?;

        // The parent's new files must be on disk before the journal records
        // them, because a crash after `publishing` is rolled forward.
        let apply_done = std::time::Instant::now();
        sync_filesystem(&self.world_path(parent)).map_err(merge_error)?;
        let applied = std::time::Instant::now();
        self.crash_at(super::CrashPoint::MergeApplied);
        let writer = self.db.transaction()?;
        writer.set_merge_state(id, MergeState::Publishing)?;
        writer.commit()?;
        self.crash_at(super::CrashPoint::MergePublishing);
        self.publish_base(id, child).map_err(merge_error)?;
        self.crash_at(super::CrashPoint::BeforeMergeDone);
        let child_id = self.world(child)?.id;
        let writer = self.db.transaction()?;
        writer.set_merge_state(id, MergeState::Done)?;
        writer.set_since(child.as_str(), next)?;
        writer.clear_accesses(child_id)?;
        writer.log(
            "merge",
            Some(parent),
            &serde_json::json!({
                "merge": id,
                "child": child,
                "parent": parent,
                "steps": plan.steps.len(),
                "identical": plan.identical.len(),
                "kept_parent": plan.kept_parent.len(),
            }),
        )?;
        writer.commit()?;
        self.prune_premerge(parent, keep)?;
        tracing::debug!(
            prepare_ms = (prepared - started).as_millis() as u64,
            apply_ms = (apply_done - prepared).as_millis() as u64,
            sync_ms = (applied - apply_done).as_millis() as u64,
            publish_ms = applied.elapsed().as_millis() as u64,
            "merge applied"
        );
        Ok(id)
    }

    /// Creates `world` as a child of `parent` that also contains the changes of
    /// `siblings`, children of `parent` themselves, merged in order.
    ///
    /// Each sibling's changes since its base are planned against what the
    /// new world already contains that differs from that base: the parent's
    /// later changes and the siblings merged before it. A conflict between
    /// them removes the new world again and is returned, not applied.
    pub fn create_combined(
        &mut self,
        world: &WorldName,
        parent: &WorldName,
        siblings: &[WorldName],
    ) -> Result<CombineOutcome> {
        let _lock = self.lock()?;
        self.reconcile()?;
        for sibling in siblings {
            if self.world(sibling)?.parent.as_ref() != Some(parent) {
                return Err(StoreError::NotSibling {
                    sibling: sibling.clone(),
                    parent: parent.clone(),
                });
            }
        }
        self.make_child(world, parent)?;

        let mut outcome = CombineOutcome {
            world: world.clone(),
            parent: parent.clone(),
            created: true,
            merges: Vec::new(),
        };
        for sibling in siblings {
            let merged = self.merge_sibling(world, sibling);
            let blocked = match &merged {
                Ok(plan) => !plan.conflicts.is_empty(),
                Err(_) => true,
            };
            if blocked {
                // The half-combined world goes again; what was asked for
                // was all of them or nothing.
                self.delete_worlds(world, &super::DeleteOptions::default())?;
                outcome.created = false;
            }
            outcome.merges.push(SiblingMerge {
                sibling: sibling.clone(),
                plan: merged?,
            });
            if blocked {
                return Ok(outcome);
            }
        }
        let writer = self.db.transaction()?;
        writer.log(
            "combine",
            Some(world),
            &serde_json::json!({ "world": world, "parent": parent, "siblings": siblings }),
        )?;
        writer.commit()?;
        Ok(outcome)
    }

    /// Plans and applies the changes of `sibling` to the new world `world`,
    /// or returns the plan with its conflicts and applies nothing.
    fn merge_sibling(&mut self, world: &WorldName, sibling: &WorldName) -> Result<Plan> {
        let sibling_view = self.open_diff_snapshot(sibling, DiffSubject::World)?;
        let theirs_changes = sibling_view.changes(&DiffOptions::default())?;

        // What the new world contains that differs from the sibling's base:
        // the parent's changes since then and earlier siblings' changes.
        let record = self.world(sibling)?;
        let base = self.base_path(sibling);
        let diff_error = |source| StoreError::Diff {
            name: world.clone(),
            child: sibling.clone(),
            source,
        };
        let since = match record.since_parent {
            Some(since) => since,
            None => {
                File::open(&base)
                    .and_then(|base| btrfs::subvolume_info(&base))
                    .map_err(diff_error)?
                    .otransid
            }
        };
        let now = self
            .pool
            .join(TMP_DIR)
            .join(format!("combine.{}.{world}", std::process::id()));
        snapshot(&self.world_path(world), &now, true).map_err(diff_error)?;
        let sides = engine::Sides {
            base: &base,
            world: &now,
        };
        let ours = engine::fast(&sides, since);
        let same_data = |path: &WorldPath| {
            engine::same_data(sibling_view.world_root(), &now, path).unwrap_or(false)
        };
        let reads: BTreeSet<WorldPath> = self.access_set(sibling, None)?.reads().cloned().collect();
        let plan = ours.map(|ours| {
            plan::build(
                &theirs_changes,
                &ours,
                &reads,
                &PlanOptions::default(),
                &same_data,
            )
        });
        remove_quietly(&now);
        let plan = plan.map_err(diff_error)?;
        if !plan.conflicts.is_empty() {
            return Ok(plan);
        }

        apply::apply(
            &self.world_path(world),
            sibling_view.world_root(),
            &plan.steps,
            &|_| {},
        )
        .map_err(|error| StoreError::Apply {
            world: world.clone(),
            source: error,
        })?;
        Ok(plan)
    }

    /// Returns `parent` to its state before its last merge that can still
    /// be undone, and gives the merged child its old base back.
    pub fn undo(
        &mut self,
        parent: &WorldName,
        force: bool,
        progress: &dyn Fn(MergeProgress),
    ) -> Result<UndoOutcome> {
        let _lock = self.lock()?;
        self.reconcile()?;
        self.world(parent)?;
        let merges = self.db.merges(&[MergeState::Done], Some(parent.as_str()))?;
        let Some(last) = merges
            .into_iter()
            .rev()
            .find(|merge| self.premerge_path(merge.id, "parent").exists())
        else {
            return Err(StoreError::NothingToUndo {
                parent: parent.clone(),
            });
        };

        // The parent goes back to its pre-merge snapshot whole, so any path
        // that it changed since, outside the merge's own paths, would be
        // lost. Without `force`, such a change stops the undo.
        let mut known = None;
        if !force {
            let merged = self.db.merge_step_paths(last.id)?;
            let premerge = self.premerge_path(last.id, "parent");
            let changes = self.changes_since_snapshot(parent, &premerge)?;
            let later: Vec<&WorldPath> = changes
                .iter()
                .map(|change| &change.path)
                .filter(|path| !merged.iter().any(|step| path.starts_with(step)))
                .collect();
            if let Some(example) = later.first() {
                return Err(StoreError::UndoLosesChanges {
                    parent: parent.clone(),
                    merge: last.id,
                    count: later.len(),
                    example: (*example).clone(),
                });
            }
            known = Some(changes);
        }

        // The journal records the undo first, so that a crash in the middle
        // is finished by the next command.
        let writer = self.db.transaction()?;
        writer.set_merge_state(last.id, MergeState::Undoing)?;
        writer.commit()?;
        self.crash_at(super::CrashPoint::UndoJournaled);
        let crash_mid_undo = self.crash_point == Some(super::CrashPoint::MidUndo);
        let steps = self.finish_undo(&last, false, known, &|step: MergeProgress| {
            if crash_mid_undo && step.done * 2 >= step.total {
                std::process::abort();
            }
            progress(step)
        })?;
        tracing::info!(parent = %parent, merge = last.id, "merge undone");
        Ok(UndoOutcome {
            parent: parent.clone(),
            child: last.child,
            merge_id: last.id,
            steps,
        })
    }

    /// Takes back `merge`, journaled as undoing: brings its parent back to
    /// the pre-merge snapshot and its child back to its old base, then
    /// records the undo. Each step checks what is done already, so an
    /// interrupted undo can be run again. `recovered` marks such a run in
    /// the operation log, and `known` gives the parent's changes since the
    /// snapshot where the caller has just read them.
    fn finish_undo(
        &mut self,
        merge: &crate::db::MergeRecord,
        recovered: bool,
        known: Option<Vec<crate::diff::Change>>,
        progress: &dyn Fn(MergeProgress),
    ) -> Result<usize> {
        let premerge = self.premerge_path(merge.id, "parent");
        let mut steps = 0;
        if let Ok(parent) = WorldName::new(&merge.parent) {
            if self.db.world(&parent)?.is_some() && premerge.exists() {
                steps = self.restore(&parent, &premerge, known, progress)?;
                // The parent's restored files must be on disk before the
                // journal records the undo as done.
                sync_filesystem(&self.world_path(&parent)).map_err(|source| StoreError::Merge {
                    child: WorldName::new(&merge.child).unwrap_or_else(|_| parent.clone()),
                    parent: parent.clone(),
                    source,
                })?;
            }
        }
        self.restore_base(merge.id, &merge.child)?;
        let writer = self.db.transaction()?;
        writer.set_merge_state(merge.id, MergeState::Undone)?;
        writer.set_since(&merge.child, merge.previous)?;
        writer.log(
            "undo",
            WorldName::new(&merge.parent).ok().as_ref(),
            &serde_json::json!({
                "merge": merge.id,
                "child": merge.child,
                "steps": steps,
                "recovered": recovered,
            }),
        )?;
        writer.commit()?;
        remove_quietly(&premerge);
        Ok(steps)
    }

    /// Returns the changes of world `name` since `earlier`, a read-only
    /// snapshot of it, read from a new read-only snapshot of the world.
    fn changes_since_snapshot(
        &self,
        name: &WorldName,
        earlier: &Path,
    ) -> Result<Vec<crate::diff::Change>> {
        let diff_error = |source| StoreError::Diff {
            name: name.clone(),
            child: name.clone(),
            source,
        };
        let since = File::open(earlier)
            .and_then(|earlier| btrfs::subvolume_info(&earlier))
            .map_err(diff_error)?
            .otransid;
        let now = self
            .pool
            .join(TMP_DIR)
            .join(format!("restore.{}.{name}", std::process::id()));
        snapshot(&self.world_path(name), &now, true).map_err(diff_error)?;
        let sides = engine::Sides {
            base: earlier,
            world: &now,
        };
        let changes = engine::fast(&sides, since);
        remove_quietly(&now);
        changes.map_err(diff_error)
    }

    /// Makes world `name` equal to the read-only snapshot `earlier` of it,
    /// through the apply engine, and returns the number of steps. `known`
    /// gives the world's changes since `earlier` where the caller has them.
    fn restore(
        &mut self,
        name: &WorldName,
        earlier: &Path,
        known: Option<Vec<crate::diff::Change>>,
        progress: &dyn Fn(MergeProgress),
    ) -> Result<usize> {
        let changes = match known {
            Some(changes) => changes,
            None => self.changes_since_snapshot(name, earlier)?,
        };
        let steps = plan::restore_steps(&changes);

        let total = steps.len();
        let target = self.world_path(name);
        self.frozen(name, |_| {
            apply::apply(&target, earlier, &steps, &|done| {
                progress(MergeProgress { done, total })
            })
        })?
        .map_err(|error| StoreError::Apply {
            world: name.clone(),
            source: error,
        })?;
        Ok(total)
    }

    /// Ends the process at once when a test asked for a crash at `point`.
    fn crash_at(&self, point: super::CrashPoint) {
        if self.crash_point == Some(point) {
            std::process::abort();
        }
    }

    /// Runs `work` with world `name` frozen if it runs, and thaws it after;
    /// a world that was frozen or stopped before stays so. The caller holds
    /// the store lock, which the runtime's own `with_frozen` would take.
    fn frozen<T>(&mut self, name: &WorldName, work: impl FnOnce(&mut Store) -> T) -> Result<T> {
        let freeze_error = |error| StoreError::Freeze {
            name: name.clone(),
            source: Box::new(error),
        };
        let state = self.status(name).map_err(freeze_error)?.state;
        if state != crate::runtime::RunState::Running {
            return Ok(work(self));
        }
        // The cgroup freezer can give up on a loaded machine while a process
        // is busy in the kernel (libcgroups retries for about half a
        // second), so freezing is tried a few times before the merge fails.
        // With the intent, the next command thaws the world if this one
        // dies while it is frozen.
        let intent = thaw_intent(name);
        self.add_intents(&[&intent], THAW_INTENT)?;
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.set_frozen(name, true) {
                Ok(_) => break,
                Err(error) if attempts >= FREEZE_ATTEMPTS => {
                    self.clear_intents_quietly(&[&intent]);
                    return Err(freeze_error(error));
                }
                Err(error) => {
                    tracing::warn!(world = %name, error = %error, attempts, "freezing failed; trying again");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
        }
        let result = work(self);
        self.set_frozen(name, false).map_err(freeze_error)?;
        self.clear_intents_quietly(&[&intent]);
        Ok(result)
    }

    /// Replaces the base of `child` by the new base of merge `id`, keeping
    /// a read-only snapshot of the old one for undo. Each step checks what
    /// is done already, so an interrupted swap can be run again.
    ///
    /// Read-only subvolumes cannot be renamed (EROFS), so the old base is
    /// kept by snapshot, and the new base stays writable until it is in
    /// place.
    fn publish_base(&self, id: i64, child: &WorldName) -> std::io::Result<()> {
        let new_base = self.new_base_path(id);
        if !new_base.exists() {
            return Ok(());
        }
        let base = self.base_path(child);
        let old_base = self.premerge_path(id, "base");
        if base.exists() {
            if !old_base.exists() {
                snapshot(&base, &old_base, true)?;
            }
            remove_subvolume(&base).map_err(std::io::Error::other)?;
        }
        fs::rename(&new_base, &base)?;
        btrfs::set_read_only(&File::open(&base)?, true)
    }

    /// Gives child `child` its base from before merge `id` back, if both
    /// still exist.
    fn restore_base(&self, id: i64, child: &str) -> Result<()> {
        let old_base = self.premerge_path(id, "base");
        let Ok(child) = WorldName::new(child) else {
            return Ok(());
        };
        if !old_base.exists() || self.db.world(&child)?.is_none() {
            return Ok(());
        }
        let base = self.base_path(&child);
        if base.exists() {
            remove_subvolume(&base)?;
        }
        snapshot(&old_base, &base, true).map_err(|source| StoreError::Move {
            from: old_base.clone(),
            to: base,
            source,
        })?;
        remove_subvolume(&old_base)
    }

    /// Finishes or rolls back merges that a crash interrupted. The caller
    /// holds the store lock.
    pub(super) fn recover_merges(&mut self) -> Result<Vec<Cleanup>> {
        let interrupted = self.db.merges(
            &[
                MergeState::Preparing,
                MergeState::Applying,
                MergeState::Publishing,
                MergeState::Undoing,
            ],
            None,
        )?;
        let mut cleanups = Vec::new();
        for merge in interrupted {
            if merge.state == MergeState::Undoing {
                self.finish_undo(&merge, true, None, &|_| {})?;
                tracing::info!(merge = merge.id, "interrupted undo finished");
                cleanups.push(Cleanup::UndoCompleted {
                    merge: merge.id,
                    parent: merge.parent.clone(),
                });
                continue;
            }
            let (Ok(parent), Ok(child)) =
                (WorldName::new(&merge.parent), WorldName::new(&merge.child))
            else {
                continue;
            };
            let new_base = self.new_base_path(merge.id);
            let premerge = self.premerge_path(merge.id, "parent");
            let recover_error = |source| StoreError::Merge {
                child: child.clone(),
                parent: parent.clone(),
                source,
            };
            let state = if merge.state == MergeState::Publishing {
                // Every change reached the parent: finish the base swap.
                if self.db.world(&child)?.is_some() {
                    self.publish_base(merge.id, &child).map_err(recover_error)?;
                } else if new_base.exists() {
                    remove_subvolume(&new_base)?;
                }
                MergeState::Done
            } else {
                let parent_exists = self.db.world(&parent)?.is_some();
                if merge.state == MergeState::Applying && premerge.exists() && parent_exists {
                    self.restore(&parent, &premerge, None, &|_| {})?;
                }
                for leftover in [new_base, premerge, self.premerge_path(merge.id, "base")] {
                    if leftover.exists() {
                        remove_subvolume(&leftover)?;
                    }
                }
                MergeState::RolledBack
            };

            let child_id = self.db.world(&child)?.map(|world| world.id);
            let writer = self.db.transaction()?;
            writer.set_merge_state(merge.id, state)?;
            if state == MergeState::Done {
                writer.set_since(child.as_str(), merge.next)?;
                if let Some(child_id) = child_id {
                    writer.clear_accesses(child_id)?;
                }
            }
            let kind = if state == MergeState::Done {
                "merge"
            } else {
                "merge-rollback"
            };
            writer.log(
                kind,
                Some(&parent),
                &serde_json::json!({ "merge": merge.id, "child": child, "parent": parent, "recovered": true }),
            )?;
            writer.commit()?;
            tracing::info!(merge = merge.id, ?state, "interrupted merge recovered");
            cleanups.push(if state == MergeState::Done {
                Cleanup::MergeCompleted {
                    merge: merge.id,
                    child: child.clone(),
                    parent: parent.clone(),
                }
            } else {
                Cleanup::MergeRolledBack {
                    merge: merge.id,
                    child: child.clone(),
                    parent: parent.clone(),
                }
            });
        }
        Ok(cleanups)
    }

    /// Deletes the pre-merge snapshots of `parent` beyond the newest
    /// [`KEEP_PREMERGE`] merges.
    fn prune_premerge(&self, parent: &WorldName, keep: usize) -> Result<()> {
        let done = self.db.merges(&[MergeState::Done], Some(parent.as_str()))?;
        let old = done.len().saturating_sub(keep);
        for merge in &done[..old] {
            for side in ["parent", "base"] {
                let path = self.premerge_path(merge.id, side);
                if path.exists() {
                    remove_subvolume(&path)?;
                }
            }
        }
        Ok(())
    }
}

/// The trees a merge reads: the child as planned, which the new base is
/// made from, and the tree the parent's steps copy from, which differs only
/// by text-merged files.
#[derive(Clone, Copy)]
struct Sources<'a> {
    /// The child's read-only snapshot, or the stopped child itself.
    child: &'a Path,
    /// The transaction up to which `child` shows the child's changes.
    read_at: u64,
    apply: &'a Path,
}

/// Merges the plan's text-merge files line by line with diff3(1), from the
/// base, the child's and the parent's versions, and returns the merged
/// contents. A file whose changes overlap, or that diff3 cannot merge (a
/// binary file), becomes a write-write conflict and leaves the plan's steps.
fn text_merge(
    plan: &mut Plan,
    ours: &[crate::diff::Change],
    theirs: &[crate::diff::Change],
    base: &Path,
    child: &Path,
    parent: &Path,
) -> Vec<(WorldPath, Vec<u8>)> {
    let mut merged = Vec::new();
    let mut failed = Vec::new();
    for path in &plan.text_merge {
        // Each version is opened beneath its tree without following
        // symlinks, and diff3 reads the open files.
        let open = |root: &Path| engine::open_regular(root, path).ok().flatten();
        let (Some(ours), Some(old), Some(theirs)) = (open(child), open(base), open(parent)) else {
            failed.push(path.clone());
            continue;
        };
        // diff3 reads all three files into memory, so large ones stay
        // conflicts.
        let too_large = [&ours, &old, &theirs].iter().any(|file| {
            file.metadata()
                .map_or(true, |m| m.len() > TEXT_MERGE_BYTES_MAX)
        });
        if too_large {
            failed.push(path.clone());
            continue;
        }
        let mut command = std::process::Command::new("diff3");
        let files = crate::sys::process::pass_files(&mut command, &[&ours, &old, &theirs]);
        let output = command
            .env("LC_ALL", "C")
            .arg("--merge")
            .args(&files)
            .output();
        match output {
            // diff3 exits with 0 when the changes do not overlap.
            Ok(output) if output.status.success() => merged.push((path.clone(), output.stdout)),
            _ => failed.push(path.clone()),
        }
    }
    for path in failed {
        plan.text_merge.retain(|other| other != &path);
        plan.steps.retain(|step| step.path() != &path);
        let find = |changes: &[crate::diff::Change]| {
            changes.iter().find(|change| change.path == path).cloned()
        };
        plan.conflicts.push(plan::Conflict {
            kind: plan::ConflictKind::WriteWrite,
            child: find(ours),
            parent: find(theirs),
            path,
        });
    }
    plan.conflicts
        .sort_by(|a, b| (&a.path, a.kind).cmp(&(&b.path, b.kind)));
    merged
}

/// Writes out the filesystem that contains the folder at `path` with
/// syncfs(2).
fn sync_filesystem(path: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let dir = File::open(path)?;
    Ok(nix::unistd::syncfs(dir.as_raw_fd())?)
}

/// Writes out the filesystem that contains `dir` with syncfs(2). A failure
/// is logged and not returned, because the caller syncs again afterwards.
fn sync_quietly(dir: &File) {
    use std::os::fd::AsRawFd;
    if let Err(error) = nix::unistd::syncfs(dir.as_raw_fd()) {
        tracing::debug!(%error, "early syncfs failed; the sync after the apply retries");
    }
}

/// Snapshots the subvolume at `source` to `dest`, whose parent directory
/// must exist.
fn snapshot(source: &Path, dest: &Path, read_only: bool) -> std::io::Result<()> {
    let invalid = || std::io::Error::from_raw_os_error(libc::EINVAL);
    let parent = dest.parent().ok_or_else(invalid)?;
    let name: &OsStr = dest.file_name().ok_or_else(invalid)?;
    btrfs::snapshot(&File::open(source)?, &File::open(parent)?, name, read_only)
}

fn create_dir_if_missing(path: &Path) -> std::io::Result<()> {
    match fs::create_dir(path) {
        Err(error) if error.kind() != std::io::ErrorKind::AlreadyExists => Err(error),
        _ => Ok(()),
    }
}
