//! Browsers being recycled, as one shard sees them: its sockets to a browser generation
//! the fleet has replaced, kept open while this shard's pages on them finish their jobs.
//!
//! Owns this shard's list of draining sockets (a thread-local: each shard is one thread,
//! so nothing here is shared between shards). A page on a draining socket reads as
//! retiring and so as not alive: the plan never hands it out again and retires it when
//! its job or lease gives it back. Never closes a socket that a page of this shard still
//! uses; the fleet reaps the old browser once every shard has let go of it.

use std::cell::RefCell;
use std::rc::Rc;

use crate::cdp::{Connection, Page};

/// One socket to a replaced browser generation.
pub(super) struct Drain {
    pub(super) browser: usize,
    pub(super) generation: u64,
    pub(super) conn: Connection,
}

thread_local! {
    static DRAINING: RefCell<Vec<Drain>> = const { RefCell::new(Vec::new()) };
}

/// Starts draining `conn`, this shard's socket to `browser`'s old `generation`.
pub(super) fn start(browser: usize, generation: u64, conn: Connection) {
    DRAINING.with(|d| {
        d.borrow_mut().push(Drain {
            browser,
            generation,
            conn,
        })
    });
}

/// True when `page` lives on a draining socket.
pub(super) fn holds(page: &Page) -> bool {
    DRAINING.with(|d| {
        let d = d.borrow();
        !d.is_empty()
            && d.iter()
                .any(|x| Rc::ptr_eq(&x.conn.shared, &page.connection().shared))
    })
}

/// Takes out the drains no page of this shard uses any more (`in_use` says which
/// sockets still carry one), for the caller to close and report.
pub(super) fn finished(in_use: impl Fn(&Connection) -> bool) -> Vec<Drain> {
    DRAINING.with(|d| {
        let mut d = d.borrow_mut();
        let (done, keep): (Vec<Drain>, Vec<Drain>) = d.drain(..).partition(|x| !in_use(&x.conn));
        *d = keep;
        done
    })
}

/// Every draining socket, taken out (shutdown).
pub(super) fn take_all() -> Vec<Drain> {
    DRAINING.with(|d| std::mem::take(&mut *d.borrow_mut()))
}
