//! Requests from outside to stop: SIGINT (Ctrl-C) and SIGTERM (`kill`, systemd, a
//! container runtime), handled alike.
//!
//! Owns the process's handlers for both signals. They are installed before anything that
//! could be left behind (a browser, a pool) exists, and stay installed to the end, so a
//! signal never kills the process with the default action halfway through. Never decides
//! what a stop means: the command that holds a [`Stop`] does.

use std::fmt;

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::browser::{Fatal, EXIT_INTERRUPTED};

/// Exit code after SIGTERM (128 + 15, as shells report it).
pub const EXIT_TERMINATED: i32 = 143;

/// A signal that asks the process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGINT: Ctrl-C.
    Interrupt,
    /// SIGTERM.
    Terminate,
}

impl StopSignal {
    /// The exit code a process stopped by this signal reports: 128 + its number.
    pub fn exit_code(self) -> i32 {
        match self {
            StopSignal::Interrupt => EXIT_INTERRUPTED,
            StopSignal::Terminate => EXIT_TERMINATED,
        }
    }

    /// The error that ends a command stopped by this signal; `when` says at what point.
    pub fn fatal(self, when: &str) -> Fatal {
        Fatal {
            code: self.exit_code(),
            message: format!("{self} {when}"),
        }
    }
}

impl fmt::Display for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopSignal::Interrupt => "interrupted",
            StopSignal::Terminate => "terminated",
        })
    }
}

/// The installed handlers; [`Stop::recv`] waits for the next signal.
pub struct Stop {
    interrupt: Signal,
    terminate: Signal,
}

impl Stop {
    /// Installs the handlers. Must run inside a tokio runtime; from then on neither
    /// signal has its default action (ending the process at once) until the process exits.
    pub fn install() -> Result<Stop, Fatal> {
        let install = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|e| Fatal::failed(format!("could not handle {name}: {e}")))
        };
        Ok(Stop {
            interrupt: install(SignalKind::interrupt(), "SIGINT")?,
            terminate: install(SignalKind::terminate(), "SIGTERM")?,
        })
    }

    /// Waits for the next SIGINT or SIGTERM. Cancel-safe: a signal that arrives while no
    /// one waits is kept for the next call.
    pub async fn recv(&mut self) -> StopSignal {
        tokio::select! {
            Some(()) = self.interrupt.recv() => StopSignal::Interrupt,
            Some(()) = self.terminate.recv() => StopSignal::Terminate,
            // Both streams ended: tokio's signal driver is gone, no signal can come.
            else => std::future::pending().await,
        }
    }
}
