//! The autoscaler's rules as a pure function of scripted samples.

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

/// A sample with no outside work, memory to spare and a steady 10 pages/s.
fn sample(cpu: f64, waiting: usize, busy: usize) -> Sample {
    Sample {
        cpu,
        outside: 0.0,
        served: 10.0,
        memory: Some(0.3),
        waiting,
        busy,
    }
}

/// The machine saturated, `outside` of it by other work, requests waiting.
fn contended(outside: f64) -> Sample {
    Sample {
        outside,
        ..sample(0.97, 50, 16)
    }
}

/// Runs `samples` from `state` and returns every target along the way.
fn run(mut state: ScaleState, samples: &[Sample]) -> (ScaleState, Vec<usize>) {
    run_with(&cfg(), &mut state, samples.iter().copied())
}

fn run_with(
    cfg: &Autoscale,
    state: &mut ScaleState,
    samples: impl IntoIterator<Item = Sample>,
) -> (ScaleState, Vec<usize>) {
    let mut targets = Vec::new();
    for s in samples {
        *state = decide(&s, state, cfg, bounds());
        targets.push(state.target);
    }
    (*state, targets)
}

#[test]
fn waiting_requests_with_cpu_to_spare_grow_the_pool_after_settling() {
    let start = ScaleState::start(4, bounds());
    let (end, targets) = run(start, &[sample(0.3, 2, 4); 6]);
    assert_eq!(targets, [4, 5, 5, 6, 6, 7]);
    assert_eq!(end.reason, ScaleReason::Waiting);
}

#[test]
fn many_waiting_requests_grow_by_half_of_them_per_shard() {
    // 20 waiting on one shard: a step of 10 rather than a quarter of 4.
    let (_, targets) = run(ScaleState::start(4, bounds()), &[sample(0.3, 20, 4); 4]);
    assert_eq!(targets, [4, 14, 14, 16]);
    // Over 2 shards the same queue is 10 per shard: steps of 5.
    let two = Bounds {
        shards: 2,
        ..bounds()
    };
    let next = decide(
        &sample(0.3, 20, 8),
        &ScaleState {
            streak: 1,
            ..ScaleState::start(4, two)
        },
        &cfg(),
        two,
    );
    assert_eq!(next.target, 9);
}

/// Drives `state` with samples at a saturated machine, requests waiting, whose
/// throughput at each size is `served(target)`; returns every target along the way.
fn climb(
    cfg: &Autoscale,
    state: &mut ScaleState,
    steps: usize,
    served: impl Fn(usize) -> f64,
) -> Vec<usize> {
    let mut targets = Vec::new();
    for _ in 0..steps {
        let s = Sample {
            served: served(state.target),
            ..sample(0.97, 50, state.target)
        };
        *state = decide(&s, state, cfg, bounds());
        targets.push(state.target);
    }
    targets
}

#[test]
fn saturated_by_own_work_the_pool_grows_to_max_while_growth_pays() {
    // Throughput follows the pages one for one: every step up pays.
    let mut state = ScaleState::start(4, bounds());
    let targets = climb(&cfg(), &mut state, 90, |t| t as f64);
    assert!(targets.contains(&16), "{targets:?}");
    // Each probe waits for the sample that spans it, then `window` (5) samples.
    assert_eq!(&targets[..8], [4, 4, 4, 4, 4, 5, 5, 5], "{targets:?}");
    // At the top it probes down once the cooldown is over, and comes back: a quarter
    // fewer pages cost a quarter of the throughput, far more than `payoff` allows.
    let top = targets.iter().position(|t| *t == 16).unwrap();
    assert!(targets[top..].contains(&12), "{targets:?}");
    assert_eq!(*targets.last().unwrap(), 16, "{targets:?}");
}

#[test]
fn flat_throughput_brings_the_pool_down_to_the_smallest_size_that_serves_alike() {
    // Past 6 pages the machine serves no more: more pages only wait inside the browser.
    let cfg = Autoscale {
        cooldown: 4,
        ..cfg()
    };
    let mut state = ScaleState::start(16, bounds());
    let targets = climb(&cfg, &mut state, 150, |t| t.min(6) as f64);
    // The first probe goes up (nowhere: 16 is the top), then down, step by step.
    let last = &targets[targets.len() - 40..];
    assert!(last.iter().all(|t| (5..=7).contains(t)), "{targets:?}");
    assert!(last.contains(&6), "{targets:?}");
    assert_eq!(state.reason, ScaleReason::Plateau);
}

