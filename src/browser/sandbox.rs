//! Whether a launched Chromium keeps its sandbox: a pure decision from the caller's
//! choice, the effective uid and what the kernel allows, plus the one place that reads
//! those facts from the machine.
//!
//! The sandbox is what stops a renderer exploit from a crawled page from running with the
//! user's full rights, so it is turned off only when it cannot work: as root (Chromium
//! refuses to start its sandbox as root) or when neither user namespaces nor a setuid
//! `chrome-sandbox` helper is available. Never turned off silently: the first launch
//! without it logs why.

use std::fs;
use std::path::Path;
use std::sync::Once;

use crate::error::{Error, ErrorKind, Result};

/// Whether Chromium's sandbox is used; see [`Launch::sandbox`](super::Launch::sandbox).
///
/// What turning it off costs is in `docs/security.md`: a page that exploits a renderer
/// bug then runs its code with every right of the user running cdpmux.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Sandbox {
    /// On when it can work: not root, and user namespaces or a setuid `chrome-sandbox`
    /// are available. Otherwise off, logged once per process.
    #[default]
    Auto,
    /// Always on; launching as root fails with [`ErrorKind::InvalidInput`], since Chromium
    /// will not run its sandbox as root.
    On,
    /// Always off (`--no-sandbox`). Only for browsers that crawl trusted pages, or that are
    /// confined by other means (a container or VM used for nothing else).
    Off,
}

/// What the machine allows, as read by [`KernelFacts::probe`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct KernelFacts {
    /// `/proc/sys/kernel/unprivileged_userns_clone` (Debian and Ubuntu kernels); `None`
    /// where the knob does not exist (mainline: allowed).
    pub(super) userns_clone: Option<bool>,
    /// `/proc/sys/user/max_user_namespaces`; `None` if unreadable.
    pub(super) max_user_namespaces: Option<u64>,
    /// `/proc/sys/kernel/apparmor_restrict_unprivileged_userns` (Ubuntu 23.10+): user
    /// namespaces are allowed only to profiled programs.
    pub(super) apparmor_restricts_userns: Option<bool>,
    /// A setuid-root `chrome-sandbox` helper next to the browser or named by
    /// `CHROME_DEVEL_SANDBOX`.
    pub(super) suid_helper: bool,
}

impl KernelFacts {
    /// Reads the facts for a browser at `exe` (its real path: the helper lives next to it).
    pub(super) fn probe(exe: &Path) -> KernelFacts {
        let flag = |path: &str| read_number(path).map(|n| n != 0);
        let real = fs::canonicalize(exe).unwrap_or_else(|_| exe.to_path_buf());
        let mut helpers = vec![real.with_file_name("chrome-sandbox")];
        if let Some(dir) = real.parent().and_then(Path::parent) {
            // Debian's /usr/bin/chromium is a script; the binary is in /usr/lib/chromium.
            helpers.push(dir.join("lib/chromium/chrome-sandbox"));
        }
        if let Some(env) = std::env::var_os("CHROME_DEVEL_SANDBOX").filter(|v| !v.is_empty()) {
            helpers.push(env.into());
        }
        KernelFacts {
            userns_clone: flag("/proc/sys/kernel/unprivileged_userns_clone"),
            max_user_namespaces: read_number("/proc/sys/user/max_user_namespaces"),
            apparmor_restricts_userns: flag(
                "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
            ),
            suid_helper: helpers.iter().any(|p| is_suid_root(p)),
        }
    }

    /// True when an unprivileged process may create a user namespace.
    fn user_namespaces(&self) -> bool {
        self.userns_clone != Some(false)
            && self.max_user_namespaces.is_some_and(|n| n > 0)
            && self.apparmor_restricts_userns != Some(true)
    }
}

/// The outcome of [`decide`]: sandbox on, or off and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Decision {
    /// Keep the sandbox (pass nothing).
    On,
    /// Pass `--no-sandbox`, for this reason.
    Off(&'static str),
}

