//! Progress bars for the pipeline's stages, hidden unless asked for (tests,
//! scripts). indicatif draws on stderr and only when it is a terminal.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar counting bytes of text through a stage.
pub fn bytes_bar(enabled: bool, total: u64, stage: &'static str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(
        "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {elapsed}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::new(total).with_style(style).with_prefix(stage)
}

/// A spinner for a stage without a count (training the tokenizer).
pub fn spinner(enabled: bool, stage: &'static str, message: String) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template("{prefix:>12} {spinner} {msg} {elapsed}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let bar = ProgressBar::new_spinner()
        .with_style(style)
        .with_prefix(stage)
        .with_message(message);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// A bar counting items (sequences) through a stage.
pub fn count_bar(enabled: bool, total: u64, stage: &'static str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(
        "{prefix:>12} [{bar:30}] {human_pos}/{human_len} {per_sec} {elapsed}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::new(total).with_style(style).with_prefix(stage)
}
