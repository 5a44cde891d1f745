//! Autoscaling: how many sessions per shard the pool should keep, decided from samples
//! of the machine and of the queue.
//!
//! Owns the settings ([`Autoscale`]), the reasons a target changes ([`ScaleReason`]) and
//! the pure decision [`decide`]: samples and the previous state in, the next state out.
//! It never reads a clock, a file or a socket: the sampler (`scaler.rs`) measures and
//! publishes; this file only decides, so its rules are unit-tested with scripted samples.
//!
//! Hysteresis comes from two things: a gap between the CPU level under which the pool
//! may grow (`cpu_low`) and the level over which it shrinks (`cpu_high`), and a streak:
//! a change needs `settle` samples in a row that agree on its direction, and the streak
//! starts over after every change.

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
    /// Share of the allowed cores in use (0..1) above which the pool shrinks. Default 0.9.
    pub cpu_high: f64,
    /// Share of the allowed cores in use below which the pool may grow when requests
    /// wait. Default 0.75.
    pub cpu_low: f64,
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
    /// Requests were waiting and the CPU had room: grown.
    Waiting,
    /// The CPU was busy past `cpu_high`: shrunk.
    Cpu,
    /// Memory was in use past `memory_high`: shrunk.
    Memory,
    /// Most pages stood idle and nothing waited: shrunk.
    Idle,
    /// A limit moved (`min`, `max`, the browser page ceiling or `max_pages`): clamped.
    Limit,
}

impl ScaleReason {
    /// Every reason, in label order.
    pub const ALL: [ScaleReason; 6] = [
        ScaleReason::Start,
        ScaleReason::Waiting,
        ScaleReason::Cpu,
        ScaleReason::Memory,
        ScaleReason::Idle,
        ScaleReason::Limit,
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
        }
    }
}

/// One sample of the machine and the queue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    /// Share of the allowed cores in use since the last sample (0..1, may pass 1 briefly).
    pub(crate) cpu: f64,
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
    Hold,
}

/// What the autoscaler remembers between samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScaleState {
    /// Sessions per shard to aim for.
    pub(crate) target: usize,
    /// Why `target` last changed.
    pub(crate) reason: ScaleReason,
    /// Samples in a row pushing the same way (positive up, negative down).
    streak: i32,
}

impl ScaleState {
    /// The state at start: `size` clamped into the bounds.
    pub(crate) fn start(size: usize, bounds: Bounds) -> ScaleState {
        ScaleState {
            target: size.clamp(bounds.min, bounds.max),
            reason: ScaleReason::Start,
            streak: 0,
        }
    }
}

