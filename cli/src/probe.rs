//! What a crawl job does on its page, on the shard thread: navigate (status and final URL
//! come from the navigation itself), then read the page in one `Runtime.evaluate`, and
//! take a screenshot when asked.

use std::fmt;

use cdpmux::{ErrorKind, GotoOptions, Navigation, Page, Result};
use serde::Deserialize;

use crate::record::kind_name;

/// How the page is read after navigating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Status and final URL from the navigation, then one script returning title, HTML
    /// size and links (Chromium).
    Full,
    /// Plain property reads only: the simulated browser's toy evaluator knows no more
    /// (no status, no links).
    Basic,
}

/// What content a crawl keeps from each page besides the counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wanted {
    /// The rendered HTML, at most this many characters (UTF-16 units, as JavaScript
    /// counts; the crawl cuts it to bytes afterwards).
    pub html_chars: Option<usize>,
    /// A PNG of the viewport.
    pub screenshot: bool,
}

/// What was read from a page.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct PageData {
    /// The navigation's final URL (after HTTP redirects), at most [`MAX_URL_CHARS`]
    /// bytes; `location.href` on the simulated browser.
    #[serde(default)]
    pub final_url: String,
    /// The main document's HTTP status, when the navigation knows it.
    #[serde(default)]
    pub status: Option<u16>,
    /// `document.title`.
    pub title: String,
    /// UTF-8 bytes of `document.documentElement.outerHTML`.
    pub html_bytes: u64,
    /// Number of `a[href]` elements.
    pub link_count: u64,
    /// Their absolute URLs, when asked for: at most [`MAX_LINKS`], each at most
    /// [`MAX_LINK_CHARS`] long (longer ones are left out, not cut).
    #[serde(default)]
    pub links: Vec<String>,
    /// True when the page had more than the probe returns: a title or URL cut, or
    /// links left out (see the `MAX_*` bounds).
    #[serde(default)]
    pub truncated: bool,
    /// The rendered HTML, when [`Wanted::html_chars`] asked for it.
    #[serde(default)]
    pub html: Option<String>,
    /// The viewport's CSS size `[innerWidth, innerHeight]`, read with a screenshot.
    #[serde(default)]
    pub viewport: Option<[u32; 2]>,
    /// The screenshot as Chromium sends it (base64 PNG), decoded off the shard.
    #[serde(skip)]
    pub screenshot_base64: Option<String>,
}

/// Most characters (UTF-16 units) of `document.title` the probe returns.
pub const MAX_TITLE_CHARS: usize = 1024;
/// Most bytes of the final URL the probe returns.
pub const MAX_URL_CHARS: usize = 8192;
/// Most links the probe returns (the frontier takes at most 1000 from a page anyway).
pub const MAX_LINKS: usize = 1000;
/// Longest link the probe returns; longer links are left out.
pub const MAX_LINK_CHARS: usize = 2048;

/// Why a page could not be read: the pool or the page failed, or the probe's answer did
/// not have the shape of [`PageData`] (a page can break it, e.g. by replacing globals).
#[derive(Debug)]
pub enum VisitError {
    /// The pool, the browser or the page failed.
    Pool(cdpmux::Error),
    /// The probe script answered something that is not a [`PageData`].
    Shape(serde_json::Error),
    /// The page's content could not be saved (--save-html, --screenshot).
    Save(std::io::Error),
    /// Its site's robots.txt disallows it (--robots): it was not visited.
    Disallowed,
}

impl VisitError {
    /// The error kind as written in a page record; a bad shape counts as a protocol error.
    pub fn kind_name(&self) -> String {
        match self {
            VisitError::Pool(e) => kind_name(e.kind()),
            VisitError::Shape(_) => kind_name(ErrorKind::Protocol),
            VisitError::Save(_) => kind_name(ErrorKind::Io),
            VisitError::Disallowed => "robots".to_owned(),
        }
    }
}

impl fmt::Display for VisitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VisitError::Pool(e) => e.fmt(f),
            VisitError::Shape(e) => write!(f, "the page probe returned an unexpected shape: {e}"),
            VisitError::Save(e) => write!(f, "the page's content was not saved: {e}"),
            VisitError::Disallowed => f.write_str("disallowed by the site's robots.txt"),
        }
    }
}

/// The script behind [`Probe::Full`] (status and final URL are the navigation's, not
/// the script's); `with_links` also returns the links' URLs, and
/// `wanted` the rendered HTML and the viewport's size.
///
/// A page controls its title, its URL and its links, and so the size of this reply,
/// which shares a socket with other pages' replies. The script bounds the reply itself
/// (the `MAX_*` constants, and `wanted.html_chars` for the HTML), so it stays far below
/// the connection's message limit, and says so in `truncated`. Cuts never split a UTF-16
/// surrogate pair (a lone surrogate is not valid JSON text).
fn full_script(with_links: bool, wanted: Wanted) -> String {
    let html_chars = wanted
        .html_chars
        .map_or_else(|| "null".to_owned(), |n| n.to_string());
    let viewport = wanted.screenshot;
    format!(
        r#"(() => {{
  let truncated = false;
  const cut = (s, n) => {{
    if (typeof s !== 'string') return '';
    if (s.length <= n) return s;
    truncated = true;
    const c = s.charCodeAt(n - 1);
    return s.slice(0, c >= 0xD800 && c <= 0xDBFF ? n - 1 : n);
  }};
  const root = document.documentElement;
  const html = root ? root.outerHTML : '';
  const anchors = document.querySelectorAll('a[href]');
  const links = [];
  if ({with_links}) {{
    const n = Math.min(anchors.length, {MAX_LINKS});
    if (anchors.length > n) truncated = true;
    for (let i = 0; i < n; i++) {{
      const href = anchors[i].href;
      if (typeof href === 'string' && href.length <= {MAX_LINK_CHARS}) links.push(href);
      else truncated = true;
    }}
  }}
  const htmlChars = {html_chars};
  const result = {{
    title: cut(document.title, {MAX_TITLE_CHARS}),
    html_bytes: new TextEncoder().encode(html).length,
    link_count: anchors.length,
    links,
    html: htmlChars === null ? null : html.slice(0, htmlChars),
    viewport: {viewport} ? [window.innerWidth, window.innerHeight] : null,
  }};
  result.truncated = truncated;
  return result;
}})()"#
    )
}

