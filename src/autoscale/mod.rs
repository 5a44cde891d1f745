//! Autoscaling: how many sessions per shard the pool should keep, decided from samples
//! of the machine and of the queue.
//!
//! Owns the settings ([`Autoscale`]), the reasons a target changes ([`ScaleReason`]) and
//! the pure decision [`decide`]: samples and the previous state in, the next state out.
//! It never reads a clock, a file or a socket: the sampler (`scaler.rs`) measures and
//! publishes; this file only decides, so its rules are unit-tested with scripted samples.
//!
//! The CPU comes as two figures: the machine's use, and the part of it that is not our
//! own work (the "outside" use: a neighbour, a hog). A machine saturated by outside work
//! shrinks the pool; a machine saturated by our own work does not say whether more pages
//! would help, so there the pool climbs on measured throughput (`climb.rs`): it probes
//! a size up or down and keeps it only if the change in throughput paid for the change
//! in pages, preferring the smaller of two sizes that serve alike.
//!
//! Hysteresis comes from a streak (a change needs `settle` samples in a row that agree on
//! its direction, and the streak starts over after every change), from the gap between
//! `cpu_low` and `cpu_high`, and, while climbing, from comparing averages of `window`
//! samples on each side of a probe and holding `cooldown` samples after a failed one.

mod climb;
#[cfg(test)]
mod tests;

use climb::{Climb, Verdict};

use std::time::Duration;

/// Autoscaling settings (see [`Config::autoscale`](crate::Config::autoscale)). Sizes are
/// per shard, like [`Config::sessions_per_shard`](crate::Config::sessions_per_shard).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Autoscale {
    /// Fewest sessions per shard. Default 1.
    pub min: usize,
    /// Most sessions per shard. Default 32.
    pub max: usize,
    /// How often the machine and the queue are sampled. Default 1 s.
    pub interval: Duration,
    /// Share of the allowed cores in use (0..1) from which the machine counts as
    /// saturated: then the pool shrinks if outside work takes `outside_high` or more,
    /// and otherwise grows only while growth does not lower throughput. Default 0.9.
    pub cpu_high: f64,
    /// Share of the allowed cores in use below which the pool grows when requests wait,
    /// without measuring throughput. Default 0.75.
    pub cpu_low: f64,
    /// Share of the allowed cores used by work other than the pool's (the machine's use
    /// less the launched browsers' process trees and this process) from which a
    /// saturated machine shrinks the pool: the browsers are being starved. Default 0.25.
    pub outside_high: f64,
    /// While climbing on a saturated machine: the share of a probe's relative change in
    /// pages that throughput must follow for the probe to stay. A step up by a quarter
    /// must bring `payoff / 4` more pages per second; a step down by a quarter may cost
    /// at most `payoff / 4`. Higher values favour fewer pages (shorter page times),
    /// lower values more throughput at any cost. Default 0.25.
    pub payoff: f64,
    /// Samples averaged at each size while climbing, before a probe is judged.
    /// Default 5.
    pub window: u32,
    /// Samples to hold after a probe that did not pay before probing again, the other
    /// way. Default 15.
    pub cooldown: u32,
    /// Share of memory in use above which the pool shrinks and does not grow.
    /// Default 0.85.
    pub memory_high: f64,
    /// Samples in a row that must agree before the target moves. Default 3.
    pub settle: u32,
    /// Most pages one browser may hold, whatever the samples say. Chromium slows down
    /// from about 800 pages; the default, 200, stays well below. Default 200.
    pub browser_page_ceiling: usize,
}

impl Default for Autoscale {
    fn default() -> Self {
        Autoscale {
            min: 1,
            max: 32,
            interval: Duration::from_secs(1),
            cpu_high: 0.9,
            cpu_low: 0.75,
            outside_high: 0.25,
            payoff: 0.25,
            window: 5,
            cooldown: 15,
            memory_high: 0.85,
            settle: 3,
            browser_page_ceiling: 200,
        }
    }
}

impl Autoscale {
    /// Autoscaling between `min` and `max` sessions per shard, other settings default.
    pub fn between(min: usize, max: usize) -> Self {
        Autoscale {
            min,
            max,
            ..Autoscale::default()
        }
    }

    /// Checks the values fit together; the error text names the field and the fix.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.min == 0 {
            return Err("autoscale.min must be at least 1".into());
        }
        if self.min > self.max {
            return Err(format!(
                "autoscale.min ({}) must not exceed autoscale.max ({})",
                self.min, self.max
            ));
        }
        if self.interval.is_zero() {
            return Err("autoscale.interval must be above zero".into());
        }
        let share = |x: f64| x > 0.0 && x <= 1.0;
        if !share(self.cpu_high) || !share(self.cpu_low) || !share(self.memory_high) {
            return Err(format!(
                "autoscale.cpu_high ({}), cpu_low ({}) and memory_high ({}) must be shares in (0, 1]",
                self.cpu_high, self.cpu_low, self.memory_high
            ));
        }
        if !share(self.outside_high) {
            return Err(format!(
                "autoscale.outside_high ({}) must be a share in (0, 1]",
                self.outside_high
            ));
        }
        if !(self.payoff > 0.0 && self.payoff <= 1.0) {
            return Err(format!(
                "autoscale.payoff ({}) must be a share in (0, 1]: the part of a probe's change in pages that throughput must follow",
                self.payoff
            ));
        }
        if self.window == 0 {
            return Err("autoscale.window must be at least 1".into());
        }
        if self.cpu_low >= self.cpu_high {
            return Err(format!(
                "autoscale.cpu_low ({}) must be below cpu_high ({}): the gap is what stops flapping",
                self.cpu_low, self.cpu_high
            ));
        }
        if self.settle == 0 {
            return Err("autoscale.settle must be at least 1".into());
        }
        if self.browser_page_ceiling == 0 {
            return Err("autoscale.browser_page_ceiling must be at least 1".into());
        }
        Ok(())
    }
}

