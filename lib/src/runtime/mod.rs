//! Running worlds: each running world is an OCI container, made by youki's
//! libcontainer, whose root is the world's subvolume.
//!
//! # Model
//!
//! - [`Store::start`] writes the container's bundle and launches the world's
//!   *monitor*: a process of its own, started from a program that the caller
//!   names ([`MonitorCommand`]), that calls [`monitor::run`]. The monitor
//!   creates the container, owns and reaps its init, records the world as
//!   running, and when init exits removes the container, its cgroup, its
//!   veth pair and the record, then exits. It logs to `STORE/logs/NAME.log`.
//! - Init, pid 1 of the world, is Rust code of this crate ([`init`]) that
//!   the container process runs in place of an exec, so no file of ours is
//!   placed in the world. It reaps orphans, and on SIGTERM passes SIGTERM to
//!   every process of the world and exits once they are gone.
//! - [`Store::exec`] runs a command in a running world as a child of the
//!   caller (a libcontainer tenant), which waits for it.
//! - [`Store::stop`] sends SIGTERM to init, waits for a grace period, then
//!   sends SIGKILL to every process in the world's cgroup.
//!
//! A world has its own pid, mount, uts, ipc and cgroup namespaces, and a
//! network namespace unless its network is [`NetworkMode::Host`]. Its
//! hostname, `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf` come from
//! the uts namespace and from read-only bind mounts of files in
//! `STORE/run/NAME/`, so starting a world writes none of its files.
//!
//! # Limitations
//!
//! - `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf` are mounted only
//!   where the world has them as regular files: creating a mount point would
//!   write into the world.
//! - libcontainer creates the mount points `/proc`, `/sys` and `/dev` in a
//!   world that lacks them; busybox and Debian roots have all three.
//! - The cgroup code paths read the cgroup v1 hierarchies (`pids`,
//!   `freezer`) first and fall back to a cgroup v2 layout, which no test
//!   runs on.
//! - Init is a fork of the monitor without exec, so a world's root can
//!   read and run the host's `world` binary through `/proc/1/exe`.
//! - Root in a world keeps Docker's default capabilities, but no seccomp
//!   filter or LSM profile applies: worlds separate an administrator's
//!   experiments from the host, not hostile code.
//! - A world on a veth network reaches the host's end of its pair and
//!   nothing beyond it: worlds does not forward or masquerade its traffic.
//! - Veth addresses are unique among the running worlds of one store; two
//!   stores on one host must use different subnets.

mod cgroup;
mod exec;
pub mod init;
pub mod monitor;
mod network;
mod paths;
mod proc;
mod spec;
pub mod user;

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use crate::db::{DbError, RunningRecord};
use crate::name::WorldName;
use crate::store::{Cleanup, Store, StoreError};
use crate::track::GapReason;

pub use cgroup::existing_dirs as cgroup_dirs;
pub use exec::{ExecChild, ExecRequest};
pub use exec::{EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND};
pub use network::{NetworkMode, Subnet};
pub use paths::RunPaths;
pub use proc::ProcessInfo;

/// How long [`Store::start`] waits for the monitor to report that the world
/// runs.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`Store::stop`] waits for the monitor after SIGKILL.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// How often waits poll for a process to end.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// The grace period of `world stop` when none is given.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);
/// The line the monitor writes on its standard output once the world runs.
const READY_LINE: &str = "ready";