impl PageData {
    /// Takes status and final URL from the navigation, cutting the URL to
    /// [`MAX_URL_CHARS`] bytes (and saying so in `truncated`): the page controls it.
    fn take_navigation(&mut self, nav: Navigation) {
        self.status = nav.status;
        let mut url = nav.url;
        if url.len() > MAX_URL_CHARS {
            let mut end = MAX_URL_CHARS;
            while !url.is_char_boundary(end) {
                end -= 1;
            }
            url.truncate(end);
            self.truncated = true;
        }
        self.final_url = url;
    }
}

impl Probe {
    /// Navigates `page` to `url` as `goto` says and reads it. The outer error is the
    /// pool's (a job must return one); the inner one is a probe answer of the wrong shape.
    pub async fn visit(
        self,
        page: &Page,
        url: &str,
        goto: &GotoOptions,
        with_links: bool,
        wanted: Wanted,
    ) -> Result<Result<PageData, VisitError>> {
        let nav = page.goto_with(url, goto).await?;
        match self {
            Probe::Full => {
                let value = page
                    .evaluate_value(&full_script(with_links, wanted))
                    .await?;
                let mut data: PageData = match serde_json::from_value(value) {
                    Ok(data) => data,
                    Err(e) => return Ok(Err(VisitError::Shape(e))),
                };
                data.take_navigation(nav);
                if wanted.screenshot {
                    let shot = page
                        .call(
                            "Page.captureScreenshot",
                            serde_json::json!({ "format": "png" }),
                        )
                        .await?;
                    data.screenshot_base64 = shot["data"].as_str().map(str::to_owned);
                    if data.screenshot_base64.is_none() {
                        return Ok(Err(VisitError::Shape(serde::de::Error::custom(
                            "Page.captureScreenshot returned no data",
                        ))));
                    }
                }
                Ok(Ok(data))
            }
            Probe::Basic => {
                let text = |v: serde_json::Value| v.as_str().unwrap_or_default().to_owned();
                let final_url = text(page.evaluate_value("location.href").await?);
                let title = text(page.evaluate_value("document.title").await?);
                let html = text(
                    page.evaluate_value("document.documentElement.outerHTML")
                        .await?,
                );
                let html_bytes = html.len() as u64;
                Ok(Ok(PageData {
                    final_url,
                    status: None,
                    title,
                    html_bytes,
                    link_count: 0,
                    links: Vec::new(),
                    truncated: false,
                    html: wanted.html_chars.map(|_| html),
                    viewport: None,
                    screenshot_base64: None,
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_result_decodes() {
        let v = serde_json::json!({
            "final_url": "http://a.test/", "status": null, "title": "T",
            "html_bytes": 42, "link_count": 2, "links": ["http://a.test/1", "http://a.test/2"],
        });
        let data: PageData = serde_json::from_value(v).unwrap();
        assert_eq!(data.status, None);
        assert_eq!(data.links.len(), 2);
        assert!(!data.truncated, "absent means nothing was cut");
        let script = full_script(true, Wanted::default());
        assert!(script.contains("if (true)"), "{script}");
        assert!(script.contains("cut(document.title, 1024)"), "{script}");
        let with_html = full_script(
            false,
            Wanted {
                html_chars: Some(10),
                screenshot: true,
            },
        );
        assert!(with_html.contains("const htmlChars = 10;"), "{with_html}");
        assert!(
            with_html.contains("true ? [window.innerWidth"),
            "{with_html}"
        );
    }

    #[test]
    fn status_and_final_url_come_from_the_navigation_within_the_cap() {
        let mut nav = Navigation::default();
        nav.url = "http://a.test/final".to_owned();
        nav.status = Some(404);
        let mut data = PageData::default();
        data.take_navigation(nav.clone());
        assert_eq!(data.final_url, "http://a.test/final");
        assert_eq!(data.status, Some(404));
        assert!(!data.truncated);

        // A page-chosen URL longer than the cap is cut on a character boundary.
        nav.url = format!("http://a.test/{}é", "x".repeat(MAX_URL_CHARS - 15));
        let mut data = PageData::default();
        data.take_navigation(nav);
        assert_eq!(data.final_url.len(), MAX_URL_CHARS - 1);
        assert!(data.truncated);
    }

    #[test]
    fn a_probe_answer_of_the_wrong_shape_is_a_protocol_error() {
        let e = serde_json::from_value::<PageData>(serde_json::json!({"title": 3}))
            .map_err(VisitError::Shape)
            .unwrap_err();
        assert_eq!(e.kind_name(), "protocol");
        assert!(e
            .to_string()
            .starts_with("the page probe returned an unexpected shape: "));
    }
}
