//! Commands run in a running world: libcontainer tenant processes, which
//! join the namespaces and cgroup of the world's init and are children of
//! the calling process.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::oci_spec::runtime::{ProcessBuilder, Spec, UserBuilder};
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use super::paths::RunPaths;
use super::spec::DEFAULT_PATH;
use super::user::{self, LookupError};
use super::{Result, RuntimeError};
use crate::name::WorldName;
use crate::sys::process::exit_now;

/// Exit status of a command that was not found, as shells use it.
pub const EXIT_NOT_FOUND: i32 = 127;
/// Exit status of a command that was found but could not run.
pub const EXIT_NOT_EXECUTABLE: i32 = 126;
/// The longest path that a Unix socket address takes, without its NUL.
const SUN_PATH_MAX: usize = 107;

/// A command to run in a world.
#[derive(Debug, Default)]
pub struct ExecRequest {
    /// The command and its arguments; the command is looked up in PATH.
    pub args: Vec<String>,
    /// Variables set on top of PATH, HOME, USER and LOGNAME.
    pub env: Vec<(String, String)>,
    /// Working directory in the world [default: `/`].
    pub cwd: Option<PathBuf>,
    /// `USER[:GROUP]`, names or numbers from the world's `/etc/passwd` and
    /// `/etc/group` [default: root].
    pub user: Option<String>,
    /// Descriptors for the command's standard input, output and error in
    /// place of this process's own.
    pub stdio: Option<[OwnedFd; 3]>,
}

/// A command running in a world, a child of this process.
#[derive(Debug)]
pub struct ExecChild {
    pid: Pid,
    world: WorldName,
}

impl ExecChild {
    /// Returns the command's pid on the host.
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// Sends `signal` to the command.
    pub fn signal(&self, signal: Signal) {
        let _ = signal::kill(self.pid, signal);
    }

    /// Waits for the command to end and returns its exit status: the status
    /// it exited with, or 128 plus the signal that ended it.
    pub fn wait(&self) -> Result<i32> {
        loop {
            match waitpid(self.pid, None) {
                Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(128 + signal as i32),
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(errno) => {
                    return Err(RuntimeError::Wait {
                        name: self.world.clone(),
                        source: errno.into(),
                    })
                }
            }
        }
    }
}

/// The executor of commands: `execvp`, with shell-like exit statuses when
/// the command cannot run.
#[derive(Clone)]
struct CommandExecutor;

impl Executor for CommandExecutor {
    fn exec(&self, spec: &Spec) -> std::result::Result<(), ExecutorError> {
        let args: Vec<String> = spec
            .process()
            .as_ref()
            .and_then(|process| process.args().clone())
            .unwrap_or_default();
        let Some(program) = args.first() else {
            return Err(ExecutorError::InvalidArg);
        };
        let Ok(c_args) = args
            .iter()
            .map(|arg| CString::new(arg.as_bytes()))
            .collect::<std::result::Result<Vec<_>, _>>()
        else {
            return Err(ExecutorError::InvalidArg);
        };
        let error = match nix::unistd::execvp(&c_args[0], &c_args) {
            Err(error) => error,
            Ok(never) => match never {},
        };
        let (message, code) = match error {
            Errno::ENOENT => ("command not found", EXIT_NOT_FOUND),
            Errno::EACCES => ("permission denied", EXIT_NOT_EXECUTABLE),
            other => (other.desc(), EXIT_NOT_EXECUTABLE),
        };
        let _ = writeln!(std::io::stderr(), "world exec: {program}: {message}");
        exit_now(code);
    }

    fn validate(&self, _spec: &Spec) -> std::result::Result<(), ExecutorValidationError> {
        // `exec` reports a missing command with exit status 127 instead.
        Ok(())
    }
}

