//! Runs the `world` binary against a store of its own, removed on drop.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The binary under test.
pub const WORLD: &str = env!("CARGO_BIN_EXE_world");
/// PATH of the cleared environment the binary runs in.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub struct TestEnv {
    folder: tempfile::TempDir,
    pub store: PathBuf,
}

/// What one run of the binary printed and how it exited.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl TestEnv {
    pub fn new() -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the CLI tests need root: run them through scripts/test.sh as root"
        );
        let folder = tempfile::Builder::new()
            .prefix("worlds-cli-test.")
            .tempdir_in("/tmp")
            .expect("create a temporary folder");
        let store = folder.path().join("store");
        Self { folder, store }
    }

    /// Returns the temporary folder that contains the store.
    pub fn folder(&self) -> &Path {
        self.folder.path()
    }

    /// Returns a command for the binary with a cleared environment and this
    /// store.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(program);
        command
            .env_clear()
            .env("PATH", PATH)
            .env("WORLDS_STORE", &self.store)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        command
    }

    /// Runs `world ARGS` and returns what it printed.
    pub fn world(&self, args: &[&str]) -> Run {
        run(self.command(WORLD).args(args))
    }

    /// Runs `world ARGS` and fails the test unless it succeeds.
    pub fn world_ok(&self, args: &[&str]) -> Run {
        let result = self.world(args);
        assert_eq!(result.code, 0, "world {args:?} failed: {}", result.stderr);
        result
    }

    /// Creates the store with a busybox root world named `name`.
    pub fn init_busybox(&self, name: &str) {
        self.world_ok(&["init", name, "--busybox", "--pool-size", "1G"]);
    }

    /// Replaces paths and times that change from run to run.
    pub fn normalize(&self, text: &str) -> String {
        let text = text.replace(self.folder.path().to_str().unwrap(), "[TMP]");
        let time = regex::Regex::new(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d").unwrap();
        let duration = regex::Regex::new(r"in \d+(\.\d)? m?s").unwrap();
        let subvolume = regex::Regex::new(r"subvolume \d+").unwrap();
        let text = time.replace_all(&text, "[TIME]");
        let text = duration.replace_all(&text, "in [DURATION]");
        subvolume.replace_all(&text, "subvolume [ID]").into_owned()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // Running worlds hold the pool busy; a test that failed midway may
        // have left some.
        if self.store.join("worlds.db").exists() {
            let _ = self
                .command(WORLD)
                .args(["stop", "--all", "--time", "1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if worlds::pool::unmount(&self.store).is_err() {
            let _ = nix::mount::umount2(&self.store.join("pool"), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

pub fn run(command: &mut Command) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("run the world binary");
    Run {
        code: status.code().unwrap_or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            128 + status.signal().unwrap_or(0)
        }),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}
