//! The one place cross-thread primitives come from.
//!
//! Library code imports atomics, `Arc`, the overflow queue and the live-config cell from
//! here, never from `std`, crossbeam or arc-swap directly. Under `--cfg cdpmux_loom` each
//! is a loom-visible stand-in with the same interface, so the models in `loom-tests/`
//! explore every interleaving of the real protocol code around them.

#[cfg(not(cdpmux_loom))]
mod imp {
    pub(crate) use std::sync::Arc;

    pub(crate) mod atomic {
        pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    }

    /// An unbounded lock-free MPMC queue.
    pub(crate) use crossbeam_queue::SegQueue;

    /// A value many threads read and one occasionally replaces.
    pub(crate) struct LiveCell<T>(arc_swap::ArcSwap<T>);

    impl<T> LiveCell<T> {
        pub(crate) fn new(value: T) -> Self {
            LiveCell(arc_swap::ArcSwap::from_pointee(value))
        }

        pub(crate) fn load(&self) -> Arc<T> {
            self.0.load_full()
        }

        pub(crate) fn store(&self, value: T) {
            self.0.store(Arc::new(value));
        }
    }
}

#[cfg(cdpmux_loom)]
mod imp {
    pub(crate) use loom::sync::Arc;

    pub(crate) mod atomic {
        pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    }

    /// Stand-in for crossbeam's `SegQueue`: same interface, visible to loom.
    pub(crate) struct SegQueue<T>(loom::sync::Mutex<std::collections::VecDeque<T>>);

    impl<T> SegQueue<T> {
        pub(crate) fn new() -> Self {
            SegQueue(loom::sync::Mutex::new(Default::default()))
        }

        pub(crate) fn push(&self, value: T) {
            self.0.lock().unwrap().push_back(value);
        }

        pub(crate) fn pop(&self) -> Option<T> {
            self.0.lock().unwrap().pop_front()
        }
    }

    /// Stand-in for `arc_swap::ArcSwap`: same interface, visible to loom.
    pub(crate) struct LiveCell<T>(loom::sync::Mutex<Arc<T>>);

    impl<T> LiveCell<T> {
        pub(crate) fn new(value: T) -> Self {
            LiveCell(loom::sync::Mutex::new(Arc::new(value)))
        }

        pub(crate) fn load(&self) -> Arc<T> {
            self.0.lock().unwrap().clone()
        }

        pub(crate) fn store(&self, value: T) {
            *self.0.lock().unwrap() = Arc::new(value);
        }
    }
}

pub(crate) use imp::*;
