//! The change matrix: one case per (type before × type after × kind of
//! change), plus awkward names, renames, hard links, attribute-only
//! changes, sparse files and nesting. Each case runs in a fresh child world
//! and must give the expected changes by both the fast path and the full
//! walk.

use std::process::Command;

use worlds::diff::{Change, DiffOptions, Method};
use worlds::store::DeleteOptions;
use worlds::{Store, WorldName};

use crate::common::{busybox, make_file, name, TestStore, FILE_TYPES};

/// Returns the paths that making `file_type` at `path` adds: the path, and
/// the contents of a new directory.
fn made(file_type: &str, path: &str) -> Vec<String> {
    match file_type {
        "directory" => vec![path.into(), format!("{path}/inside")],
        _ => vec![path.into()],
    }
}

/// Fills the root world: one file of each type, named after its type, a
/// 1 TB sparse file and a second regular file.
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
    script.push("truncate -s 1T sparse".into());
    shell(store, &root, &script.join(" && "));
    root
}

fn shell(store: &Store, world: &WorldName, script: &str) {
    let output = Command::new("bash")
        .args(["-euc", script])
        .current_dir(store.world_path(world))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "script {script:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Renders changes as `LETTER /path` lines, paths escaped as Rust escapes
/// bytes.
fn render(changes: &[Change]) -> Vec<String> {
    changes
        .iter()
        .map(|change| {
            format!(
                "{} {}",
                change.kind.letter(),
                change.path.to_absolute_bytes().escape_ascii()
            )
        })
        .collect()
}

fn expect(letter: char, paths: &[String]) -> Vec<String> {
    paths
        .iter()
        .map(|path| format!("{letter} /{path}"))
        .collect()
}

struct Case {
    label: String,
    script: String,
    expected: Vec<String>,
}

fn matrix() -> Vec<Case> {
    let mut cases = Vec::new();
    for file_type in FILE_TYPES {
        cases.push(Case {
            label: format!("{file_type} added"),
            script: make_file(file_type, "fresh"),
            expected: expect('A', &made(file_type, "fresh")),
        });
        let mut deleted = vec![file_type.to_owned()];
        if file_type == "directory" {
            deleted.push("directory/inner".into());
        }
        cases.push(Case {
            label: format!("{file_type} deleted"),
            script: format!("rm -r {file_type}"),
            expected: expect('D', &deleted),
        });
        let metadata_script = match file_type {
            // A symlink's own mode cannot change on Linux.
            "symlink" => "chown -h 1234:1234 symlink".to_owned(),
            _ => format!("chmod 0600 {file_type}"),
        };
        cases.push(Case {
            label: format!("{file_type} metadata-only"),
            script: metadata_script,
            expected: expect('m', &[file_type.into()]),
        });
        cases.push(Case {
            label: format!("{file_type} unchanged"),
            script: format!("ls -l {file_type} > /dev/null"),
            expected: Vec::new(),
        });
        for new_type in FILE_TYPES.iter().filter(|new_type| **new_type != file_type) {
            let mut expected = expect('T', &[file_type.into()]);
            if file_type == "directory" {
                expected.push("D /directory/inner".into());
            }
            if *new_type == "directory" {
                expected.push(format!("A /{file_type}/inside"));
            }
            cases.push(Case {
                label: format!("{file_type} became {new_type}"),
                script: format!("rm -r {file_type} && {}", make_file(new_type, file_type)),
                expected,
            });
        }
    }
    let modified = [
        ("regular", "printf more >> regular"),
        (
            "regular",
            "printf 'same size\\n' | dd of=regular conv=notrunc status=none",
        ),
        ("symlink", "ln -sfn other symlink"),
        ("char", "rm char && mknod char c 1 7"),
        ("block", "rm block && mknod block b 7 202"),
    ];
    // A fifo or socket has no content: one replaced by a new one differs
    // only in its mtime.
    for file_type in ["fifo", "socket"] {
        cases.push(Case {
            label: format!("{file_type} replaced by a new one"),
            script: format!("rm {file_type} && {}", make_file(file_type, file_type)),
            expected: expect('m', &[file_type.into()]),
        });
    }
    for (file_type, script) in modified {
        cases.push(Case {
            label: format!("{file_type} modified by {script}"),
            script: script.to_owned(),
            expected: expect('M', &[file_type.into()]),
        });
    }
    cases
}

fn extra_cases() -> Vec<Case> {
    let case = |label: &str, script: &str, expected: &[&str]| Case {
        label: label.into(),
        script: script.into(),
        expected: expected.iter().map(|line| (*line).to_owned()).collect(),
    };
    vec![
        case(
            "awkward names",
            "touch $'new\\nline' $'tab\\there' 'with space' -- '-dash' \"$(printf 'bad\\377utf8')\"",
            &["A /-dash", "A /bad\\xffutf8", "A /new\\nline", "A /tab\\there", "A /with space"],
        ),
        case(
            "directory replaced by a file and back",
            "rm -r directory && printf x > directory && rm directory && mkdir directory",
            &["D /directory/inner"],
        ),
        case(
            "directory replaced by a file",
            "rm -r directory && printf x > directory",
            &["D /directory/inner", "T /directory"],
        ),
        case(
            "directory renamed",
            "mv directory renamed",
            &["A /renamed", "A /renamed/inner", "D /directory", "D /directory/inner"],
        ),
        case(
            "hard links between existing files",
            "ln -f regular other && ln regular third",
            &["A /third", "M /other"],
        ),
        case("xattr only", "setfattr -n user.note -v hi regular", &["m /regular"]),
        case("acl only", "setfacl -m u:4321:r regular", &["m /regular"]),
        case("capability only", "setcap cap_net_raw+ep regular", &["m /regular"]),
        case("atime only", "cat regular > /dev/null && touch -a regular", &[]),
        case("mtime only", "touch -d '2001-01-01' regular", &["m /regular"]),
        case("sparse file added", "truncate -s 1T huge", &["A /huge"]),
        case(
            "sparse file written",
            "printf x | dd of=sparse bs=1 seek=4096 conv=notrunc status=none",
            &["M /sparse"],
        ),
        case(
            "rewritten with the same bytes",
            "cp -p --reflink=never regular copy && cat copy > regular && touch -r copy regular && rm copy",
            &[],
        ),
        case(
            "file moved into a directory",
            "mv other directory/other",
            &["A /directory/other", "D /other"],
        ),
        case("root mode", "chmod 0700 .", &["m /"]),
        // A directory's size is the length of its names, so these leave it
        // as it was: only the new names tell the fast path about the lost
        // ones.
        case(
            "file deleted, another of equal name length added",
            "rm other && printf y > extra",
            &["A /extra", "D /other"],
        ),
        case(
            "file renamed to a name of equal length",
            "mv other rehto",
            &["A /rehto", "D /other"],
        ),
    ]
}

fn diff_both_ways(store: &Store, world: &WorldName) -> (Vec<String>, Vec<String>) {
    let fast = DiffOptions {
        method: Method::Fast,
        ..DiffOptions::default()
    };
    let walk = DiffOptions {
        method: Method::Walk,
        ..DiffOptions::default()
    };
    (
        render(&store.diff(world, &fast).unwrap()),
        render(&store.diff(world, &walk).unwrap()),
    )
}

fn run_cases(cases: Vec<Case>) {
    let fixture_store = TestStore::new();
    let mut store = fixture_store.open();
    let root = fixture(&mut store);
    let mut failures = Vec::new();
    for (index, case) in cases.into_iter().enumerate() {
        let child = name(&format!("case{index}"));
        store.create_child(&child, &root).unwrap();
        shell(&store, &child, &case.script);
        let (mut fast, mut walk) = diff_both_ways(&store, &child);
        let mut expected = case.expected.clone();
        for lines in [&mut expected, &mut fast, &mut walk] {
            lines.sort();
        }
        if fast != expected || walk != expected {
            failures.push(format!(
                "{}: expected {expected:?}, fast path {fast:?}, full walk {walk:?}",
                case.label
            ));
        }
        store.delete(&child, &DeleteOptions::default()).unwrap();
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn change_matrix() {
    run_cases(matrix());
}

#[test]
fn awkward_changes() {
    run_cases(extra_cases());
}

#[test]
fn grandchild_shows_own_changes_only() {
    let fixture_store = TestStore::new();
    let mut store = fixture_store.open();
    let root = fixture(&mut store);
    store.create_child(&name("a"), &root).unwrap();
    shell(&store, &name("a"), "printf a > from-a");
    store.create_child(&name("b"), &name("a")).unwrap();
    shell(&store, &name("b"), "printf b > from-b && rm regular");
    store.create_child(&name("c"), &name("b")).unwrap();
    shell(&store, &name("c"), "printf c > from-c && chmod 0600 other");

    for (world, expected) in [
        ("a", vec!["A /from-a"]),
        ("b", vec!["A /from-b", "D /regular"]),
        ("c", vec!["A /from-c", "m /other"]),
    ] {
        let (fast, walk) = diff_both_ways(&store, &name(world));
        assert_eq!(fast, expected, "fast path of {world}");
        assert_eq!(walk, expected, "full walk of {world}");
    }
}

#[test]
fn symlink_in_base_never_leads_out() {
    let fixture_store = TestStore::new();
    let mut store = fixture_store.open();
    let root = fixture(&mut store);
    // A folder of the host with the names that the child makes, reached
    // from the base through the symlinks `up` (absolute) and `back`
    // (relative, out through the world's root).
    let outside = fixture_store.scratch();
    std::fs::create_dir_all(outside.join("etc")).unwrap();
    std::fs::write(outside.join("etc/hostname"), "host\n").unwrap();
    std::fs::write(outside.join("etc/secret"), "host\n").unwrap();
    let relative = format!("../../../../../../../../..{}", outside.display());
    shell(
        &store,
        &root,
        &format!("ln -s {} up && ln -s {relative} back", outside.display()),
    );
    let child = name("child");
    store.create_child(&child, &root).unwrap();
    shell(
        &store,
        &child,
        "for link in up back; do rm $link && mkdir -p $link/etc && printf world > $link/etc/hostname; done",
    );

    let (fast, walk) = diff_both_ways(&store, &child);
    let expected = [
        "T /back",
        "A /back/etc",
        "A /back/etc/hostname",
        "T /up",
        "A /up/etc",
        "A /up/etc/hostname",
    ];
    assert_eq!(fast, expected, "fast path");
    assert_eq!(walk, expected, "full walk");
}

#[test]
fn parent_changes_since_base() {
    let fixture_store = TestStore::new();
    let mut store = fixture_store.open();
    let root = fixture(&mut store);
    store.create_child(&name("child"), &root).unwrap();
    shell(&store, &root, "printf later >> regular && rm other");
    shell(&store, &name("child"), "printf mine > mine");

    let options = DiffOptions::default();
    let parent = render(&store.diff_parent(&name("child"), &options).unwrap());
    assert_eq!(parent, ["D /other", "M /regular"]);
    let walk = DiffOptions {
        method: Method::Walk,
        ..DiffOptions::default()
    };
    assert_eq!(
        render(&store.diff_parent(&name("child"), &walk).unwrap()),
        parent
    );
    assert_eq!(
        render(&store.diff(&name("child"), &options).unwrap()),
        ["A /mine"]
    );
}

#[test]
fn path_filters_and_root_world() {
    let fixture_store = TestStore::new();
    let mut store = fixture_store.open();
    let root = fixture(&mut store);
    store.create_child(&name("child"), &root).unwrap();
    shell(
        &store,
        &name("child"),
        "printf x > directory/new && printf y > top && printf z > directory-like",
    );

    let options = DiffOptions {
        filters: vec![worlds::path::WorldPath::from_bytes(b"/directory")],
        ..DiffOptions::default()
    };
    assert_eq!(
        render(&store.diff(&name("child"), &options).unwrap()),
        ["A /directory/new"]
    );
    let error = store.diff(&root, &DiffOptions::default()).unwrap_err();
    assert!(
        matches!(error, worlds::store::StoreError::NoBase { .. }),
        "{error}"
    );
    // The read-only snapshot that the diff read is gone.
    assert_eq!(
        std::fs::read_dir(fixture_store.dir.join("pool/tmp"))
            .unwrap()
            .count(),
        0
    );
}
