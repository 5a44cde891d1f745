//! The Prometheus text exposition (version 0.0.4) of a [`Snapshot`].
//!
//! Counters and gauges come from their tables (`table.rs`); this file names no counter.
//! Every family gets one `# HELP` and one `# TYPE` line before its samples. Names follow
//! the conventions: counters end in `_total`, times are in seconds.

use std::fmt::Write;

use super::table::Row;
use super::{Counters, Gauges, Snapshot};
use crate::job::Priority;

impl Snapshot {
    /// The snapshot in the Prometheus text exposition format (version 0.0.4).
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        rows(&mut out, Counters::KIND, Counters::ROWS, &self.counters);
        rows(&mut out, Gauges::KIND, Gauges::ROWS, &self.gauges);

        header(
            &mut out,
            "waiting",
            "Requests waiting for a session, by priority.",
            "gauge",
        );
        for p in Priority::ALL {
            let n = self.gauges.waiting_by_class[p.index()];
            line(
                &mut out,
                format_args!("cdpmux_waiting{{priority=\"{}\"}} {n}", p.as_str()),
            );
        }
        header(
            &mut out,
            "reuse_ratio",
            "Reused / (reused + created) acquisitions.",
            "gauge",
        );
        line(
            &mut out,
            format_args!("cdpmux_reuse_ratio {}", self.reuse_rate()),
        );

        let mut family = "";
        for s in self.summaries() {
            let name = format!("{}_seconds", s.family);
            if s.family != family {
                header(&mut out, &name, s.help, "summary");
                family = s.family;
            }
            let labels = s
                .group
                .map(|g| format!("group=\"{}\"", g.as_str()))
                .unwrap_or_default();
            let sep = if labels.is_empty() { "" } else { "," };
            let l = s.latency;
            for (q, ms) in [("0.5", l.p50_ms), ("0.95", l.p95_ms), ("0.99", l.p99_ms)] {
                let secs = ms / 1000.0;
                line(
                    &mut out,
                    format_args!("cdpmux_{name}{{{labels}{sep}quantile=\"{q}\"}} {secs}"),
                );
            }
            let braces = if labels.is_empty() {
                String::new()
            } else {
                format!("{{{labels}}}")
            };
            let sum = l.mean_ms * l.count as f64 / 1000.0;
            line(&mut out, format_args!("cdpmux_{name}_sum{braces} {sum}"));
            line(
                &mut out,
                format_args!("cdpmux_{name}_count{braces} {}", l.count),
            );
        }

        let f = &self.frames_per_flush;
        header(
            &mut out,
            "frames_per_flush",
            "Frames written per socket flush.",
            "summary",
        );
        for (q, frames) in [("0.5", f.p50_frames), ("0.99", f.p99_frames)] {
            line(
                &mut out,
                format_args!("cdpmux_frames_per_flush{{quantile=\"{q}\"}} {frames}"),
            );
        }
        let sum = f.mean_frames * f.flushes as f64;
        line(&mut out, format_args!("cdpmux_frames_per_flush_sum {sum}"));
        line(
            &mut out,
            format_args!("cdpmux_frames_per_flush_count {}", f.flushes),
        );
        out
    }
}

/// Every exported row of a table, a header before each family.
fn rows<T>(out: &mut String, kind: &str, rows: &[Row<T>], values: &T) {
    let mut family = "";
    for r in rows.iter().filter(|r| !r.family.is_empty()) {
        if r.family != family {
            header(out, r.family, r.help, kind);
            family = r.family;
        }
        let v = (r.read)(values);
        line(out, format_args!("cdpmux_{}{} {v}", r.family, r.labels));
    }
}

fn header(out: &mut String, family: &str, help: &str, kind: &str) {
    line(out, format_args!("# HELP cdpmux_{family} {help}"));
    line(out, format_args!("# TYPE cdpmux_{family} {kind}"));
}

fn line(out: &mut String, args: std::fmt::Arguments<'_>) {
    // Writing to a String cannot fail.
    let _ = out.write_fmt(args);
    out.push('\n');
}
