//! Which Chromium build a launch looks for: the full browser in its headless mode, or
//! the headless shell (Chromium's old headless mode, shipped as its own binary).
//!
//! This module owns the candidate lists and the rule that picks between them; it never
//! starts a process and never reads `CDPMUX_CHROME` (that override belongs to
//! [`super::Launch::find_executable`], and wins over every kind).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Which browser build [`Launch`](super::Launch) starts when no executable is configured.
///
/// Both speak the same CDP. The headless shell has no browser UI machinery behind its
/// pages and costs Chromium less per page (docs/browsers.md has the figures and what
/// else differs); the full browser renders exactly like desktop Chrome.
///
/// A named kind is strict, so a test or benchmark measures the browser it asked for:
/// [`Shell`](Self::Shell) fails when no shell is installed instead of quietly starting
/// the full browser. [`Auto`](Self::Auto) is the one that falls back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BrowserKind {
    /// The headless shell when installed, else the full browser.
    Auto,
    /// Only the headless shell (`chromium-headless-shell`, Chromium's old headless mode).
    Shell,
    /// Only the full browser (`chromium`, `google-chrome`, ...) in its headless mode.
    #[default]
    Chromium,
}

/// The headless shell: binaries first, then names on `PATH`.
///
/// Debian's `/usr/bin/chromium-headless-shell` is a `sh -e` script that runs the binary
/// without `exec`. Starting the script would put a shell between cdpmux and the browser:
/// SIGTERM and the parent-death signal would reach the script, not the browser. So the
/// binary behind it is tried first.
const SHELL_PATHS: [&str; 1] = ["/usr/lib/chromium/chromium-headless-shell"];
const SHELL_NAMES: [&str; 3] = [
    "chromium-headless-shell",
    "chrome-headless-shell",
    "headless_shell",
];

/// The full browser, by name on `PATH`. Debian's `/usr/bin/chromium` `exec`s its binary,
/// so the script is fine to start.
const CHROMIUM_NAMES: [&str; 4] = [
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
];

impl BrowserKind {
    /// Every kind, for tests and command-line help.
    pub const ALL: [BrowserKind; 3] =
        [BrowserKind::Auto, BrowserKind::Shell, BrowserKind::Chromium];

    /// The name used on the command line and in logs: `auto`, `shell` or `chromium`.
    pub fn as_str(self) -> &'static str {
        match self {
            BrowserKind::Auto => "auto",
            BrowserKind::Shell => "shell",
            BrowserKind::Chromium => "chromium",
        }
    }

    /// What an executable is, judged by its file name: the shell's names contain
    /// `headless-shell` or `headless_shell`; anything else counts as the full browser.
    /// Never [`Auto`](Self::Auto).
    pub fn of_executable(path: &Path) -> BrowserKind {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        if name.contains("headless-shell") || name.contains("headless_shell") {
            BrowserKind::Shell
        } else {
            BrowserKind::Chromium
        }
    }

    /// The first installed executable of this kind; `is_executable` and `search_path` are
    /// the file checks (passed in so the rule is tested without touching the machine).
    pub(super) fn find(
        self,
        is_executable: impl Fn(&Path) -> bool,
        search_path: impl Fn(&str) -> Option<PathBuf>,
    ) -> Option<PathBuf> {
        let shell = || {
            SHELL_PATHS
                .iter()
                .map(Path::new)
                .find(|p| is_executable(p))
                .map(Path::to_path_buf)
                .or_else(|| SHELL_NAMES.iter().find_map(|n| search_path(n)))
        };
        let chromium = || CHROMIUM_NAMES.iter().find_map(|n| search_path(n));
        match self {
            BrowserKind::Auto => shell().or_else(chromium),
            BrowserKind::Shell => shell(),
            BrowserKind::Chromium => chromium(),
        }
    }

    /// Where [`find`](Self::find) looks, for error messages.
    pub(super) fn looked_at(self) -> String {
        let shell = format!(
            "{} and {} on PATH",
            SHELL_PATHS.join(", "),
            SHELL_NAMES.join(", ")
        );
        let chromium = format!("{} on PATH", CHROMIUM_NAMES.join(", "));
        match self {
            BrowserKind::Auto => format!("{shell}, then {chromium}"),
            BrowserKind::Shell => shell,
            BrowserKind::Chromium => chromium,
        }
    }

    /// The Debian packages that provide this kind.
    pub(super) fn install_hint(self) -> &'static str {
        match self {
            BrowserKind::Shell => "apt-get install -y chromium-headless-shell",
            BrowserKind::Auto | BrowserKind::Chromium => "apt-get install -y chromium",
        }
    }
}

