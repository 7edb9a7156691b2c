//! Merging children into parents on real pools: plans, conflicts, the
//! applied result, the child's new base, undo and recovery.

use std::fs;
use std::process::Command;

use worlds::diff::DiffOptions;
use worlds::merge::plan::{ConflictKind, PlanOptions, Side};
use worlds::store::{Cleanup, MergeOptions, StoreError};
use worlds::{Store, WorldName};

use crate::common::{busybox, name, tree_listing, TestStore};

fn shell(store: &Store, world: &str, script: &str) {
    let output = Command::new("bash")
        .args(["-euc", script])
        .current_dir(store.world_path(&name(world)))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Creates a root world `parent` with a few files, and a child `child` of it.
fn family(fixture: &TestStore) -> Store {
    let mut store = fixture.open();
    store
        .create_root(&name("parent"), &busybox(), &|_| {})
        .unwrap();
    shell(
        &store,
        "parent",
        "mkdir -p srv/www && printf 'v1\\n' > srv/www/index.html && printf 'a=1\\n' > etc/app.conf && printf old > etc/old",
    );
    store.create_child(&name("child"), &name("parent")).unwrap();
    store
}

fn merge(store: &mut Store, options: &MergeOptions) -> worlds::store::MergeOutcome {
    store.merge(&name("child"), options, &|_| {}).unwrap()
}

/// Returns the attributes of every file in `world`, leaving out the mtime
/// of directories: applying entries into a directory moves it, and diffs
/// ignore it too.
fn listing(store: &Store, world: &str) -> Vec<String> {
    tree_listing(&store.world_path(&name(world)))
        .into_iter()
        .map(|line| match line.split_once(" d ") {
            Some((path, rest)) if !line.starts_with("xattr") => {
                let fields: Vec<&str> = rest.split(' ').collect();
                format!("{path} d {} {}", fields[0], fields[1])
            }
            _ => line,
        })
        .collect()
}

/// Fails with the lines that differ between two listings.
fn assert_same_tree(left: &[String], right: &[String]) {
    let only_left: Vec<&String> = left.iter().filter(|line| !right.contains(line)).collect();
    let only_right: Vec<&String> = right.iter().filter(|line| !left.contains(line)).collect();
    assert!(
        only_left.is_empty() && only_right.is_empty(),
        "only on the left: {only_left:#?}\nonly on the right: {only_right:#?}"
    );
}

fn diff_lines(store: &Store, world: &str) -> Vec<String> {
    store
        .diff(&name(world), &DiffOptions::default())
        .unwrap()
        .iter()
        .map(|change| format!("{} {}", change.kind.letter(), change.path))
        .collect()
}

#[test]
fn merge_applies_every_kind() {
    let fixture = TestStore::new();
    let mut store = family(&fixture);
    shell(
        &store,
        "child",
        "printf 'v2\\n' > srv/www/index.html && rm etc/old && chmod 0600 etc/app.conf && mkdir srv/new && \
         printf x > srv/new/file && ln -s ../www/index.html srv/new/link && mkfifo srv/new/fifo && \
         ln srv/new/file srv/new/hardlink && setfattr -n user.note -v kept srv/new/file",
    );
    let outcome = merge(&mut store, &MergeOptions::default());
    assert!(outcome.applied, "{outcome:?}");
    assert_eq!(outcome.plan.conflicts, []);

    // The parent now looks like the child, and the child's base moved.
    assert_same_tree(&listing(&store, "parent"), &listing(&store, "child"));
    assert_eq!(diff_lines(&store, "child"), Vec::<String>::new());
    let file = store.world_path(&name("parent")).join("srv/new/file");
    let hardlink = store.world_path(&name("parent")).join("srv/new/hardlink");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        fs::metadata(&file).unwrap().ino(),
        fs::metadata(&hardlink).unwrap().ino()
    );
    assert_eq!(store.operations(1).unwrap()[0].kind, "merge");

    // The child can go on and be merged again.
    shell(&store, "child", "printf more >> srv/new/file");
    let again = merge(&mut store, &MergeOptions::default());
    assert!(again.applied);
    assert_eq!(
        fs::read_to_string(store.world_path(&name("parent")).join("srv/new/file")).unwrap(),
        "xmore"
    );
}

