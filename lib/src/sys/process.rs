//! Process calls that `std` and `nix` 0.29 do not wrap.

/// Ends the calling process at once with `code`, without running exit
/// handlers or flushing buffers (`_exit(2)`).
///
/// A process forked from another without exec holds copies of its parent's
/// buffers and exit handlers; running them would write the parent's
/// buffered output a second time.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` takes no pointers and never returns; skipping
    // destructors and exit handlers is the point of calling it.
    unsafe { libc::_exit(code) }
}

/// Lowers the scheduling priority of the calling process to `nice`, where
/// 19 is the lowest (setpriority(2)). Raising it needs privileges that the
/// caller may lack, which is why the call only lowers it.
pub fn lower_priority(nice: i32) -> std::io::Result<()> {
    // SAFETY: setpriority takes plain integers and touches no memory of
    // ours; `who` 0 names the calling process.
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if result != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Gives the calling thread a working directory of its own, apart from the
/// rest of the process (unshare(2) with `CLONE_FS`). The thread may then
/// change it with [`crate::sys::beneath::Dir::enter`] and look up names
/// relative to it without touching other threads.
pub fn own_working_directory() -> std::io::Result<()> {
    // SAFETY: unshare takes a plain flag word and touches no memory of
    // ours; `CLONE_FS` affects only the calling thread.
    if unsafe { libc::unshare(libc::CLONE_FS) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Lets the program that `command` runs read the open `files`, and returns
/// the path of each there: `/proc/self/fd/N`, which the program opens to
/// reach the same file. The files must stay open until the command has
/// been spawned.
///
/// A caller that resolved a path safely, without following symlinks, thus
/// hands the program that file and not whatever the path names by then.
pub fn pass_files(
    command: &mut std::process::Command,
    files: &[&std::fs::File],
) -> Vec<std::path::PathBuf> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fds: Vec<i32> = files.iter().map(|file| file.as_raw_fd()).collect();
    let paths = fds
        .iter()
        .map(|fd| format!("/proc/self/fd/{fd}").into())
        .collect();
    // SAFETY: between fork and exec the closure calls only fcntl(2), which
    // is async-signal-safe, and allocates nothing. The fds are open in the
    // child, because the caller keeps them open until the spawn.
    unsafe {
        command.pre_exec(move || {
            for &fd in &fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    paths
}

/// Gives the calling process a new anonymous session keyring
/// (`KEYCTL_JOIN_SESSION_KEYRING`, see keyctl(2)), so that the processes it
/// starts in a world do not share the caller's keys. A kernel without
/// keyrings has nothing to share, so `ENOSYS` counts as success.
pub fn new_session_keyring() -> std::io::Result<()> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: with a null name, keyctl makes a new anonymous keyring and
    // reads no memory of ours.
    let result = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    if result == -1 {
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::ENOSYS) {
            return Err(error);
        }
    }
    Ok(())
}

/// Waits for the scoped threads `workers` and returns their results in
/// order. A thread that panicked gives an error that calls it `label`.
pub fn join_all<T>(
    workers: Vec<std::thread::ScopedJoinHandle<'_, std::io::Result<T>>>,
    label: &str,
) -> Vec<std::io::Result<T>> {
    workers
        .into_iter()
        .map(|worker| {
            worker
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other(format!("{label} panicked"))))
        })
        .collect()
}
