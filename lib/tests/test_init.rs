use std::fs;
use std::path::Path;
use std::process::Command;

use worlds::rootfs::{RootSource, RootfsError};
use worlds::store::StoreError;

use crate::common::{busybox, name, run, tree_listing, TestStore};

#[test]
fn busybox_root_runs_a_shell() {
    let fixture = TestStore::new();
    let mut store = fixture.open();
    store.create_root(&name("bb"), &busybox(), &|_| {}).unwrap();
    let root = store.world_path(&name("bb"));

    assert_eq!(
        fs::read_link(root.join("bin/sh")).unwrap(),
        Path::new("/bin/busybox")
    );
    assert!(fs::read_to_string(root.join("etc/passwd"))
        .unwrap()
        .starts_with("root:x:0:0:"));
    let output = run(
        "chroot",
        &[
            root.to_str().unwrap(),
            "/bin/sh",
            "-c",
            "echo hello from $(uname -s)",
        ],
    );
    assert_eq!(output, "hello from Linux\n");
    assert_eq!(
        store.world(&name("bb")).unwrap().source,
        worlds::db::Source::Busybox
    );
}

#[test]
fn busybox_dynamic_binary_rejected() {
    let fixture = TestStore::new();
    let mut store = fixture.open();
    let source = RootSource::Busybox {
        binary: "/bin/sh".into(),
    };
    let error = store
        .create_root(&name("bb"), &source, &|_| {})
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::Fill {
                source: RootfsError::BusyboxDynamic { .. },
                ..
            }
        ),
        "{error}"
    );
    assert!(store.worlds().unwrap().is_empty());
    assert_eq!(
        fs::read_dir(fixture.dir.join("pool/tmp")).unwrap().count(),
        0
    );
}

/// Fills `dir` with one file of each kind and attributes that a copy must
/// keep: owner, mode, times, xattrs, an ACL, a capability, hard links, a
/// symlink, a fifo, a socket and a device node.
fn make_rich_tree(dir: &Path) {
    fs::create_dir_all(dir.join("etc/sub")).unwrap();
    fs::write(dir.join("etc/config"), "key = value\n").unwrap();
    fs::write(dir.join("etc/sub/linked"), "twice\n").unwrap();
    fs::hard_link(dir.join("etc/sub/linked"), dir.join("etc/also-linked")).unwrap();
    std::os::unix::fs::symlink("../etc/config", dir.join("etc/sub/to-config")).unwrap();
    fs::write(dir.join("ping"), b"\x7fELF fake binary").unwrap();
    let path = |relative: &str| dir.join(relative).to_str().unwrap().to_owned();

    run("chown", &["1234:5678", &path("etc/config")]);
    run("chmod", &["0640", &path("etc/config")]);
    run("chmod", &["4755", &path("ping")]);
    run(
        "setfattr",
        &["-n", "user.note", "-v", "kept", &path("etc/config")],
    );
    run("setfacl", &["-m", "u:4321:r", &path("etc/sub/linked")]);
    run("setcap", &["cap_net_raw+ep", &path("ping")]);
    run("mkfifo", &[&path("fifo")]);
    run("mknod", &[&path("null"), "c", "1", "3"]);
    run(
        "python3",
        &[
            "-c",
            &format!(
                "import socket; socket.socket(socket.AF_UNIX).bind('{}')",
                path("sock")
            ),
        ],
    );
    run(
        "touch",
        &[
            "-h",
            "-d",
            "2001-02-03 04:05:06",
            &path("etc/sub/to-config"),
        ],
    );
    run(
        "touch",
        &[
            "-d",
            "2001-02-03 04:05:06",
            &path("etc/config"),
            &path("etc/sub"),
        ],
    );
}

#[test]
fn from_dir_keeps_attributes() {
    let fixture = TestStore::new();
    let source = fixture.scratch().join("rich");
    make_rich_tree(&source);
    let mut store = fixture.open();
    store
        .create_root(
            &name("copy"),
            &RootSource::Directory(source.clone()),
            &|_| {},
        )
        .unwrap();
    let root = store.world_path(&name("copy"));

    assert_eq!(tree_listing(&root), tree_listing(&source));
    assert!(run("getcap", &[root.join("ping").to_str().unwrap()]).contains("cap_net_raw"));
}

#[test]
fn from_dir_rejects_missing_and_store_itself() {
    let fixture = TestStore::new();
    let mut store = fixture.open();
    let missing = RootSource::Directory(fixture.scratch().join("nope"));
    let error = store
        .create_root(&name("x"), &missing, &|_| {})
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::Fill {
                source: RootfsError::SourceNotDirectory { .. },
                ..
            }
        ),
        "{error}"
    );
    let itself = RootSource::Directory(fixture.dir.parent().unwrap().into());
    let error = store.create_root(&name("x"), &itself, &|_| {}).unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::Fill {
                source: RootfsError::SourceContainsStore { .. },
                ..
            }
        ),
        "{error}"
    );
    assert!(store.worlds().unwrap().is_empty());
}

