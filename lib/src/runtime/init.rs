//! The init of a world: pid 1 of its pid namespace.
//!
//! libcontainer runs a world's container process up to the point where it
//! would exec the workload, then calls an [`Executor`]. [`InitExecutor`]
//! runs [`run`] there instead of an exec, so init is Rust code of this
//! crate and no file of ours is placed in the world.
//!
//! The kernel delivers to pid 1 of a namespace only the signals it has a
//! handler for or has blocked (see pid_namespaces(7)). Init blocks the
//! signals it acts on and reads them from a signalfd.

use std::collections::HashMap;
use std::fs;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::time::Duration;

use libcontainer::oci_spec::runtime::Spec;
use libcontainer::workload::{
    Executor, ExecutorError, ExecutorSetEnvsError, ExecutorValidationError,
};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{self, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::sys::process::exit_now;
use crate::track::tracer::{Tracer, TrackFds};

/// How often init checks, while stopping, whether processes are left.
const STOP_POLL_MS: u16 = 20;
/// The nice value of init: the lowest, so that the world's work and the
/// kernel's come first.
const INIT_NICE: i32 = 19;

/// The signal that makes init send every access it has read at once
/// ([`crate::track`]).
pub const FLUSH_SIGNAL: Signal = Signal::SIGUSR1;

/// Signals that stop the world: SIGTERM from `world stop`, SIGINT and
/// SIGPWR as other inits take them.
const STOP_SIGNALS: [Signal; 3] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGPWR];

/// The executor that turns the container process into the world's init,
/// with the descriptors of access tracking when it is on.
#[derive(Clone, Default)]
pub struct InitExecutor {
    pub tracking: Option<Arc<TrackFds>>,
}

impl Executor for InitExecutor {
    fn exec(&self, _spec: &Spec) -> Result<(), ExecutorError> {
        run(self.tracking.as_deref())
    }

    fn validate(&self, _spec: &Spec) -> Result<(), ExecutorValidationError> {
        Ok(())
    }

    fn setup_envs(&self, _envs: HashMap<String, String>) -> Result<(), ExecutorSetEnvsError> {
        Ok(())
    }
}

/// Runs init until the world stops; never returns.
///
/// The process is a fork of the monitor without exec, so it first closes
/// every descriptor it inherited beyond standard input, output and error,
/// and those of `tracking`.
pub fn run(tracking: Option<&TrackFds>) -> ! {
    let keep: Vec<i32> = tracking
        .map(|fds| vec![fds.group.as_raw_fd(), fds.pipe.as_raw_fd()])
        .unwrap_or_default();
    close_inherited_fds(&keep);
    // Init only reaps and reads the access events; the world's processes
    // come from `world exec`, not from init, so they keep their own
    // priority. Events wait in the kernel's queue while init waits for a
    // CPU, and an overflow is recorded, never lost silently.
    if let Err(error) = crate::sys::process::lower_priority(INIT_NICE) {
        tracing::debug!(error = %error, "lower the priority of init");
    }
    let mut tracer = tracking.map(Tracer::new);

    let mut signals = SigSet::empty();
    signals.add(Signal::SIGCHLD);
    signals.add(Signal::SIGHUP);
    signals.add(FLUSH_SIGNAL);
    for stop in STOP_SIGNALS {
        signals.add(stop);
    }
    if signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signals), None).is_err() {
        exit_now(1);
    }
    let Ok(signal_fd) =
        SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
    else {
        exit_now(1);
    };

    let mut stopping = false;
    loop {
        let stop_poll = stopping.then_some(Duration::from_millis(STOP_POLL_MS.into()));
        let batch_due = tracer.as_ref().and_then(Tracer::timeout);
        let timeout = match (stop_poll, batch_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let timeout = timeout.map_or(PollTimeout::NONE, |wait| {
            // Round up, so that a due batch is not polled for in a loop.
            PollTimeout::try_from(wait.as_millis() as u64 + 1).unwrap_or(PollTimeout::MAX)
        });
        let mut fds = vec![PollFd::new(signal_fd.as_fd(), PollFlags::POLLIN)];
        if let Some(group) = tracer.as_ref().and_then(Tracer::group) {
            fds.push(PollFd::new(group, PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => exit_now(1),
        }
        let group_readable = fds
            .get(1)
            .and_then(|fd| fd.revents())
            .is_some_and(|events| !events.is_empty());
        drop(fds);
        if let Some(tracer) = &mut tracer {
            tracer.poll_events(group_readable);
        }
        while let Ok(Some(info)) = signal_fd.read_signal() {
            let stop = STOP_SIGNALS
                .iter()
                .any(|signal| *signal as u32 == info.ssi_signo);
            if info.ssi_signo == FLUSH_SIGNAL as u32 {
                if let Some(tracer) = &mut tracer {
                    tracer.flush();
                }
            }
            if stop && !stopping {
                stopping = true;
                // pid -1 reaches every process of the namespace but init.
                let _ = signal::kill(Pid::from_raw(-1), Signal::SIGTERM);
            }
        }
        reap_children();
        if stopping && !others_alive() {
            // Every other process is gone, so the queue contains the world's
            // last accesses.
            if let Some(tracer) = &mut tracer {
                tracer.finish();
            }
            exit_now(0);
        }
    }
}

/// Reaps every child that has ended, orphans included.
fn reap_children() {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}

/// Returns whether a live process other than init is left in the world,
/// counting the commands of `world exec`, which are not init's children.
/// Zombies whose parent is outside the world do not count.
fn others_alive() -> bool {
    let Ok(entries) = fs::read_dir("/proc") else {
        return false;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != 1)
        .any(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next());
            matches!(state, Some(state) if state != "Z" && state != "X")
        })
}

/// Closes every descriptor above 2 but those in `keep`, as listed in
/// `/proc/self/fd`.
fn close_inherited_fds(keep: &[i32]) {
    let Ok(entries) = fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2 && !keep.contains(fd))
        .collect();
    for fd in fds {
        // The descriptor of the directory listing is closed by now and
        // fails with EBADF, which is harmless.
        let _ = nix::unistd::close(fd);
    }
}
