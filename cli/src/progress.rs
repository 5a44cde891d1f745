//! What a crawl shows while it runs and where its reports go: a progress bar on a
//! terminal, progress lines otherwise, nothing with `--quiet`; the summary on stdout when
//! the JSON lines go to a file, else on stderr. Never writes a JSON line.

use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::stats::CrawlStats;

/// Where the summary and metrics go: stdout when the JSON lines go to a file, else
/// stderr, so stdout stays pure JSON lines.
pub struct Reports {
    pub to_stdout: bool,
}

impl Reports {
    pub fn print(&self, text: &str) {
        if self.to_stdout {
            let mut stdout = io::stdout().lock();
            let _ = stdout
                .write_all(text.as_bytes())
                .and_then(|_| stdout.flush());
        } else {
            let _ = io::stderr().lock().write_all(text.as_bytes());
        }
    }
}

/// A progress bar on a terminal, progress lines otherwise, or nothing with `--quiet`.
pub struct Progress {
    bar: ProgressBar,
    pub plain: bool,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        if quiet {
            return Progress {
                bar: ProgressBar::hidden(),
                plain: false,
            };
        }
        if !io::stderr().is_terminal() {
            return Progress {
                bar: ProgressBar::hidden(),
                plain: true,
            };
        }
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} pages  {per_sec}  {msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress { bar, plain: false }
    }

    pub fn update(&self, stats: &CrawlStats, in_flight: usize, queued: usize) {
        let done = stats.done();
        self.bar.set_length(done + (in_flight + queued) as u64);
        self.bar.set_position(done);
        self.bar
            .set_message(format!("{} errors, {in_flight} in flight", stats.failed));
    }

    pub fn plain_line(
        &self,
        stats: &CrawlStats,
        in_flight: usize,
        queued: usize,
        started: Instant,
    ) {
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        eprintln!(
            "cdpmux: {} pages ({} errors), {:.1} pages/s, {in_flight} in flight, {queued} queued",
            stats.done(),
            stats.failed,
            stats.done() as f64 / secs
        );
    }

    pub fn println(&self, line: &str) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