#[test]
fn write_write_conflict_changes_nothing() {
    let fixture = TestStore::new();
    let mut store = family(&fixture);
    shell(
        &store,
        "child",
        "printf 'a=2\\n' > etc/app.conf && printf new > etc/new",
    );
    shell(&store, "parent", "printf 'a=3\\n' > etc/app.conf");
    let before = listing(&store, "parent");

    let outcome = merge(&mut store, &MergeOptions::default());
    assert!(!outcome.applied);
    let conflicts: Vec<(ConflictKind, String)> = outcome
        .plan
        .conflicts
        .iter()
        .map(|c| (c.kind, c.path.to_string()))
        .collect();
    assert_eq!(
        conflicts,
        [(ConflictKind::WriteWrite, "/etc/app.conf".to_owned())]
    );
    assert_same_tree(&listing(&store, "parent"), &before);
    assert_eq!(
        diff_lines(&store, "child"),
        ["M /etc/app.conf", "A /etc/new"]
    );

    let prefer_child = MergeOptions {
        plan: PlanOptions {
            prefer: Some(Side::Child),
            ..PlanOptions::default()
        },
        ..MergeOptions::default()
    };
    assert!(merge(&mut store, &prefer_child).applied);
    let conf = fs::read_to_string(store.world_path(&name("parent")).join("etc/app.conf")).unwrap();
    assert_eq!(conf, "a=2\n");
}

#[test]
fn prefer_parent_keeps_child_difference() {
    let fixture = TestStore::new();
    let mut store = family(&fixture);
    shell(
        &store,
        "child",
        "printf 'a=2\\n' > etc/app.conf && printf new > etc/new",
    );
    shell(&store, "parent", "printf 'a=3\\n' > etc/app.conf");
    let options = MergeOptions {
        plan: PlanOptions {
            prefer: Some(Side::Parent),
            ..PlanOptions::default()
        },
        ..MergeOptions::default()
    };
    assert!(merge(&mut store, &options).applied);
    let conf = fs::read_to_string(store.world_path(&name("parent")).join("etc/app.conf")).unwrap();
    assert_eq!(conf, "a=3\n");
    assert!(store.world_path(&name("parent")).join("etc/new").exists());
    // The child still differs where the parent's version won.
    assert_eq!(diff_lines(&store, "child"), ["M /etc/app.conf"]);
}

#[test]
fn identical_changes_merge_cleanly() {
    let fixture = TestStore::new();
    let mut store = family(&fixture);
    shell(
        &store,
        "child",
        "printf 'a=2\\n' > etc/app.conf && rm etc/old",
    );
    shell(
        &store,
        "parent",
        "printf 'a=2\\n' > etc/app.conf && rm etc/old",
    );
    let outcome = merge(&mut store, &MergeOptions::default());
    assert!(outcome.applied);
    assert_eq!(outcome.plan.steps, []);
    assert_eq!(outcome.plan.identical.len(), 2);
    assert_eq!(diff_lines(&store, "child"), Vec::<String>::new());
}

#[test]
fn structural_conflict_and_dry_run() {
    let fixture = TestStore::new();
    let mut store = family(&fixture);
    shell(&store, "child", "printf v3 > srv/www/extra");
    shell(&store, "parent", "rm -r srv/www");
    let before = listing(&store, "parent");
    let dry = MergeOptions {
        dry_run: true,
        ..MergeOptions::default()
    };
    let outcome = merge(&mut store, &dry);
    assert_eq!(outcome.plan.conflicts[0].kind, ConflictKind::Structural);
    assert!(!outcome.applied);
    assert_same_tree(&listing(&store, "parent"), &before);
}

#[test]
fn undo_restores_parent_and_child_base() {
    let fixture = TestStore::new();
    let mut store = family(&fixture);
    let before = listing(&store, "parent");
    shell(&store, "child", "printf 'v2\\n' > srv/www/index.html && rm etc/old && mkdir srv/new && printf x > srv/new/f");
    assert!(merge(&mut store, &MergeOptions::default()).applied);
    assert_ne!(listing(&store, "parent"), before);

    let undone = store.undo(&name("parent"), false, &|_| {}).unwrap();
    assert_eq!(undone.child, "child");
    assert_same_tree(&listing(&store, "parent"), &before);
    assert_eq!(
        diff_lines(&store, "child"),
        [
            "D /etc/old",
            "A /srv/new",
            "A /srv/new/f",
            "M /srv/www/index.html"
        ]
    );
    let error = store.undo(&name("parent"), false, &|_| {}).unwrap_err();
    assert!(matches!(error, StoreError::NothingToUndo { .. }), "{error}");
}

