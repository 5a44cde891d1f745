//! Where the crawl loop gets its URLs and sends the links it finds: the in-memory
//! [`Frontier`] of one process, or a [`SharedFrontier`] in Redis shared by many. The
//! loop sees one interface; this file only dispatches and owns no rule of its own.

use crate::frontier::{Dropped, Frontier, Offer};
use crate::redis_frontier::{SharedFrontier, Totals};

/// The crawl's frontier.
pub enum Work {
    /// This process alone.
    Local(Frontier),
    /// Shared with other nodes through Redis.
    Shared(SharedFrontier),
}

impl Work {
    /// Offers an input URL.
    pub fn offer_seed(&mut self, raw: &str) -> Offer {
        match self {
            Work::Local(f) => f.offer_seed(raw),
            Work::Shared(f) => f.offer_seed(raw),
        }
    }

    /// The next URL to visit and its depth, if one is at hand.
    pub fn pop(&mut self) -> Option<(String, u32)> {
        match self {
            Work::Local(f) => f.pop(),
            Work::Shared(f) => f.pop(),
        }
    }

    /// A popped URL's line is written: its `links` (when they are to be followed) are
    /// offered. `None` when links are not followed (the crawl is stopping, or the page
    /// failed).
    pub fn finished(&mut self, url: &str, depth: u32, links: Option<&[String]>) {
        match self {
            Work::Local(f) => {
                if let Some(links) = links {
                    f.offer_links(url, depth, links);
                }
            }
            Work::Shared(f) => f.finished(url, depth, links),
        }
    }

    /// True when `depth` is below the link-following limit.
    pub fn follows_from(&self, depth: u32) -> bool {
        match self {
            Work::Local(f) => f.follows_from(depth),
            Work::Shared(f) => f.follows_from(depth),
        }
    }

    /// True once the page budget is spent here (a shared crawl keeps it in Redis).
    pub fn spent(&self) -> bool {
        match self {
            Work::Local(f) => f.spent(),
            Work::Shared(_) => false,
        }
    }

    /// URLs at hand, waiting to start.
    pub fn len(&self) -> usize {
        match self {
            Work::Local(f) => f.len(),
            Work::Shared(f) => f.len(),
        }
    }

    /// True when no URL will come any more (with the input read): the local queue is
    /// empty, or the shared crawl is over for every node.
    pub fn is_drained(&self) -> bool {
        match self {
            Work::Local(f) => f.is_empty(),
            Work::Shared(f) => f.is_over(),
        }
    }

    /// True when URLs may arrive without this process doing anything (shared only):
    /// the loop then waits on [`Work::arrival`].
    pub fn may_arrive(&self) -> bool {
        match self {
            Work::Local(_) => false,
            Work::Shared(f) => !f.is_over(),
        }
    }

    /// Waits until a URL arrives or the shared crawl ends. Cancel-safe. Never ends for a
    /// local frontier.
    pub async fn arrival(&mut self) {
        match self {
            Work::Local(_) => std::future::pending().await,
            Work::Shared(f) => f.wait().await,
        }
    }

    /// This process has read all its input.
    pub fn input_done(&mut self) {
        if let Work::Shared(f) = self {
            f.input_done();
        }
    }

    /// Drops the URLs waiting here (on a stop). A shared frontier keeps them leased
    /// until [`Work::close`] gives them back.
    pub fn clear(&mut self) {
        if let Work::Local(f) = self {
            f.clear();
        }
    }

    /// Ends this process's part: returns the links queued and dropped by it, and for a
    /// shared crawl the whole crawl's totals (or why Redis failed).
    pub async fn close(self) -> (u64, Dropped, Option<Result<Totals, String>>) {
        match self {
            Work::Local(f) => (f.links_queued(), f.dropped(), None),
            Work::Shared(f) => match f.leave().await {
                Ok((totals, dropped)) => (totals.links_queued, dropped, Some(Ok(totals))),
                Err(e) => (0, Dropped::default(), Some(Err(e))),
            },
        }
    }
}