/// Errors of running worlds.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("world `{name}` is not running")]
    NotRunning { name: WorldName },
    #[error("world `{name}` is frozen")]
    Frozen { name: WorldName },
    #[error("world `{name}` failed to start{}", format_log(.log))]
    StartFailed { name: WorldName, log: String },
    #[error("launch the monitor of world `{name}`")]
    LaunchMonitor { name: WorldName, source: io::Error },
    #[error("give the commands of world `{name}` a session keyring of their own")]
    Keyring { name: WorldName, source: io::Error },
    #[error("prepare the runtime files of world `{name}` in `{path}`")]
    Prepare {
        name: WorldName,
        path: PathBuf,
        source: io::Error,
    },
    #[error("build the container spec of world `{name}`")]
    Spec {
        name: WorldName,
        source: libcontainer::oci_spec::OciSpecError,
    },
    #[error("create the container of world `{name}`")]
    Create {
        name: WorldName,
        source: Box<libcontainer::error::LibcontainerError>,
    },
    #[error("start the init of world `{name}`")]
    StartInit {
        name: WorldName,
        source: Box<libcontainer::error::LibcontainerError>,
    },
    #[error("run a command in world `{name}`")]
    Exec {
        name: WorldName,
        source: Box<libcontainer::error::LibcontainerError>,
    },
    #[error("wait for the command in world `{name}`")]
    Wait { name: WorldName, source: io::Error },
    #[error("freeze or thaw world `{name}`")]
    Freezer {
        name: WorldName,
        source: Box<libcontainer::error::LibcontainerError>,
    },
    #[error("read the processes of world `{name}`")]
    Processes { name: WorldName, source: io::Error },
    #[error("user `{user}` not found in `/etc/passwd` of world `{name}`")]
    UnknownUser { name: WorldName, user: String },
    #[error("group `{group}` not found in `/etc/group` of world `{name}`")]
    UnknownGroup { name: WorldName, group: String },
    #[error("no free address left in subnet {subnet} for world `{name}`")]
    SubnetFull { name: WorldName, subnet: Subnet },
    #[error("subnet {subnet} for world `{name}` overlaps the host's route {route}")]
    SubnetInUse {
        name: WorldName,
        subnet: Subnet,
        route: String,
    },
    #[error("set up the network of world `{name}`")]
    Network {
        name: WorldName,
        source: network::NetworkError,
    },
    #[error("world `{name}` did not stop within {seconds} s after SIGKILL")]
    StopTimeout { name: WorldName, seconds: u64 },
}

fn format_log(log: &str) -> String {
    let log = log.trim_end();
    if log.is_empty() {
        String::new()
    } else {
        format!("; its monitor logged:\n{log}")
    }
}

type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// Resource limits of a world, applied through its cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Memory limit in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// Maximum number of processes and threads in the world at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// CPU time as a number of CPUs, such as `0.5` or `2`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
}

impl Limits {
    /// Returns these limits with each limit that `other` sets replaced.
    pub fn overridden_by(self, other: Limits) -> Limits {
        Limits {
            memory: other.memory.or(self.memory),
            pids: other.pids.or(self.pids),
            cpus: other.cpus.or(self.cpus),
        }
    }
}

/// Run settings of a world: stored per world by [`Store::configure`], and
/// given again, in part, to [`Store::start`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunConfig {
    #[serde(default)]
    pub network: NetworkMode,
    #[serde(default)]
    pub limits: Limits,
    /// Whether the world's accesses are recorded ([`crate::track`]).
    #[serde(default = "track_default")]
    pub track: bool,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            network: NetworkMode::default(),
            limits: Limits::default(),
            track: true,
        }
    }
}

fn track_default() -> bool {
    true
}

/// Settings and addresses of a running world, stored in its running record.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunInfo {
    pub network: NetworkMode,
    pub limits: Limits,
    /// The world's address on its veth pair.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Addr>,
    /// The host's end of the veth pair.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_interface: Option<String>,
    /// The host's address on the veth pair, which is the world's gateway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// The libcontainer container id, also the cgroup's name.
    pub container_id: String,
    /// Whether the world's accesses are recorded.
    #[serde(default = "track_default")]
    pub track: bool,
}

/// The program that [`Store::start`] runs as a world's monitor; the world's
/// name is appended to `args`. The program must call [`monitor::run`].
#[derive(Debug, Clone)]
pub struct MonitorCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// The monitor's whole environment.
    pub env: Vec<(OsString, OsString)>,
}

/// Options of [`Store::start`]. Each setting left `None` comes from the
/// world's stored [`RunConfig`].
#[derive(Debug, Clone)]
pub struct StartOptions {
    pub network: Option<NetworkMode>,
    pub limits: Limits,
    /// Whether to record the world's accesses this run.
    pub track: Option<bool>,
    /// The subnet that veth addresses come from.
    pub subnet: Subnet,
    pub monitor: MonitorCommand,
}