/// Starts `request` in the running world whose runtime files are at
/// `paths` and whose root filesystem is `root` on the host.
pub(crate) fn spawn(
    name: &WorldName,
    paths: &RunPaths,
    root: &Path,
    request: ExecRequest,
) -> Result<ExecChild> {
    let exec_error = |source| RuntimeError::Exec {
        name: name.clone(),
        source: Box::new(source),
    };
    // The command must not reach the caller's kernel keys.
    crate::sys::process::new_session_keyring().map_err(|source| RuntimeError::Keyring {
        name: name.clone(),
        source,
    })?;
    let resolved = resolve_user(name, root, request.user.as_deref())?;
    let env = environment(&resolved, &request.env);

    let mut builder = ContainerBuilder::new(paths.container_id.clone(), SyscallType::Linux)
        .with_root_path(&paths.containers)
        .map_err(exec_error)?
        .with_executor(CommandExecutor);
    // NOTE: the command gets the caller's descriptors as they are, so it
    // can reopen a host file or directory behind one through
    // /proc/self/fd. Relaying them through pipes would close that gap.
    if let Some([stdin, stdout, stderr]) = request.stdio {
        builder = builder
            .with_stdin(stdin)
            .with_stdout(stdout)
            .with_stderr(stderr);
    }
    let pid = builder
        .as_tenant()
        .with_container_args(request.args)
        .with_env(env)
        .with_cwd(Some(request.cwd.unwrap_or_else(|| "/".into())))
        .with_user(Some(resolved.uid))
        .with_group(Some(resolved.gid))
        .with_additional_gids(resolved.groups.clone())
        .with_detach(false)
        .build()
        .map_err(exec_error)?;
    Ok(ExecChild {
        pid,
        world: name.clone(),
    })
}

/// Returns the command's environment: PATH, HOME, USER and LOGNAME for
/// `user`, then `extra` on top.
fn environment(user: &user::ResolvedUser, extra: &[(String, String)]) -> HashMap<String, String> {
    let mut env: HashMap<String, String> = HashMap::new();
    env.insert("PATH".into(), DEFAULT_PATH.into());
    env.insert("HOME".into(), user.home.clone());
    if let Some(name) = &user.name {
        env.insert("USER".into(), name.clone());
        env.insert("LOGNAME".into(), name.clone());
    }
    for (key, value) in extra {
        env.insert(key.clone(), value.clone());
    }
    env
}

