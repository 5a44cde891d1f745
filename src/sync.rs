//! The one place cross-thread primitives come from.
//!
//! Library code imports atomics, `Arc`, the overflow queue, the live-config cell and the
//! channels and wake-ups that cross threads from here, never from `std`, crossbeam,
//! arc-swap or tokio directly. Under `--cfg cdpmux_loom` each is a loom-visible stand-in
//! with the same interface (the subset the crate uses), so the models in `loom-tests/`
//! explore every interleaving of the real protocol code around them.
//!
//! Cross-thread, so from here: the shard inboxes (`mpsc`, unbounded), every reply channel
//! between a caller and a shard (`oneshot`) and the per-shard overflow wake-ups
//! (`Notify`). Shard-local wake-ups and the CDP connection's channels stay tokio's.

#[cfg(not(cdpmux_loom))]
mod imp {
    pub(crate) use std::sync::Arc;

    pub(crate) mod atomic {
        pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
    }

    pub(crate) use tokio::sync::{mpsc, oneshot, Notify};

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
        pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
    }

    /// Stand-in for crossbeam's `SegQueue`: same interface, visible to loom.
    pub(crate) struct SegQueue<T>(loom::sync::Mutex<std::collections::VecDeque<T>>);

    impl<T> SegQueue<T> {
        pub fn new() -> Self {
            SegQueue(loom::sync::Mutex::new(Default::default()))
        }

        pub fn push(&self, value: T) {
            self.0.lock().unwrap().push_back(value);
        }

        pub fn pop(&self) -> Option<T> {
            self.0.lock().unwrap().pop_front()
        }

        pub fn is_empty(&self) -> bool {
            self.0.lock().unwrap().is_empty()
        }
    }

    impl<T> Default for SegQueue<T> {
        fn default() -> Self {
            Self::new()
        }
    }

    /// Stand-in for `arc_swap::ArcSwap`: same interface, visible to loom.
    pub struct LiveCell<T>(loom::sync::Mutex<Arc<T>>);

    impl<T> LiveCell<T> {
        pub fn new(value: T) -> Self {
            LiveCell(loom::sync::Mutex::new(Arc::new(value)))
        }

        pub fn load(&self) -> Arc<T> {
            self.0.lock().unwrap().clone()
        }

        pub fn store(&self, value: T) {
            *self.0.lock().unwrap() = Arc::new(value);
        }
    }
}

#[cfg(cdpmux_loom)]
mod imp_channels {
    //! Stand-ins for the tokio channels and `Notify`, each state behind one loom mutex so
    //! loom sees every hand-off. Only the API subset cdpmux uses.

    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    use loom::sync::{Arc, Mutex};

