//! A shard's sockets: one per browser, with reconnect backoff, the circuit breaker, and
//! the targets a lost socket or a failed opening left behind.
//!
//! IO shell only. What it decides is small and local to a browser: when to try again
//! (`base · 2^(failures-1)`, capped, with jitter) and when the browser counts as down.
//! Which browser a new page goes to is `placement`'s pure choice. A browser that was
//! never reached (down when the pool was built) is a lost socket like any other: it is
//! retried with the same backoff and joins when it answers. A remote `http(s)://`
//! endpoint is looked up again on every connect, so a restarted browser (new id) is
//! found again.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::cdp::{Connection, ConnectionConfig};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::fleet::Fleet;
use crate::metrics::ShardMetrics;
use crate::remote::redact;

use super::placement::{self, Candidate};

/// How long a failed opening's URL is looked for among the browser's targets.
const LOST_OPENING_WATCH: Duration = Duration::from_secs(10);

/// This shard's socket to one browser, and that browser's health as seen from here.
#[derive(Default)]
struct Link {
    conn: Option<Connection>,
    /// The browser generation `conn` talks to (bumped when it is relaunched).
    generation: u64,
    /// The WebSocket URL `conn` was opened on: a remote browser that restarted has a
    /// new one (a new id), and its old targets died with it.
    url: Option<String>,
    /// This shard's share of the browser's page capacity; `None`: unlimited.
    share: Option<usize>,
    /// Consecutive failures to connect or to open a session.
    failures: u32,
    /// No new attempt before this (backoff); past the breaker threshold the browser
    /// counts as down until then.
    retry_at: Option<Instant>,
    /// A connect attempt is running; others wait for it.
    connecting: bool,
    /// This shard's sessions open or opening on this browser, to spread new ones.
    pages: usize,
    /// Targets of sessions lost with the socket: closed once a new socket reaches the
    /// same browser (a dropped client's pages stay open in Chromium).
    lost_targets: Vec<String>,
    /// Initial URLs of pages whose opening failed or was cancelled, maybe before the
    /// browser told us their target id, and when: the targets with these URLs are looked
    /// up and closed after a reconnect to the same browser and by every health round for
    /// `LOST_OPENING_WATCH` (a late `Target.createTarget` may still create one).
    lost_openings: Vec<(String, Instant)>,
}

impl Link {
    fn is_lost(&self) -> bool {
        self.conn.as_ref().is_none_or(Connection::is_closed)
    }

    /// Looks for the targets of failed openings on `conn` and closes them (in the
    /// background; nothing to do without any).
    fn sweep_lost_openings(&self, conn: &Connection) {
        if self.lost_openings.is_empty() {
            return;
        }
        let urls = self.lost_openings.iter().map(|(u, _)| u.clone()).collect();
        tokio::task::spawn_local(close_lost_openings(conn.clone(), urls));
    }

    /// One more failure of this browser: back off, exponentially and with jitter.
    fn note_failure(&mut self, cfg: &Config, now: Instant) {
        self.failures += 1;
        if self.failures >= cfg.breaker_threshold || self.is_lost() {
            self.retry_at = Some(crate::job::later(now, backoff(cfg, self.failures)));
        }
    }
}

/// `base · 2^(failures-1)`, capped at `max`, times a jitter in [0.5, 1.5).
fn backoff(cfg: &Config, failures: u32) -> Duration {
    let exp = cfg
        .reconnect_base
        .saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    exp.min(cfg.reconnect_max).mul_f64(0.5 + fastrand::f64())
}

/// Every browser's socket from one shard.
pub(crate) struct Links {
    links: RefCell<Vec<Link>>,
    fleet: std::sync::Arc<Fleet>,
    metrics: Rc<RefCell<ShardMetrics>>,
    /// Fired by a connection when a session dies or its socket closes.
    loss: Rc<Notify>,
    /// Fired when a connect attempt ends.
    settled: Notify,
}

impl Links {
    /// Shard `shard`'s links, of `shards`.
    pub(crate) fn new(
        fleet: std::sync::Arc<Fleet>,
        metrics: Rc<RefCell<ShardMetrics>>,
        loss: Rc<Notify>,
        (shard, shards): (usize, usize),
    ) -> Self {
        let links = (0..fleet.len())
            .map(|b| Link {
                share: fleet
                    .capacity(b)
                    .map(|c| placement::share(c, b, shard, shards)),
                ..Link::default()
            })
            .collect();
        Links {
            links: RefCell::new(links),
            fleet,
            metrics,
            loss,
            settled: Notify::new(),
        }
    }

    /// How many browsers.
    pub(crate) fn len(&self) -> usize {
        self.links.borrow().len()
    }

