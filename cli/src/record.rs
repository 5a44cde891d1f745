//! One line of `cdpmux crawl` output, and the names error kinds get in it.

use cdpmux::{ErrorKind, TimeoutKind};
use serde::Serialize;

/// What the crawl learned about one URL: a JSON line.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PageRecord {
    /// The URL as crawled (fragment dropped).
    pub url: String,
    /// Where the page ended up after redirects (`location.href`).
    pub final_url: Option<String>,
    /// HTTP status of the main document, when the browser reports one.
    pub status: Option<u16>,
    /// `document.title`.
    pub title: Option<String>,
    /// Size of the rendered HTML (`outerHTML`), UTF-8 bytes.
    pub html_bytes: Option<u64>,
    /// Links (`a[href]`) on the page.
    pub links: Option<u64>,
    /// True when the page had more than the probe returns (a title or URL cut, links
    /// left out); null when the page was not read.
    pub truncated: Option<bool>,
    /// Hops from an input URL.
    pub depth: u32,
    /// Time from submission to result, including any wait for a session.
    pub ms: f64,
    /// Shard (thread) the job ran on, when it got that far.
    pub shard: Option<usize>,
    /// Whether the page session had served an earlier job of this crawl.
    pub reused: Option<bool>,
    /// Error kind (`navigation`, `timeout_job`, ...) or null.
    pub error: Option<String>,
    /// What went wrong, for people.
    pub message: Option<String>,
    /// The rendered HTML (`--html`); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    /// True when the HTML was cut at `--max-html-bytes`; absent when not asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub html_truncated: Option<bool>,
    /// Where the HTML was saved (`--save-html`); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub html_file: Option<String>,
    /// The screenshot (`--screenshot`); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub screenshot: Option<Screenshot>,
}

/// A saved screenshot of a page's viewport.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Screenshot {
    /// The PNG file.
    pub file: String,
    /// The viewport's CSS width and height when it was taken (`innerWidth`,
    /// `innerHeight`); the PNG has these times the device pixel ratio.
    pub width: u32,
    /// See [`width`](Self::width).
    pub height: u32,
}

impl PageRecord {
    /// A record for a URL rejected before it was submitted.
    pub fn invalid(url: &str, message: String) -> Self {
        PageRecord {
            url: url.trim().to_owned(),
            error: Some(kind_name(ErrorKind::InvalidInput)),
            message: Some(message),
            ..PageRecord::default()
        }
    }

    /// A record for a page whose job was stopped before it finished (an interrupt, or a
    /// job that ended abnormally): `error` is `kind`, `ms` the time it had run.
    pub fn unfinished(url: String, depth: u32, ms: f64, kind: &str, message: String) -> Self {
        PageRecord {
            url,
            depth,
            ms,
            error: Some(kind.to_owned()),
            message: Some(message),
            ..PageRecord::default()
        }
    }

    /// The record as one JSON line (without the newline).
    pub fn to_json_line(&self) -> String {
        // Only strings, numbers and options: serialization cannot fail.
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!(
                "{{\"url\":{:?},\"error\":\"io\",\"message\":{:?}}}",
                self.url,
                e.to_string()
            )
        })
    }
}

/// `error` of a page cut off by an interrupt: it started and did not finish.
pub const CANCELLED: &str = "cancelled";

/// The lowercase snake-case name of an error kind, as written in `error`.
pub fn kind_name(kind: ErrorKind) -> String {
    let name = match kind {
        ErrorKind::Timeout(t) => {
            return format!(
                "timeout_{}",
                match t {
                    TimeoutKind::Wait => "wait",
                    TimeoutKind::Create => "create",
                    TimeoutKind::Command => "command",
                    TimeoutKind::Job => "job",
                    TimeoutKind::Event => "event",
                    TimeoutKind::Launch => "launch",
                    _ => "other",
                }
            )
        }
        ErrorKind::QueueFull => "queue_full",
        ErrorKind::Overloaded => "overloaded",
        ErrorKind::SessionCrashed => "session_crashed",
        ErrorKind::ConnectionClosed => "connection_closed",
        ErrorKind::BrowserUnavailable => "browser_unavailable",
        ErrorKind::Protocol => "protocol",
        ErrorKind::Navigation => "navigation",
        ErrorKind::Script => "script",
        ErrorKind::InvalidInput => "invalid_input",
        ErrorKind::Shutdown => "shutdown",
        ErrorKind::Io => "io",
        ErrorKind::Internal => "internal",
        ErrorKind::Hook => "hook",
        _ => "other",
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_snake_case_names() {
        assert_eq!(kind_name(ErrorKind::Navigation), "navigation");
        assert_eq!(kind_name(ErrorKind::InvalidInput), "invalid_input");
        assert_eq!(
            kind_name(ErrorKind::Timeout(TimeoutKind::Job)),
            "timeout_job"
        );
        assert_eq!(kind_name(ErrorKind::SessionCrashed), "session_crashed");
        // The summary's "the pool broke" verdict looks for this name.
        assert_eq!(kind_name(ErrorKind::Internal), "internal");
    }

    #[test]
    fn a_record_is_one_json_line_with_every_field() {
        let line = PageRecord::invalid(" nope ", "bad URL".into()).to_json_line();
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["url"], "nope");
        assert_eq!(v["error"], "invalid_input");
        for field in [
            "final_url",
            "status",
            "title",
            "html_bytes",
            "links",
            "truncated",
            "depth",
            "ms",
            "shard",
            "reused",
            "message",
        ] {
            assert!(v.get(field).is_some(), "{field} missing from {line}");
        }
    }
}
