//! The apply engine on real trees: the case matrix (every file type ×
//! added, modified, deleted, type-changed and metadata-only), sparse files,
//! open files, hard links, attributes, failures, and trees that try to lead
//! apply outside the target with symlinks.
//!
//! Each case takes two children of one root world: the source, changed by a
//! script, and the target, still equal to the root. After applying the
//! case's steps the target must list exactly as the source does.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use worlds::diff::{Change, ChangeKind, DiffOptions};
use worlds::merge::apply::{apply, ApplyError, Step, StepError, Tree};
use worlds::path::WorldPath;
use worlds::store::DeleteOptions;
use worlds::{Store, WorldName};

use crate::common::{busybox, make_file, name, run, tree_listing, TestStore, FILE_TYPES};

/// Steps that put a file of `file_type` made by [`make`] at `path`: a
/// directory's content comes after it, and its times are set again last.
fn put(file_type: &str, path: &str) -> Vec<Step> {
    match file_type {
        "directory" => vec![
            Step::Put(world_path(path)),
            Step::Put(world_path(&format!("{path}/inside"))),
            Step::SetMetadata(world_path(path)),
        ],
        _ => vec![Step::Put(world_path(path))],
    }
}

/// Steps that remove the fixture's file of `file_type` at `path`, deepest
/// first.
fn remove(file_type: &str, path: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    if file_type == "directory" {
        steps.push(Step::Remove(world_path(&format!("{path}/inner"))));
    }
    steps.push(Step::Remove(world_path(path)));
    steps
}

fn world_path(text: &str) -> WorldPath {
    WorldPath::from_bytes(text.as_bytes())
}

/// Fills the root world: one file of each type, named after its type, and
/// a second regular file.
fn fixture(store: &mut Store) -> WorldName {
    let root = name("root");
    store.create_root(&root, &busybox(), &|_| {}).unwrap();
    let mut script: Vec<String> = FILE_TYPES
        .iter()
        .filter(|file_type| **file_type != "directory")
        .map(|file_type| make_file(file_type, file_type))
        .collect();
    script.push("mkdir directory && printf x > directory/inner".into());
    script.push("printf 'other\\n' > other".into());
    shell(&store.world_path(&root), &script.join(" && "));
    root
}

fn shell(dir: &Path, script: &str) {
    let output = Command::new("bash")
        .args(["-euc", script])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "script {script:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

struct Case {
    label: String,
    script: String,
    steps: Vec<Step>,
}

fn matrix() -> Vec<Case> {
    let mut cases = Vec::new();
    for file_type in FILE_TYPES {
        cases.push(Case {
            label: format!("{file_type} added"),
            script: make_file(file_type, "fresh"),
            steps: put(file_type, "fresh"),
        });
        cases.push(Case {
            label: format!("{file_type} deleted"),
            script: format!("rm -r {file_type}"),
            steps: remove(file_type, file_type),
        });
        let metadata_script = match file_type {
            // A symlink's own mode cannot change on Linux.
            "symlink" => "chown -h 1234:1234 symlink".to_owned(),
            _ => format!("chmod 0640 {file_type} && chown 1234:5678 {file_type}"),
        };
        cases.push(Case {
            label: format!("{file_type} metadata-only"),
            script: metadata_script,
            steps: vec![Step::SetMetadata(world_path(file_type))],
        });
        cases.push(Case {
            label: format!("{file_type} mtime-only"),
            script: format!("touch -h -d '2001-02-03 04:05:06.789' {file_type}"),
            steps: vec![Step::SetMetadata(world_path(file_type))],
        });
        for new_type in FILE_TYPES.iter().filter(|new_type| **new_type != file_type) {
            let mut steps = remove(file_type, file_type);
            steps.extend(put(new_type, file_type));
            cases.push(Case {
                label: format!("{file_type} became {new_type}"),
                script: format!("rm -r {file_type} && {}", make_file(new_type, file_type)),
                steps,
            });
        }
    }

    let modified = [
        ("regular", "printf more >> regular"),
        (
            "regular",
            "printf 'same size\\n' | dd of=regular conv=notrunc status=none",
        ),
        ("regular", ": > regular"),
        (
            "directory",
            "printf y > directory/new && rm directory/inner",
        ),
        ("symlink", "ln -sfn other symlink"),
        ("fifo", "rm fifo && mkfifo fifo"),
        (
            "socket",
            &format!("rm socket && {}", make_file("socket", "socket")),
        ),
        ("char", "rm char && mknod char c 1 7"),
        ("block", "rm block && mknod block b 7 202"),
    ];
    for (file_type, script) in modified {
        let steps = match file_type {
            "directory" => vec![
                Step::Remove(world_path("directory/inner")),
                Step::Put(world_path("directory/new")),
                Step::SetMetadata(world_path("directory")),
            ],
            _ => vec![Step::Put(world_path(file_type))],
        };
        cases.push(Case {
            label: format!("{file_type} modified by {script}"),
            script: script.to_owned(),
            steps,
        });
    }
    cases
}

/// Runs each case on a fresh source and target and collects the cases
/// whose target does not list as the source does.
/// Where the steps of a case come from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StepSource {
    /// The steps written in the case.
    Case,
    /// Steps derived from the diff of the source world by [`diff_steps`].
    Diff,
}