/// The state of a world's processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    Stopped,
    Running,
    /// Running, with every process stopped by the cgroup freezer.
    Frozen,
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RunState::Stopped => "stopped",
            RunState::Running => "running",
            RunState::Frozen => "frozen",
        })
    }
}

/// The run state of a world and, when it runs, how.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunStatus {
    pub state: RunState,
    /// Host pid of the world's init.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_pid: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitor_pid: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<RunInfo>,
}

impl RunStatus {
    fn stopped() -> Self {
        Self {
            state: RunState::Stopped,
            init_pid: None,
            monitor_pid: None,
            started: None,
            run: None,
        }
    }
}

/// Outcome of [`Store::start`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOutcome {
    Started,
    AlreadyRunning,
}

/// Outcome of [`Store::stop`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// Every process ended within the grace period.
    Stopped,
    /// Processes were left after the grace period and got SIGKILL.
    Killed,
    NotRunning,
}

impl Store {
    /// Returns the runtime paths of world `name`.
    pub fn run_paths(&self, name: &WorldName) -> Result<RunPaths> {
        let dir = fs::canonicalize(self.dir()).map_err(|source| RuntimeError::Prepare {
            name: name.clone(),
            path: self.dir().into(),
            source,
        })?;
        Ok(RunPaths::new(&dir, name))
    }

    /// Returns the run state of world `name`. A world whose monitor is gone
    /// counts as stopped; the next command that takes the lock cleans up.
    pub fn status(&self, name: &WorldName) -> Result<RunStatus> {
        let world = self.world(name)?;
        let Some(record) = self.db().running(world.id)? else {
            return Ok(RunStatus::stopped());
        };
        if !monitor_alive(&record) {
            return Ok(RunStatus::stopped());
        }
        let run: Option<RunInfo> = serde_json::from_value(record.config.clone()).ok();
        let frozen = run
            .as_ref()
            .is_some_and(|run| cgroup::is_frozen(&run.container_id));
        Ok(RunStatus {
            state: if frozen {
                RunState::Frozen
            } else {
                RunState::Running
            },
            init_pid: Some(record.init_pid),
            monitor_pid: Some(record.monitor_pid),
            started: Some(record.started),
            run,
        })
    }

    /// Returns the stored run configuration of world `name`.
    pub fn run_config(&self, name: &WorldName) -> Result<RunConfig> {
        let world = self.world(name)?;
        let stored = self.db().world_config(world.id)?;
        Ok(stored
            .and_then(|value| serde_json::from_value(value).ok())
            .unwrap_or_default())
    }

    /// Stores how world `name` runs from its next start on.
    pub fn configure(&mut self, name: &WorldName, config: &RunConfig) -> Result<()> {
        let _lock = self.lock()?;
        let world = self.world(name)?;
        let value = serde_json::to_value(config).map_err(DbError::from)?;
        let writer = self.db_mut().transaction()?;
        writer.log(
            "configure",
            Some(name),
            &serde_json::json!({ "world": name, "config": value }),
        )?;
        writer.set_world_config(world.id, &value)?;
        writer.commit()?;
        Ok(())
    }

    /// Starts world `name` unless it runs, and returns once its init runs.
    pub fn start(&mut self, name: &WorldName, options: &StartOptions) -> Result<StartOutcome> {
        let _lock = self.lock()?;
        let world = self.world(name)?;
        if let Some(record) = self.db().running(world.id)? {
            if monitor_alive(&record) {
                return Ok(StartOutcome::AlreadyRunning);
            }
            self.clean_stale(name, &record)?;
        }

        let paths = self.run_paths(name)?;
        let stored = self.run_config(name)?;
        let network = options.network.unwrap_or(stored.network);
        let limits = stored.limits.overridden_by(options.limits);
        let mut info = self.plan_run(name, &paths, network, limits, &options.subnet)?;
        info.track = options.track.unwrap_or(stored.track);
        self.prepare_run_dir(name, &paths, &info)?;

        if let Err(error) = self.launch_monitor(name, &paths, &options.monitor) {
            // A monitor that timed out was killed before it could clean up.
            teardown(name, &paths, Some(&info));
            return Err(error);
        }
        tracing::info!(world = %name, network = ?info.network, "world started");
        Ok(StartOutcome::Started)
    }

