//! A fixture that gives each test a fresh store on its own loop-mounted
//! btrfs pool in a temporary folder, and removes the mount, the loop device
//! and the folder when dropped, also after a panic.

use std::path::{Path, PathBuf};
use std::process::Command;

use worlds::rootfs::RootSource;
use worlds::{Store, WorldName};

/// Pool size of test stores; the image is sparse.
pub const POOL_SIZE: u64 = 1 << 30;

pub struct TestStore {
    // Dropped after `Drop::drop` has unmounted the pool.
    folder: tempfile::TempDir,
    pub dir: PathBuf,
}

impl TestStore {
    /// Makes an empty folder for a store; the store itself is created by
    /// the first `create` or by the test.
    pub fn new() -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the integration tests need root: run them through scripts/test.sh as root"
        );
        let folder = tempfile::Builder::new()
            .prefix("worlds-test.")
            .tempdir_in("/tmp")
            .expect("create a temporary folder");
        let dir = folder.path().join("store");
        Self { folder, dir }
    }

    /// Creates the store, or opens it when it exists.
    pub fn open(&self) -> Store {
        Store::create(&self.dir, Some(POOL_SIZE))
            .expect("create or open the store")
            .0
    }

    /// Returns a folder for test files outside the store.
    pub fn scratch(&self) -> PathBuf {
        let path = self.folder.path().join("scratch");
        std::fs::create_dir_all(&path).unwrap();
        path
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        // Running worlds hold the pool busy; a test that failed midway may
        // have left some.
        if let Ok((mut store, _)) = Store::open(&self.dir) {
            for world in store.worlds().unwrap_or_default() {
                let _ = store.stop(&world.name, std::time::Duration::from_secs(1));
            }
        }
        if worlds::pool::unmount(&self.dir).is_err() {
            // A test that left a file open in the pool: detach lazily so
            // that the loop device goes once the file closes.
            let _ = nix::mount::umount2(&self.dir.join("pool"), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

pub fn name(text: &str) -> WorldName {
    WorldName::new(text).unwrap()
}

pub fn busybox() -> RootSource {
    RootSource::Busybox {
        binary: "/bin/busybox".into(),
    }
}

/// Runs a host command and fails the test with its output if it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("run {program}: {error}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Returns every file's attributes under `root` as sorted lines, for
/// comparing two trees: type, mode, owner, size, link count, mtime, symlink
/// target, device number and xattrs (including ACLs and capabilities).
pub fn tree_listing(root: &Path) -> Vec<String> {
    let stat = run(
        "find",
        &[
            root.to_str().unwrap(),
            "-mindepth",
            "1",
            "-printf",
            "%P %y %m %U:%G %s %n %T@ %l\\n",
        ],
    );
    // Directory sizes and link counts depend on the filesystem (btrfs
    // counts a directory's links as 1), so they are left out.
    let mut lines: Vec<String> = stat
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            if fields.get(1) == Some(&"d") {
                format!("{} d {} {} {}", fields[0], fields[2], fields[3], fields[6])
            } else {
                line.to_owned()
            }
        })
        .collect();
    let xattrs = Command::new("getfattr")
        .args(["--absolute-names", "-R", "-P", "-d", "-m", "-", "-e", "hex"])
        .arg(root)
        .output()
        .expect("run getfattr");
    let root_text = root.to_str().unwrap();
    for line in String::from_utf8_lossy(&xattrs.stdout).lines() {
        if !line.is_empty() {
            lines.push(format!("xattr {}", line.replace(root_text, "ROOT")));
        }
    }
    lines.sort();
    lines
}

/// The file types of the test matrices, named as `make_file` takes them.
pub const FILE_TYPES: [&str; 7] = [
    "regular",
    "directory",
    "symlink",
    "fifo",
    "socket",
    "char",
    "block",
];

/// Shell commands that make a file of `file_type` at `path`.
pub fn make_file(file_type: &str, path: &str) -> String {
    match file_type {
        "regular" => format!("printf 'new content\\n' > {path}"),
        "directory" => format!("mkdir {path} && printf x > {path}/inside"),
        "symlink" => format!("ln -s regular {path}"),
        "fifo" => format!("mkfifo {path}"),
        "socket" => format!("python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' {path}"),
        "char" => format!("mknod {path} c 1 5"),
        "block" => format!("mknod {path} b 7 201"),
        _ => unreachable!("unknown type {file_type}"),
    }
}
