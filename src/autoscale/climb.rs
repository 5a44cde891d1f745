//! The climb on throughput: what the autoscaler measures while requests wait on a
//! machine saturated by the pool's own work, and the verdict after each probe.
//!
//! Owns the window of throughput samples at the current size, the last probe (the size
//! it left and the average throughput there), the direction of the next probe and the
//! cooldown after a probe that failed. Pure like the rest of `autoscale`: values in,
//! values out, no clock or IO. The rule that decides when to consult it is `decide` in
//! `mod.rs`.
//!
//! Why this and not a CPU threshold: on a machine the browsers saturate by themselves,
//! more pages may still add throughput (pages wait on the network and on each other), or
//! may only slow every page down. Only measuring tells which.
//!
//! Why a step must *pay*, and not merely not hurt: on a saturated machine, pages beyond
//! what the CPU can serve add nothing but waiting inside the browser: throughput stays
//! flat while every page takes longer and its tail grows. So the climb prefers the
//! smaller of two sizes that serve alike. A step up stays only if throughput rose by at
//! least `payoff` times the step's relative growth in pages (with `payoff` 0.25, a
//! quarter more pages must bring 6.25% more pages per second); a step down stays unless
//! throughput fell by more than `payoff` times the relative cut. A probe that fails goes
//! back and holds `cooldown` samples; the next probe goes the other way. Under noise
//! the smaller size tends to win, and a later probe corrects a wrong call.

use super::Autoscale;

/// The climb's memory, carried in `ScaleState`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Climb {
    /// Sum of the throughput samples at the current size, taken while climbing.
    sum: f64,
    /// How many samples `sum` holds.
    n: u32,
    /// The next sample spans a change of size (pages still opening): it is not counted.
    fresh: bool,
    /// The last probe: the size it left and the average throughput measured there.
    probe: Option<(usize, f64)>,
    /// The next probe goes down (toward fewer pages).
    down_next: bool,
    /// Samples left to hold after a failed probe before probing again.
    cooldown: u32,
}

/// What the window says, once it holds enough samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Verdict {
    /// Too few samples yet, or cooling down after a failed probe.
    Wait,
    /// The last probe did not pay: go back to this size.
    Back(usize),
    /// Probe upward from here, where throughput averaged this much.
    Grow(f64),
    /// Probe downward from here, where throughput averaged this much.
    Shrink(f64),
}

impl Default for Climb {
    fn default() -> Self {
        Climb {
            sum: 0.0,
            n: 0,
            fresh: true,
            probe: None,
            down_next: false,
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
            next.n = 0;
        } else if !next.fresh {
            next.sum += served;
            next.n += 1;
        }
        next.fresh = false;
        next
    }

    /// The verdict on `target`, the current size: needs `window` samples.
    pub(super) fn verdict(&self, target: usize, cfg: &Autoscale) -> Verdict {
        if self.n < cfg.window {
            return Verdict::Wait;
        }
        let mean = self.sum / f64::from(self.n);
        if let Some((from, before)) = self.probe {
            // Relative change in pages, positive for a step up.
            let step = target as f64 / from.max(1) as f64 - 1.0;
            let required = before * (1.0 + cfg.payoff * step);
            if mean < required {
                return Verdict::Back(from);
            }
            // It paid: go on the same way.
            return if target > from {
                Verdict::Grow(mean)
            } else {
                Verdict::Shrink(mean)
            };
        }
        if self.cooldown > 0 {
            return Verdict::Wait;
        }
        if self.down_next {
            Verdict::Shrink(mean)
        } else {
            Verdict::Grow(mean)
        }
    }

    /// After probing away from `from`, where throughput averaged `rate`.
    pub(super) fn probed(&self, from: usize, rate: f64) -> Climb {
        Climb {
            probe: Some((from, rate)),
            ..Climb::default()
        }
    }

    /// After going back from a failed probe: hold `cooldown` samples, then probe the
    /// other way (`went_up`: the failed probe was a step up).
    pub(super) fn back(&self, went_up: bool, cfg: &Autoscale) -> Climb {
        Climb {
            cooldown: cfg.cooldown,
            down_next: went_up,
            ..Climb::default()
        }
    }

    /// At a bound, with nowhere to go the way the climb was going: keep measuring, hold
    /// `cooldown` samples, then probe the other way.
    /// (`down_next`: the way the next probe goes.)
    pub(super) fn turn(&self, down_next: bool, cfg: &Autoscale) -> Climb {
        Climb {
            probe: None,
            down_next,
            cooldown: cfg.cooldown,
            ..*self
        }
    }

    /// After a change for another reason: measure afresh (a cooldown still runs).
    pub(super) fn restart(&self) -> Climb {
        Climb {
            cooldown: self.cooldown,
            down_next: self.down_next,
            ..Climb::default()
        }
    }
}