#[test]
fn hostile_symlink_stays_inside() {
    let fixture = TestStore::new();
    let outside = fixture.scratch().join("outside");
    fs::create_dir(&outside).unwrap();
    let mut store = family(&fixture);
    // The child replaces a directory by a symlink that points out of the
    // world and changes a file "below" it in the same merge.
    shell(
        &store,
        "child",
        &format!(
            "rm -r srv/www && ln -s {} srv/www && printf evil > srv/evil",
            outside.display()
        ),
    );
    let outcome = merge(&mut store, &MergeOptions::default());
    assert!(outcome.applied, "{outcome:?}");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    let link = store.world_path(&name("parent")).join("srv/www");
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn text_merge_ignores_base_symlink() {
    let fixture = TestStore::new();
    let outside = fixture.scratch().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("list"), "one\ntwo\n").unwrap();
    let mut store = fixture.open();
    store
        .create_root(&name("parent"), &busybox(), &|_| {})
        .unwrap();
    shell(
        &store,
        "parent",
        &format!("ln -s {} shared", outside.display()),
    );
    store.create_child(&name("child"), &name("parent")).unwrap();
    // Both sides replace the symlink with a folder that contains `list`.
    // The host file behind the base's symlink is not a version of it.
    shell(
        &store,
        "child",
        "rm shared && mkdir shared && printf 'one\\nTWO\\n' > shared/list",
    );
    shell(
        &store,
        "parent",
        "rm shared && mkdir shared && printf 'ONE\\ntwo\\n' > shared/list",
    );
    let text = MergeOptions {
        plan: PlanOptions {
            text_merge: true,
            ..PlanOptions::default()
        },
        ..MergeOptions::default()
    };

    let outcome = merge(&mut store, &text);
    assert!(!outcome.applied, "{outcome:?}");
    let conflicts: Vec<(String, ConflictKind)> = outcome
        .plan
        .conflicts
        .iter()
        .map(|conflict| (conflict.path.to_string(), conflict.kind))
        .collect();
    assert_eq!(
        conflicts,
        [("/shared/list".to_owned(), ConflictKind::WriteWrite)]
    );
    let list = fs::read_to_string(store.world_path(&name("parent")).join("shared/list")).unwrap();
    assert_eq!(list, "ONE\ntwo\n");
}

#[test]
fn new_link_to_unchanged_file_stays_link() {
    use std::os::unix::fs::MetadataExt;
    let fixture = TestStore::new();
    let mut store = family(&fixture);
    shell(&store, "child", "ln etc/app.conf srv/app.conf");
    assert_eq!(diff_lines(&store, "child"), ["A /srv/app.conf"]);

    let outcome = merge(&mut store, &MergeOptions::default());
    assert!(outcome.applied, "{outcome:?}");
    let parent = store.world_path(&name("parent"));
    let first = fs::metadata(parent.join("etc/app.conf")).unwrap();
    let second = fs::metadata(parent.join("srv/app.conf")).unwrap();
    assert_eq!(first.ino(), second.ino());
    assert_eq!(first.nlink(), 2);
    assert_eq!(diff_lines(&store, "child"), Vec::<String>::new());
}

#[test]
fn merge_of_root_world_rejected() {
    let fixture = TestStore::new();
    let mut store = family(&fixture);
    let error = store
        .merge(&name("parent"), &MergeOptions::default(), &|_| {})
        .unwrap_err();
    assert!(matches!(error, StoreError::NoBase { .. }), "{error}");
    let wrong = MergeOptions {
        expected_parent: Some(name("child")),
        ..MergeOptions::default()
    };
    let error = store.merge(&name("child"), &wrong, &|_| {}).unwrap_err();
    assert!(matches!(error, StoreError::WrongParent { .. }), "{error}");
    let _ = Cleanup::Removed { path: "x".into() };
    let _: WorldName = name("unused");
}