    /// Stops world `name`: SIGTERM to its init, which passes it on to every
    /// process, then after `grace` SIGKILL to every process in its cgroup.
    pub fn stop(&mut self, name: &WorldName, grace: Duration) -> Result<StopOutcome> {
        let _lock = self.lock()?;
        self.stop_locked(name, grace)
    }

    /// [`Store::stop`] for a caller that holds the store lock.
    pub(crate) fn stop_locked(&mut self, name: &WorldName, grace: Duration) -> Result<StopOutcome> {
        let world = self.world(name)?;
        let Some(record) = self.db().running(world.id)? else {
            return Ok(StopOutcome::NotRunning);
        };
        if !monitor_alive(&record) {
            self.clean_stale(name, &record)?;
            return Ok(StopOutcome::NotRunning);
        }
        let info: Option<RunInfo> = serde_json::from_value(record.config.clone()).ok();
        let container_id = info.map(|info| info.container_id);

        // A frozen init cannot act on SIGTERM.
        if let Some(id) = &container_id {
            if cgroup::is_frozen(id) {
                let paths = self.run_paths(name)?;
                if let Ok(mut container) = load_container(&paths) {
                    let _ = container.resume();
                }
            }
        }
        let _ = signal::kill(Pid::from_raw(record.init_pid), Signal::SIGTERM);
        if wait_until_gone(&record, grace) {
            tracing::info!(world = %name, "world stopped");
            return Ok(StopOutcome::Stopped);
        }

        tracing::info!(world = %name, grace_ms = grace.as_millis() as u64, "processes left after the grace period; sending SIGKILL");
        if let Some(id) = &container_id {
            cgroup::kill_all(id, Signal::SIGKILL);
        }
        let _ = signal::kill(Pid::from_raw(record.init_pid), Signal::SIGKILL);
        if wait_until_gone(&record, KILL_TIMEOUT) {
            return Ok(StopOutcome::Killed);
        }
        // The monitor hangs: end it and clean up in its place.
        let _ = signal::kill(Pid::from_raw(record.monitor_pid), Signal::SIGKILL);
        if !wait_until_gone(&record, KILL_TIMEOUT) {
            return Err(RuntimeError::StopTimeout {
                name: name.clone(),
                seconds: KILL_TIMEOUT.as_secs(),
            });
        }
        self.clean_stale(name, &record)?;
        Ok(StopOutcome::Killed)
    }

    /// Runs `request` in running world `name` as a child of this process.
    ///
    /// The child inherits this process's standard input, output and error
    /// unless `request.stdio` replaces them. The caller must wait for it
    /// with [`ExecChild::wait`].
    ///
    /// NOTE: libcontainer changes the whole process's working directory
    /// while it sets up the command, so a caller must not run this, or
    /// anything that uses relative paths, on two threads at once.
    pub fn exec(&self, name: &WorldName, request: ExecRequest) -> Result<ExecChild> {
        match self.status(name)?.state {
            RunState::Running => {}
            RunState::Stopped => return Err(RuntimeError::NotRunning { name: name.clone() }),
            RunState::Frozen => return Err(RuntimeError::Frozen { name: name.clone() }),
        }
        let paths = self.run_paths(name)?;
        exec::spawn(name, &paths, &self.world_path(name), request)
    }

    /// Runs `request` in running world `name` on a new pseudo-terminal, and
    /// returns it with the terminal's master end, whose window size the
    /// caller sets. The caller must wait for it with [`ExecChild::wait`].
    pub fn exec_terminal(
        &self,
        name: &WorldName,
        request: ExecRequest,
    ) -> Result<(ExecChild, std::os::fd::OwnedFd)> {
        match self.status(name)?.state {
            RunState::Running => {}
            RunState::Stopped => return Err(RuntimeError::NotRunning { name: name.clone() }),
            RunState::Frozen => return Err(RuntimeError::Frozen { name: name.clone() }),
        }
        let paths = self.run_paths(name)?;
        exec::spawn_terminal(name, &paths, &self.world_path(name), request)
    }

