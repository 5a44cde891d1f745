//! A generated demo website on 127.0.0.1: pages with titles and links that pull
//! stylesheets, scripts, a web font and images like a real site (bytes from
//! [`super::assets`]), a few slow pages, a few heavy ones, and pages whose content
//! appears from a timer. For the demo, the CLI's `--demo`, benches and tests.
//!
//! It counts every request by path, so a test can tell what Chromium fetched. A page's
//! title and links never depend on its subresources: crawls that block some of them
//! read the same titles and links.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

pub use super::assets::{Asset, AssetKind};

/// Shape of the generated site.
#[derive(Debug, Clone)]
pub struct SiteConfig {
    /// Number of pages `/p/0` .. `/p/{pages-1}`. Default 300.
    pub pages: usize,
    /// Every n-th page answers after [`slow_delay`](Self::slow_delay) (0: none). Default 25.
    pub slow_every: usize,
    /// How long slow pages take. Default 300 ms.
    pub slow_delay: Duration,
    /// Every n-th page carries a script that builds a large DOM (0: none). Default 30.
    pub heavy_every: usize,
    /// Whether pages pull their stylesheets, scripts, font and images (about 350 KB the
    /// first time, 130 KB of images per page after that; [`DemoSite::assets_of`]).
    /// Default `true`; `false` gives bare 1 KB pages.
    pub assets: bool,
    /// The body of `/robots.txt` (`text/plain`), or `None` for a 404. Default `None`.
    pub robots_txt: Option<String>,
}

impl Default for SiteConfig {
    fn default() -> Self {
        SiteConfig {
            pages: 300,
            slow_every: 25,
            slow_delay: Duration::from_millis(300),
            heavy_every: 30,
            assets: true,
            robots_txt: None,
        }
    }
}

/// The running site. Dropping it stops the server.
pub struct DemoSite {
    base: String,
    config: SiteConfig,
    requests: Arc<Requests>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl DemoSite {
    /// Serves the site on `127.0.0.1:0` from its own thread.
    pub fn start(config: SiteConfig) -> std::io::Result<DemoSite> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let base = format!("http://{}", listener.local_addr()?);
        let requests = Arc::new(Requests::default());
        let (stop, stopped) = oneshot::channel();
        let site = Arc::new(config.clone());
        let counter = requests.clone();
        let thread = std::thread::Builder::new()
            .name("cdpmux-demo-site".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread runtime");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("a tokio listener");
                    let accept = async {
                        while let Ok((stream, _)) = listener.accept().await {
                            let (site, counter) = (site.clone(), counter.clone());
                            tokio::spawn(async move {
                                let _ = tokio::time::timeout(
                                    Duration::from_secs(30),
                                    serve(stream, &site, &counter),
                                )
                                .await;
                            });
                        }
                    };
                    tokio::select! {
                        _ = accept => {}
                        _ = stopped => {}
                    }
                });
            })?;
        Ok(DemoSite {
            base,
            config,
            requests,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Every page's URL, `/p/0` first.
    pub fn page_urls(&self) -> Vec<String> {
        (0..self.config.pages)
            .map(|n| self.url(&format!("/p/{n}")))
            .collect()
    }

    /// The title page `n` shows once loaded.
    pub fn title_of(n: usize) -> String {
        format!("Demo page {n}")
    }

    /// HTTP requests received so far, whatever their path.
    pub fn requests(&self) -> u64 {
        self.requests.total.load(Ordering::Relaxed)
    }

    /// Requests received so far for `path` (query string ignored).
    pub fn requests_for(&self, path: &str) -> u64 {
        let by_path = self
            .requests
            .by_path
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        by_path.get(path).copied().unwrap_or(0)
    }

    /// Requests received so far, by path (query strings ignored).
    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        let by_path = self
            .requests
            .by_path
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        by_path.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Requests received so far for subresources of `kind` (summed over their paths).
    pub fn requests_of(&self, kind: AssetKind) -> u64 {
        let by_path = self
            .requests
            .by_path
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        by_path
            .iter()
            .filter(|(path, _)| super::assets::kind_of(path) == Some(kind))
            .map(|(_, n)| n)
            .sum()
    }

    /// The subresources page `n` pulls, in document order (none when
    /// [`SiteConfig::assets`] is off). Shared ones (stylesheets, scripts, font, logo) are
    /// the same paths on every page; the other images are the page's own.
    pub fn assets_of(&self, n: usize) -> Vec<Asset> {
        if self.config.assets {
            super::assets::page_assets(n)
        } else {
            Vec::new()
        }
    }

    /// The path of an image that is answered after `delay` (for tests of waiting for a
    /// page's load against its `DOMContentLoaded`).
    pub fn slow_image_path(delay: Duration) -> String {
        format!("/img/slow/{}.png", delay.as_millis())
    }

    /// The site's shape.
    pub fn config(&self) -> &SiteConfig {
        &self.config
    }
}

impl Drop for DemoSite {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for DemoSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoSite")
            .field("base", &self.base)
            .finish()
    }
}

