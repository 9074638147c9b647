//! How a run shows its progress: a bar on a terminal, plain lines where the
//! output is a file or a pipe (`nohup`, `tee`, SLURM, CI), nothing when
//! asked to be quiet. Lines go to stdout, like the run's summary, so that
//! `cram pretrain ... | tee log` keeps them.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Seconds between two plain progress lines.
pub const LINE_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Off,
    Bar,
    /// A line at the first logged step, then at most one per period.
    Lines(Duration),
}

impl Progress {
    /// The bar on a terminal, lines otherwise; `quiet` silences both.
    pub fn for_stderr(quiet: bool) -> Progress {
        if quiet {
            Progress::Off
        } else if std::io::stderr().is_terminal() {
            Progress::Bar
        } else {
            Progress::Lines(LINE_EVERY)
        }
    }
}

pub(crate) struct Reporter {
    mode: Progress,
    bar: ProgressBar,
    last_line: Option<Instant>,
}

impl Reporter {
    pub(crate) fn new(mode: Progress) -> Reporter {
        let bar = if mode == Progress::Bar {
            let bar = ProgressBar::new(1000);
            bar.set_style(
                ProgressStyle::with_template("{bar:30.cyan/blue} {percent:>3}% {msg}")
                    .expect("valid template")
                    .progress_chars("█▉▊▋▌▍▎▏ "),
            );
            bar
        } else {
            ProgressBar::hidden()
        };
        Reporter {
            mode,
            bar,
            last_line: None,
        }
    }

    /// A logged training step at budget progress `p`; `status` says the rest.
    pub(crate) fn step(&mut self, p: f64, status: &str) {
        match self.mode {
            Progress::Off => {}
            Progress::Bar => {
                self.bar.set_position((p * 1000.0) as u64);
                self.bar.set_message(status.to_string());
            }
            Progress::Lines(every) => {
                let due = self.last_line.is_none_or(|t| t.elapsed() >= every);
                if due || p >= 1.0 {
                    self.last_line = Some(Instant::now());
                    line(&format!("{:>5.1}% {status}", 100.0 * p.min(1.0)));
                }
            }
        }
    }

    /// A line that is always shown (an evaluation, say), above the bar.
    pub(crate) fn event(&self, text: &str) {
        match self.mode {
            Progress::Off => {}
            Progress::Bar => self.bar.println(text),
            Progress::Lines(_) => line(text),
        }
    }

    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

fn line(text: &str) {
    let mut out = std::io::stdout().lock();
    // A closed pipe must not stop training: progress is best effort.
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

pub(super) fn eta(progress: f64, seconds: f64) -> String {
    if progress <= 0.0 {
        return "?".into();
    }
    duration_text(seconds * (1.0 - progress) / progress)
}

/// A duration as a person reads it, from seconds to "more than 100 years"
/// (a FLOP or token budget may be far beyond any machine).
pub(super) fn duration_text(seconds: f64) -> String {
    const DAY: f64 = 86_400.0;
    match seconds {
        s if !s.is_finite() || s > 100.0 * 365.0 * DAY => "more than 100 years".into(),
        s if s >= 2.0 * DAY => format!("{:.1} days", s / DAY),
        s if s >= 3600.0 => format!(
            "{}h{:02}m",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        ),
        s => format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::duration_text;

    #[test]
    fn durations_read_as_a_person_would() {
        assert_eq!(duration_text(75.0), "1m15s");
        assert_eq!(duration_text(3.0 * 3600.0 + 125.0), "3h02m");
        assert_eq!(duration_text(5.0 * 86_400.0), "5.0 days");
        assert_eq!(duration_text(1e90), "more than 100 years");
    }
}