    /// Returns the login shell and home directory of `user` (root when
    /// `None`) in world `name` from its `/etc/passwd`, or `/bin/sh` and `/`.
    pub fn login(&self, name: &WorldName, user: Option<&str>) -> (String, PathBuf) {
        let passwd = user::read_account_file(&self.world_path(name), "passwd");
        let user = user.unwrap_or("0");
        let shell = user::login_shell(&passwd, user).unwrap_or_else(|| "/bin/sh".to_owned());
        let home = user::resolve(user, &passwd, "")
            .map(|resolved| PathBuf::from(resolved.home))
            .unwrap_or_else(|_| PathBuf::from("/"));
        (shell, home)
    }

    /// Returns the processes of world `name`, ordered by their pid in it.
    pub fn processes(&self, name: &WorldName) -> Result<Vec<ProcessInfo>> {
        let status = self.status(name)?;
        let Some(run) = status.run else {
            return Err(RuntimeError::NotRunning { name: name.clone() });
        };
        proc::list(&run.container_id).map_err(|source| RuntimeError::Processes {
            name: name.clone(),
            source,
        })
    }

    /// Freezes every process of world `name` through the cgroup freezer,
    /// and returns whether it was frozen already.
    pub fn freeze(&mut self, name: &WorldName) -> Result<bool> {
        let _lock = self.lock()?;
        self.set_frozen(name, true)
    }

    /// Thaws world `name`, and returns whether it was frozen.
    pub fn thaw(&mut self, name: &WorldName) -> Result<bool> {
        let _lock = self.lock()?;
        self.set_frozen(name, false)
    }

    /// Runs `work` with world `name` frozen when it runs, then puts it back
    /// in the state it had before: a world that was frozen stays frozen, a
    /// stopped world stays stopped.
    pub fn with_frozen<T>(
        &mut self,
        name: &WorldName,
        work: impl FnOnce(&mut Store) -> T,
    ) -> Result<T> {
        let state = self.status(name)?.state;
        if state != RunState::Running {
            return Ok(work(self));
        }
        self.freeze(name)?;
        let result = work(self);
        self.thaw(name)?;
        Ok(result)
    }

    pub(crate) fn set_frozen(&mut self, name: &WorldName, frozen: bool) -> Result<bool> {
        let status = self.status(name)?;
        let was_frozen = status.state == RunState::Frozen;
        if status.state == RunState::Stopped {
            return Err(RuntimeError::NotRunning { name: name.clone() });
        }
        if was_frozen == frozen {
            return Ok(was_frozen);
        }
        let paths = self.run_paths(name)?;
        let freezer_error = |source| RuntimeError::Freezer {
            name: name.clone(),
            source: Box::new(source),
        };
        let mut container = load_container(&paths).map_err(freezer_error)?;
        if frozen {
            container.pause().map_err(freezer_error)?;
            tracing::info!(world = %name, "world frozen");
        } else {
            container.resume().map_err(freezer_error)?;
            tracing::info!(world = %name, "world thawed");
        }
        Ok(was_frozen)
    }

    /// Stops worlds whose monitor is gone, after a crash or a reboot, and
    /// reports them. The caller must hold the store lock.
    pub(crate) fn reconcile_running(&mut self) -> Result<Vec<Cleanup>> {
        let mut cleanups = Vec::new();
        let worlds = self.worlds()?;
        for record in self.db().all_running()? {
            if monitor_alive(&record) {
                continue;
            }
            let Some(world) = worlds.iter().find(|world| world.id == record.world_id) else {
                continue;
            };
            let name = world.name.clone();
            self.clean_stale(&name, &record)?;
            cleanups.push(Cleanup::StaleRun { world: name });
        }
        Ok(cleanups)
    }