/// Request counts, written by the site's thread and read by the caller's.
#[derive(Default)]
struct Requests {
    total: AtomicU64,
    by_path: Mutex<HashMap<String, u64>>,
}

impl Requests {
    fn count(&self, path: &str) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut by_path = self.by_path.lock().unwrap_or_else(|e| e.into_inner());
        *by_path.entry(path.to_owned()).or_default() += 1;
    }
}

/// What the site answers to one request.
struct Reply {
    delay: Duration,
    status: &'static str,
    content_type: &'static str,
    /// Subresources may be cached by the browser for an hour, as on a real site.
    cacheable: bool,
    body: Vec<u8>,
}

async fn serve(
    mut stream: TcpStream,
    site: &SiteConfig,
    requests: &Requests,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let target = text.split_whitespace().nth(1).unwrap_or("/");
    let path = target.split(['?', '#']).next().unwrap_or("/").to_owned();
    requests.count(&path);
    let reply = reply(site, &path);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await; // slow on purpose
    }
    let cache = if reply.cacheable {
        "public, max-age=3600"
    } else {
        "no-cache"
    };
    let head = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: {cache}\r\n\
         Connection: close\r\n\r\n",
        reply.status,
        reply.content_type,
        reply.body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&reply.body).await?;
    stream.shutdown().await
}

fn reply(site: &SiteConfig, path: &str) -> Reply {
    let html = |delay, body: String| Reply {
        delay,
        status: "200 OK",
        content_type: "text/html; charset=utf-8",
        cacheable: false,
        body: body.into_bytes(),
    };
    if let Some((delay, body)) = page(site, path) {
        return html(delay, body);
    }
    if let (Some(robots), "/robots.txt") = (&site.robots_txt, path) {
        return Reply {
            content_type: "text/plain; charset=utf-8",
            body: robots.clone().into_bytes(),
            ..html(Duration::ZERO, String::new())
        };
    }
    if let Some(ms) = path
        .strip_prefix("/img/slow/")
        .and_then(|rest| rest.strip_suffix(".png"))
        .and_then(|ms| ms.parse::<u64>().ok())
    {
        return Reply {
            delay: Duration::from_millis(ms),
            status: "200 OK",
            content_type: "image/png",
            cacheable: false,
            body: super::assets::png(16, 16, 1),
        };
    }
    if let Some((content_type, body)) = site.assets.then(|| super::assets::asset(path)).flatten() {
        return Reply {
            delay: Duration::ZERO,
            status: "200 OK",
            content_type,
            cacheable: true,
            body,
        };
    }
    Reply {
        status: "404 Not Found",
        ..html(
            Duration::ZERO,
            "<title>Not found</title>not found".to_owned(),
        )
    }
}

