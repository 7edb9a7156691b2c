//! The library's runtime calls on real containers. The monitor is the
//! `world` binary's hidden `__monitor` subcommand, which `cargo test
//! --workspace` builds before it runs any test.

use std::io::Read;
use std::path::{Path, PathBuf};

use worlds::runtime::{ExecRequest, MonitorCommand, RunState, StartOptions};
use worlds::Store;

use crate::common::{busybox, name, TestStore};

/// Returns the debug build of the `world` binary, if it has been built.
fn world_binary() -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("debug/world");
    path.is_file().then_some(path)
}

fn start_options(store_dir: &Path, program: PathBuf) -> StartOptions {
    StartOptions {
        network: None,
        limits: Default::default(),
        track: None,
        subnet: Default::default(),
        monitor: MonitorCommand {
            program,
            args: vec![
                "--store".into(),
                store_dir.canonicalize().unwrap().into(),
                "__monitor".into(),
            ],
            env: vec![("PATH".into(), "/usr/sbin:/usr/bin:/sbin:/bin".into())],
        },
    }
}

#[test]
fn with_frozen_restores_state() {
    let Some(program) = world_binary() else {
        eprintln!("skipped: no debug build of the world binary; run cargo test --workspace");
        return;
    };
    let fixture = TestStore::new();
    let mut store = fixture.open();
    let base = name("base");
    store.create_root(&base, &busybox(), &|_| {}).unwrap();

    // A stopped world stays stopped, and the work still runs.
    let state = store
        .with_frozen(&base, |store: &mut Store| {
            store.status(&base).unwrap().state
        })
        .unwrap();
    assert_eq!(state, RunState::Stopped);

    store
        .start(&base, &start_options(&fixture.dir, program))
        .unwrap();
    let state = store
        .with_frozen(&base, |store: &mut Store| {
            store.status(&base).unwrap().state
        })
        .unwrap();
    assert_eq!(state, RunState::Frozen, "frozen during the work");
    assert_eq!(store.status(&base).unwrap().state, RunState::Running);

    assert!(!store.freeze(&base).unwrap());
    let state = store
        .with_frozen(&base, |store: &mut Store| {
            store.status(&base).unwrap().state
        })
        .unwrap();
    assert_eq!(state, RunState::Frozen);
    assert_eq!(
        store.status(&base).unwrap().state,
        RunState::Frozen,
        "a world frozen before stays frozen"
    );

    store
        .stop(&base, std::time::Duration::from_secs(5))
        .unwrap();
    assert_eq!(store.status(&base).unwrap().state, RunState::Stopped);
}

#[test]
fn exec_stdio_captured() {
    let Some(program) = world_binary() else {
        eprintln!("skipped: no debug build of the world binary; run cargo test --workspace");
        return;
    };
    let fixture = TestStore::new();
    let mut store = fixture.open();
    let base = name("base");
    store.create_root(&base, &busybox(), &|_| {}).unwrap();
    store
        .start(&base, &start_options(&fixture.dir, program))
        .unwrap();

    let (out_read, out_write) = nix::unistd::pipe().unwrap();
    let (err_read, err_write) = nix::unistd::pipe().unwrap();
    let stdin: std::os::fd::OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
    let request = ExecRequest {
        args: vec![
            "sh".into(),
            "-c".into(),
            "echo out; echo err >&2; exit 3".into(),
        ],
        stdio: Some([stdin, out_write, err_write]),
        ..ExecRequest::default()
    };
    let child = store.exec(&base, request).unwrap();
    assert_eq!(child.wait().unwrap(), 3);
    let read = |fd: std::os::fd::OwnedFd| {
        let mut text = String::new();
        std::fs::File::from(fd).read_to_string(&mut text).unwrap();
        text
    };
    assert_eq!(read(out_read), "out\n");
    assert_eq!(read(err_read), "err\n");

    store
        .stop(&base, std::time::Duration::from_secs(5))
        .unwrap();
}