/// Decides the sandbox for a launch. Pure: every input is an argument.
pub(super) fn decide(choice: Sandbox, euid: u32, facts: &KernelFacts) -> Result<Decision> {
    match choice {
        Sandbox::Off => Ok(Decision::Off("turned off by Launch::sandbox(Sandbox::Off)")),
        Sandbox::On if euid == 0 => Err(Error::new(
            ErrorKind::InvalidInput,
            "Sandbox::On cannot work as root: Chromium refuses to start its sandbox for \
             uid 0; run as an unprivileged user, or choose Sandbox::Auto or Sandbox::Off",
        )),
        Sandbox::On => Ok(Decision::On),
        Sandbox::Auto if euid == 0 => Ok(Decision::Off(
            "running as root, where Chromium refuses its sandbox",
        )),
        Sandbox::Auto if facts.user_namespaces() || facts.suid_helper => Ok(Decision::On),
        Sandbox::Auto => Ok(Decision::Off(
            "the kernel allows no unprivileged user namespaces and no setuid chrome-sandbox \
             helper was found",
        )),
    }
}

/// Logs, once per process, that a browser runs without its sandbox.
pub(super) fn log_off_once(reason: &str) {
    // A process-wide latch for one log line, not state shared by shards.
    static LOGGED: Once = Once::new();
    LOGGED.call_once(|| {
        tracing::warn!(
            reason,
            "Chromium runs without its sandbox (--no-sandbox): a renderer exploit from a \
             crawled page runs with this user's rights; see docs/security.md"
        );
    });
}

fn read_number(path: &str) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn is_suid_root(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.uid() == 0 && m.mode() & 0o4000 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const USERNS: KernelFacts = KernelFacts {
        userns_clone: None,
        max_user_namespaces: Some(96_364),
        apparmor_restricts_userns: None,
        suid_helper: false,
    };
    const NOTHING: KernelFacts = KernelFacts {
        userns_clone: Some(false),
        max_user_namespaces: Some(0),
        apparmor_restricts_userns: None,
        suid_helper: false,
    };

    #[test]
    fn auto_keeps_the_sandbox_for_users_when_the_kernel_allows_it() {
        assert_eq!(decide(Sandbox::Auto, 1000, &USERNS).unwrap(), Decision::On);
        let debian_knob_on = KernelFacts {
            userns_clone: Some(true),
            ..USERNS
        };
        assert_eq!(
            decide(Sandbox::Auto, 1000, &debian_knob_on).unwrap(),
            Decision::On
        );
        let helper_only = KernelFacts {
            suid_helper: true,
            ..NOTHING
        };
        assert_eq!(
            decide(Sandbox::Auto, 1000, &helper_only).unwrap(),
            Decision::On
        );
    }

    #[test]
    fn auto_turns_it_off_as_root_or_when_nothing_allows_it() {
        for facts in [USERNS, NOTHING] {
            let d = decide(Sandbox::Auto, 0, &facts).unwrap();
            assert!(
                matches!(d, Decision::Off(why) if why.contains("root")),
                "{d:?}"
            );
        }
        for facts in [
            NOTHING,
            KernelFacts {
                userns_clone: Some(false),
                ..USERNS
            },
            KernelFacts {
                max_user_namespaces: Some(0),
                ..USERNS
            },
            KernelFacts {
                max_user_namespaces: None,
                ..USERNS
            },
            KernelFacts {
                apparmor_restricts_userns: Some(true),
                ..USERNS
            },
        ] {
            let d = decide(Sandbox::Auto, 1000, &facts).unwrap();
            assert!(
                matches!(d, Decision::Off(why) if why.contains("user namespaces")),
                "{facts:?}: {d:?}"
            );
        }
    }

    #[test]
    fn explicit_choices_win_and_on_as_root_is_refused() {
        for (euid, facts) in [(0, USERNS), (1000, USERNS), (1000, NOTHING)] {
            assert!(matches!(
                decide(Sandbox::Off, euid, &facts).unwrap(),
                Decision::Off(_)
            ));
        }
        assert_eq!(decide(Sandbox::On, 1000, &NOTHING).unwrap(), Decision::On);
        let err = decide(Sandbox::On, 0, &USERNS).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.message().contains("root"), "{err}");
    }

    #[test]
    fn probe_reads_this_machine_without_failing() {
        let facts = KernelFacts::probe(Path::new("/nonexistent/chrome"));
        assert!(!facts.suid_helper);
        // Linux has had this file since 4.9; a value proves the probe read it.
        if Path::new("/proc/sys/user/max_user_namespaces").exists() {
            assert!(facts.max_user_namespaces.is_some());
        }
    }
}