#[test]
fn from_tar_each_compression() {
    let fixture = TestStore::new();
    let scratch = fixture.scratch();
    let source = scratch.join("rich");
    make_rich_tree(&source);
    let plain = scratch.join("root.tar");
    run(
        "tar",
        &[
            "--create",
            "--xattrs",
            "--xattrs-include=*",
            "--acls",
            "--file",
            plain.to_str().unwrap(),
            "--directory",
            source.to_str().unwrap(),
            ".",
        ],
    );
    let plain_text = plain.to_str().unwrap();
    // Names without the usual suffix: the format comes from the content.
    let archives = [
        ("plain", plain.clone()),
        ("gzip", compress(&scratch, plain_text, "gzip")),
        ("xz", compress(&scratch, plain_text, "xz")),
        ("zstd", compress(&scratch, plain_text, "zstd")),
        ("bzip2", compress(&scratch, plain_text, "bzip2")),
    ];

    let mut store = fixture.open();
    // The tar format has no sockets; GNU tar skips them when archiving.
    let mut expected = tree_listing(&source);
    expected.retain(|line| !line.starts_with("sock "));
    for (kind, archive) in archives {
        let world = name(&format!("from-{kind}"));
        let progress = std::cell::Cell::new(0u64);
        store
            .create_root(&world, &RootSource::Tar(archive.clone()), &|report| {
                if let worlds::rootfs::Progress::Bytes { done, .. } = report {
                    progress.set(done);
                }
            })
            .unwrap_or_else(|error| panic!("{kind}: {error}"));
        let root = store.world_path(&world);
        assert_eq!(tree_listing(&root), expected, "{kind}");
        assert_eq!(
            progress.get(),
            fs::metadata(&archive).unwrap().len(),
            "{kind}"
        );
    }
}

fn compress(dir: &Path, plain: &str, tool: &str) -> std::path::PathBuf {
    let target = dir.join(format!("root.{tool}.archive"));
    let output = Command::new(tool).args(["-c", plain]).output().unwrap();
    assert!(output.status.success(), "{tool} failed");
    fs::write(&target, output.stdout).unwrap();
    target
}

#[test]
fn from_tar_rejects_garbage() {
    let fixture = TestStore::new();
    let garbage = fixture.scratch().join("garbage.tar");
    fs::write(&garbage, vec![b'x'; 10_000]).unwrap();
    let mut store = fixture.open();
    let error = store
        .create_root(&name("bad"), &RootSource::Tar(garbage), &|_| {})
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::Fill {
                source: RootfsError::InvalidArchive { .. },
                ..
            }
        ),
        "{error}"
    );
    assert!(store.worlds().unwrap().is_empty());
    // The half-filled subvolume is gone.
    assert_eq!(
        fs::read_dir(fixture.dir.join("pool/tmp")).unwrap().count(),
        0
    );
}

#[test]
fn full_pool_reported_as_no_space() {
    let fixture = TestStore::new();
    let source = fixture.scratch().join("big");
    fs::create_dir(&source).unwrap();
    // Incompressible and not sparse, larger than the whole pool.
    run(
        "dd",
        &[
            "if=/dev/urandom",
            &format!("of={}", source.join("blob").display()),
            "bs=1M",
            "count=1200",
            "status=none",
        ],
    );
    let mut store = fixture.open();
    let error = store
        .create_root(&name("big"), &RootSource::Directory(source), &|_| {})
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::Fill {
                source: RootfsError::NoSpace { .. },
                ..
            }
        ),
        "{error}"
    );
    assert!(store.worlds().unwrap().is_empty());
    assert_eq!(
        fs::read_dir(fixture.dir.join("pool/tmp")).unwrap().count(),
        0
    );
}

#[test]
fn debootstrap_minbase_root() {
    let fixture = TestStore::new();
    let mut store = fixture.open();
    store.grow_pool(4 << 30).unwrap();
    let messages = std::cell::RefCell::new(Vec::new());
    let source = RootSource::Debootstrap {
        suite: "bookworm".into(),
    };
    store
        .create_root(&name("debian"), &source, &|report| {
            if let worlds::rootfs::Progress::Message(message) = report {
                messages.borrow_mut().push(message);
            }
        })
        .unwrap();
    let root = store.world_path(&name("debian"));
    assert!(fs::read_to_string(root.join("etc/os-release"))
        .unwrap()
        .contains("bookworm"));
    let output = run(
        "chroot",
        &[
            root.to_str().unwrap(),
            "dpkg-query",
            "-W",
            "-f",
            "${Package}\\n",
            "apt",
        ],
    );
    assert_eq!(output, "apt\n");
    assert!(messages
        .borrow()
        .iter()
        .any(|message| message.contains("Base system installed")));
}
