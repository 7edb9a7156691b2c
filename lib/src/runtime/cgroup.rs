//! A world's cgroup, read and signalled directly: the freezer state, the
//! processes in it, and its removal when libcontainer could not remove it.
//!
//! On a host with cgroup v1 hierarchies (the hybrid layout of Debian 12
//! without systemd) a world has one directory per controller. On a cgroup
//! v2 host it has one directory in the unified tree.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use super::paths::cgroup_path;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// How long [`kill_all`] waits for killed processes to leave the cgroup.
const KILL_WAIT: Duration = Duration::from_secs(2);
/// The v1 controllers that libcontainer makes a directory in.
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "blkio",
    "pids",
    "net_cls",
    "net_prio",
    "perf_event",
    "hugetlb",
    "rdma",
    "misc",
    "systemd",
];

/// Returns the directory that lists every process of the container: the
/// v1 `pids` hierarchy (or `freezer`), else the v2 tree.
fn procs_dir(container_id: &str) -> PathBuf {
    let relative = cgroup_path(container_id);
    let relative = relative.trim_start_matches('/');
    for controller in ["pids", "freezer"] {
        let path = PathBuf::from(CGROUP_ROOT).join(controller);
        if path.join("cgroup.procs").exists() {
            return path.join(relative);
        }
    }
    PathBuf::from(CGROUP_ROOT).join(relative)
}

/// Returns the host pids of every process in the container's cgroup.
pub(crate) fn pids(container_id: &str) -> io::Result<Vec<i32>> {
    let text = fs::read_to_string(procs_dir(container_id).join("cgroup.procs"))?;
    Ok(text
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect())
}

/// Returns whether the container's cgroup is frozen.
pub(crate) fn is_frozen(container_id: &str) -> bool {
    let relative = cgroup_path(container_id);
    let relative = relative.trim_start_matches('/');
    let v1 = PathBuf::from(CGROUP_ROOT)
        .join("freezer")
        .join(relative)
        .join("freezer.state");
    if let Ok(state) = fs::read_to_string(v1) {
        return state.trim() == "FROZEN";
    }
    let v2 = PathBuf::from(CGROUP_ROOT)
        .join(relative)
        .join("cgroup.freeze");
    fs::read_to_string(v2).is_ok_and(|state| state.trim() == "1")
}

/// Sends `signal` to every process in the container's cgroup, thawing it
/// first so that a frozen process can act on it. For SIGKILL it then waits
/// up to [`KILL_WAIT`] for the cgroup to empty, because a cgroup with
/// processes in it cannot be removed.
pub(crate) fn kill_all(container_id: &str, signal: Signal) {
    thaw(container_id);
    let deadline = Instant::now() + KILL_WAIT;
    loop {
        let Ok(pids) = pids(container_id) else { return };
        if pids.is_empty() {
            return;
        }
        // Processes forked since the last pass get this one.
        for pid in pids {
            let _ = signal::kill(Pid::from_raw(pid), signal);
        }
        if signal != Signal::SIGKILL || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn thaw(container_id: &str) {
    let relative = cgroup_path(container_id);
    let relative = relative.trim_start_matches('/');
    let v1 = PathBuf::from(CGROUP_ROOT)
        .join("freezer")
        .join(relative)
        .join("freezer.state");
    if v1.exists() {
        let _ = fs::write(v1, "THAWED");
        return;
    }
    let v2 = PathBuf::from(CGROUP_ROOT)
        .join(relative)
        .join("cgroup.freeze");
    if v2.exists() {
        let _ = fs::write(v2, "0");
    }
}

/// Removes the container's cgroup directories that are left and empty.
pub(crate) fn remove(container_id: &str) {
    let relative = cgroup_path(container_id);
    let relative = relative.trim_start_matches('/');
    let mut dirs: Vec<PathBuf> = V1_CONTROLLERS
        .iter()
        .map(|controller| PathBuf::from(CGROUP_ROOT).join(controller).join(relative))
        .collect();
    dirs.push(PathBuf::from(CGROUP_ROOT).join("unified").join(relative));
    dirs.push(PathBuf::from(CGROUP_ROOT).join(relative));
    for dir in dirs {
        if dir.is_dir() {
            // rmdir(2) is the only way to remove a cgroup; it fails while
            // processes remain.
            if let Err(error) = fs::remove_dir(&dir) {
                tracing::warn!(cgroup = %dir.display(), error = %error, "remove a cgroup");
            }
        }
    }
}

/// Returns the cgroup directories of the container that exist, for tests
/// that check that nothing is left.
pub fn existing_dirs(container_id: &str) -> Vec<PathBuf> {
    let relative = cgroup_path(container_id);
    let relative = relative.trim_start_matches('/');
    let Ok(entries) = fs::read_dir(CGROUP_ROOT) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path().join(relative))
        .filter(|path| path.is_dir())
        .collect();
    let v2 = PathBuf::from(CGROUP_ROOT).join(relative);
    if v2.is_dir() {
        found.push(v2);
    }
    found
}
