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