    fn wake(waker: Option<Waker>) {
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Stand-in for `tokio::sync::oneshot`.
    pub mod oneshot {
        use super::*;

        /// Errors, as in tokio.
        pub mod error {
            /// The sender was dropped without sending.
            #[derive(Debug, Clone, PartialEq, Eq)]
            pub struct RecvError(pub(crate) ());

            /// Why `try_recv` has no value.
            #[derive(Debug, Clone, PartialEq, Eq)]
            pub enum TryRecvError {
                /// Nothing sent yet.
                Empty,
                /// The sender is gone.
                Closed,
            }
        }

        struct State<T> {
            value: Option<T>,
            /// Sent, or the sender is gone.
            tx_done: bool,
            rx_closed: bool,
            rx_waker: Option<Waker>,
            tx_waker: Option<Waker>,
        }

        type Shared<T> = Arc<Mutex<State<T>>>;

        /// Sends one value.
        pub struct Sender<T>(Option<Shared<T>>);

        /// Receives it: a future of `Result<T, RecvError>`.
        pub struct Receiver<T>(Shared<T>);

        /// A connected pair.
        pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
            let shared = Arc::new(Mutex::new(State {
                value: None,
                tx_done: false,
                rx_closed: false,
                rx_waker: None,
                tx_waker: None,
            }));
            (Sender(Some(shared.clone())), Receiver(shared))
        }

        impl<T> Sender<T> {
            /// Sends `value`, or gives it back when the receiver is gone.
            pub fn send(mut self, value: T) -> Result<(), T> {
                let shared = self.0.take().expect("sender used once");
                let mut st = shared.lock().unwrap();
                if st.rx_closed {
                    return Err(value);
                }
                st.value = Some(value);
                st.tx_done = true;
                let waker = st.rx_waker.take();
                drop(st);
                wake(waker);
                Ok(())
            }

            /// True when the receiver is gone.
            pub fn is_closed(&self) -> bool {
                self.0.as_ref().is_none_or(|s| s.lock().unwrap().rx_closed)
            }

            /// Completes when the receiver is gone.
            pub async fn closed(&mut self) {
                let Some(shared) = self.0.as_ref() else {
                    return;
                };
                std::future::poll_fn(|cx| {
                    let mut st = shared.lock().unwrap();
                    if st.rx_closed {
                        Poll::Ready(())
                    } else {
                        st.tx_waker = Some(cx.waker().clone());
                        Poll::Pending
                    }
                })
                .await
            }
        }

        impl<T> Drop for Sender<T> {
            fn drop(&mut self) {
                if let Some(shared) = self.0.take() {
                    let mut st = shared.lock().unwrap();
                    st.tx_done = true;
                    let waker = st.rx_waker.take();
                    drop(st);
                    wake(waker);
                }
            }
        }

        impl<T> Future for Receiver<T> {
            type Output = Result<T, error::RecvError>;

            fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
                let mut st = self.0.lock().unwrap();
                if let Some(value) = st.value.take() {
                    Poll::Ready(Ok(value))
                } else if st.tx_done {
                    Poll::Ready(Err(error::RecvError(())))
                } else {
                    st.rx_waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        }

        impl<T> Receiver<T> {
            /// Refuses any later send; a value sent before stays receivable.
            pub fn close(&mut self) {
                let mut st = self.0.lock().unwrap();
                st.rx_closed = true;
                let waker = st.tx_waker.take();
                drop(st);
                wake(waker);
            }

            /// The value, if one was sent.
            pub fn try_recv(&mut self) -> Result<T, error::TryRecvError> {
                let mut st = self.0.lock().unwrap();
                match st.value.take() {
                    Some(value) => Ok(value),
                    None if st.tx_done => Err(error::TryRecvError::Closed),
                    None => Err(error::TryRecvError::Empty),
                }
            }
        }

        impl<T> Drop for Receiver<T> {
            fn drop(&mut self) {
                let mut st = self.0.lock().unwrap();
                st.rx_closed = true;
                // A value sent and never received is dropped here, as in tokio (outside
                // the lock: its drop may send a message of its own).
                let value = st.value.take();
                let waker = st.tx_waker.take();
                drop(st);
                drop(value);
                wake(waker);
            }
        }
    }

    /// Stand-in for the unbounded half of `tokio::sync::mpsc`.
    pub mod mpsc {
        use std::collections::VecDeque;

        use super::*;

        /// Errors, as in tokio.
        pub mod error {
            /// The receiver is gone (or closed); the message comes back.
            #[derive(Debug, PartialEq, Eq)]
            pub struct SendError<T>(pub T);

            /// Why `try_recv` returned nothing.
            #[derive(Debug, PartialEq, Eq)]
            pub enum TryRecvError {
                /// Nothing buffered; senders remain.
                Empty,
                /// Nothing buffered and nothing more can come.
                Disconnected,
            }
        }

        struct State<T> {
            queue: VecDeque<T>,
            senders: usize,
            rx_closed: bool,
            rx_waker: Option<Waker>,
        }

        type Shared<T> = Arc<Mutex<State<T>>>;

        /// Sends to the channel; cloneable.
        pub struct UnboundedSender<T>(Shared<T>);

        /// Receives from the channel.
        pub struct UnboundedReceiver<T>(Shared<T>);

        /// A connected pair.
        pub fn unbounded_channel<T>() -> (UnboundedSender<T>, UnboundedReceiver<T>) {
            let shared = Arc::new(Mutex::new(State {
                queue: VecDeque::new(),
                senders: 1,
                rx_closed: false,
                rx_waker: None,
            }));
            (UnboundedSender(shared.clone()), UnboundedReceiver(shared))
        }

        impl<T> UnboundedSender<T> {
            /// Queues `value`, or gives it back when the receiver is closed or gone.
            pub fn send(&self, value: T) -> Result<(), error::SendError<T>> {
                let mut st = self.0.lock().unwrap();
                if st.rx_closed {
                    return Err(error::SendError(value));
                }
                st.queue.push_back(value);
                let waker = st.rx_waker.take();
                drop(st);
                wake(waker);
                Ok(())
            }
        }

        impl<T> Clone for UnboundedSender<T> {
            fn clone(&self) -> Self {
                self.0.lock().unwrap().senders += 1;
                UnboundedSender(self.0.clone())
            }
        }

        impl<T> Drop for UnboundedSender<T> {
            fn drop(&mut self) {
                let mut st = self.0.lock().unwrap();
                st.senders -= 1;
                let waker = if st.senders == 0 {
                    st.rx_waker.take()
                } else {
                    None
                };
                drop(st);
                wake(waker);
            }
        }

        impl<T> UnboundedReceiver<T> {
            /// The next message; `None` once closed (or every sender is gone) and empty.
            pub async fn recv(&mut self) -> Option<T> {
                std::future::poll_fn(|cx| {
                    let mut st = self.0.lock().unwrap();
                    if let Some(value) = st.queue.pop_front() {
                        Poll::Ready(Some(value))
                    } else if st.rx_closed || st.senders == 0 {
                        Poll::Ready(None)
                    } else {
                        st.rx_waker = Some(cx.waker().clone());
                        Poll::Pending
                    }
                })
                .await
            }

            /// True when nothing is buffered.
            pub fn is_empty(&self) -> bool {
                self.0.lock().unwrap().queue.is_empty()
            }

            /// The next message if one is buffered.
            pub fn try_recv(&mut self) -> Result<T, error::TryRecvError> {
                let mut st = self.0.lock().unwrap();
                match st.queue.pop_front() {
                    Some(value) => Ok(value),
                    None if st.rx_closed || st.senders == 0 => {
                        Err(error::TryRecvError::Disconnected)
                    }
                    None => Err(error::TryRecvError::Empty),
                }
            }

            /// Refuses further sends; what is buffered can still be received.
            pub fn close(&mut self) {
                self.0.lock().unwrap().rx_closed = true;
            }
        }

        impl<T> Drop for UnboundedReceiver<T> {
            fn drop(&mut self) {
                let mut st = self.0.lock().unwrap();
                st.rx_closed = true;
                // Buffered messages are dropped here, as in tokio (outside the lock).
                let queue = std::mem::take(&mut st.queue);
                drop(st);
                drop(queue);
            }
        }
    }

    /// Stand-in for `tokio::sync::Notify`, for one waiting task at a time (a shard waits
    /// on its own): `notify_one` with no waiter stores a permit for the next `notified`.
    pub struct Notify(Mutex<(bool, Option<Waker>)>);

    impl Notify {
        /// No permit stored.
        pub fn new() -> Self {
            Notify(Mutex::new((false, None)))
        }

        /// Wakes the waiter, or stores a permit for the next one.
        pub fn notify_one(&self) {
            let mut st = self.0.lock().unwrap();
            st.0 = true;
            let waker = st.1.take();
            drop(st);
            wake(waker);
        }

        /// Completes once a permit is (or has been) given, consuming it.
        pub fn notified(&self) -> impl Future<Output = ()> + '_ {
            std::future::poll_fn(move |cx| {
                let mut st = self.0.lock().unwrap();
                if std::mem::take(&mut st.0) {
                    Poll::Ready(())
                } else {
                    st.1 = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
        }
    }

    impl Default for Notify {
        fn default() -> Self {
            Self::new()
        }
    }
}

#[cfg(cdpmux_loom)]
pub use imp_channels::{mpsc, oneshot, Notify};

#[cfg(cdpmux_loom)]
pub use imp::LiveCell;
pub(crate) use imp::*;
