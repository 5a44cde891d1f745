//! The Chromium command-line flags cdpmux sets itself, and the check that keeps callers'
//! extra arguments from overriding the ones that keep DevTools on loopback and the
//! profile private.
//!
//! Chromium on Linux reads a switch written with one dash or two (`-x=1` is `--x=1`) and
//! trims surrounding whitespace, so the check does the same before comparing names. It
//! never rewrites an argument; it only refuses.

/// Flags every launch gets. The DevTools port is chosen by Chromium (`=0`) and bound to
/// loopback only. `--no-sandbox` is not here: [`super::sandbox`] decides it.
pub(super) const BASE_FLAGS: [&str; 10] = [
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-port=0",
    "--remote-debugging-address=127.0.0.1",
];

/// Pooled tabs are hidden; without these their timers are throttled.
pub(super) const NO_THROTTLING_FLAGS: [&str; 3] = [
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
];

/// Turns Chromium's sandbox off; passed only when [`super::sandbox`] says so.
pub(super) const NO_SANDBOX: &str = "--no-sandbox";

/// Switch names (without dashes) an extra argument may not set, each with what cdpmux
/// keeps by managing it. `remote-allow-origins` would let pages of other origins open the
/// DevTools socket.
const RESERVED: [(&str, &str); 6] = [
    ("remote-debugging-address", "DevTools stays on 127.0.0.1"),
    ("remote-debugging-port", "cdpmux picks the DevTools port"),
    (
        "remote-debugging-pipe",
        "cdpmux talks to DevTools over its port",
    ),
    (
        "remote-allow-origins",
        "DevTools accepts no WebSocket from a web page's origin",
    ),
    ("user-data-dir", "each browser gets a fresh private profile"),
    ("no-sandbox", "use Launch::sandbox(Sandbox::Off) instead"),
];

/// The switch name an argument sets: whitespace trimmed, leading dashes removed (Chromium
/// takes one or two), the value after `=` dropped. `None` for a non-switch (a URL).
pub(super) fn switch_name(arg: &str) -> Option<&str> {
    let arg = arg.trim();
    if !arg.starts_with('-') {
        return None;
    }
    let name = arg.trim_start_matches('-');
    let name = name.split('=').next().unwrap_or_default();
    (!name.is_empty()).then_some(name)
}

/// Why `arg` may not be passed, if it sets a reserved switch. Names are compared without
/// regard to ASCII case, and any number of dashes counts: refusing a spelling Chromium
/// would ignore costs nothing.
pub(super) fn reserved_reason(arg: &str) -> Option<&'static str> {
    let name = switch_name(arg)?;
    RESERVED
        .iter()
        .find(|(reserved, _)| reserved.eq_ignore_ascii_case(name))
        .map(|(_, why)| *why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_dash_two_dashes_and_whitespace_name_the_same_switch() {
        for arg in [
            "--remote-debugging-address=0.0.0.0",
            "-remote-debugging-address=0.0.0.0",
            " -remote-debugging-address=0.0.0.0 ",
            "\t--remote-debugging-port=9222",
            "-remote-debugging-pipe",
            "--REMOTE-DEBUGGING-PORT=1",
            "-user-data-dir=/tmp/x",
            "--remote-allow-origins=*",
            "-remote-allow-origins=https://evil.test",
            "--no-sandbox",
            "-no-sandbox",
            "---remote-debugging-port=1",
        ] {
            assert!(reserved_reason(arg).is_some(), "{arg:?} must be reserved");
        }
    }

    #[test]
    fn other_switches_and_urls_pass() {
        for arg in [
            "--window-size=800,600",
            "-lang=en",
            "https://a.test/?remote-debugging-port=1",
            "about:blank",
            "--remote-debugging-addresses-are-fine-when-named-otherwise",
            "--",
            "-",
        ] {
            assert_eq!(reserved_reason(arg), None, "{arg:?}");
        }
    }

    #[test]
    fn switch_names_drop_dashes_and_values() {
        assert_eq!(switch_name("--a=b=c"), Some("a"));
        assert_eq!(switch_name("-a"), Some("a"));
        assert_eq!(switch_name("  --a  "), Some("a"));
        assert_eq!(switch_name("a"), None);
        assert_eq!(switch_name("--=x"), None);
    }
}
