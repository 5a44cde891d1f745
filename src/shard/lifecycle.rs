//! A page's life on a shard, as IO steps: open it (in the context isolation asks for),
//! give a job the blocking it asked for and put the page's own back after (with its own
//! interception: a job's interceptor ends with the job), stop it after an interrupted
//! job, reset it between jobs, probe it while idle, close it. deadpool's `create` /
//! `recycle` shape: each step reports how it went, and the plan decides what follows.
//!
//! Never decides who gets a page; never touches the plan.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::identities::{self, dispose_context, Identity};
use super::links::Links;
use super::plan::Return;
use crate::cdp::{Blocking, Connection, Page, PageOptions};
use crate::config::{Config, Isolation};
use crate::error::{Error, ErrorKind, Result, TimeoutKind};

/// How long an interrupted page may take to stop before it is retired.
const STOP_LIMIT: Duration = Duration::from_secs(2);
/// How long a reset to `about:blank` may take before the page is retired.
const RESET_LIMIT: Duration = Duration::from_secs(5);

/// A browser context of one affinity key on one browser (`ContextPerKey`).
struct KeyContext {
    id: String,
    last_used: Instant,
}

/// The per-key browser contexts of a shard (`ContextPerKey`).
#[derive(Default)]
pub(crate) struct Contexts(RefCell<HashMap<(usize, Arc<str>), KeyContext>>);

/// What an opening needs to know about the shard.
pub(crate) struct Opening<'a> {
    pub(crate) links: &'a Links,
    pub(crate) contexts: &'a Contexts,
    pub(crate) options: PageOptions,
    /// Whether a context of (browser, key) still has a session (it is then kept).
    pub(crate) in_use: &'a dyn Fn(usize, &Arc<str>) -> bool,
    /// The owner's identity (`ContextPerKey` only).
    pub(crate) identity: Option<Identity>,
}

/// Opens a page on `browser` in the context isolation asks for, within the creation
/// deadline. Returns it with the context it owns alone, if any (disposed when the session
/// goes). A command deadline inside the opening is reported as the opening's.
pub(crate) async fn open(
    opening: Opening<'_>,
    browser: usize,
    owner: Option<&Arc<str>>,
    cfg: &Config,
) -> Result<(Page, Option<String>)> {
    let limit = cfg.create_timeout;
    match tokio::time::timeout(limit, open_on(opening, browser, owner, cfg)).await {
        Ok(Err(e)) if e.kind() == ErrorKind::Timeout(TimeoutKind::Command) => Err(Error::new(
            ErrorKind::Timeout(TimeoutKind::Create),
            format!("opening a session: {}", e.message()),
        )),
        Ok(result) => result,
        Err(_) => Err(Error::timeout(
            TimeoutKind::Create,
            "opening a session",
            limit,
        )),
    }
}

async fn open_on(
    opening: Opening<'_>,
    browser: usize,
    owner: Option<&Arc<str>>,
    cfg: &Config,
) -> Result<(Page, Option<String>)> {
    let Opening {
        links,
        contexts,
        mut options,
        in_use,
        identity,
    } = opening;
    let conn = links.connection(browser, cfg).await?;
    // Failed or cancelled (the creation deadline drops this future), the opening may
    // still have left a target whose id we never learned: it is looked up by its URL
    // later.
    let mut lost = LostOpening {
        links,
        browser,
        url: Some(options.initial_url.clone()),
    };
    let own = match (cfg.isolation, owner) {
        (Isolation::ContextPerKey, Some(owner)) => {
            let ctx = contexts
                .get_or_create(
                    &conn,
                    browser,
                    owner,
                    cfg.max_contexts,
                    links,
                    in_use,
                    identity.as_ref(),
                )
                .await?;
            options.browser_context_id = Some(ctx);
            false
        }
        (Isolation::ContextPerJob, _) => {
            options.browser_context_id = Some(identities::create_context(&conn, None).await?);
            true
        }
        _ => false,
    };
    let opened = match conn.new_page(&options).await {
        Ok(page) => match identity.filter(|_| options.browser_context_id.is_some() && !own) {
            // Dropped on failure, the page closes its target.
            Some(identity) => identities::identify(&page, &identity).await.map(|()| page),
            None => Ok(page),
        },
        Err(e) => Err(e),
    };
    match opened {
        Ok(page) => {
            lost.url = None;
            Ok((page, options.browser_context_id.filter(|_| own)))
        }
        Err(e) => {
            match (own, &options.browser_context_id, owner) {
                (true, Some(ctx), _) => dispose_context(&conn, ctx),
                // The context may be gone (browser relaunched): make a new one next time.
                // (A key's options the browser refused leave its context as it was.)
                (false, Some(_), Some(owner)) if e.kind() != ErrorKind::InvalidInput => {
                    contexts.forget(browser, owner)
                }
                _ => {}
            }
            Err(e)
        }
    }
}

