//! The hill climb on throughput: what the autoscaler measures while requests wait on a
//! machine saturated by the pool's own work, and the verdict after a growth step.
//!
//! Owns the window of throughput samples at the current size, the last growth step (the
//! size it left and the average throughput there) and the cooldown after a step back.
//! Pure like the rest of `autoscale`: values in, values out, no clock or IO. The rule
//! that decides when to consult it is `decide` in `mod.rs`.
//!
//! "Clearly lower" means two things: the average after the step is `drop` or more below
//! the one before, and the gap is more than twice its standard error (from the spread
//! of the samples on each side), so one unlucky second of a noisy measure does not undo
//! a step that paid.
//!
//! Why this and not a CPU threshold: on a machine the browsers saturate by themselves,
//! more pages may still add throughput (pages wait on the network and on each other), or
//! may only slow every page down. Only measuring tells which, and in a closed loop the
//! size with the best throughput also has the best latency.

use super::Autoscale;

/// The climb's memory, carried in `ScaleState`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Climb {
    /// Sum of the throughput samples at the current size, taken while climbing.
    sum: f64,
    /// Sum of their squares (for the spread).
    squares: f64,
    /// How many samples `sum` holds.
    n: u32,
    /// The next sample spans a change of size (pages still opening): it is not counted.
    fresh: bool,
    /// The last growth step taken while climbing: the size it left and the throughput
    /// measured there.
    probe: Option<(usize, Rate)>,
    /// Samples left to hold after a step back before probing upward again.
    cooldown: u32,
}

/// Throughput averaged over a window: the mean and the square of its standard error.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Rate {
    mean: f64,
    error2: f64,
}

/// What the window says, once it holds enough samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Verdict {
    /// Too few samples yet, or cooling down after a step back.
    Wait,
    /// The last growth lowered throughput: go back to this size.
    Back(usize),
    /// Growth has not lowered throughput (or nothing to compare): this is the rate here.
    Grow(Rate),
}

impl Default for Climb {
    fn default() -> Self {
        Climb {
            sum: 0.0,
            squares: 0.0,
            n: 0,
            fresh: true,
            probe: None,
            cooldown: 0,
        }
    }
}

impl Climb {
    /// After one sample: `climbing` samples add `served` to the window (unless the
    /// sample spans a change); any other sample empties it, since throughput measured
    /// without waiting requests or under other pressure says nothing about the size.
    pub(super) fn observe(&self, climbing: bool, served: f64) -> Climb {
        let mut next = *self;
        next.cooldown = next.cooldown.saturating_sub(1);
        if !climbing {
            next.sum = 0.0;
            next.squares = 0.0;
            next.n = 0;
        } else if !next.fresh {
            next.sum += served;
            next.squares += served * served;
            next.n += 1;
        }
        next.fresh = false;
        next
    }

    /// The verdict on the current size: needs `settle` samples in the window.
    pub(super) fn verdict(&self, cfg: &Autoscale) -> Verdict {
        if self.n < cfg.settle {
            return Verdict::Wait;
        }
        let n = f64::from(self.n);
        let mean = self.sum / n;
        // The sample variance (0 for a single sample), over n: the mean's error squared.
        let error2 = if self.n > 1 {
            ((self.squares - n * mean * mean) / (n - 1.0)).max(0.0) / n
        } else {
            0.0
        };
        if let Some((from, before)) = self.probe {
            let gap = before.mean - mean;
            let noise = 2.0 * (before.error2 + error2).sqrt();
            if mean < before.mean * (1.0 - cfg.drop) && gap > noise {
                return Verdict::Back(from);
            }
        }
        if self.cooldown > 0 {
            return Verdict::Wait;
        }
        Verdict::Grow(Rate { mean, error2 })
    }

    /// After growing from `from`, where throughput was `rate`.
    pub(super) fn grew(&self, from: usize, rate: Rate) -> Climb {
        Climb {
            probe: Some((from, rate)),
            ..Climb::default()
        }
    }

    /// After stepping back: hold `cooldown` samples.
    pub(super) fn back(&self, cfg: &Autoscale) -> Climb {
        Climb {
            cooldown: cfg.cooldown,
            ..Climb::default()
        }
    }

    /// After a change for another reason: measure afresh (a cooldown still runs).
    pub(super) fn restart(&self) -> Climb {
        Climb {
            cooldown: self.cooldown,
            ..Climb::default()
        }
    }

    /// The last step is judged and stays: keep measuring, with nothing to compare.
    pub(super) fn judged(&self) -> Climb {
        Climb {
            probe: None,
            ..*self
        }
    }
}
