//! Commands on a terminal of their own, `world exec -t` and `world
//! console`: the command gets a new pseudo-terminal in the world, and this
//! process joins it to its own terminal in raw mode, passing keys in,
//! output out and window size changes on.

use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use rustix::termios::{self, OptionalActions, Termios};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGWINCH};
use signal_hook::iterator::Signals;
use worlds::runtime::ExecRequest;
use worlds::{Store, WorldName};

use crate::commands::exec::exit_status;

/// How often the output loop checks whether the command has exited.
const EXIT_POLL: Duration = Duration::from_millis(50);
/// End of transmission (Ctrl-D): what a terminal sends at the end of input.
const EOT: u8 = 4;

/// Restores the terminal's settings when dropped.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enable(terminal: impl AsFd) -> io::Result<Self> {
        let saved = termios::tcgetattr(&terminal)?;
        let mut raw = saved.clone();
        raw.make_raw();
        termios::tcsetattr(&terminal, OptionalActions::Now, &raw)?;
        Ok(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(io::stdin(), OptionalActions::Now, &self.saved);
    }
}

/// Runs `request` on a new pseudo-terminal in world `name` and returns its
/// exit code.
pub fn run(store: &Store, name: &WorldName, request: ExecRequest) -> anyhow::Result<u8> {
    let on_terminal = io::stdin().is_terminal();

    // The handlers go in before the command starts, so that a signal in
    // between is queued and passed on rather than ending this process.
    let mut signals = Signals::new([SIGWINCH, SIGTERM, SIGHUP, SIGINT])?;
    let signals_handle = signals.handle();
    let (child, master) = store.exec_terminal(name, request)?;
    let raw = on_terminal
        .then(|| RawMode::enable(io::stdin()))
        .transpose()?;

    let master = File::from(master);
    // libcontainer 0.7 leaves a new terminal at 0 rows and 0 columns.
    if let Ok(size) = termios::tcgetwinsize(io::stdin()) {
        let _ = termios::tcsetwinsize(&master, size);
    }
    let pid = child.pid();
    let resize_target = master.try_clone()?;
    let signal_thread = std::thread::spawn(move || {
        for signal in signals.forever() {
            if signal == SIGWINCH {
                if let Ok(size) = termios::tcgetwinsize(io::stdin()) {
                    let _ = termios::tcsetwinsize(&resize_target, size);
                }
                continue;
            }
            if let Ok(signal) = nix::sys::signal::Signal::try_from(signal) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
            }
        }
    });

    let mut input_target = master.try_clone()?;
    std::thread::spawn(move || {
        let _ = io::copy(&mut io::stdin().lock(), &mut input_target);
        // Input from a pipe ends: tell the command as a terminal would.
        if !on_terminal {
            let _ = input_target.write_all(&[EOT]);
        }
    });

    let exited = Arc::new(AtomicBool::new(false));
    let exited_flag = Arc::clone(&exited);
    let waiter = std::thread::spawn(move || {
        let code = child.wait();
        exited_flag.store(true, Ordering::SeqCst);
        code
    });

    copy_output(master, &exited);
    let code = waiter
        .join()
        .map_err(|_| anyhow::anyhow!("the thread waiting for the command panicked"))??;
    drop(raw);
    signals_handle.close();
    let _ = signal_thread.join();
    Ok(exit_status(code))
}

/// Copies the terminal's output to stdout until the terminal closes, or
/// the command has exited and no output is left: a daemon that the command
/// left may hold the terminal open.
fn copy_output(master: File, exited: &AtomicBool) {
    let master: OwnedFd = master.into();
    let mut reader = File::from(master);
    let mut stdout = io::stdout().lock();
    let mut buffer = [0u8; 8192];
    loop {
        let done = exited.load(Ordering::SeqCst);
        let timeout = if done {
            PollTimeout::ZERO
        } else {
            PollTimeout::try_from(EXIT_POLL).unwrap_or(PollTimeout::NONE)
        };
        let mut fds = [PollFd::new(reader.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) if done => return,
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
            Ok(_) => {}
        }
        // EIO means that every process closed the terminal's other end.
        match reader.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(count) => {
                if stdout.write_all(&buffer[..count]).is_err() {
                    return;
                }
                let _ = stdout.flush();
            }
        }
    }
}
