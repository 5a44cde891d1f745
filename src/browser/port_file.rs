//! The `DevToolsActivePort` file: how a launched Chromium tells us where its DevTools
//! endpoint listens (it writes the file into its profile once the port is open).
//!
//! Pure reading and parsing; never trusts the file's contents beyond a port and a
//! `/devtools/browser/<id>` path, so nothing in it can change the host we connect to.

use std::fs;
use std::path::Path;

/// The file's name, in the browser's profile directory.
pub(super) const PORT_FILE: &str = "DevToolsActivePort";

/// The port and browser path from a complete `DevToolsActivePort` file.
pub(super) fn read_port_file(path: &Path) -> Option<(u16, String)> {
    parse_port_file(&fs::read_to_string(path).ok()?)
}

/// Parses a `DevToolsActivePort` file: the port on the first line, the browser's
/// DevTools path on the second. `None` until both are there and well formed (Chromium may
/// be writing it right now), and for anything that could change the URL's host.
fn parse_port_file(text: &str) -> Option<(u16, String)> {
    let mut lines = text.lines();
    let port: u16 = lines.next()?.trim().parse().ok()?;
    let path = lines.next()?.trim();
    let id = path.strip_prefix("/devtools/browser/")?;
    let valid_id = !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    (port != 0 && valid_id).then(|| (port, path.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_file_needs_both_lines() {
        assert_eq!(
            parse_port_file("9222\n/devtools/browser/ab-12\n"),
            Some((9222, "/devtools/browser/ab-12".to_string()))
        );
        assert_eq!(parse_port_file(""), None);
        assert_eq!(parse_port_file("9222"), None);
        assert_eq!(parse_port_file("9222\n"), None);
        assert_eq!(parse_port_file("9222\n/devtools/browser/"), None);
        assert_eq!(parse_port_file("0\n/devtools/browser/x"), None);
        assert_eq!(parse_port_file("99999\n/devtools/browser/x"), None);
        assert_eq!(parse_port_file("92x\n/devtools/browser/x"), None);
        assert_eq!(parse_port_file("9222\n/devtools/page/x"), None);
        assert_eq!(parse_port_file("9222\n/devtools/browser/a b"), None);
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn no_port_file_panics_the_parser(text in "\\PC{0,200}") {
                let _ = parse_port_file(&text);
            }

            #[test]
            fn accepted_port_files_name_a_real_port_and_a_browser_path(
                text in "[0-9]{0,6}\n?/devtools/browser/[a-zA-Z0-9_ -]{0,40}\n?",
            ) {
                if let Some((port, path)) = parse_port_file(&text) {
                    prop_assert!(port != 0);
                    let id = path.strip_prefix("/devtools/browser/").unwrap();
                    prop_assert!(!id.is_empty());
                    // The path goes into ws://127.0.0.1:{port}{path}: nothing may change
                    // the host or start a new line.
                    let url = url::Url::parse(&format!("ws://127.0.0.1:{port}{path}")).unwrap();
                    prop_assert_eq!(url.host_str(), Some("127.0.0.1"));
                    prop_assert_eq!(url.path(), path.as_str());
                }
            }

            #[test]
            fn a_written_port_file_reads_back(
                port in 1u16..,
                id in "[a-zA-Z0-9_-]{1,40}",
                crlf: bool,
            ) {
                let nl = if crlf { "\r\n" } else { "\n" };
                let text = format!("{port}{nl}/devtools/browser/{id}{nl}");
                prop_assert_eq!(
                    parse_port_file(&text),
                    Some((port, format!("/devtools/browser/{id}")))
                );
            }
        }
    }
}