#[test]
fn a_step_up_that_does_not_pay_is_undone_and_the_next_probe_goes_down() {
    let cfg = Autoscale {
        cooldown: 6,
        ..cfg()
    };
    // 10 pages/s at 8 pages and at 10: the step up to 10 brings nothing.
    let served = |t: usize| if t <= 8 { t as f64 * 1.25 } else { 10.0 };
    let mut state = ScaleState::start(8, bounds());
    let targets = climb(&cfg, &mut state, 40, served);
    // Measure at 8 (skip one, five samples), probe 10; measure there, go back to 8.
    assert_eq!(&targets[..12], [8, 8, 8, 8, 8, 10, 10, 10, 10, 10, 10, 8]);
    assert_eq!(state.reason, ScaleReason::Plateau);
    // After the cooldown it probes down to 6 (a quarter fewer pages costs a quarter of
    // the throughput: too much), and goes back to 8: it never settles above 8 or below.
    assert!(targets[12..].contains(&6), "{targets:?}");
    assert!(
        targets[12..].iter().all(|t| (6..=10).contains(t)),
        "{targets:?}"
    );
    assert!(targets.iter().filter(|t| **t == 8).count() * 2 > targets.len());
}

#[test]
fn a_gain_short_of_the_payoff_does_not_keep_the_step() {
    // From 8 to 10 pages (+25%) throughput rises 5%: under a quarter of 25% (6.25%).
    let served = |t: usize| if t <= 8 { 10.0 } else { 10.5 };
    let mut state = ScaleState::start(8, bounds());
    let targets = climb(&cfg(), &mut state, 12, served);
    assert_eq!(targets[10..], [10, 8], "{targets:?}");
    // With a payoff of a tenth, the same gain (more than 2.5%) keeps it, and the climb
    // goes on up.
    let cfg = Autoscale {
        payoff: 0.1,
        ..cfg()
    };
    let mut state = ScaleState::start(8, bounds());
    let targets = climb(&cfg, &mut state, 12, served);
    assert_eq!(targets[10..], [10, 12], "{targets:?}");
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
fn a_full_pool_with_nothing_waiting_holds_the_size() {
    let (end, targets) = run(ScaleState::start(8, bounds()), &[sample(0.97, 0, 8); 10]);
    assert!(targets.iter().all(|t| *t == 8), "{targets:?}");
    assert_eq!(end.reason, ScaleReason::Start);
}

#[test]
fn alternating_samples_never_move_the_target() {
    // Contention and spare CPU in turn: each push breaks the other's streak.
    let flap: Vec<Sample> = (0..20)
        .map(|i| {
            if i % 2 == 0 {
                contended(0.5)
            } else {
                sample(0.3, 10, 8)
            }
        })
        .collect();
    let (_, targets) = run(ScaleState::start(8, bounds()), &flap);
    assert!(targets.iter().all(|t| *t == 8), "{targets:?}");
    // Climbing and a full, quiet pool in turn: the throughput window never fills.
    let flap: Vec<Sample> = (0..20)
        .map(|i| sample(0.97, if i % 2 == 0 { 5 } else { 0 }, 8))
        .collect();
    let (_, targets) = run(ScaleState::start(8, bounds()), &flap);
    assert!(targets.iter().all(|t| *t == 8), "{targets:?}");
    // Throughput jumping between two levels while climbing moves the target only by
    // probes, a window apart: never two changes in a row.
    let noisy: Vec<Sample> = (0..40)
        .map(|i| Sample {
            served: if i % 2 == 0 { 12.0 } else { 8.0 },
            ..sample(0.97, 2, 8)
        })
        .collect();
    let (_, targets) = run(ScaleState::start(8, bounds()), &noisy);
    let changes: Vec<usize> = (1..targets.len())
        .filter(|&i| targets[i] != targets[i - 1])
        .collect();
    assert!(changes.windows(2).all(|w| w[1] - w[0] > 5), "{targets:?}");
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
    let (_, up) = run(ScaleState::start(15, bounds()), &[sample(0.97, 99, 15); 10]);
    assert_eq!(*up.iter().max().unwrap(), 16);
    let (_, down) = run(ScaleState::start(3, bounds()), &[contended(1.0); 10]);
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
    let mut s = sample(0.2, 1, 4);
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
        Autoscale {
            outside_high: 0.0,
            ..Autoscale::default()
        },
        Autoscale {
            payoff: 0.0,
            ..Autoscale::default()
        },
        Autoscale {
            window: 0,
            ..Autoscale::default()
        },
    ];
    for (a, field) in bad.iter().zip([
        "min",
        "max",
        "cpu_low",
        "settle",
        "outside_high",
        "payoff",
        "window",
    ]) {
        assert!(a.check().unwrap_err().contains(field), "{a:?}");
    }
}
