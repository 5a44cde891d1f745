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

#[test]
fn saturated_by_own_work_with_waiting_requests_grows_to_max_while_throughput_holds() {
    let (end, targets) = run(ScaleState::start(4, bounds()), &[sample(0.97, 2, 16); 40]);
    assert_eq!(*targets.last().unwrap(), 16, "{targets:?}");
    assert!(targets.windows(2).all(|w| w[0] <= w[1]), "{targets:?}");
    assert_eq!(end.reason, ScaleReason::Waiting);
    // Each step waits for the sample that spans it, then `settle` measured samples.
    assert_eq!(&targets[..7], [4, 4, 5, 5, 5, 6, 6]);
}

#[test]
fn outside_contention_shrinks_the_pool_even_with_requests_waiting() {
    let start = ScaleState::start(16, bounds());
    let (end, targets) = run(start, &[contended(0.5); 8]);
    assert_eq!(targets, [16, 12, 12, 9, 9, 7, 7, 6]);
    assert_eq!(end.reason, ScaleReason::Cpu);
    // A little outside work on a saturated machine is not contention: it climbs.
    let (end, _) = run(ScaleState::start(8, bounds()), &[contended(0.1); 8]);
    assert_eq!(end.reason, ScaleReason::Waiting);
    assert!(end.target > 8);
}

#[test]
fn a_growth_that_lowers_throughput_steps_back_holds_for_the_cooldown_then_probes_again() {
    let cfg = Autoscale {
        cooldown: 6,
        ..cfg()
    };
    // Up to 8 pages 10 pages/s; past 8, Chromium degrades to 8 pages/s (20% less).
    let at = |target: usize| Sample {
        served: if target <= 8 { 10.0 } else { 8.0 },
        ..sample(0.97, 2, target)
    };
    let mut state = ScaleState::start(8, bounds());
    let mut targets = Vec::new();
    for _ in 0..33 {
        state = decide(&at(state.target), &state, &cfg, bounds());
        targets.push(state.target);
    }
    // Measure at 8 (skip one, two samples), grow to 10; measure there, step back.
    assert_eq!(&targets[..6], [8, 8, 10, 10, 10, 8], "{targets:?}");
    // It stays at 8 for the cooldown (6 samples, the step back's included), then probes
    // again: the same failure, the same step back, and so on, never past 10.
    let cycle = [10, 10, 10, 8, 8, 8, 8, 8, 8];
    for (i, t) in targets[2..].iter().enumerate() {
        assert_eq!(*t, cycle[i % cycle.len()], "at {}: {targets:?}", i + 2);
    }
    assert_eq!((state.target, state.reason), (8, ScaleReason::Plateau));
}

#[test]
fn a_small_dip_within_drop_does_not_step_back() {
    // 5% less after the step: under `drop` (10%), so the climb goes on.
    let at = |target: usize| Sample {
        served: 10.0 - 0.5 * (target > 8) as u8 as f64,
        ..sample(0.97, 2, target)
    };
    let mut state = ScaleState::start(8, bounds());
    for _ in 0..30 {
        state = decide(&at(state.target), &state, &cfg(), bounds());
    }
    assert_eq!(state.target, 16);
    assert_eq!(state.reason, ScaleReason::Waiting);
}

#[test]
fn a_drop_within_the_noise_of_the_samples_does_not_step_back() {
    // Before the step: 10, 16, 4 (mean 10); after: 6, 12, 6 (mean 8, 20% less, but
    // the samples spread so widely that the gap is within twice its standard error).
    let noisy = |i: usize, target: usize| Sample {
        served: if target <= 8 {
            [10.0, 16.0, 4.0][i % 3]
        } else {
            [6.0, 12.0, 6.0][i % 3]
        },
        ..sample(0.97, 2, target)
    };
    let cfg = Autoscale { settle: 3, ..cfg() };
    let mut state = ScaleState::start(8, bounds());
    let mut targets = Vec::new();
    for i in 0..12 {
        // The first sample spans the start: shift so the windows see whole cycles.
        state = decide(&noisy(i + 2, state.target), &state, &cfg, bounds());
        targets.push(state.target);
    }
    assert!(targets.windows(2).all(|w| w[0] <= w[1]), "{targets:?}");
    assert!(targets.contains(&10), "{targets:?}");
    assert_ne!(state.reason, ScaleReason::Plateau);
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
    // Throughput jumping between two levels while climbing only ever grows the pool.
    let noisy: Vec<Sample> = (0..40)
        .map(|i| Sample {
            served: if i % 2 == 0 { 12.0 } else { 8.0 },
            ..sample(0.97, 2, 8)
        })
        .collect();
    let (_, targets) = run(ScaleState::start(8, bounds()), &noisy);
    assert!(targets.windows(2).all(|w| w[0] <= w[1]), "{targets:?}");
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
            drop: 1.0,
            ..Autoscale::default()
        },
    ];
    for (a, field) in bad
        .iter()
        .zip(["min", "max", "cpu_low", "settle", "outside_high", "drop"])
    {
        assert!(a.check().unwrap_err().contains(field), "{a:?}");
    }
}