/// Why the autoscaler last set its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ScaleReason {
    /// The starting size (or the fixed size, with autoscaling off).
    Start,
    /// Requests were waiting, and the CPU had room or the last growth did not lower
    /// throughput: grown.
    Waiting,
    /// The machine was saturated and work outside the pool took `outside_high` or more
    /// of it: shrunk.
    Cpu,
    /// Memory was in use past `memory_high`: shrunk.
    Memory,
    /// Most pages stood idle and nothing waited: shrunk.
    Idle,
    /// A limit moved (`min`, `max`, the browser page ceiling or `max_pages`): clamped.
    Limit,
    /// The machine was saturated by the pool's own work and more pages did not pay:
    /// a step up that did not raise throughput enough was undone, or a step down that
    /// cost little throughput was taken (see `payoff`).
    Plateau,
}

impl ScaleReason {
    /// Every reason, in label order.
    pub const ALL: [ScaleReason; 7] = [
        ScaleReason::Start,
        ScaleReason::Waiting,
        ScaleReason::Cpu,
        ScaleReason::Memory,
        ScaleReason::Idle,
        ScaleReason::Limit,
        ScaleReason::Plateau,
    ];

    /// A lowercase label.
    pub fn as_str(self) -> &'static str {
        match self {
            ScaleReason::Start => "start",
            ScaleReason::Waiting => "waiting",
            ScaleReason::Cpu => "cpu",
            ScaleReason::Memory => "memory",
            ScaleReason::Idle => "idle",
            ScaleReason::Limit => "limit",
            ScaleReason::Plateau => "plateau",
        }
    }
}

/// One sample of the machine and the queue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    /// Share of the allowed cores in use on the machine since the last sample (0..1, may
    /// pass 1 briefly).
    pub(crate) cpu: f64,
    /// Of that, the share used by work other than the pool's (0 when unknown).
    pub(crate) outside: f64,
    /// Pages handed out (to `run` jobs and leases) per second since the last sample.
    pub(crate) served: f64,
    /// Share of memory in use, if it could be read.
    pub(crate) memory: Option<f64>,
    /// Requests waiting for a session, over the whole pool.
    pub(crate) waiting: usize,
    /// Sessions in use over the whole pool.
    pub(crate) busy: usize,
}

/// The fixed bounds the target must respect, worked out from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bounds {
    /// Fewest sessions per shard.
    pub(crate) min: usize,
    /// Most sessions per shard (`max`, the page ceiling and `max_pages` applied).
    pub(crate) max: usize,
    /// Shards in the pool (to compare pool-wide counts with a per-shard target).
    pub(crate) shards: usize,
}

impl Bounds {
    /// The bounds for `shards` shards spread over `browsers` browsers, with a pool-wide
    /// page cap `max_pages` (0: none).
    pub(crate) fn of(cfg: &Autoscale, shards: usize, browsers: usize, max_pages: usize) -> Bounds {
        let shards = shards.max(1);
        // Each shard spreads its pages evenly over the browsers, so one browser holds
        // about `shards · ceil(target / browsers)`: keep that under the ceiling.
        let per_browser = (cfg.browser_page_ceiling / shards).max(1);
        let mut max = cfg.max.min(per_browser * browsers.max(1));
        if max_pages > 0 {
            max = max.min((max_pages / shards).max(1));
        }
        let max = max.max(1);
        Bounds {
            min: cfg.min.min(max),
            max,
            shards,
        }
    }
}

/// Which way the samples push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Push {
    Up(ScaleReason),
    Down(ScaleReason),
    /// Requests wait on a machine saturated by our own work: grow while it pays.
    Climb,
    Hold,
}

/// What the autoscaler remembers between samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ScaleState {
    /// Sessions per shard to aim for.
    pub(crate) target: usize,
    /// Why `target` last changed.
    pub(crate) reason: ScaleReason,
    /// Samples in a row pushing the same way (positive up, negative down).
    streak: i32,
    /// The throughput measurements of the hill climb.
    climb: Climb,
}

impl ScaleState {
    /// The state at start: `size` clamped into the bounds.
    pub(crate) fn start(size: usize, bounds: Bounds) -> ScaleState {
        ScaleState {
            target: size.clamp(bounds.min, bounds.max),
            reason: ScaleReason::Start,
            streak: 0,
            climb: Climb::default(),
        }
    }