/// Starts `request` on a new pseudo-terminal in the running world whose
/// runtime files are at `paths`, and returns it with the terminal's master
/// end. The terminal starts with 0 rows and 0 columns: the caller sets its
/// size.
///
/// libcontainer sends a terminal's master end to a Unix socket that the
/// caller listens on (SCM_RIGHTS). It takes a terminal command only as a
/// whole OCI process object in a file. Both live in the world's runtime
/// directory while the command starts.
pub(crate) fn spawn_terminal(
    name: &WorldName,
    paths: &RunPaths,
    root: &Path,
    request: ExecRequest,
) -> Result<(ExecChild, OwnedFd)> {
    let exec_error = |source| RuntimeError::Exec {
        name: name.clone(),
        source: Box::new(source),
    };
    // The command must not reach the caller's kernel keys.
    crate::sys::process::new_session_keyring().map_err(|source| RuntimeError::Keyring {
        name: name.clone(),
        source,
    })?;
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RuntimeError::Prepare {
            name: name.clone(),
            path,
            source,
        }
    };
    let resolved = resolve_user(name, root, request.user.as_deref())?;
    let env = environment(&resolved, &request.env);

    // The tenant gets the capabilities of init, as commands without a
    // terminal do.
    let init_spec =
        Spec::load(paths.bundle.join("config.json")).map_err(|error| RuntimeError::Spec {
            name: name.clone(),
            source: error,
        })?;
    let capabilities = init_spec
        .process()
        .as_ref()
        .and_then(|process| process.capabilities().clone());
    let spec_error = |source| RuntimeError::Spec {
        name: name.clone(),
        source,
    };
    let mut user = UserBuilder::default().uid(resolved.uid).gid(resolved.gid);
    if !resolved.groups.is_empty() {
        user = user.additional_gids(resolved.groups.clone());
    }
    let mut env: Vec<String> = env
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    env.sort();
    let mut process = ProcessBuilder::default()
        .terminal(true)
        .args(request.args)
        .env(env)
        .cwd(request.cwd.unwrap_or_else(|| "/".into()))
        .user(user.build().map_err(spec_error)?)
        .no_new_privileges(false);
    if let Some(capabilities) = capabilities {
        process = process.capabilities(capabilities);
    }
    let process = process.build().map_err(spec_error)?;

    let id = std::process::id();
    let process_path = paths.dir.join(format!("process-{id}.json"));
    let socket_path = console_socket_path(paths, id);
    let json = serde_json::to_vec(&process).map_err(crate::db::DbError::from)?;
    fs::write(&process_path, json).map_err(io_error(&process_path))?;
    let _ = fs::remove_file(&socket_path);
    let listener = UnixListener::bind(&socket_path).map_err(io_error(&socket_path))?;

    let built = ContainerBuilder::new(paths.container_id.clone(), SyscallType::Linux)
        .with_root_path(&paths.containers)
        .map_err(exec_error)
        .map(|builder| {
            builder
                .with_executor(CommandExecutor)
                .with_console_socket(Some(&socket_path))
                .as_tenant()
                .with_process(Some(&process_path))
                .with_detach(true)
                .build()
        });
    let _ = fs::remove_file(&process_path);
    let pid = built?.map_err(exec_error)?;
    let child = ExecChild {
        pid,
        world: name.clone(),
    };

    let master = receive_master(&listener).map_err(io_error(&socket_path));
    let _ = fs::remove_file(&socket_path);
    match master {
        Ok(master) => Ok((child, master)),
        Err(error) => {
            child.signal(Signal::SIGKILL);
            let _ = child.wait();
            Err(error)
        }
    }
}

/// Returns where the console socket of process `id` is bound: the world's
/// runtime directory, or `/tmp` where that path would not fit in a Unix
/// socket address (108 bytes with its terminating NUL, see unix(7)).
fn console_socket_path(paths: &RunPaths, id: u32) -> PathBuf {
    let in_run_dir = paths.dir.join(format!("console-{id}.sock"));
    if in_run_dir.as_os_str().len() < SUN_PATH_MAX {
        return in_run_dir;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    PathBuf::from("/tmp").join(format!("worlds-console-{id}-{nanos}.sock"))
}

/// Accepts libcontainer's connection on `listener` and receives the
/// terminal's master end that it sends.
fn receive_master(listener: &UnixListener) -> std::io::Result<OwnedFd> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};

    let (stream, _) = listener.accept()?;
    let mut name = [0u8; 256];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut ancillary = RecvAncillaryBuffer::new(&mut space);
    rustix::net::recvmsg(
        &stream,
        &mut [std::io::IoSliceMut::new(&mut name)],
        &mut ancillary,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    for message in ancillary.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = message {
            if let Some(fd) = fds.next() {
                return Ok(fd);
            }
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "no terminal descriptor arrived on the console socket",
    ))
}

/// Resolves `spec` in the world's own account files; root when `None`.
fn resolve_user(name: &WorldName, root: &Path, spec: Option<&str>) -> Result<user::ResolvedUser> {
    let passwd = user::read_account_file(root, "passwd");
    let group = user::read_account_file(root, "group");
    user::resolve(spec.unwrap_or("0"), &passwd, &group).map_err(|error| match error {
        LookupError::UnknownUser(user) => RuntimeError::UnknownUser {
            name: name.clone(),
            user,
        },
        LookupError::UnknownGroup(group) => RuntimeError::UnknownGroup {
            name: name.clone(),
            group,
        },
    })
}