    /// The most sessions this shard can hold: the sum of its capacity shares, `None`
    /// when some browser is unlimited.
    pub(crate) fn page_limit(&self) -> Option<usize> {
        placement::page_limit(self.links.borrow().iter().map(|l| l.share))
    }

    /// The browser a new page should go to (see [`placement::choose`]). Counts the page
    /// in. `None` with every browser down or full.
    pub(crate) fn pick(&self, now: Instant) -> Option<usize> {
        let mut links = self.links.borrow_mut();
        let candidates: smallvec::SmallVec<[Candidate; 8]> = links
            .iter()
            .map(|l| Candidate {
                usable: l.retry_at.is_none_or(|t| t <= now),
                lost: l.is_lost(),
                failures: l.failures,
                pages: l.pages,
                share: l.share,
            })
            .collect();
        let b = placement::choose(&candidates)?;
        links[b].pages += 1;
        Some(b)
    }

    /// A page of `browser` opened.
    pub(crate) fn opened(&self, browser: usize) {
        self.links.borrow_mut()[browser].failures = 0;
        self.fleet.page_opened(browser);
    }

    /// Moves the sockets to browsers the fleet has replaced (recycled) into this shard's
    /// drain (see `draining.rs`), so new pages go to the replacements. True if any moved.
    pub(crate) fn retire_stale(&self) -> bool {
        let mut links = self.links.borrow_mut();
        let mut moved = false;
        for (b, link) in links.iter_mut().enumerate() {
            // A closed socket stays: its pages are dead, not draining (a crash relaunch).
            let open = link.conn.as_ref().is_some_and(|c| !c.is_closed());
            if open && self.fleet.generation(b) != link.generation {
                if let Some(conn) = link.conn.take() {
                    super::draining::start(b, link.generation, conn);
                    moved = true;
                }
            }
        }
        moved
    }

    /// A page of `browser` could not be opened; `counts` when the failure is the
    /// browser's (connect failures are counted where they happen).
    pub(crate) fn open_failed(&self, browser: usize, counts: bool, cfg: &Config, now: Instant) {
        let mut links = self.links.borrow_mut();
        let link = &mut links[browser];
        link.pages -= 1;
        if counts {
            link.note_failure(cfg, now);
        }
    }

    /// A page of `browser` is gone. If its socket is gone too, its target is closed
    /// once a new socket reaches the same browser.
    pub(crate) fn page_gone(&self, browser: usize, target: &str) {
        let mut links = self.links.borrow_mut();
        let link = &mut links[browser];
        link.pages -= 1;
        if link.is_lost() {
            link.lost_targets.push(target.to_owned());
        }
    }

    /// The opening of the page with `url` failed or was cancelled on `browser`.
    pub(crate) fn lost_opening(&self, browser: usize, url: String, now: Instant) {
        self.links.borrow_mut()[browser]
            .lost_openings
            .push((url, now));
    }

    /// The live socket to `browser`, if there is one.
    pub(crate) fn live(&self, browser: usize) -> Option<Connection> {
        self.links.borrow()[browser]
            .conn
            .clone()
            .filter(|c| !c.is_closed())
    }

    /// Every live socket.
    pub(crate) fn all_live(&self) -> Vec<Connection> {
        (0..self.len()).filter_map(|b| self.live(b)).collect()
    }

    /// Takes every socket out (shutdown).
    pub(crate) fn take_all(&self) -> Vec<Connection> {
        self.links
            .borrow_mut()
            .iter_mut()
            .filter_map(|l| l.conn.take())
            .collect()
    }

    /// The health round's part: forgets failed openings past their watch, looks for
    /// the ones still watched, and returns the lost sockets due for a reconnect
    /// (including browsers never reached yet).
    pub(crate) fn health(&self, now: Instant) -> Vec<usize> {
        let mut links = self.links.borrow_mut();
        for link in links.iter_mut() {
            link.lost_openings
                .retain(|(_, at)| now.saturating_duration_since(*at) < LOST_OPENING_WATCH);
            if let Some(conn) = link.conn.clone().filter(|c| !c.is_closed()) {
                link.sweep_lost_openings(&conn);
            }
        }
        (0..links.len())
            .filter(|b| {
                let l = &links[*b];
                l.is_lost() && !l.connecting && l.retry_at.is_none_or(|t| t <= now)
            })
            .collect()
    }