    fn moved(&self, target: usize, reason: ScaleReason, climb: Climb) -> ScaleState {
        ScaleState {
            target,
            reason,
            streak: 0,
            climb,
        }
    }
}

/// The next state after `sample`: the pure rule of the autoscaler.
///
/// - Out of bounds (a limit changed): clamp at once, reason `Limit`.
/// - Memory past `memory_high`: push down (`Memory`).
/// - The machine at `cpu_high` or more, with outside work at `outside_high` or more:
///   push down (`Cpu`).
/// - Requests waiting, machine below `cpu_low`: push up (`Waiting`).
/// - Requests waiting otherwise (the machine busy with our own work): climb. Once
///   `window` samples at a size are in, probe a quarter up (`Waiting`) or down
///   (`Plateau`); after a probe, `window` samples at the new size decide: it stays and
///   the climb goes on that way if throughput followed by at least `payoff` of the
///   relative change in pages (see `climb.rs`), else it goes back (`Plateau`), holds
///   `cooldown` samples and then probes the other way.
/// - Nothing waiting and under half of the pages busy: push down (`Idle`).
/// - Otherwise hold, and the streak starts over.
///
/// A push moves the target only after `settle` pushes in a row. Growth steps by a
/// quarter, or by half the requests waiting per shard when that is more (a short ramp
/// under a burst); shrinking steps by a quarter under pressure and by one when idle.
/// Never past the bounds.
pub(crate) fn decide(
    sample: &Sample,
    state: &ScaleState,
    cfg: &Autoscale,
    bounds: Bounds,
) -> ScaleState {
    if state.target < bounds.min || state.target > bounds.max {
        let target = state.target.clamp(bounds.min, bounds.max);
        return state.moved(target, ScaleReason::Limit, state.climb.restart());
    }
    let target = state.target;
    let capacity = target * bounds.shards;
    let memory_high = sample.memory.is_some_and(|m| m >= cfg.memory_high);
    let saturated = sample.cpu >= cfg.cpu_high;
    let push = if memory_high {
        Push::Down(ScaleReason::Memory)
    } else if saturated && sample.outside >= cfg.outside_high {
        Push::Down(ScaleReason::Cpu)
    } else if sample.waiting > 0 && sample.cpu < cfg.cpu_low {
        Push::Up(ScaleReason::Waiting)
    } else if sample.waiting > 0 {
        Push::Climb
    } else if sample.waiting == 0 && sample.busy * 2 < capacity {
        Push::Down(ScaleReason::Idle)
    } else {
        Push::Hold
    };
    let streak = match push {
        Push::Up(_) | Push::Climb => state.streak.max(0) + 1,
        Push::Down(_) => state.streak.min(0) - 1,
        Push::Hold => 0,
    };
    let settled = streak.unsigned_abs() >= cfg.settle;
    let grow = |from: usize| {
        let per_shard = sample.waiting / bounds.shards / 2;
        (from + (from / 4).max(per_shard).max(1)).min(bounds.max)
    };
    let climb = state.climb.observe(push == Push::Climb, sample.served);
    // While climbing, a probe moves by a quarter (at least one page per shard).
    let probe_step = (target / 4).max(1);
    let next = match push {
        Push::Climb => match climb.verdict(target, cfg) {
            Verdict::Back(to) => {
                let to = to.clamp(bounds.min, bounds.max);
                if to == target {
                    return ScaleState {
                        streak,
                        climb: climb.turn(true, cfg),
                        ..*state
                    };
                }
                Some((to, ScaleReason::Plateau, climb.back(to < target, cfg)))
            }
            Verdict::Grow(rate) if target < bounds.max => {
                if !settled {
                    None
                } else {
                    let to = (target + probe_step).min(bounds.max);
                    Some((to, ScaleReason::Waiting, climb.probed(target, rate)))
                }
            }
            Verdict::Shrink(rate) if target > bounds.min => {
                let to = target.saturating_sub(probe_step).max(bounds.min);
                Some((to, ScaleReason::Plateau, climb.probed(target, rate)))
            }
            // At a bound the way the climb was going: turn round.
            Verdict::Grow(_) => {
                return ScaleState {
                    streak,
                    climb: climb.turn(true, cfg),
                    ..*state
                };
            }
            Verdict::Shrink(_) => {
                return ScaleState {
                    streak,
                    climb: climb.turn(false, cfg),
                    ..*state
                };
            }
            Verdict::Wait => None,
        },
        Push::Up(reason) if settled && target < bounds.max => {
            Some((grow(target), reason, climb.restart()))
        }
        Push::Down(reason) if settled && target > bounds.min => {
            let step = if reason == ScaleReason::Idle {
                1
            } else {
                (target / 4).max(1)
            };
            Some((
                target.saturating_sub(step).max(bounds.min),
                reason,
                climb.restart(),
            ))
        }
        _ => None,
    };
    match next {
        Some((target, reason, climb)) => state.moved(target, reason, climb),
        None => ScaleState {
            streak,
            climb,
            ..*state
        },
    }
}
