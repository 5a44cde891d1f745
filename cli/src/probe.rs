//! What a crawl job does on its page, on the shard thread: navigate, then read the page
//! in one `Runtime.evaluate`.

use cdpmux::{Error, ErrorKind, Page, Result};
use serde::Deserialize;

/// How the page is read after navigating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// One script returning final URL, status, title, HTML size and links (Chromium).
    Full,
    /// Plain property reads only: the simulated browser's toy evaluator knows no more
    /// (no status, no links).
    Basic,
}

/// What was read from a page.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct PageData {
    /// `location.href`.
    pub final_url: String,
    /// The navigation entry's `responseStatus`, when known (0 means unknown).
    pub status: Option<u16>,
    /// `document.title`.
    pub title: String,
    /// UTF-8 bytes of `document.documentElement.outerHTML`.
    pub html_bytes: u64,
    /// Number of `a[href]` elements.
    pub link_count: u64,
    /// Their absolute URLs, when asked for.
    #[serde(default)]
    pub links: Vec<String>,
}

/// The script behind [`Probe::Full`]; `with_links` also returns every link's URL.
fn full_script(with_links: bool) -> String {
    format!(
        r#"(() => {{
  const nav = performance.getEntriesByType('navigation')[0];
  const root = document.documentElement;
  const anchors = document.querySelectorAll('a[href]');
  return {{
    final_url: location.href,
    status: nav && nav.responseStatus ? nav.responseStatus : null,
    title: document.title,
    html_bytes: root ? new TextEncoder().encode(root.outerHTML).length : 0,
    link_count: anchors.length,
    links: {with_links} ? Array.from(anchors, a => a.href) : [],
  }};
}})()"#
    )
}

impl Probe {
    /// Navigates `page` to `url` and reads it.
    pub async fn visit(self, page: &Page, url: &str, with_links: bool) -> Result<PageData> {
        page.goto(url).await?;
        match self {
            Probe::Full => {
                let value = page.evaluate_value(&full_script(with_links)).await?;
                serde_json::from_value(value).map_err(|e| {
                    Error::new(
                        ErrorKind::Protocol,
                        "the page probe returned an unexpected shape",
                    )
                    .with_source(e)
                })
            }
            Probe::Basic => {
                let text = |v: serde_json::Value| v.as_str().unwrap_or_default().to_owned();
                let final_url = text(page.evaluate_value("location.href").await?);
                let title = text(page.evaluate_value("document.title").await?);
                let html = text(
                    page.evaluate_value("document.documentElement.outerHTML")
                        .await?,
                );
                Ok(PageData {
                    final_url,
                    status: None,
                    title,
                    html_bytes: html.len() as u64,
                    link_count: 0,
                    links: Vec::new(),
                })
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
        assert!(full_script(true).contains("true ? Array.from"));
    }
}