impl fmt::Display for BrowserKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BrowserKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(BrowserKind::Auto),
            "shell" | "headless-shell" | "chromium-headless-shell" => Ok(BrowserKind::Shell),
            "chromium" | "chrome" => Ok(BrowserKind::Chromium),
            other => Err(format!(
                "unknown browser kind `{other}`; expected auto, shell or chromium"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A machine with exactly these executables (absolute paths or names on PATH).
    fn machine<'a>(installed: &'a [&'a str]) -> impl Fn(BrowserKind) -> Option<PathBuf> + 'a {
        move |kind| {
            kind.find(
                |p| installed.iter().any(|i| Path::new(i) == p),
                |name| {
                    installed
                        .iter()
                        .find(|i| **i == name)
                        .map(|n| Path::new("/usr/bin").join(n))
                },
            )
        }
    }

    #[test]
    fn auto_prefers_the_shell_and_falls_back_to_chromium() {
        let both = machine(&["chromium", "/usr/lib/chromium/chromium-headless-shell"]);
        assert_eq!(
            both(BrowserKind::Auto),
            Some("/usr/lib/chromium/chromium-headless-shell".into())
        );
        let full_only = machine(&["chromium"]);
        assert_eq!(
            full_only(BrowserKind::Auto),
            Some("/usr/bin/chromium".into())
        );
        assert_eq!(machine(&[])(BrowserKind::Auto), None);
    }

    #[test]
    fn named_kinds_never_fall_back() {
        let full_only = machine(&["google-chrome"]);
        assert_eq!(full_only(BrowserKind::Shell), None);
        let shell_only = machine(&["chromium-headless-shell"]);
        assert_eq!(shell_only(BrowserKind::Chromium), None);
        assert_eq!(
            shell_only(BrowserKind::Shell),
            Some("/usr/bin/chromium-headless-shell".into())
        );
    }

    #[test]
    fn the_shell_binary_wins_over_its_wrapper_script() {
        let debian = machine(&[
            "chromium-headless-shell",
            "/usr/lib/chromium/chromium-headless-shell",
        ]);
        assert_eq!(
            debian(BrowserKind::Shell),
            Some("/usr/lib/chromium/chromium-headless-shell".into())
        );
    }

    #[test]
    fn kinds_parse_and_print_as_on_the_command_line() {
        for kind in BrowserKind::ALL {
            assert_eq!(kind.as_str().parse::<BrowserKind>(), Ok(kind));
        }
        assert_eq!(" Shell ".parse(), Ok(BrowserKind::Shell));
        assert!("firefox"
            .parse::<BrowserKind>()
            .unwrap_err()
            .contains("auto, shell or chromium"));
    }

    #[test]
    fn executables_are_told_apart_by_name() {
        for shell in [
            "/usr/lib/chromium/chromium-headless-shell",
            "/opt/chrome-headless-shell-linux64/chrome-headless-shell",
            "/x/headless_shell",
        ] {
            assert_eq!(
                BrowserKind::of_executable(Path::new(shell)),
                BrowserKind::Shell
            );
        }
        for full in ["/usr/bin/chromium", "google-chrome", "/opt/shell/chrome"] {
            assert_eq!(
                BrowserKind::of_executable(Path::new(full)),
                BrowserKind::Chromium
            );
        }
    }
}