#[test]
fn later_parent_change_still_conflicts() {
    let fixture = TestStore::new();
    let mut store = family(&fixture);
    // The parent changes a file the child has not touched, then the child
    // merges something else.
    shell(&store, "parent", "printf 'a=parent\\n' > etc/app.conf");
    shell(&store, "child", "printf new > etc/new");
    assert!(merge(&mut store, &MergeOptions::default()).applied);
    let parent_side: Vec<String> = store
        .diff_parent(&name("child"), &DiffOptions::default())
        .unwrap()
        .iter()
        .map(|change| format!("{} {}", change.kind.letter(), change.path))
        .collect();
    assert_eq!(parent_side, ["M /etc/app.conf"]);

    // The child now edits that file: the parent's earlier change must
    // still make this a conflict rather than be overwritten.
    shell(&store, "child", "printf 'a=child\\n' > etc/app.conf");
    let outcome = merge(&mut store, &MergeOptions::default());
    let conflicts: Vec<String> = outcome
        .plan
        .conflicts
        .iter()
        .map(|c| c.path.to_string())
        .collect();
    assert_eq!(conflicts, ["/etc/app.conf"]);
}

#[test]
fn partial_merge_then_rest() {
    let fixture = TestStore::new();
    let mut store = family(&fixture);
    shell(
        &store,
        "child",
        "printf one > etc/one && mkdir srv/two && printf two > srv/two/f",
    );
    let only_etc = MergeOptions {
        plan: PlanOptions {
            only: vec![worlds::path::WorldPath::from_bytes(b"etc")],
            ..PlanOptions::default()
        },
        ..MergeOptions::default()
    };
    assert!(merge(&mut store, &only_etc).applied);
    assert!(store.world_path(&name("parent")).join("etc/one").exists());
    assert!(!store.world_path(&name("parent")).join("srv/two").exists());
    assert_eq!(diff_lines(&store, "child"), ["A /srv/two", "A /srv/two/f"]);

    assert!(merge(&mut store, &MergeOptions::default()).applied);
    assert!(store.world_path(&name("parent")).join("srv/two/f").exists());
    assert_eq!(diff_lines(&store, "child"), Vec::<String>::new());
}

#[test]
fn combine_siblings() {
    let fixture = TestStore::new();
    let mut store = family(&fixture);
    store.create_child(&name("other"), &name("parent")).unwrap();
    shell(&store, "child", "printf 'v2\\n' > srv/www/index.html");
    shell(
        &store,
        "other",
        "printf 'a=2\\n' > etc/app.conf && printf db > etc/db",
    );
    // The parent moves on after the siblings were made.
    shell(&store, "parent", "printf later > etc/later");

    let outcome = store
        .create_combined(
            &name("both"),
            &name("parent"),
            &[name("child"), name("other")],
        )
        .unwrap();
    assert!(outcome.created, "{outcome:?}");
    let root = store.world_path(&name("both"));
    assert_eq!(
        fs::read_to_string(root.join("srv/www/index.html")).unwrap(),
        "v2\n"
    );
    assert_eq!(
        fs::read_to_string(root.join("etc/app.conf")).unwrap(),
        "a=2\n"
    );
    assert_eq!(fs::read_to_string(root.join("etc/later")).unwrap(), "later");
    assert_eq!(
        diff_lines(&store, "both"),
        ["M /etc/app.conf", "A /etc/db", "M /srv/www/index.html"]
    );

    // Merging the combination brings both changes to the parent.
    let merged = store
        .merge(&name("both"), &MergeOptions::default(), &|_| {})
        .unwrap();
    assert!(merged.applied);
    let parent = store.world_path(&name("parent"));
    assert_eq!(fs::read_to_string(parent.join("etc/db")).unwrap(), "db");
}

