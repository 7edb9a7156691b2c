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