impl Contexts {
    /// The browser context of `owner` on `browser`, created on first use (with its
    /// identity's proxy and cookies). Past `max`, the least recently used context with
    /// no session is disposed.
    #[allow(clippy::too_many_arguments)]
    async fn get_or_create(
        &self,
        conn: &Connection,
        browser: usize,
        owner: &Arc<str>,
        max: usize,
        links: &Links,
        in_use: &dyn Fn(usize, &Arc<str>) -> bool,
        identity: Option<&Identity>,
    ) -> Result<String> {
        let now = Instant::now();
        if let Some(c) = self.0.borrow_mut().get_mut(&(browser, owner.clone())) {
            c.last_used = now;
            return Ok(c.id.clone());
        }
        let id = identities::create_context(conn, identity).await?;
        let mut contexts = self.0.borrow_mut();
        while contexts.len() >= max {
            let victim = contexts
                .iter()
                .filter(|((b, o), _)| !in_use(*b, o))
                .min_by_key(|(_, c)| c.last_used)
                .map(|(k, _)| k.clone());
            let Some(victim) = victim else { break };
            if let Some(c) = contexts.remove(&victim) {
                if let Some(conn) = links.live(victim.0) {
                    dispose_context(&conn, &c.id);
                }
            }
        }
        contexts.insert(
            (browser, owner.clone()),
            KeyContext {
                id: id.clone(),
                last_used: now,
            },
        );
        Ok(id)
    }

    /// The contexts of `owner`, by browser.
    pub(crate) fn of(&self, owner: &Arc<str>) -> Vec<(usize, String)> {
        self.0
            .borrow()
            .iter()
            .filter(|((_, o), _)| o == owner)
            .map(|((b, _), c)| (*b, c.id.clone()))
            .collect()
    }

    fn forget(&self, browser: usize, owner: &Arc<str>) {
        self.0.borrow_mut().remove(&(browser, owner.clone()));
    }
}

/// Remembers the initial URL of a page whose opening failed or was cancelled, unless
/// disarmed (`url` taken) when the page opened.
struct LostOpening<'a> {
    links: &'a Links,
    browser: usize,
    url: Option<String>,
}

impl Drop for LostOpening<'_> {
    fn drop(&mut self) {
        if let Some(url) = self.url.take() {
            self.links.lost_opening(self.browser, url, Instant::now());
        }
    }
}

/// Stops a page interrupted mid-work (a script, a load): `Clean` if it stopped in time,
/// `Dead` (retire it) if not.
pub(crate) async fn stop(page: Rc<Page>) -> Return {
    let _ = page.start_call("Runtime.terminateExecution".into(), &serde_json::json!({}));
    let stopped = tokio::time::timeout(
        STOP_LIMIT,
        page.call("Page.stopLoading", serde_json::json!({})),
    )
    .await;
    if matches!(stopped, Ok(Ok(_))) {
        Return::Clean
    } else {
        Return::Dead
    }
}

/// Resets a page between jobs: `Reset` once it shows `about:blank`, `Dead` if it cannot.
pub(crate) async fn reset(page: Rc<Page>) -> Return {
    match tokio::time::timeout(RESET_LIMIT, page.goto("about:blank")).await {
        Ok(Ok(_)) => Return::Reset,
        _ => Return::Dead,
    }
}

/// Gives a job's page the blocking the job asked for (`None`: the page's own). One
/// command when it differs from what the page blocks now, none otherwise.
pub(crate) async fn block_for_job(page: &Page, block: Option<&Blocking>) -> Result<()> {
    page.set_blocking(block.unwrap_or(page.default_blocking()))
        .await
}

/// Puts a page's own blocking and interception back after a job, before the page is
/// returned: false if the blocking could not be (the page is then retired, never handed on blocking the wrong things).
pub(crate) async fn unblock_after_job(page: &Page) -> bool {
    // A job's interceptor goes with the job (its requests still paused are sent).
    page.end_interception(None);
    if page.blocks_default() || !page.is_alive() {
        return true; // nothing to do, or retired anyway
    }
    matches!(
        tokio::time::timeout(STOP_LIMIT, page.restore_blocking()).await,
        Ok(true)
    )
}

/// Probes an idle page with a cheap command under `limit`: true if it answered.
pub(crate) async fn probe(page: Rc<Page>, limit: Duration) -> bool {
    let probe = page.call("Runtime.evaluate", serde_json::json!({ "expression": "0" }));
    matches!(tokio::time::timeout(limit, probe).await, Ok(Ok(_)))
}

/// Closes every target of `pages`, waiting a little for the browser to confirm, then
/// marks the pages closed (their drop sends nothing more).
pub(crate) async fn close_all(pages: Vec<Rc<Page>>) {
    let closes = pages.iter().map(|page| {
        let conn = page.connection().clone();
        let target = serde_json::json!({ "targetId": page.target_id() });
        async move {
            let closing = conn.call("Target.closeTarget", target);
            let _ = tokio::time::timeout(Duration::from_secs(1), closing).await;
        }
    });
    futures_util::future::join_all(closes).await;
    for page in &pages {
        page.mark_closed();
    }
}
