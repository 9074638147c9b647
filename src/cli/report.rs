//! `cram report`: plots and a self-contained report.html of a run or a sweep.

use crate::report::{report, ReportOptions};
use crate::scaling::plan::device;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// A run folder (metrics.jsonl) or a sweep folder (points.csv).
    dir: PathBuf,
    /// Device the run trained on, for MFU against its peak (h100, a100, cpu, ...).
    #[arg(long)]
    device: Option<String>,
}

pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let peak_flops = args
        .device
        .as_deref()
        .map(device)
        .transpose()?
        .map(|d| d.flops);
    let written = report(&args.dir, &ReportOptions { peak_flops })?;
    for note in &written.notes {
        eprintln!("note: {note}");
    }
    println!(
        "wrote {} with {} plots under {}",
        written.html.display(),
        written.plots.len(),
        args.dir.join("plots").display()
    );
    Ok(())
}