    /// Removes what a world whose monitor is gone left behind: its
    /// processes, container state, cgroup, veth pair, runtime files and
    /// running record.
    fn clean_stale(&mut self, name: &WorldName, record: &RunningRecord) -> Result<()> {
        let paths = self.run_paths(name)?;
        let info: Option<RunInfo> = serde_json::from_value(record.config.clone()).ok();
        if let Some(info) = &info {
            // Processes are there only when the monitor crashed, not after
            // a reboot.
            if record.boot_id == boot_id() {
                cgroup::kill_all(&info.container_id, Signal::SIGKILL);
            }
        }
        teardown(name, &paths, info.as_ref());
        let writer = self.db_mut().transaction()?;
        if info.as_ref().is_none_or(|info| info.track) {
            // The monitor may have died with a batch of accesses unsent.
            writer.add_access_gap(
                record.world_id,
                crate::track::now_ms(),
                GapReason::MonitorLost.as_str(),
                1,
            )?;
        }
        writer.delete_running(record.world_id, record.monitor_pid)?;
        writer.commit()?;
        tracing::info!(world = %name, monitor_pid = record.monitor_pid, "cleaned up after a world whose monitor is gone");
        Ok(())
    }

    /// Chooses the container id and, for a veth network, the addresses.
    fn plan_run(
        &self,
        name: &WorldName,
        paths: &RunPaths,
        network: NetworkMode,
        limits: Limits,
        subnet: &Subnet,
    ) -> Result<RunInfo> {
        let mut info = RunInfo {
            network,
            limits,
            address: None,
            host_interface: None,
            gateway: None,
            container_id: paths.container_id.clone(),
            track: true,
        };
        if network == NetworkMode::Veth {
            // A subnet that the host already routes elsewhere would take
            // those addresses from the host.
            let overlap = subnet
                .host_route_overlap()
                .map_err(|source| RuntimeError::Prepare {
                    name: name.clone(),
                    path: "/proc/net/route".into(),
                    source,
                })?;
            if let Some(route) = overlap {
                return Err(RuntimeError::SubnetInUse {
                    name: name.clone(),
                    subnet: *subnet,
                    route,
                });
            }
            let taken: Vec<Ipv4Addr> = self
                .db()
                .all_running()?
                .into_iter()
                .filter_map(|record| serde_json::from_value::<RunInfo>(record.config).ok())
                .filter_map(|info| info.address)
                .collect();
            let address = subnet
                .free_address(&taken)
                .ok_or_else(|| RuntimeError::SubnetFull {
                    name: name.clone(),
                    subnet: *subnet,
                })?;
            info.address = Some(address);
            info.gateway = Some(subnet.gateway());
            info.host_interface = Some(paths.host_interface.clone());
        }
        Ok(info)
    }

    /// Writes the bundle, the files mounted into the world and the run plan
    /// into the world's runtime directory.
    fn prepare_run_dir(&self, name: &WorldName, paths: &RunPaths, info: &RunInfo) -> Result<()> {
        let prepare_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RuntimeError::Prepare {
                name: name.clone(),
                path,
                source,
            }
        };
        // Leftovers of a run whose monitor failed early.
        if paths.dir.exists() {
            fs::remove_dir_all(&paths.dir).map_err(prepare_error(&paths.dir))?;
        }
        for dir in [&paths.bundle, &paths.containers, &paths.logs] {
            fs::create_dir_all(dir).map_err(prepare_error(dir))?;
        }

        let hosts = spec::hosts_file(name, info.address);
        let resolv = match info.network {
            // With the host's network the host's resolvers work; a world
            // without a route out gets none.
            NetworkMode::Host => fs::read("/etc/resolv.conf").unwrap_or_default(),
            NetworkMode::None | NetworkMode::Veth => Vec::new(),
        };
        let files = [
            (&paths.hostname, format!("{name}\n").into_bytes()),
            (&paths.hosts, hosts.into_bytes()),
            (&paths.resolv_conf, resolv),
        ];
        for (path, content) in files {
            fs::write(path, content).map_err(prepare_error(path))?;
        }

