//! The HDR histograms a shard records into, and their summaries in a [`Snapshot`].
//!
//! Durations are recorded in microseconds and summarised in milliseconds ([`Latency`]);
//! frames per flush are recorded and summarised as counts ([`FlushSizes`]), never
//! passed through a time unit.
//!
//! [`Snapshot`]: super::Snapshot

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::DomainGroup;

fn latency_histogram() -> Histogram<u64> {
    // Microseconds from 1 µs to 1 hour, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static bounds are valid")
}

/// Records a duration in microseconds, saturating at the histogram's top.
pub(super) fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record((d.as_micros() as u64).max(1));
}

/// The histograms one shard (or a merged snapshot) keeps.
#[derive(Clone)]
pub(crate) struct Histograms {
    pub(crate) acquire_wait: Histogram<u64>,
    pub(crate) create: Histogram<u64>,
    pub(crate) job: Histogram<u64>,
    /// Indexed by [`DomainGroup`].
    pub(crate) command: [Histogram<u64>; DomainGroup::ALL.len()],
    /// Frames per socket flush (a count, not a time).
    pub(crate) frames_per_flush: Histogram<u64>,
}

impl Default for Histograms {
    fn default() -> Self {
        Histograms {
            acquire_wait: latency_histogram(),
            create: latency_histogram(),
            job: latency_histogram(),
            command: std::array::from_fn(|_| latency_histogram()),
            frames_per_flush: Histogram::new_with_bounds(1, 1 << 20, 3)
                .expect("static bounds are valid"),
        }
    }
}

impl Histograms {
    pub(super) fn add(&mut self, o: &Histograms) {
        // Same bounds on both sides, so `add` cannot fail.
        let _ = self.acquire_wait.add(&o.acquire_wait);
        let _ = self.create.add(&o.create);
        let _ = self.job.add(&o.job);
        for (a, b) in self.command.iter_mut().zip(&o.command) {
            let _ = a.add(b);
        }
        let _ = self.frames_per_flush.add(&o.frames_per_flush);
    }
}

/// p50/p95/p99 and friends of one histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Samples recorded.
    pub count: u64,
    /// Mean, ms.
    pub mean_ms: f64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
}

impl Latency {
    /// Summarises a histogram of microseconds.
    pub(super) fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

/// How many frames the socket writers put in one flush: the coalescing at work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct FlushSizes {
    /// Flushes recorded.
    pub flushes: u64,
    /// Mean frames per flush.
    pub mean_frames: f64,
    /// Median frames per flush.
    pub p50_frames: u64,
    /// 95th percentile of frames per flush.
    pub p95_frames: u64,
    /// 99th percentile of frames per flush.
    pub p99_frames: u64,
    /// Most frames in one flush.
    pub max_frames: u64,
}

impl FlushSizes {
    /// Summarises a histogram of frame counts.
    pub(super) fn of(h: &Histogram<u64>) -> FlushSizes {
        if h.is_empty() {
            return FlushSizes::default();
        }
        FlushSizes {
            flushes: h.len(),
            mean_frames: h.mean(),
            p50_frames: h.value_at_quantile(0.50),
            p95_frames: h.value_at_quantile(0.95),
            p99_frames: h.value_at_quantile(0.99),
            max_frames: h.max(),
        }
    }
}

/// Command latency per [`DomainGroup`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CommandLatency {
    /// Page loading commands.
    pub navigation: Latency,
    /// DOM, CSS.
    pub dom: Latency,
    /// Network, Fetch.
    pub network: Latency,
    /// Runtime.
    pub runtime: Latency,
    /// Everything else.
    pub other: Latency,
}

impl CommandLatency {
    pub(super) fn of(h: &[Histogram<u64>; DomainGroup::ALL.len()]) -> CommandLatency {
        let of = |g: DomainGroup| Latency::of(&h[g.index()]);
        CommandLatency {
            navigation: of(DomainGroup::Navigation),
            dom: of(DomainGroup::Dom),
            network: of(DomainGroup::Network),
            runtime: of(DomainGroup::Runtime),
            other: of(DomainGroup::Other),
        }
    }

    /// The latency of one group.
    pub(super) fn get(&self, group: DomainGroup) -> &Latency {
        match group {
            DomainGroup::Navigation => &self.navigation,
            DomainGroup::Dom => &self.dom,
            DomainGroup::Network => &self.network,
            DomainGroup::Runtime => &self.runtime,
            DomainGroup::Other => &self.other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flush_sizes_are_counts() {
        let mut h = Histograms::default();
        for frames in [1, 3, 10] {
            h.frames_per_flush.saturating_record(frames);
        }
        let f = FlushSizes::of(&h.frames_per_flush);
        assert_eq!((f.flushes, f.max_frames, f.p50_frames), (3, 10, 3));
        assert!((f.mean_frames - 14.0 / 3.0).abs() < 1e-9);
    }
}