    /// This shard's live socket to `browser`: the open one, or a new one. Reconnects
    /// with exponential backoff and jitter; asks the supervisor to relaunch a launched
    /// browser that is unreachable.
    pub(crate) async fn connection(&self, browser: usize, cfg: &Config) -> Result<Connection> {
        self.retire_stale();
        loop {
            {
                let mut links = self.links.borrow_mut();
                let link = &mut links[browser];
                if let Some(c) = link.conn.as_ref().filter(|c| !c.is_closed()) {
                    return Ok(c.clone());
                }
                let now = Instant::now();
                if let Some(at) = link.retry_at.filter(|at| *at > now) {
                    return Err(Error::new(
                        ErrorKind::BrowserUnavailable,
                        format!(
                            "browser {browser} is unreachable ({} failures in a row); next try in {:?}",
                            link.failures,
                            at - now
                        ),
                    ));
                }
                if !link.connecting {
                    link.connecting = true;
                    break;
                }
            }
            // Someone else is connecting: wait for their outcome, then look again.
            self.settled.notified().await;
        }
        // Whatever happens to this future (an opening's deadline may drop it), the
        // attempt ends and those waiting for it hear.
        let attempt = Attempt {
            links: self,
            browser,
        };
        let config = ConnectionConfig {
            command_timeout: cfg.command_timeout,
            max_frames_per_flush: cfg.max_frames_per_flush,
            flush_policy: cfg.flush_policy,
            connect_timeout: cfg.create_timeout,
            max_message_size: cfg.max_message_size,
        };
        let (had_one, first) = {
            let link = &self.links.borrow()[browser];
            (
                link.conn.is_some(),
                link.url.is_none() && link.failures == 0,
            )
        };
        let fleet = self.fleet.clone();
        let connected = async {
            let (dial, generation) = fleet.dial(browser, cfg.create_timeout, first).await?;
            let conn = Connection::dial(&dial, config).await?;
            Ok::<_, Error>((conn, dial.url, generation))
        }
        .await;
        let mut links = self.links.borrow_mut();
        let link = &mut links[browser];
        link.connecting = false;
        let result = match connected {
            Ok((conn, url, generation)) => {
                conn.set_metrics(self.metrics.clone());
                let loss = self.loss.clone();
                conn.set_on_loss(Rc::new(move || loss.notify_one()));
                let lost = std::mem::take(&mut link.lost_targets);
                // The same browser process: the same generation and, for a remote one,
                // the same id in its URL.
                let same = generation == link.generation && link.url.as_ref() == Some(&url);
                if !same {
                    link.lost_openings.clear();
                }
                link.sweep_lost_openings(&conn);
                if same {
                    // Close what the old socket left open.
                    for target in lost {
                        conn.send_and_forget(
                            "Target.closeTarget",
                            serde_json::json!({ "targetId": target }),
                        );
                    }
                }
                link.conn = Some(conn.clone());
                link.generation = generation;
                link.url = Some(url);
                link.failures = 0;
                link.retry_at = None;
                if had_one {
                    self.metrics.borrow_mut().counters.reconnects += 1;
                }
                Ok(conn)
            }
            Err(e) => {
                link.note_failure(cfg, Instant::now());
                self.fleet
                    .request_relaunch(browser, self.fleet.generation(browser));
                let shown = link.url.as_deref().map(redact);
                let name = self.fleet.name(browser);
                Err(Error::new(
                    ErrorKind::BrowserUnavailable,
                    match shown {
                        Some(url) if !name.starts_with("ws") => {
                            format!("could not reach browser {browser} ({name}, last at {url})")
                        }
                        _ => format!("could not reach browser {browser} ({name})"),
                    },
                )
                .with_source(e))
            }
        };
        drop(links);
        drop(attempt); // wakes those waiting for this attempt
        result
    }
}

/// A connect attempt under way: when it ends, however it ends, the link stops
/// `connecting` and everyone waiting for it looks again.
struct Attempt<'a> {
    links: &'a Links,
    browser: usize,
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        // `try_borrow_mut`: a drop while unwinding with the links borrowed must not
        // panic again. (Nothing awaits between a finished attempt's own reset and this.)
        if let Ok(mut links) = self.links.links.try_borrow_mut() {
            links[self.browser].connecting = false;
        }
        self.links.settled.notify_waiters();
    }
}

/// Closes the targets created with one of `urls`: pages whose opening failed or was
/// cancelled before the browser told us their id (a socket lost, a creation deadline
/// passed). None of them was ever handed out, so none has navigated away from its URL.
async fn close_lost_openings(conn: Connection, urls: Vec<String>) {
    let targets = match conn.call("Target.getTargets", serde_json::json!({})).await {
        Ok(reply) => reply,
        Err(e) => {
            tracing::warn!(error = %e, "could not list targets to close lost openings");
            return;
        }
    };
    let infos = targets["targetInfos"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    for info in infos {
        let (Some(url), Some(id)) = (info["url"].as_str(), info["targetId"].as_str()) else {
            continue;
        };
        if urls.iter().any(|u| u == url) {
            conn.send_and_forget("Target.closeTarget", serde_json::json!({ "targetId": id }));
        }
    }
}