        let world_root = self.world_path(name);
        let spec =
            spec::build(name, &world_root, paths, info).map_err(|source| RuntimeError::Spec {
                name: name.clone(),
                source,
            })?;
        let config = paths.bundle.join("config.json");
        spec.save(&config).map_err(|source| RuntimeError::Spec {
            name: name.clone(),
            source,
        })?;
        let plan = serde_json::to_vec_pretty(info).map_err(DbError::from)?;
        fs::write(&paths.plan, plan).map_err(prepare_error(&paths.plan))?;
        Ok(())
    }

    /// Starts the monitor and waits until it reports that the world runs,
    /// or fails with what it logged.
    fn launch_monitor(
        &self,
        name: &WorldName,
        paths: &RunPaths,
        monitor: &MonitorCommand,
    ) -> Result<()> {
        let launch_error = |source| RuntimeError::LaunchMonitor {
            name: name.clone(),
            source,
        };
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&paths.log)
            .map_err(launch_error)?;
        let log_start = log.seek(SeekFrom::End(0)).map_err(launch_error)?;

        let mut command = Command::new(&monitor.program);
        command
            .args(&monitor.args)
            .arg(name.as_str())
            .env_clear()
            .envs(monitor.env.iter().map(|(key, value)| (key, value)))
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log.try_clone().map_err(launch_error)?);
        let mut child = command.spawn().map_err(launch_error)?;
        let stdout = child.stdout.take().expect("stdout is piped");

        let ready = read_ready(stdout, START_TIMEOUT);
        if ready {
            // The monitor outlives this call; a thread reaps it if it ends
            // while this process still runs.
            std::thread::spawn(move || child.wait());
            return Ok(());
        }

        let _ = child.kill();
        let _ = child.wait();
        let mut text = String::new();
        let _ = log.seek(SeekFrom::Start(log_start));
        let _ = File::open(&paths.log).and_then(|mut file| {
            file.seek(SeekFrom::Start(log_start))?;
            file.read_to_string(&mut text)
        });
        Err(RuntimeError::StartFailed {
            name: name.clone(),
            log: text,
        })
    }
}

/// Waits up to `timeout` for the ready line on the monitor's stdout.
fn read_ready(stdout: std::process::ChildStdout, timeout: Duration) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let millis = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(0) => continue,
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
    let mut line = String::new();
    let read = BufReader::new(stdout).read_line(&mut line);
    matches!(read, Ok(n) if n > 0) && line.trim_end() == READY_LINE
}

/// Loads the libcontainer state of the world at `paths`.
fn load_container(
    paths: &RunPaths,
) -> std::result::Result<libcontainer::container::Container, libcontainer::error::LibcontainerError>
{
    libcontainer::container::Container::load(paths.containers.join(&paths.container_id))
}

/// Removes a stopped world's container state, cgroup, veth pair and
/// runtime directory, logging what fails: each is also retried by the next
/// clean-up.
fn teardown(name: &WorldName, paths: &RunPaths, info: Option<&RunInfo>) {
    if let Ok(mut container) = load_container(paths) {
        if let Err(error) = container.delete(true) {
            tracing::warn!(world = %name, error = %error, "delete the container state");
        }
    }
    let container_dir = paths.containers.join(&paths.container_id);
    if container_dir.exists() {
        let _ = fs::remove_dir_all(&container_dir);
    }
    cgroup::remove(&paths.container_id);
    if let Some(interface) = info.and_then(|info| info.host_interface.as_deref()) {
        network::remove_veth(interface);
    }
    if let Err(error) = fs::remove_dir_all(&paths.dir) {
        if error.kind() != io::ErrorKind::NotFound {
            tracing::warn!(world = %name, error = %error, "remove the runtime directory");
        }
    }
}

/// Returns this boot's id, which changes at every boot.
fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|id| id.trim().to_owned())
        .unwrap_or_default()
}

/// Returns whether the monitor that wrote `record` still runs: same boot,
/// same pid, same start time, and not a zombie.
fn monitor_alive(record: &RunningRecord) -> bool {
    if record.boot_id != boot_id() {
        return false;
    }
    proc::start_time(record.monitor_pid) == Some(record.monitor_start)
}

/// Waits up to `timeout` for the monitor of `record` to end.
fn wait_until_gone(record: &RunningRecord, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !monitor_alive(record) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}
