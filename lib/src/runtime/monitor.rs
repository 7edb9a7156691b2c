//! The monitor of a running world: a process of its own that creates the
//! world's container, owns its init, and cleans up when init exits.
//!
//! [`Store::start`](crate::Store::start) launches the monitor with a pipe on
//! its standard output and the world's log on its standard error. The
//! monitor writes one ready line to the pipe once the world runs and its
//! running record is written, or exits with an error, which the log shows.

use std::fs::{self, File};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::sync::Arc;

use jiff::Timestamp;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{self, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::init::InitExecutor;
use super::{network, proc, teardown, NetworkMode, Result, RunInfo, RuntimeError, READY_LINE};
use crate::db::{Db, DbError, RunningRecord};
use crate::name::WorldName;
use crate::pool;
use crate::store::Store;
use crate::sys::{btrfs, fanotify};
use crate::track::recorder::Recorder;
use crate::track::tracer::TrackFds;
use crate::track::GapReason;

/// The nice value of a monitor once its world runs.
const MONITOR_NICE: i32 = 19;

/// Runs the monitor of world `name` in the store at `store_dir` until the
/// world stops.
///
/// Call it in a process of its own, started by [`Store::start`] through a
/// [`super::MonitorCommand`], with nothing else running in that process:
/// the world's init is forked from it.
pub fn run(store_dir: &Path, name: &WorldName) -> Result<()> {
    // Leave the starting command's session, so that its terminal's hangup
    // does not reach the monitor.
    let _ = nix::unistd::setsid();
    // The ready pipe moves off standard output, which then goes to the log
    // like standard error, so that the world's init inherits no pipe.
    let ready = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map(File::from)
        .ok();
    let _ = nix::unistd::dup2(std::io::stderr().as_raw_fd(), std::io::stdout().as_raw_fd());

    let (mut store, _) = Store::open(store_dir)?;
    let world = store.world(name)?;
    let paths = store.run_paths(name)?;
    let prepare_error = |source| RuntimeError::Prepare {
        name: name.clone(),
        path: paths.plan.clone(),
        source,
    };
    let plan = fs::read(&paths.plan).map_err(prepare_error)?;
    let info: RunInfo = serde_json::from_slice(&plan).map_err(DbError::from)?;
    tracing::info!(world = %name, pid = std::process::id(), network = %info.network, "monitor started");

    if info.track {
        if let Err(error) = store.db().relax_durability() {
            tracing::warn!(world = %name, error = %error, "let batches of accesses skip the disk wait");
        }
    }
    let (track_fds, mut recorder) = if info.track {
        match prepare_tracking(&store, name, world.id) {
            Ok((fds, recorder)) => (Some(Arc::new(fds)), Some(recorder)),
            Err(error) => {
                tracing::warn!(world = %name, error = %error, "access tracking is unavailable; this run is recorded as a gap");
                (None, None)
            }
        }
    } else {
        (None, None)
    };
    let executor = InitExecutor {
        tracking: track_fds,
    };
    let created = create_and_start(name, &paths, &info, executor);
    let init_pid = match created {
        Ok(pid) => pid,
        Err(error) => {
            teardown(name, &paths, Some(&info));
            return Err(error);
        }
    };

    let monitor_pid = std::process::id() as i32;
    let record = RunningRecord {
        world_id: world.id,
        boot_id: super::boot_id(),
        monitor_pid,
        monitor_start: proc::start_time(monitor_pid).unwrap_or(0),
        init_pid,
        started: Timestamp::now(),
        config: serde_json::to_value(&info).map_err(DbError::from)?,
    };
    let recorded = store.db_mut().transaction().and_then(|writer| {
        writer.insert_running(&record)?;
        writer.commit()
    });
    if let Err(error) = recorded {
        let _ = signal::kill(Pid::from_raw(init_pid), Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(init_pid), None);
        teardown(name, &paths, Some(&info));
        return Err(error.into());
    }
    if recorder.is_none() {
        if let Err(error) = store.add_access_gap(world.id, GapReason::NotRecorded) {
            tracing::warn!(world = %name, error = %error, "record that this run is not tracked");
        }
    }
    // The monitor only reaps init and writes access batches, which may
    // wait, so it yields the CPU to the world's work and the kernel's.
    // Init lowers its own.
    if let Err(error) = crate::sys::process::lower_priority(MONITOR_NICE) {
        tracing::debug!(error = %error, "lower the monitor's priority");
    }
    if let Some(mut ready) = ready {
        let _ = writeln!(ready, "{READY_LINE}");
    }
    tracing::info!(world = %name, init_pid, "world running");

    let tracked = recorder.is_some();
    let end = wait_for_init(init_pid, recorder.as_mut(), store.db_mut());
    let cpu = cpu_times_ms();
    tracing::info!(
        world = %name,
        status = %end.status,
        monitor_cpu_ms = cpu.map(|(own, _)| own),
        init_cpu_ms = cpu.map(|(_, children)| children),
        "init exited"
    );
    if tracked && !end.sent_last_batch {
        if let Err(error) = store.add_access_gap(world.id, GapReason::InitLost) {
            tracing::warn!(world = %name, error = %error, "record that init ended before it sent its last batch");
        }
    }

    teardown(name, &paths, Some(&info));
    let removed = store.db_mut().transaction().and_then(|writer| {
        writer.delete_running(world.id, monitor_pid)?;
        writer.commit()
    });
    if let Err(error) = removed {
        tracing::warn!(world = %name, error = %error, "remove the running record; the next command cleans it up");
    }
    tracing::info!(world = %name, "world stopped");
    Ok(())
}

/// Returns the CPU time, user and system, that the calling process used and
/// that its waited-for children used, in milliseconds, from
/// `/proc/self/stat`. For a monitor, the children are init.
fn cpu_times_ms() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name in parentheses may contain spaces, so the fields
    // are counted after its closing parenthesis: utime, stime, cutime and
    // cstime are fields 14 to 17 of proc_pid_stat(5).
    let fields: Vec<u64> = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    let [utime, stime, cutime, cstime] = fields[..] else {
        return None;
    };
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&ticks| ticks > 0)? as u64;
    Some((
        (utime + stime) * 1000 / ticks,
        (cutime + cstime) * 1000 / ticks,
    ))
}