#[test]
fn combine_conflicting_siblings() {
    let fixture = TestStore::new();
    let mut store = family(&fixture);
    store.create_child(&name("other"), &name("parent")).unwrap();
    shell(&store, "child", "printf 'a=child\\n' > etc/app.conf");
    shell(&store, "other", "printf 'a=other\\n' > etc/app.conf");

    let outcome = store
        .create_combined(
            &name("both"),
            &name("parent"),
            &[name("child"), name("other")],
        )
        .unwrap();
    assert!(!outcome.created);
    let last = outcome.merges.last().unwrap();
    assert_eq!(last.sibling, name("other"));
    assert_eq!(last.plan.conflicts[0].kind, ConflictKind::WriteWrite);
    assert!(store.world(&name("both")).is_err());
    assert!(!store.world_path(&name("both")).exists());

    let stranger = store
        .create_combined(&name("x"), &name("child"), &[name("other")])
        .unwrap_err();
    assert!(
        matches!(stranger, StoreError::NotSibling { .. }),
        "{stranger}"
    );
}

#[test]
fn keep_limits_undo_depth() {
    let fixture = TestStore::new();
    let mut store = family(&fixture);
    let keep_one = MergeOptions {
        keep: Some(1),
        ..MergeOptions::default()
    };
    for round in 0..3 {
        shell(&store, "child", &format!("printf {round} > etc/round"));
        assert!(merge(&mut store, &keep_one).applied);
    }
    let premerge: Vec<_> = fs::read_dir(fixture.dir.join("pool/premerge"))
        .unwrap()
        .collect();
    assert_eq!(
        premerge.len(),
        2,
        "one merge keeps its parent and base snapshots"
    );
    store.undo(&name("parent"), false, &|_| {}).unwrap();
    let round = fs::read_to_string(store.world_path(&name("parent")).join("etc/round")).unwrap();
    assert_eq!(round, "1");
    let error = store.undo(&name("parent"), false, &|_| {}).unwrap_err();
    assert!(matches!(error, StoreError::NothingToUndo { .. }), "{error}");
}

#[test]
fn text_merge_combines_separate_edits() {
    let fixture = TestStore::new();
    let mut store = fixture.open();
    store
        .create_root(&name("parent"), &busybox(), &|_| {})
        .unwrap();
    shell(
        &store,
        "parent",
        "printf 'one\\ntwo\\nthree\\nfour\\nfive\\n' > etc/list && printf '\\0\\1\\2' > etc/blob",
    );
    store.create_child(&name("child"), &name("parent")).unwrap();
    shell(
        &store,
        "child",
        "sed -i 's/one/ONE/' etc/list && printf '\\3' >> etc/blob",
    );
    shell(&store, "parent", "sed -i 's/five/FIVE/' etc/list");
    let text = MergeOptions {
        plan: PlanOptions {
            text_merge: true,
            ..PlanOptions::default()
        },
        ..MergeOptions::default()
    };

    let outcome = merge(&mut store, &text);
    assert!(outcome.applied, "{outcome:?}");
    let list = fs::read_to_string(store.world_path(&name("parent")).join("etc/list")).unwrap();
    assert_eq!(list, "ONE\ntwo\nthree\nfour\nFIVE\n");
    // The parent's own hunk is still a parent change for the child.
    let parent_side: Vec<String> = store
        .diff_parent(&name("child"), &DiffOptions::default())
        .unwrap()
        .iter()
        .map(|change| change.path.to_string())
        .collect();
    assert_eq!(parent_side, ["/etc/list"]);
    assert_eq!(diff_lines(&store, "child"), Vec::<String>::new());

    // Overlapping edits and binary files stay conflicts.
    shell(
        &store,
        "child",
        "sed -i 's/two/child/' etc/list && printf '\\4' >> etc/blob",
    );
    shell(
        &store,
        "parent",
        "sed -i 's/two/parent/' etc/list && printf '\\5' >> etc/blob",
    );
    let before = listing(&store, "parent");
    let outcome = merge(&mut store, &text);
    assert!(!outcome.applied);
    let conflicts: Vec<String> = outcome
        .plan
        .conflicts
        .iter()
        .map(|c| c.path.to_string())
        .collect();
    assert_eq!(conflicts, ["/etc/blob", "/etc/list"]);
    assert_same_tree(&listing(&store, "parent"), &before);
    assert_eq!(
        fs::read_dir(fixture.dir.join("pool/tmp")).unwrap().count(),
        0
    );
}
