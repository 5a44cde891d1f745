//! Starting a browser process so that it dies with this process.
//!
//! On Linux the child asks the kernel for SIGKILL when its parent dies
//! (`PR_SET_PDEATHSIG`, set between fork and exec). The kernel sends it when the *thread*
//! that forked the child exits, not only the process. So children are forked from one
//! thread that lives as long as the process ([`spawn`] hands the `Command` to it): a
//! browser launched from a short-lived thread (a `spawn_blocking` task, a scoped thread)
//! is not killed when that thread ends. When the process dies, every thread dies with it,
//! the browser gets SIGKILL, and its zygote and renderer children, in the same process
//! group, exit as soon as they see the browser gone (tests/orphans.rs measures it).
//!
//! Never forks from the caller's thread on Linux; never blocks the caller longer than a
//! fork and exec take.

use std::io;
use std::process::{Child, Command};

/// Spawns `command` with the parent-death signal set (Linux); elsewhere spawns it
/// directly, and the browser outlives a killed parent.
pub(super) fn spawn(command: Command) -> io::Result<Child> {
    imp::spawn(command)
}

#[cfg(target_os = "linux")]
mod imp {
    use std::io;
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command};
    use std::sync::mpsc;
    use std::sync::OnceLock;

    type Request = (Command, mpsc::SyncSender<io::Result<Child>>);

    /// The spawner thread's inbox. The thread is started on first use and never exits.
    static SPAWNER: OnceLock<io::Result<mpsc::Sender<Request>>> = OnceLock::new();

    pub(super) fn spawn(mut command: Command) -> io::Result<Child> {
        let parent = std::process::id();
        // SAFETY: the closure runs in the forked child before exec and calls only
        // async-signal-safe functions (prctl, getppid); it allocates nothing.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died between fork and prctl: then nobody will
                // ever send the signal, so do not start at all.
                if u32::try_from(libc::getppid()).ok() != Some(parent) {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        let inbox = SPAWNER.get_or_init(start).as_ref().map_err(|e| {
            io::Error::new(e.kind(), format!("cannot start the spawner thread: {e}"))
        })?;
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        let gone = || io::Error::other("the spawner thread is gone");
        inbox.send((command, reply_tx)).map_err(|_| gone())?;
        reply_rx.recv().map_err(|_| gone())?
    }

    fn start() -> io::Result<mpsc::Sender<Request>> {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("cdpmux-spawner".into())
            .spawn(move || {
                // Holds no resource: it lives until the process exits (the sender is in
                // a static, so `recv` never fails).
                while let Ok((mut command, reply)) = rx.recv() {
                    let _ = reply.send(command.spawn());
                }
            })?;
        Ok(tx)
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::io;
    use std::process::{Child, Command};

    pub(super) fn spawn(mut command: Command) -> io::Result<Child> {
        command.spawn()
    }
}