/// Opens what access tracking needs: the fanotify group on the pool, the
/// pipe from init, and the world's subvolume.
fn prepare_tracking(
    store: &Store,
    name: &WorldName,
    world_id: i64,
) -> std::io::Result<(TrackFds, Recorder)> {
    let world = File::open(store.world_path(name))?;
    let root = btrfs::subvolume_info(&world)?.id;
    let group = fanotify::watch_filesystem(&store.dir().join(pool::MOUNT_NAME))?;
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    nix::fcntl::fcntl(
        read.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )?;
    // A larger pipe lets init send a full batch without waiting for the
    // monitor; the default size works too.
    let _ = nix::fcntl::fcntl(
        write.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20),
    );
    let fds = TrackFds {
        group,
        pipe: File::from(write),
        root,
    };
    Ok((fds, Recorder::new(world_id, world, File::from(read))))
}

/// Creates the container, sets up its network while init waits, starts
/// init, and returns init's host pid.
fn create_and_start(
    name: &WorldName,
    paths: &super::RunPaths,
    info: &RunInfo,
    executor: InitExecutor,
) -> Result<i32> {
    let create_error = |source| RuntimeError::Create {
        name: name.clone(),
        source: Box::new(source),
    };
    let mut container = ContainerBuilder::new(paths.container_id.clone(), SyscallType::Linux)
        .with_root_path(&paths.containers)
        .map_err(create_error)?
        .with_executor(executor)
        .as_init(&paths.bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(create_error)?;
    let Some(pid) = container.pid() else {
        return Err(create_error(libcontainer::error::LibcontainerError::Other(
            "the container has no init pid".into(),
        )));
    };
    let pid = pid.as_raw();

    let network_error = |source| RuntimeError::Network {
        name: name.clone(),
        source,
    };
    match info.network {
        NetworkMode::Host => {}
        NetworkMode::None => network::setup_loopback(pid).map_err(network_error)?,
        NetworkMode::Veth => {
            let (Some(interface), Some(address), Some(gateway)) =
                (&info.host_interface, info.address, info.gateway)
            else {
                unreachable!("plan_run sets every veth field");
            };
            network::setup_veth(pid, interface, address, gateway).map_err(network_error)?;
        }
    }

    container
        .start()
        .map_err(|source| RuntimeError::StartInit {
            name: name.clone(),
            source: Box::new(source),
        })?;
    Ok(pid)
}

/// The end of the world's init: its status and whether it sent its last
/// batch.
struct InitEnd {
    /// `exit N`, `signal NAME` or `gone`, for the log.
    status: String,
    /// Whether init exited with status 0, which it does only after sending
    /// its last batch. Killed by a signal, it leaves that batch unsent.
    sent_last_batch: bool,
}

/// Waits for init to exit, passing SIGTERM, SIGINT and SIGHUP sent to the
/// monitor on to it as SIGTERM, and returns how it exited. Meanwhile it
/// writes the batches of accesses that `recorder` receives to `db`.
fn wait_for_init(init_pid: i32, mut recorder: Option<&mut Recorder>, db: &mut Db) -> InitEnd {
    let end = wait_and_record(init_pid, recorder.as_deref_mut(), db);
    // What init sent before it exited is still in the pipe.
    if let Some(recorder) = recorder {
        receive(recorder, db);
        if let Err(error) = recorder.commit(db) {
            tracing::warn!(error = %error, "record the last accesses");
        }
    }
    end
}

/// Writes what `recorder` has received, logging a failure: the accesses
/// are lost, and the world keeps running.
fn receive(recorder: &mut Recorder, db: &mut Db) -> bool {
    match recorder.receive(db) {
        Ok(open) => open,
        Err(error) => {
            tracing::warn!(error = %error, "record a batch of accesses");
            true
        }
    }
}

fn wait_and_record(init_pid: i32, mut recorder: Option<&mut Recorder>, db: &mut Db) -> InitEnd {
    let init = Pid::from_raw(init_pid);
    let mut signals = SigSet::empty();
    for signal in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        signals.add(signal);
    }
    let signal_fd =
        signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signals), None).and_then(|()| {
            SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        });
    loop {
        // Init may have exited before SIGCHLD was blocked.
        match waitpid(init, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => {
                return InitEnd {
                    status: format!("exit {code}"),
                    sent_last_batch: code == 0,
                }
            }
            Ok(WaitStatus::Signaled(_, signal, _)) => {
                return InitEnd {
                    status: format!("signal {signal}"),
                    sent_last_batch: false,
                }
            }
            Err(Errno::ECHILD) => {
                return InitEnd {
                    status: "gone".into(),
                    sent_last_batch: false,
                }
            }
            _ => {}
        }
        match &signal_fd {
            Ok(signal_fd) => {
                let mut fds = vec![PollFd::new(signal_fd.as_fd(), PollFlags::POLLIN)];
                if let Some(recorder) = &recorder {
                    fds.push(PollFd::new(recorder.pipe(), PollFlags::POLLIN));
                }
                // Round up, so that a due commit is not polled for in a
                // loop.
                let timeout = recorder
                    .as_ref()
                    .and_then(|recorder| recorder.timeout())
                    .map_or(PollTimeout::NONE, |wait| {
                        PollTimeout::try_from(wait.as_millis() as u64 + 1)
                            .unwrap_or(PollTimeout::MAX)
                    });
                let _ = poll(&mut fds, timeout);
                let batch_ready = fds
                    .get(1)
                    .and_then(|fd| fd.revents())
                    .is_some_and(|events| !events.is_empty());
                drop(fds);
                if batch_ready {
                    let open = recorder
                        .as_deref_mut()
                        .is_some_and(|recorder| receive(recorder, db));
                    if !open {
                        // The pipe's end: stop polling it, or poll would
                        // return at once forever. The caller commits what
                        // waits.
                        recorder = None;
                    }
                } else if let Some(recorder) = recorder.as_deref_mut() {
                    if let Err(error) = recorder.commit_if_due(db) {
                        tracing::warn!(error = %error, "record a batch of accesses");
                    }
                }
                while let Ok(Some(info)) = signal_fd.read_signal() {
                    if info.ssi_signo != Signal::SIGCHLD as u32 {
                        tracing::info!(
                            signal = info.ssi_signo,
                            "monitor got a stop signal; stopping the world"
                        );
                        let _ = signal::kill(init, Signal::SIGTERM);
                    }
                }
            }
            // Without a signalfd, poll for init's exit.
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
}