/// The next state after `sample`: the pure rule of the autoscaler.
///
/// - Out of bounds (a limit changed): clamp at once, reason `Limit`.
/// - Memory past `memory_high`, or CPU past `cpu_high`: push down.
/// - Requests waiting, CPU below `cpu_low`, memory below `memory_high`: push up.
/// - Nothing waiting and under half of the pages busy: push down (`Idle`).
/// - Otherwise hold, and the streak starts over.
///
/// A push moves the target only after `settle` pushes in a row: up by a quarter (at
/// least one), down by a quarter under pressure and by one when idle; never past the
/// bounds.
pub(crate) fn decide(
    sample: &Sample,
    state: &ScaleState,
    cfg: &Autoscale,
    bounds: Bounds,
) -> ScaleState {
    if state.target < bounds.min || state.target > bounds.max {
        return ScaleState {
            target: state.target.clamp(bounds.min, bounds.max),
            reason: ScaleReason::Limit,
            streak: 0,
        };
    }
    let target = state.target;
    let capacity = target * bounds.shards;
    let memory_high = sample.memory.is_some_and(|m| m >= cfg.memory_high);
    let push = if memory_high {
        Push::Down(ScaleReason::Memory)
    } else if sample.cpu >= cfg.cpu_high {
        Push::Down(ScaleReason::Cpu)
    } else if sample.waiting > 0 && sample.cpu < cfg.cpu_low {
        Push::Up(ScaleReason::Waiting)
    } else if sample.waiting == 0 && sample.busy * 2 < capacity {
        Push::Down(ScaleReason::Idle)
    } else {
        Push::Hold
    };
    let streak = match push {
        Push::Up(_) => state.streak.max(0) + 1,
        Push::Down(_) => state.streak.min(0) - 1,
        Push::Hold => 0,
    };
    let settled = streak.unsigned_abs() >= cfg.settle;
    let next = match push {
        Push::Up(reason) if settled && target < bounds.max => {
            Some(((target + (target / 4).max(1)).min(bounds.max), reason))
        }
        Push::Down(reason) if settled && target > bounds.min => {
            let step = if reason == ScaleReason::Idle {
                1
            } else {
                (target / 4).max(1)
            };
            Some((target.saturating_sub(step).max(bounds.min), reason))
        }
        _ => None,
    };
    match next {
        Some((target, reason)) => ScaleState {
            target,
            reason,
            streak: 0,
        },
        None => ScaleState { streak, ..*state },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Autoscale {
        Autoscale {
            min: 2,
            max: 16,
            settle: 2,
            ..Autoscale::default()
        }
    }

    fn bounds() -> Bounds {
        Bounds {
            min: 2,
            max: 16,
            shards: 1,
        }
    }

    fn sample(cpu: f64, waiting: usize, busy: usize) -> Sample {
        Sample {
            cpu,
            memory: Some(0.3),
            waiting,
            busy,
        }
    }

    /// Runs `samples` from `state` and returns every target along the way.
    fn run(mut state: ScaleState, samples: &[Sample]) -> (ScaleState, Vec<usize>) {
        let mut targets = Vec::new();
        for s in samples {
            state = decide(s, &state, &cfg(), bounds());
            targets.push(state.target);
        }
        (state, targets)
    }

    #[test]
    fn waiting_requests_with_cpu_to_spare_grow_the_pool_after_settling() {
        let start = ScaleState::start(4, bounds());
        let (end, targets) = run(start, &[sample(0.3, 10, 4); 6]);
        assert_eq!(targets, [4, 5, 5, 6, 6, 7]);
        assert_eq!(end.reason, ScaleReason::Waiting);
    }

    #[test]
    fn a_busy_cpu_shrinks_the_pool_even_with_requests_waiting() {
        let start = ScaleState::start(16, bounds());
        let (end, targets) = run(start, &[sample(0.97, 50, 16); 8]);
        assert_eq!(targets, [16, 12, 12, 9, 9, 7, 7, 6]);
        assert_eq!(end.reason, ScaleReason::Cpu);
    }

    #[test]
    fn memory_pressure_wins_over_waiting_requests() {
        let mut s = sample(0.2, 50, 8);
        s.memory = Some(0.9);
        let (end, targets) = run(ScaleState::start(8, bounds()), &[s; 2]);
        assert_eq!(targets, [8, 6]);
        assert_eq!(end.reason, ScaleReason::Memory);
    }

    #[test]
    fn cpu_between_the_watermarks_holds_the_size() {
        let (end, targets) = run(ScaleState::start(8, bounds()), &[sample(0.8, 10, 8); 10]);
        assert!(targets.iter().all(|t| *t == 8), "{targets:?}");
        assert_eq!(end.reason, ScaleReason::Start);
    }

    #[test]
    fn alternating_samples_never_move_the_target() {
        // Over and under the watermarks in turn: each push breaks the other's streak.
        let flap: Vec<Sample> = (0..20)
            .map(|i| {
                if i % 2 == 0 {
                    sample(0.95, 10, 8)
                } else {
                    sample(0.3, 10, 8)
                }
            })
            .collect();
        let (_, targets) = run(ScaleState::start(8, bounds()), &flap);
        assert!(targets.iter().all(|t| *t == 8), "{targets:?}");
    }

    #[test]
    fn an_idle_pool_shrinks_one_page_at_a_time_down_to_min() {
        let (end, targets) = run(ScaleState::start(4, bounds()), &[sample(0.1, 0, 0); 8]);
        assert_eq!(targets, [4, 3, 3, 2, 2, 2, 2, 2]);
        assert_eq!(end.reason, ScaleReason::Idle);
    }

    #[test]
    fn never_past_the_bounds() {
        let (_, up) = run(ScaleState::start(15, bounds()), &[sample(0.1, 99, 15); 10]);
        assert_eq!(*up.iter().max().unwrap(), 16);
        let (_, down) = run(ScaleState::start(3, bounds()), &[sample(1.0, 0, 3); 10]);
        assert_eq!(*down.iter().min().unwrap(), 2);
    }

    #[test]
    fn a_lowered_limit_clamps_at_once() {
        let state = ScaleState::start(16, bounds());
        let tight = Bounds {
            max: 10,
            ..bounds()
        };
        let next = decide(&sample(0.1, 99, 16), &state, &cfg(), tight);
        assert_eq!((next.target, next.reason), (10, ScaleReason::Limit));
    }

    #[test]
    fn bounds_apply_the_browser_ceiling_and_the_page_cap() {
        let cfg = Autoscale {
            max: 500,
            browser_page_ceiling: 200,
            ..Autoscale::default()
        };
        // 2 shards, 1 browser: each shard may put 100 pages on it.
        assert_eq!(Bounds::of(&cfg, 2, 1, 0).max, 100);
        // Two browsers double the room.
        assert_eq!(Bounds::of(&cfg, 2, 2, 0).max, 200);
        // A pool-wide cap of 50 pages over 2 shards: 25 each.
        assert_eq!(Bounds::of(&cfg, 2, 2, 50).max, 25);
        // `min` never exceeds `max`.
        let cfg = Autoscale::between(40, 60);
        assert_eq!(Bounds::of(&cfg, 2, 1, 20).min, 10);
    }

    #[test]
    fn an_unknown_memory_reading_does_not_block_growth() {
        let mut s = sample(0.2, 5, 4);
        s.memory = None;
        let (_, targets) = run(ScaleState::start(4, bounds()), &[s; 2]);
        assert_eq!(targets, [4, 5]);
    }

    #[test]
    fn bad_settings_are_named() {
        assert!(Autoscale::default().check().is_ok());
        let bad = [
            Autoscale::between(0, 4),
            Autoscale::between(5, 4),
            Autoscale {
                cpu_low: 0.95,
                ..Autoscale::default()
            },
            Autoscale {
                settle: 0,
                ..Autoscale::default()
            },
        ];
        for (a, field) in bad.iter().zip(["min", "max", "cpu_low", "settle"]) {
            assert!(a.check().unwrap_err().contains(field), "{a:?}");
        }
    }
}
