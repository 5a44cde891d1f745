//! The operating-system side of supervising a launched browser: signals, exit status
//! and process-group membership, through `libc`.
//!
//! Never reaps: `peek_exit` looks with `WNOWAIT`, so the pid of an exited browser stays
//! reserved (a zombie) until `LaunchedBrowser::reap`, and signalling it or its group can
//! never reach an unrelated process. `launch.rs` has no `unsafe` of its own: it is here.

use std::io;

/// A child pid as `kill(2)` takes it. Linux pids are at most 2^22, so this never wraps.
pub(super) fn pid_arg(pid: u32) -> libc::pid_t {
    libc::pid_t::try_from(pid).unwrap_or(libc::pid_t::MAX)
}

/// Sends `sig` to a pid (positive) or a process group (negative). Errors (the process is
/// already gone) are expected and ignored.
pub(super) fn signal(target: i32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(target, sig);
    }
}

/// True while a process of group `pgid` is still running or being torn down. Zombies
/// are not counted: orphaned members are reaped by init, which may take seconds.
#[cfg(target_os = "linux")]
pub(super) fn group_exists(pgid: u32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|entry| {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            return false;
        };
        // `/proc/<pid>/stat`: "pid (comm) state ppid pgrp ..."; comm may hold spaces.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        let mut fields = stat
            .rsplit_once(')')
            .map_or("", |(_, r)| r)
            .split_whitespace();
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|g| g.parse::<u32>().ok());
        state != Some("Z") && pgrp == Some(pgid)
    })
}

/// True while any process (a zombie included) is left in process group `pgid`.
#[cfg(not(target_os = "linux"))]
pub(super) fn group_exists(pgid: u32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks for existence.
    unsafe { libc::kill(-pid_arg(pgid), 0) == 0 }
}

/// If `pid` (our child) has exited, describes how; `None` while it runs. Never reaps it.
pub(super) fn peek_exit(pid: u32) -> Option<String> {
    // SAFETY: siginfo_t is plain data; all-zero is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `info` is a valid, writable siginfo_t for the duration of the call.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if rc == 0 {
            break;
        }
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            continue;
        }
        // ECHILD: not waitable, e.g. the host set SIGCHLD to SIG_IGN and the kernel reaps
        // children itself. Fall back to asking whether the pid still exists.
        // SAFETY: kill(2) with signal 0 only checks for existence.
        let exists = unsafe { libc::kill(pid_arg(pid), 0) } == 0;
        return (!exists).then(|| format!("exited (not waitable: {err})"));
    }
    // SAFETY: waitid filled `info` (or left it zeroed, meaning no state change).
    let (who, status) = unsafe { (info.si_pid(), info.si_status()) };
    if who == 0 {
        return None;
    }
    Some(match info.si_code {
        libc::CLD_EXITED => format!("exit code {status}"),
        libc::CLD_KILLED | libc::CLD_DUMPED => format!("killed by signal {status}"),
        _ => format!("status {status}"),
    })
}

/// This process's effective user id.
pub(super) fn euid() -> u32 {
    // SAFETY: geteuid(2) cannot fail and has no preconditions.
    unsafe { libc::geteuid() }
}
