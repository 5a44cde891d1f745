//! When the connection's writer flushes: at once (self-clocking), or after holding the
//! socket briefly so that more frames join the flush (the seed's adaptive batching, §3.1).
//!
//! Pure: [`AdaptiveWindow`] takes queue lengths and answers how long to hold; the writer
//! in `socket` does the waiting. Never reads a clock and never touches the socket.
//!
//! Self-clocking needs no policy: while one flush is being written, frames pile up, and
//! the next wake-up sends them all. The adaptive window adds a hold on top: when frames
//! are piling up (load), it waits up to a hold for the batch to reach its recent size;
//! each hold that gathered frames doubles the next one (up to the maximum), each that
//! gathered none halves it, down to zero, where it stays until load shows again. So an
//! idle connection never pays for a hold.

use std::time::Duration;

/// How a connection's writer decides when to flush. Live-configurable
/// ([`Config::flush_policy`](crate::Config::flush_policy)).
///
/// docs/performance.md has the measurement behind the default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlushPolicy {
    /// Flush whatever is queued as soon as the writer wakes (the default): frames that
    /// arrive during a flush go together in the next one.
    #[default]
    SelfClocking,
    /// Under load, hold the flush up to `max_hold` (adapted between zero and it) for the
    /// batch to grow to its recent size. The hold yields to the shard's other tasks
    /// rather than sleeping, so it can be far shorter than a timer tick.
    Adaptive {
        /// The longest hold before a flush.
        max_hold: Duration,
    },
}

impl FlushPolicy {
    /// The adaptive policy with a hold of at most `max_hold`.
    pub fn adaptive(max_hold: Duration) -> FlushPolicy {
        FlushPolicy::Adaptive { max_hold }
    }

    /// The longest hold; zero for self-clocking.
    pub(crate) fn max_hold(self) -> Duration {
        match self {
            FlushPolicy::SelfClocking => Duration::ZERO,
            FlushPolicy::Adaptive { max_hold } => max_hold,
        }
    }
}

/// The first hold when load shows, and the shortest worth doing.
const MIN_HOLD: Duration = Duration::from_micros(20);
/// Weight of the newest flush in the running mean of frames per flush.
const NEW_WEIGHT: f64 = 0.2;

/// A hold the writer should do before its next flush.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Hold {
    /// Stop holding once this many frames are queued.
    pub(crate) frames: usize,
    /// Stop holding after this long in any case.
    pub(crate) within: Duration,
}

/// The adaptive window of one writer.
#[derive(Debug, Default)]
pub(crate) struct AdaptiveWindow {
    hold: Duration,
    /// Running mean of frames per flush.
    mean_frames: f64,
}

impl AdaptiveWindow {
    /// Whether to hold before flushing, with `queued` frames waiting now.
    pub(crate) fn plan(&mut self, queued: usize, max_hold: Duration) -> Option<Hold> {
        if max_hold.is_zero() || queued == 0 {
            return None;
        }
        if self.hold.is_zero() {
            // Frames that piled up while the writer was away are the sign of load.
            if queued < 2 {
                return None;
            }
            self.hold = MIN_HOLD;
        }
        let frames = (self.mean_frames.round() as usize).max(2);
        (queued < frames).then(|| Hold {
            frames,
            within: self.hold.min(max_hold),
        })
    }

    /// A hold ended with `before` frames queued at its start and `after` at its end.
    pub(crate) fn held(&mut self, before: usize, after: usize, max_hold: Duration) {
        if after > before {
            self.hold = (self.hold * 2).min(max_hold);
        } else {
            self.hold /= 2;
            if self.hold < MIN_HOLD {
                self.hold = Duration::ZERO;
            }
        }
    }

    /// A flush of `frames` frames went out.
    pub(crate) fn flushed(&mut self, frames: usize) {
        self.mean_frames = if self.mean_frames == 0.0 {
            frames as f64
        } else {
            self.mean_frames * (1.0 - NEW_WEIGHT) + frames as f64 * NEW_WEIGHT
        };
    }

    /// The current hold, for tests.
    #[cfg(test)]
    fn hold(&self) -> Duration {
        self.hold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_micros(500);

    #[test]
    fn self_clocking_and_a_quiet_connection_never_hold() {
        let mut w = AdaptiveWindow::default();
        assert_eq!(w.plan(5, Duration::ZERO), None, "self-clocking");
        for _ in 0..100 {
            assert_eq!(w.plan(1, MAX), None, "one frame at a time is no load");
            w.flushed(1);
        }
        assert_eq!(w.hold(), Duration::ZERO);
    }

    #[test]
    fn holds_that_gather_frames_grow_to_the_maximum() {
        let mut w = AdaptiveWindow::default();
        w.flushed(8);
        let mut last = Duration::ZERO;
        for _ in 0..10 {
            let hold = w.plan(3, MAX).expect("load: hold");
            assert_eq!(hold.frames, 8);
            assert!(hold.within >= last && hold.within <= MAX);
            last = hold.within;
            w.held(3, 8, MAX);
        }
        assert_eq!(last, MAX);
        assert_eq!(w.plan(8, MAX), None, "a full batch goes at once");
    }

    #[test]
    fn wasted_holds_shrink_to_nothing() {
        let mut w = AdaptiveWindow::default();
        w.flushed(4);
        w.plan(2, MAX).unwrap();
        for _ in 0..5 {
            w.held(2, 8, MAX);
        }
        for _ in 0..20 {
            if w.plan(2, MAX).is_some() {
                w.held(2, 2, MAX);
            }
        }
        assert_eq!(w.hold(), Duration::ZERO);
        assert_eq!(w.plan(1, MAX), None);
    }

    #[test]
    fn the_target_follows_recent_flushes() {
        let mut w = AdaptiveWindow::default();
        w.flushed(40);
        for _ in 0..30 {
            w.flushed(3);
        }
        assert_eq!(w.plan(2, MAX).map(|h| h.frames), Some(3));
    }

    #[test]
    fn a_smaller_maximum_caps_the_next_hold() {
        let mut w = AdaptiveWindow::default();
        w.flushed(10);
        for _ in 0..10 {
            w.plan(2, MAX);
            w.held(2, 5, MAX);
        }
        let small = Duration::from_micros(40);
        assert_eq!(w.plan(2, small).unwrap().within, small);
    }
}
