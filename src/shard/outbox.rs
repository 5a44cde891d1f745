//! Replies to `run` callers, sent together once the shard's current burst of work is
//! done, so that one wake of the callers' runtime serves many of them.
//!
//! A caller usually waits on another runtime (a multi-thread one, in a crawler). Waking
//! a parked worker of that runtime costs a system call and a context switch; a reply
//! sent while a worker is already awake and searching costs neither. Jobs on a shard
//! finish in bursts: one read from a browser's socket answers many pages at once, and
//! each of their tasks runs in turn. Sent one by one, each reply finds the worker woken
//! by the previous one already parked again; posted here, the replies of a burst go out
//! back to back when the flusher task runs, after every task the burst woke (the
//! `LocalSet` runs its tasks first in, first out).
//!
//! Owns only the order of delivery. Nothing is lost: the outbox flushes what it holds
//! when it is dropped, so a shard that stops still answers every finished job.

use std::cell::RefCell;
use std::rc::Rc;

use tokio::sync::Notify;

use super::msg::JobTask;

/// Finished jobs whose callers have not been answered yet.
#[derive(Default)]
pub(super) struct Outbox {
    held: RefCell<Vec<Box<dyn JobTask>>>,
    /// Spare storage for the next burst, so flushing allocates nothing.
    spare: RefCell<Vec<Box<dyn JobTask>>>,
    posted: Notify,
}

impl Outbox {
    /// Holds `task`'s reply until the burst is over.
    pub(super) fn post(&self, task: Box<dyn JobTask>) {
        let mut held = self.held.borrow_mut();
        held.push(task);
        if held.len() == 1 {
            self.posted.notify_one();
        }
    }

    /// Answers every held job's caller.
    pub(super) fn flush(&self) {
        let mut batch = self.spare.take();
        std::mem::swap(&mut batch, &mut *self.held.borrow_mut());
        for task in batch.drain(..) {
            task.finish();
        }
        *self.spare.borrow_mut() = batch;
    }

    /// The flusher: answers each burst once the tasks it woke have run. Spawned once per
    /// shard, as a local task.
    pub(super) async fn deliver(self: Rc<Self>) {
        loop {
            self.posted.notified().await;
            self.flush();
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;
    use crate::error::Error;
    use crate::shard::msg::{Attempt, LocalFuture};

    /// A finished job that reports its answer on `answered`.
    struct Finished(u32, mpsc::Sender<u32>);

    impl JobTask for Finished {
        fn run<'a>(&'a mut self, _: &'a crate::cdp::Page) -> LocalFuture<'a, Attempt> {
            Box::pin(async { Attempt::Ok })
        }
        fn finish(self: Box<Self>) {
            let _ = self.1.send(self.0);
        }
        fn fail(self: Box<Self>, _: Error) {}
        fn gave_up(&mut self, _: u32) {}
        fn is_abandoned(&self) -> bool {
            false
        }
        fn abandoned(&mut self) -> LocalFuture<'_, ()> {
            Box::pin(std::future::pending())
        }
    }

    #[test]
    fn a_burst_is_answered_together_and_in_order_once_the_flusher_runs() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let local = tokio::task::LocalSet::new();
        let (tx, answered) = mpsc::channel();
        local.block_on(&rt, async {
            let outbox = Rc::new(Outbox::default());
            tokio::task::spawn_local(outbox.clone().deliver());
            for n in 0..3 {
                outbox.post(Box::new(Finished(n, tx.clone())));
            }
            // Posted, not sent: the burst is still running.
            assert!(answered.try_recv().is_err());
            tokio::task::yield_now().await;
            assert_eq!(answered.try_iter().collect::<Vec<_>>(), [0, 1, 2]);
            // The next burst wakes the flusher again.
            outbox.post(Box::new(Finished(3, tx.clone())));
            tokio::task::yield_now().await;
            assert_eq!(answered.try_iter().collect::<Vec<_>>(), [3]);
        });
    }

    #[test]
    fn a_dropped_outbox_answers_what_it_held() {
        let (tx, answered) = mpsc::channel();
        let outbox = Outbox::default();
        outbox.post(Box::new(Finished(7, tx.clone())));
        outbox.post(Box::new(Finished(8, tx)));
        drop(outbox);
        assert_eq!(answered.try_iter().collect::<Vec<_>>(), [7, 8]);
    }
}