fn run_cases(cases: Vec<Case>, step_source: StepSource) {
    let fixture_store = TestStore::new();
    let mut store = fixture_store.open();
    let root = fixture(&mut store);
    let mut failures = Vec::new();
    for (index, case) in cases.into_iter().enumerate() {
        let source = name(&format!("source{index}"));
        let target = name(&format!("target{index}"));
        store.create_child(&source, &root).unwrap();
        store.create_child(&target, &root).unwrap();
        let source_root = store.world_path(&source);
        let target_root = store.world_path(&target);
        shell(&source_root, &case.script);

        let steps = match step_source {
            StepSource::Case => {
                // The root's own times follow its entries, like any
                // directory's.
                let mut steps = case.steps;
                steps.push(Step::SetMetadata(WorldPath::root()));
                steps
            }
            StepSource::Diff => {
                let changes = store.diff(&source, &DiffOptions::default()).unwrap();
                diff_steps(&changes, &source_root)
            }
        };
        match apply(&target_root, &source_root, &steps, &|_| {}) {
            Ok(()) => {
                let expected = tree_listing(&source_root);
                let found = tree_listing(&target_root);
                if found != expected {
                    failures.push(format!(
                        "{}: target differs from source:\n{}",
                        case.label,
                        listing_difference(&expected, &found)
                    ));
                }
            }
            Err(error) => failures.push(format!("{}: {}", case.label, error_chain(&error))),
        }
        for world in [&source, &target] {
            store.delete(world, &DeleteOptions::default()).unwrap();
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Returns the lines only one of two listings has, marked `-` for the
/// expected one and `+` for the found one.
fn listing_difference(expected: &[String], found: &[String]) -> String {
    let mut lines = Vec::new();
    for line in expected.iter().filter(|line| !found.contains(line)) {
        lines.push(format!("  - {line}"));
    }
    for line in found.iter().filter(|line| !expected.contains(line)) {
        lines.push(format!("  + {line}"));
    }
    lines.join("\n")
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

/// Cases whose steps come only from the diff.
fn awkward_cases() -> Vec<Case> {
    let case = |label: &str, script: &str| Case {
        label: label.into(),
        script: script.into(),
        steps: Vec::new(),
    };
    vec![
        case(
            "awkward names",
            "touch $'new\\nline' $'tab\\there' 'with space' -- '-dash' \"$(printf 'bad\\377utf8')\"",
        ),
        case("directory renamed", "mv directory renamed"),
        case("file moved into a directory", "mv other directory/other"),
        case(
            "new hard links",
            "printf x > one && ln one two && mkdir deep && ln one deep/three",
        ),
        case("xattr, acl and capability", "setfattr -n user.note -v hi regular && setfacl -m u:4321:r regular && setcap cap_net_raw+ep regular"),
        case("sparse file added", "truncate -s 1T huge"),
        case(
            "sparse file written",
            "truncate -s 1G sparse && printf x | dd of=sparse bs=1 seek=4096 conv=notrunc status=none",
        ),
        case("root mode", "chmod 0700 ."),
        case("deep tree added", "mkdir -p a/b/c && printf x > a/b/c/d && ln -s ../.. a/b/c/up"),
    ]
}

/// Orders the steps that apply `changes` the way a merge plan does:
/// removals deepest first, then puts and metadata changes with each
/// directory before its contents, then the times of every directory whose
/// entries changed, deepest first.
fn diff_steps(changes: &[Change], source_root: &Path) -> Vec<Step> {
    let mut steps = Vec::new();
    for change in changes.iter().rev() {
        if matches!(change.kind, ChangeKind::Deleted | ChangeKind::TypeChanged) {
            steps.push(Step::Remove(change.path.clone()));
        }
    }

    let mut touched_dirs = BTreeSet::new();
    for change in changes {
        match change.kind {
            ChangeKind::Added | ChangeKind::Modified | ChangeKind::TypeChanged => {
                steps.push(Step::Put(change.path.clone()));
            }
            ChangeKind::MetadataOnly => steps.push(Step::SetMetadata(change.path.clone())),
            ChangeKind::Deleted => {}
        }
        if let Some(parent) = parent(&change.path) {
            touched_dirs.insert(parent);
        }
    }

    for dir in touched_dirs.into_iter().rev() {
        if dir.under(source_root).is_dir() {
            steps.push(Step::SetMetadata(dir));
        }
    }
    steps
}

fn parent(path: &WorldPath) -> Option<WorldPath> {
    let bytes = path.as_bytes();
    if bytes.is_empty() {
        return None;
    }
    let parent = match bytes.iter().rposition(|&b| b == b'/') {
        Some(slash) => &bytes[..slash],
        None => b"",
    };
    Some(WorldPath::from_bytes(parent))
}

#[test]
fn change_matrix() {
    run_cases(matrix(), StepSource::Case);
}

/// The same cases with steps from the diff engine, as a merge derives
/// them.
#[test]
fn change_matrix_from_diff() {
    // The diff ignores a directory's mtime, which follows its entries, so
    // a directory given only another mtime has no change to apply.
    let cases = matrix()
        .into_iter()
        .filter(|case| case.label != "directory mtime-only")
        .collect();
    run_cases(cases, StepSource::Diff);
}

// NOTE: hard links made between files that already existed (`ln -f a b`)
// are not kept, because only paths put in one apply are linked together.
#[test]
fn awkward_changes_from_diff() {
    run_cases(awkward_cases(), StepSource::Diff);
}

/// A source and a target world made from the fixture, for tests that check
/// more than the listing.
struct Pair {
    store: Store,
    source: WorldName,
    target: WorldName,
    // Declared last so that it drops last and unmounts the pool.
    test_store: TestStore,
}

impl Pair {
    fn new() -> Self {
        let test_store = TestStore::new();
        let mut store = test_store.open();
        let root = fixture(&mut store);
        let source = name("source");
        let target = name("target");
        store.create_child(&source, &root).unwrap();
        store.create_child(&target, &root).unwrap();
        Self {
            test_store,
            store,
            source,
            target,
        }
    }

    fn source(&self) -> std::path::PathBuf {
        self.store.world_path(&self.source)
    }

    fn target(&self) -> std::path::PathBuf {
        self.store.world_path(&self.target)
    }

    fn apply(&self, steps: &[Step]) -> Result<(), ApplyError> {
        apply(&self.target(), &self.source(), steps, &|_| {})
    }
}

#[test]
fn sparse_terabyte_put_fast() {
    let pair = Pair::new();
    shell(
        &pair.source(),
        "truncate -s 1T huge && printf tail | dd of=huge bs=1 seek=$((1 << 39)) conv=notrunc status=none",
    );

    let started = Instant::now();
    pair.apply(&[Step::Put(world_path("huge"))]).unwrap();
    let elapsed = started.elapsed();

    assert!(
        elapsed < Duration::from_millis(500),
        "put of a 1 TB sparse file took {elapsed:?}"
    );
    let metadata = std::fs::metadata(pair.target().join("huge")).unwrap();
    assert_eq!(metadata.len(), 1 << 40);
    assert!(
        metadata.blocks() < 1024,
        "the target file takes {} blocks of 512 bytes",
        metadata.blocks()
    );
    let tail = run(
        "dd",
        &[
            &format!("if={}", pair.target().join("huge").display()),
            "bs=1",
            &format!("skip={}", 1u64 << 39),
            "count=4",
            "status=none",
        ],
    );
    assert_eq!(tail, "tail");
}

#[test]
fn open_file_keeps_old_content() {
    let pair = Pair::new();
    shell(&pair.target(), "printf 'old\\n' > data");
    shell(&pair.source(), "printf 'new\\n' > data");
    let old_inode = std::fs::metadata(pair.target().join("data")).unwrap().ino();

    // Another process opens the old file, then reads it after the put.
    let mut reader = Command::new("sh")
        .args(["-c", "exec 3< data; echo ready; read go; cat <&3"])
        .current_dir(pair.target())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(reader.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");

    pair.apply(&[Step::Put(world_path("data"))]).unwrap();
    writeln!(reader.stdin.take().unwrap(), "go").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(reader.wait().unwrap().success());

    assert_eq!(rest, "old\n", "content read through the old fd");
    let target_file = pair.target().join("data");
    assert_eq!(std::fs::read_to_string(&target_file).unwrap(), "new\n");
    assert_ne!(std::fs::metadata(&target_file).unwrap().ino(), old_inode);
}

#[test]
fn hard_links_stay_links() {
    let pair = Pair::new();
    shell(
        &pair.source(),
        "printf x > a && ln a b && mkdir d && ln a d/c && ln -s regular s && ln s s2",
    );
    let steps = [
        Step::Put(world_path("a")),
        Step::Put(world_path("b")),
        Step::Put(world_path("d")),
        Step::Put(world_path("d/c")),
        Step::SetMetadata(world_path("d")),
        Step::Put(world_path("s")),
        Step::Put(world_path("s2")),
        Step::SetMetadata(WorldPath::root()),
    ];
    pair.apply(&steps).unwrap();

    let inode = |path: &str| {
        std::fs::symlink_metadata(pair.target().join(path))
            .unwrap()
            .ino()
    };
    assert_eq!(inode("a"), inode("b"));
    assert_eq!(inode("a"), inode("d/c"));
    assert_eq!(inode("s"), inode("s2"));
    assert_eq!(tree_listing(&pair.target()), tree_listing(&pair.source()));

    // Applying the same steps again keeps the links and leaves no
    // temporary entries.
    pair.apply(&steps).unwrap();
    assert_eq!(inode("a"), inode("b"));
    assert_eq!(tree_listing(&pair.target()), tree_listing(&pair.source()));
    assert!(temporaries(&pair.target()).is_empty());
    assert!(temporaries(&pair.target().join("d")).is_empty());
}

#[test]
fn hard_link_to_removed_path_copies() {
    let pair = Pair::new();
    shell(&pair.source(), "printf x > a && ln a b");

    // The link `b` cannot be made to `a` once `a` is gone, so it becomes a
    // file of its own.
    let steps = [
        Step::Put(world_path("a")),
        Step::Remove(world_path("a")),
        Step::Put(world_path("b")),
    ];
    pair.apply(&steps).unwrap();

    assert!(!pair.target().join("a").exists());
    let b = pair.target().join("b");
    assert_eq!(std::fs::read_to_string(&b).unwrap(), "x");
    assert_eq!(std::fs::metadata(&b).unwrap().nlink(), 1);
}

#[test]
fn xattrs_acl_capability_kept() {
    let pair = Pair::new();
    shell(
        &pair.source(),
        "printf x > tool && chown 1000:1000 tool && chmod 4755 tool \
         && setfacl -m u:4321:r tool && setcap cap_net_raw+ep tool \
         && setfattr -n user.note -v hi tool \
         && mkdir shared && chown 1000:1000 shared && chmod 2775 shared \
         && setfacl -d -m u:4321:rwx shared && printf y > shared/file \
         && setfattr -n user.note -v kept regular && setfattr -n trusted.note -v t directory \
         && chmod 0751 . && setfattr -n user.root -v r .",
    );
    shell(
        &pair.target(),
        "setfattr -n user.stale -v 1 regular && setfacl -m u:99:rw regular \
         && setfattr -n user.stale -v 1 directory",
    );
    let steps = [
        Step::Put(world_path("tool")),
        Step::Put(world_path("shared")),
        Step::Put(world_path("shared/file")),
        Step::SetMetadata(world_path("shared")),
        Step::SetMetadata(world_path("regular")),
        Step::SetMetadata(world_path("directory")),
        Step::Put(WorldPath::root()),
    ];
    pair.apply(&steps).unwrap();

    assert_eq!(tree_listing(&pair.target()), tree_listing(&pair.source()));
    let target = pair.target();
    let capability = run("getcap", &[target.join("tool").to_str().unwrap()]);
    assert!(capability.contains("cap_net_raw=ep"), "{capability}");
    let mode = std::fs::metadata(target.join("tool")).unwrap().mode();
    assert_eq!(mode & 0o7777, 0o4755, "setuid kept after chown");
    let acl = run("getfacl", &["-cp", target.join("tool").to_str().unwrap()]);
    assert!(acl.contains("user:4321:r--"), "{acl}");
    let default_acl = run("getfacl", &["-cp", target.join("shared").to_str().unwrap()]);
    assert!(
        default_acl.contains("default:user:4321:rwx"),
        "{default_acl}"
    );
    let regular = run(
        "getfattr",
        &["-d", "-m", "-", target.join("regular").to_str().unwrap()],
    );
    assert!(!regular.contains("user.stale"), "{regular}");
    assert!(!regular.contains("posix_acl"), "{regular}");
    let root = std::fs::metadata(&target).unwrap();
    assert_eq!(root.mode() & 0o7777, 0o751, "mode of the root");
    let root_xattrs = run("getfattr", &["-d", target.to_str().unwrap()]);
    assert!(root_xattrs.contains("user.root=\"r\""), "{root_xattrs}");
}

#[test]
fn nocow_file_cloned_and_kept() {
    let pair = Pair::new();
    shell(
        &pair.source(),
        "touch nocow && chattr +C nocow && head -c 300000 /dev/urandom > nocow",
    );
    pair.apply(&[Step::Put(world_path("nocow"))]).unwrap();

    let source_file = std::fs::File::open(pair.source().join("nocow")).unwrap();
    let target_file = std::fs::File::open(pair.target().join("nocow")).unwrap();
    let flags = worlds::sys::fs::inode_flags(&target_file).unwrap();
    assert_ne!(flags & worlds::sys::fs::NOCOW_FLAG, 0, "nodatacow kept");
    // Shared data blocks mean FICLONE worked, with no copy.
    assert_eq!(
        worlds::sys::fs::extents(&target_file).unwrap(),
        worlds::sys::fs::extents(&source_file).unwrap()
    );
    assert_eq!(tree_listing(&pair.target()), tree_listing(&pair.source()));
}

#[test]
fn copy_fallback_across_filesystems() {
    let pair = Pair::new();
    // The scratch folder is on the host's filesystem, not in the pool, so
    // FICLONE fails with EXDEV and the put copies the data.
    let source = pair.test_store.scratch().join("source");
    std::fs::create_dir_all(&source).unwrap();
    shell(
        &source,
        "head -c 300000 /dev/urandom > data && chown 1234:5678 data && chmod 0640 data \
         && touch -d '2001-02-03 04:05:06' data",
    );
    apply(
        &pair.target(),
        &source,
        &[Step::Put(world_path("data"))],
        &|_| {},
    )
    .unwrap();

    let expected = std::fs::read(source.join("data")).unwrap();
    let found = std::fs::read(pair.target().join("data")).unwrap();
    assert_eq!(found.len(), 300_000);
    assert!(found == expected, "copied data differs");
    let metadata = std::fs::metadata(pair.target().join("data")).unwrap();
    assert_eq!((metadata.uid(), metadata.gid()), (1234, 5678));
    assert_eq!(metadata.mode() & 0o7777, 0o640);
    let source_metadata = std::fs::metadata(source.join("data")).unwrap();
    assert_eq!(metadata.mtime(), source_metadata.mtime());
}

#[test]
fn progress_counts_steps() {
    let pair = Pair::new();
    shell(&pair.source(), "printf a > one && printf b > two");
    let calls = RefCell::new(Vec::new());
    let steps = [
        Step::Put(world_path("one")),
        Step::Put(world_path("two")),
        Step::Remove(world_path("other")),
    ];
    apply(&pair.target(), &pair.source(), &steps, &|done| {
        calls.borrow_mut().push(done)
    })
    .unwrap();
    assert_eq!(calls.into_inner(), [1, 2, 3]);
}

/// Returns the names of temporary entries left in `dir`.
fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".world-merge."))
        .collect()
}

#[test]
fn failed_rename_removes_temporary() {
    let pair = Pair::new();
    shell(&pair.source(), "printf changed > regular");
    // rename(2) cannot replace an immutable file, so the put fails after
    // its temporary file was made and given attributes.
    shell(&pair.target(), "chattr +i regular");

    let error = pair.apply(&[Step::Put(world_path("regular"))]).unwrap_err();
    shell(&pair.target(), "chattr -i regular");

    assert!(
        matches!(
            &error,
            ApplyError::Put {
                source: StepError::Rename { .. },
                ..
            }
        ),
        "{}",
        error_chain(&error)
    );
    assert!(temporaries(&pair.target()).is_empty());
    assert_eq!(
        std::fs::read_to_string(pair.target().join("regular")).unwrap(),
        "new content\n",
        "the old file stays in place"
    );
}

#[test]
fn type_mismatch_and_missing_entries() {
    let pair = Pair::new();
    shell(
        &pair.source(),
        "rm -r directory && printf file > directory && rm regular && mkdir regular",
    );

    let error = pair
        .apply(&[Step::Put(world_path("directory"))])
        .unwrap_err();
    assert!(
        matches!(
            &error,
            ApplyError::Put {
                source: StepError::TypeMismatch { .. },
                ..
            }
        ),
        "{}",
        error_chain(&error)
    );
    let error = pair.apply(&[Step::Put(world_path("regular"))]).unwrap_err();
    assert!(
        matches!(
            &error,
            ApplyError::Put {
                source: StepError::TypeMismatch { .. },
                ..
            }
        ),
        "{}",
        error_chain(&error)
    );
    let error = pair
        .apply(&[Step::Remove(world_path("directory"))])
        .unwrap_err();
    assert!(
        matches!(
            &error,
            ApplyError::Remove {
                source: StepError::RemoveDirectory(_),
                ..
            }
        ),
        "{}",
        error_chain(&error)
    );
    let error = pair.apply(&[Step::Put(world_path("nowhere"))]).unwrap_err();
    assert!(
        matches!(
            &error,
            ApplyError::Put {
                source: StepError::SourceMissing,
                ..
            }
        ),
        "{}",
        error_chain(&error)
    );
    let error = pair
        .apply(&[Step::SetMetadata(world_path("directory"))])
        .unwrap_err();
    assert!(
        matches!(
            &error,
            ApplyError::SetMetadata {
                source: StepError::TypeMismatch { .. },
                ..
            }
        ),
        "{}",
        error_chain(&error)
    );

    // Removing what is already gone is no error.
    let absent = [
        Step::Remove(world_path("nowhere")),
        Step::Remove(world_path("nowhere/below")),
        Step::Remove(world_path("other/below")),
    ];
    pair.apply(&absent).unwrap();

    // An invalid path fails before any step runs.
    let steps = [
        Step::Remove(world_path("other")),
        Step::Put(WorldPath::root().join(b"..")),
    ];
    let error = pair.apply(&steps).unwrap_err();
    assert!(
        matches!(error, ApplyError::InvalidPath { index: 1, .. }),
        "{}",
        error_chain(&error)
    );
    assert!(pair.target().join("other").exists());
}

/// Makes a folder outside both trees for hostile symlinks to point to, with
/// one file in it, and returns it with its listing.
fn outside(pair: &Pair) -> (std::path::PathBuf, Vec<String>) {
    let folder = pair.test_store.scratch().join("outside");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("keep"), "outside\n").unwrap();
    let listing = tree_listing(&folder);
    (folder, listing)
}

fn assert_symlink_in_parent(error: &ApplyError, tree: Tree) {
    let found = match error {
        ApplyError::Put { source, .. }
        | ApplyError::Remove { source, .. }
        | ApplyError::SetMetadata { source, .. } => source,
        _ => panic!("unexpected error: {}", error_chain(error)),
    };
    assert!(
        matches!(found, StepError::SymlinkInParent { tree: found_tree } if *found_tree == tree),
        "expected a symlink in the {tree}: {}",
        error_chain(error)
    );
}

#[test]
fn source_symlink_to_host_root() {
    let pair = Pair::new();
    let evil = format!("world-apply-evil-{}", std::process::id());
    shell(&pair.source(), "rm -rf etc && ln -s / etc");
    shell(&pair.target(), "rm -rf etc");
    let steps = [
        Step::Put(world_path("etc")),
        Step::Put(world_path(&format!("etc/{evil}"))),
    ];
    let error = pair.apply(&steps).unwrap_err();

    assert_symlink_in_parent(&error, Tree::Source);
    assert!(!Path::new("/").join(&evil).exists());
    assert!(temporaries(&pair.target()).is_empty());
    let link = std::fs::read_link(pair.target().join("etc")).unwrap();
    assert_eq!(link, Path::new("/"), "the symlink itself was put");
}

#[test]
fn target_symlink_to_outside_folder() {
    let pair = Pair::new();
    let (folder, before) = outside(&pair);
    let folder_text = folder.to_str().unwrap();
    shell(
        &pair.target(),
        &format!("rm -rf etc && ln -s {folder_text} etc && ln -s {folder_text} link"),
    );
    shell(
        &pair.source(),
        &format!(
            "rm -rf etc && mkdir etc && printf secret > etc/shadow && printf x > etc/keep \
             && ln -s {folder_text} link && chown -h 1234:1234 link"
        ),
    );

    let cases = [
        (Step::Put(world_path("etc/shadow")), Tree::Target),
        (Step::Remove(world_path("etc/keep")), Tree::Target),
        (Step::SetMetadata(world_path("etc/keep")), Tree::Target),
    ];
    for (step, tree) in cases {
        let error = pair.apply(std::slice::from_ref(&step)).unwrap_err();
        assert_symlink_in_parent(&error, tree);
        assert_eq!(tree_listing(&folder), before, "after {step:?}");
    }

    // A directory cannot replace the symlink, and the symlink's own owner
    // changes without touching the folder it points to.
    let error = pair.apply(&[Step::Put(world_path("etc"))]).unwrap_err();
    assert!(
        matches!(
            &error,
            ApplyError::Put {
                source: StepError::TypeMismatch { .. },
                ..
            }
        ),
        "{}",
        error_chain(&error)
    );
    pair.apply(&[Step::SetMetadata(world_path("link"))])
        .unwrap();
    let link = std::fs::symlink_metadata(pair.target().join("link")).unwrap();
    assert_eq!((link.uid(), link.gid()), (1234, 1234));
    assert_eq!(tree_listing(&folder), before);
    let folder_metadata = std::fs::metadata(&folder).unwrap();
    assert_eq!((folder_metadata.uid(), folder_metadata.gid()), (0, 0));
}

#[test]
fn source_symlink_to_outside_folder() {
    let pair = Pair::new();
    let (folder, before) = outside(&pair);
    shell(
        &pair.source(),
        &format!("ln -s {} out", folder.to_str().unwrap()),
    );
    shell(&pair.target(), "mkdir out");

    // The source's `out/keep` lies outside the source: reading it fails.
    let error = pair
        .apply(&[Step::Put(world_path("out/keep"))])
        .unwrap_err();
    assert_symlink_in_parent(&error, Tree::Source);
    assert!(!pair.target().join("out/keep").exists());
    assert_eq!(tree_listing(&folder), before);
}

/// A bind mount made by a test, detached on drop, also after a panic.
struct BindMount(std::path::PathBuf);

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn target_mount_point_not_crossed() {
    let pair = Pair::new();
    let (folder, before) = outside(&pair);
    shell(&pair.target(), "mkdir mnt");
    shell(&pair.source(), "mkdir mnt && printf x > mnt/file");
    let mount_point = pair.target().join("mnt");
    nix::mount::mount(
        Some(&folder),
        &mount_point,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    let _mount = BindMount(mount_point);

    let error = pair
        .apply(&[Step::Put(world_path("mnt/file"))])
        .unwrap_err();
    assert!(
        matches!(
            &error,
            ApplyError::Put {
                source: StepError::MountInParent { tree: Tree::Target },
                ..
            }
        ),
        "{}",
        error_chain(&error)
    );
    assert_eq!(tree_listing(&folder), before);
}

#[test]
fn nested_subvolume_is_entered() {
    let pair = Pair::new();
    let target = std::fs::File::open(pair.target()).unwrap();
    worlds::sys::btrfs::create_subvolume(&target, std::ffi::OsStr::new("nested")).unwrap();
    shell(&pair.source(), "mkdir nested && printf x > nested/file");

    // A subvolume is no mount point, so paths below it resolve.
    pair.apply(&[Step::Put(world_path("nested/file"))]).unwrap();
    assert_eq!(
        std::fs::read_to_string(pair.target().join("nested/file")).unwrap(),
        "x"
    );
}