/// The body of `path` and how long to hold it back, or `None` for a 404.
fn page(site: &SiteConfig, path: &str) -> Option<(Duration, String)> {
    let n = site.pages.max(1);
    if path == "/" {
        let links: String = (0..n.min(50))
            .map(|i| format!("<li><a href=\"/p/{i}\">page {i}</a></li>"))
            .collect();
        return Some((
            Duration::ZERO,
            format!(
                "<!doctype html><title>cdpmux demo</title><h1>cdpmux demo</h1><ul>{links}</ul>"
            ),
        ));
    }
    if let Some(rest) = path.strip_prefix("/timer/") {
        // Content that appears from a timer: shows whether hidden tabs run their timers.
        let ms: u64 = rest.parse().ok()?;
        return Some((
            Duration::ZERO,
            format!(
                "<!doctype html><title>timer</title><div id=out>waiting</div>\
                 <script>setTimeout(() => {{ window.readyAt = performance.now(); \
                 document.getElementById('out').textContent = 'ready after {ms} ms'; }}, {ms});</script>"
            ),
        ));
    }
    let i: usize = path.strip_prefix("/p/")?.parse().ok()?;
    if i >= n {
        return None;
    }
    let links = [(i + 1) % n, (i * 7 + 3) % n, (i * 13 + 5) % n]
        .iter()
        .map(|j| format!("<a href=\"/p/{j}\">page {j}</a> "))
        .collect::<String>();
    let heavy = site.heavy_every > 0 && i % site.heavy_every == site.heavy_every - 1;
    let script = if heavy {
        "<script>const list = document.createElement('ul');\
         for (let k = 0; k < 3000; k++) { const li = document.createElement('li'); li.textContent = 'row ' + k; list.appendChild(li); }\
         document.body.appendChild(list);</script>"
    } else {
        ""
    };
    let (head, top) = if site.assets {
        super::assets::page_markup(i)
    } else {
        Default::default()
    };
    let slow = site.slow_every > 0 && i % site.slow_every == site.slow_every - 1;
    let delay = if slow {
        site.slow_delay
    } else {
        Duration::ZERO
    };
    Some((
        delay,
        format!(
            "<!doctype html><html><head><meta charset=utf-8><title>{}</title>{head}</head>\
             <body>{top}<h1>Page {i}</h1><p>Generated page {i} of {n}.</p><nav>{links}</nav>\
             {script}</body></html>",
            DemoSite::title_of(i)
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_link_within_the_site() {
        let site = SiteConfig::default();
        let (_, body) = page(&site, "/p/0").unwrap();
        assert!(body.contains("<title>Demo page 0</title>"));
        assert!(body.contains("href=\"/p/1\""));
        assert_eq!(page(&site, "/p/24").unwrap().0, site.slow_delay);
        assert!(page(&site, "/p/29").unwrap().1.contains("<script>"));
        assert!(page(&site, "/p/300").is_none());
        assert!(page(&site, "/nope").is_none());
        assert!(page(&site, "/timer/20").unwrap().1.contains("setTimeout"));
    }

    #[test]
    fn pages_pull_their_assets_unless_turned_off() {
        let site = SiteConfig::default();
        let (_, body) = page(&site, "/p/4").unwrap();
        for a in super::super::assets::page_assets(4) {
            if a.kind != AssetKind::Font {
                assert!(body.contains(&a.path), "{} not in {body}", a.path);
            }
            assert_eq!(reply(&site, &a.path).status, "200 OK", "{}", a.path);
        }
        let bare = SiteConfig {
            assets: false,
            ..SiteConfig::default()
        };
        let (_, bare_body) = page(&bare, "/p/4").unwrap();
        assert!(!bare_body.contains("<link") && !bare_body.contains("<img"));
        assert_eq!(reply(&bare, "/static/css/base.css").status, "404 Not Found");
        // The same title and the same links either way.
        let links = |b: &str| b.matches("<a href").count();
        assert_eq!(links(&body), links(&bare_body));
        assert!(
            bare_body.contains("<title>Demo page 4</title>")
                && body.contains("<title>Demo page 4</title>")
        );
    }

    #[test]
    fn the_slow_image_waits_its_delay() {
        let path = DemoSite::slow_image_path(Duration::from_millis(700));
        let r = reply(&SiteConfig::default(), &path);
        assert_eq!((r.status, r.delay), ("200 OK", Duration::from_millis(700)));
        assert_eq!(&r.body[..4], b"\x89PNG");
    }
}
