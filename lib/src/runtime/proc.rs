//! Facts about processes from `/proc` (see proc(5)).

use std::fs;
use std::io;

use super::cgroup;

/// One process of a running world.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProcessInfo {
    /// The pid inside the world; init is 1.
    pub pid: i32,
    /// The pid on the host.
    pub host_pid: i32,
    /// The parent's pid inside the world, or 0 for a process whose parent
    /// is outside it, such as a command of `world exec`.
    pub ppid: i32,
    /// Real user id in the host's user namespace.
    pub uid: u32,
    /// One-letter state: R running, S sleeping, D disk wait, Z zombie, T
    /// stopped.
    pub state: String,
    /// The command line, or `[comm]` for a process without one.
    pub command: String,
}

/// Returns the start time of process `pid` in clock ticks after boot, or
/// `None` when it does not exist or is a zombie.
pub(crate) fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields = stat_fields(&stat)?;
    // Fields after the command: field 3 (state) is index 0, field 22
    // (starttime) is index 19.
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Returns the fields of `/proc/PID/stat` after the parenthesized command,
/// which may itself contain spaces and parentheses.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().collect())
}

/// Returns the processes in the cgroup of container `container_id`,
/// ordered by their pid in the world.
pub(crate) fn list(container_id: &str) -> io::Result<Vec<ProcessInfo>> {
    let mut processes = Vec::new();
    for host_pid in cgroup::pids(container_id)? {
        // A process may end between the listing and these reads.
        if let Some(info) = read(host_pid) {
            processes.push(info);
        }
    }
    processes.sort_by_key(|process| process.pid);
    Ok(processes)
}

fn read(host_pid: i32) -> Option<ProcessInfo> {
    let status = fs::read_to_string(format!("/proc/{host_pid}/status")).ok()?;
    let field = |key: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .map(str::trim)
    };
    // NSpid lists the pid in each pid namespace, outermost first.
    let pid = field("NSpid:")?.split_whitespace().last()?.parse().ok()?;
    let ppid_host: i32 = field("PPid:")?.parse().ok()?;
    let uid = field("Uid:")?.split_whitespace().next()?.parse().ok()?;
    let state = field("State:")?.chars().next()?.to_string();
    let ppid = if pid == 1 {
        0
    } else {
        namespace_pid(ppid_host, host_pid).unwrap_or(0)
    };
    let cmdline = fs::read(format!("/proc/{host_pid}/cmdline")).unwrap_or_default();
    let command = if cmdline.is_empty() {
        format!("[{}]", field("Name:").unwrap_or(""))
    } else {
        let words: Vec<String> = cmdline
            .split(|byte| *byte == 0)
            .filter(|word| !word.is_empty())
            .map(|word| String::from_utf8_lossy(word).into_owned())
            .collect();
        words.join(" ")
    };
    Some(ProcessInfo {
        pid,
        host_pid,
        ppid,
        uid,
        state,
        command,
    })
}

/// Returns the pid of host process `host_pid` in the pid namespace of
/// `peer`, or `None` when it is not in that namespace.
fn namespace_pid(host_pid: i32, peer: i32) -> Option<i32> {
    let namespace = |pid: i32| fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    if namespace(host_pid)? != namespace(peer)? {
        return None;
    }
    let status = fs::read_to_string(format!("/proc/{host_pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_command_with_parentheses() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 777 0";
        let fields = stat_fields(stat).unwrap();
        assert_eq!(fields[0], "S");
        assert_eq!(fields[19], "777");
    }

    #[test]
    fn own_start_time_readable() {
        assert!(start_time(std::process::id() as i32).is_some());
        assert_eq!(start_time(i32::MAX), None);
    }
}
