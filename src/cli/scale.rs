//! `cram scale`: sweep model size × data × compute, fit scaling laws, and
//! plan the compute-optimal model for a budget.

use crate::backend::{select_device, DeviceChoice};
use crate::config::{Budget, Config};
use crate::on_device;
use crate::scaling::fit::{fit_all, FitOptions, FitReport, FIT_FILE};
use crate::scaling::plan::{budget_compute, device, plan, MeasuredCritical, DEFAULT_MFU};
use crate::scaling::spec::SweepSpec;
use crate::scaling::sweep::{sweep, SweepOptions, SPEC_COPY};
use crate::scaling::PointSet;
use anyhow::{bail, Context};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct ScaleArgs {
    #[command(subcommand)]
    command: ScaleCommand,
}

#[derive(clap::Subcommand, Debug)]
enum ScaleCommand {
    /// Run every pretraining run of a sweep spec (resumable: finished runs are skipped).
    Sweep {
        /// The sweep spec (TOML): preset, data, shapes, budgets, optional batch sizes and lrs.
        #[arg(long)]
        spec: PathBuf,
        /// Sweep folder: runs/<name>/ per run, points.csv, curves.csv.
        #[arg(long)]
        out: PathBuf,
        /// Train at most this many runs in this call; the rest wait for the next.
        #[arg(long)]
        max_runs: Option<usize>,
        /// No progress bars.
        #[arg(long)]
        quiet: bool,
        /// Where to train: the GPU when one is usable (auto), or the one named.
        #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
        device: DeviceChoice,
    },
    /// Fit Kaplan and Chinchilla laws to a sweep folder or a CSV of points; writes fit.json.
    Fit {
        /// Sweep folder (with points.csv).
        dir: Option<PathBuf>,
        /// A CSV with columns n_params,tokens,compute,loss (one finished run per row).
        #[arg(long, conflicts_with = "dir")]
        points: Option<PathBuf>,
        /// Bootstrap replicates for the confidence intervals.
        #[arg(long, default_value_t = 200)]
        bootstrap: usize,
        /// Seed of the bootstrap resampling.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Where to write fit.json (default: beside the points).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Leave out runs whose final loss is at or above this, as still on the
        /// masked-LM plateau (default for a sweep folder: 90% of its data's
        /// unigram cross-entropy, from data.json).
        #[arg(long, conflicts_with = "keep_plateau")]
        max_loss: Option<f64>,
        /// Fit every run, also those still on the plateau.
        #[arg(long)]
        keep_plateau: bool,
    },
    /// Compute-optimal N, D and batch size for a budget under each fit.
    Plan {
        /// Folder holding fit.json (a sweep folder), or the fit.json file.
        #[arg(long)]
        fit: PathBuf,
        /// A time on the device (24h) or a FLOP count (1e21 flops).
        #[arg(long)]
        budget: String,
        /// Device whose peak FLOP/s turns a time into compute: h100, h200, a100, a6000, l4, rtx4090, v100, cpu.
        #[arg(long, default_value = "h100")]
        device: String,
        /// Model FLOP utilisation assumed for a time budget.
        #[arg(long, default_value_t = DEFAULT_MFU)]
        mfu: f64,
        /// Preset whose shapes the plan picks from (default: the sweep's, else crammed-bert).
        #[arg(long)]
        preset: Option<String>,
        /// A batch sweep's folder (or its critical_batch.json from `cram scale batch`):
        /// the batch size then follows the critical batch measured there, not the noise scale.
        #[arg(long)]
        batch: Option<PathBuf>,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The critical batch size measured from runs of one model at several batch sizes
    /// (steps to a target loss against batch size), beside the noise scale they logged;
    /// writes critical_batch.json.
    Batch {
        /// Sweep folder whose spec has batch_sizes (points.csv and runs/).
        dir: PathBuf,
        /// The loss each run is timed to (default, per model: the highest loss every run
        /// of the model reaches).
        #[arg(long, allow_hyphen_values = true)]
        target_loss: Option<f64>,
        /// Logged training losses averaged (centred) before the crossing is found.
        #[arg(long, default_value_t = crate::scaling::batch::DEFAULT_WINDOW)]
        window: usize,
    },
}

pub fn run(args: ScaleArgs) -> anyhow::Result<()> {
    match args.command {
        ScaleCommand::Sweep {
            spec,
            out,
            max_runs,
            quiet,
            device,
        } => run_sweep(&spec, out, max_runs, quiet, device),
        ScaleCommand::Fit {
            dir,
            points,
            bootstrap,
            seed,
            out,
            max_loss,
            keep_plateau,
        } => {
            let opts = FitOptions {
                bootstrap,
                seed,
                max_loss: None,
            };
            run_fit(dir, points, opts, (max_loss, keep_plateau), out)
        }
        ScaleCommand::Plan {
            fit,
            budget,
            device,
            mfu,
            preset,
            batch,
            json,
        } => run_plan(&fit, &budget, &device, mfu, preset, batch.as_deref(), json),
        ScaleCommand::Batch {
            dir,
            target_loss,
            window,
        } => run_batch(&dir, target_loss, window),
    }
}

fn run_batch(dir: &Path, target_loss: Option<f64>, window: usize) -> anyhow::Result<()> {
    if target_loss.is_some_and(|t| !(t.is_finite() && t > 0.0)) {
        bail!(
            "--target-loss must be a positive loss, not {}",
            target_loss.unwrap_or_default()
        );
    }
    if window == 0 {
        bail!("--window must be at least 1 log");
    }
    let Some(report) = crate::scaling::batch::measure(dir, target_loss, window)? else {
        bail!(
            "no model in {} was run at two or more batch sizes (give its sweep spec batch_sizes)",
            dir.display()
        );
    };
    print!("{}", report.table());
    let path = dir.join(crate::scaling::batch::BATCH_FILE);
    let json = serde_json::to_string_pretty(&report)? + "\n";
    crate::scaling::points::write_atomically(&path, &json)?;
    println!("wrote {}", path.display());
    Ok(())
}

fn run_sweep(
    spec_path: &Path,
    out: PathBuf,
    max_runs: Option<usize>,
    quiet: bool,
    device: DeviceChoice,
) -> anyhow::Result<()> {
    let spec = SweepSpec::load(spec_path)?;
    let text = std::fs::read_to_string(spec_path)
        .with_context(|| format!("cannot read {}", spec_path.display()))?;
    let (device, note) = select_device(device)?;
    if let Some(note) = note {
        eprintln!("note: {note}");
    }
    eprintln!("device: {}", device.name());
    let opts = SweepOptions {
        out: out.clone(),
        progress: !quiet && std::io::stderr().is_terminal(),
        max_runs,
    };
    let s = on_device!(&device, |be| sweep(
        be,
        &spec,
        &text,
        &opts,
        |line| eprintln!("{line}")
    ))?;
    println!(
        "{} runs planned: {} trained, {} resumed, {} already finished; {} points in {}",
        s.planned,
        s.ran,
        s.resumed,
        s.skipped,
        s.points.points.len(),
        out.join(crate::scaling::points::POINTS_FILE).display()
    );
    Ok(())
}

fn run_fit(
    dir: Option<PathBuf>,
    points: Option<PathBuf>,
    mut opts: FitOptions,
    (max_loss, keep_plateau): (Option<f64>, bool),
    out: Option<PathBuf>,
) -> anyhow::Result<()> {
    if max_loss.is_some_and(|m| !(m.is_finite() && m > 0.0)) {
        bail!(
            "--max-loss must be a positive loss, not {}",
            max_loss.unwrap_or_default()
        );
    }
    opts.max_loss = match (&dir, max_loss, keep_plateau) {
        (_, _, true) => None,
        (_, Some(m), _) => Some(m),
        (Some(dir), None, false) => default_plateau_cut(dir)?,
        (None, None, false) => None,
    };
    let sweep_dir = dir.clone();
    let (set, default_out) = match (dir, points) {
        (Some(dir), None) => (PointSet::read_dir(&dir)?, dir.join(FIT_FILE)),
        (None, Some(file)) => {
            let set = PointSet {
                points: crate::scaling::points::read_points(&file)?,
                curves: Vec::new(),
            };
            let beside = file.parent().unwrap_or(Path::new(".")).join(FIT_FILE);
            (set, beside)
        }
        _ => bail!("name a sweep folder (cram scale fit DIR) or a table (--points FILE.csv)"),
    };
    let cut = opts.max_loss.unwrap_or(f64::INFINITY);
    let mut report = fit_all(&set, opts)?;
    if let Some(dir) = &sweep_dir {
        if let Some(data) = crate::scaling::plateau::SweepData::read(dir)? {
            let (kept, _) = crate::scaling::plateau::split_at(&set, cut);
            let note = crate::scaling::plateau::mode_predictors_note(dir, &data, &kept.points)?;
            report.notes.extend(note);
        }
    }
    let path = out.unwrap_or(default_out);
    let json = serde_json::to_string_pretty(&report).expect("the report serializes");
    crate::scaling::points::write_atomically(&path, &json)?;
    print!("{}", report.table());
    println!("wrote {}", path.display());
    Ok(())
}

/// A sweep folder's plateau cut: 90% of its data's unigram cross-entropy.
pub fn default_plateau_cut(dir: &Path) -> anyhow::Result<Option<f64>> {
    Ok(crate::scaling::plateau::SweepData::read(dir)?.map(|d| d.plateau_cut()))
}

/// The base config of a plan: --preset, else the sweep's preset and overrides, else crammed-bert.
fn plan_base(fit_dir: &Path, preset: Option<String>) -> anyhow::Result<(String, Config)> {
    if let Some(p) = preset {
        return Ok((p.clone(), Config::resolve(&p, &[])?));
    }
    let spec_path = fit_dir.join(SPEC_COPY);
    if spec_path.is_file() {
        let spec = SweepSpec::load(&spec_path)?;
        let cfg = Config::resolve(&spec.preset, &spec.set)
            .with_context(|| format!("the base preset of {}", spec_path.display()))?;
        return Ok((spec.preset, cfg));
    }
    Ok(("crammed-bert".into(), Config::resolve("crammed-bert", &[])?))
}

/// The critical batches of a `cram scale batch` result (its folder or file),
/// at the loss each was measured at; an error when it has none.
fn measured_critical(path: &Path) -> anyhow::Result<Vec<MeasuredCritical>> {
    use crate::scaling::batch::{CriticalBatchReport, BATCH_FILE};
    let file = if path.is_dir() {
        path.join(BATCH_FILE)
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file).with_context(|| {
        format!(
            "cannot read {}; run `cram scale batch` on the batch sweep first",
            file.display()
        )
    })?;
    let report: CriticalBatchReport = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a critical_batch.json of `cram scale batch`",
            file.display()
        )
    })?;
    let measured = MeasuredCritical::of(&report);
    if measured.is_empty() {
        bail!(
            "{} holds no critical batch (its notes say why); plan without --batch or measure again",
            file.display()
        );
    }
    Ok(measured)
}

fn run_plan(
    fit: &Path,
    budget: &str,
    device_name: &str,
    mfu: f64,
    preset: Option<String>,
    batch: Option<&Path>,
    json: bool,
) -> anyhow::Result<()> {
    let (dir, file) = if fit.is_dir() {
        (fit.to_path_buf(), fit.join(FIT_FILE))
    } else {
        (
            fit.parent().unwrap_or(Path::new(".")).to_path_buf(),
            fit.to_path_buf(),
        )
    };
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}; run `cram scale fit` first", file.display()))?;
    let report: FitReport = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a fit.json of `cram scale fit`", file.display()))?;
    if !(mfu > 0.0 && mfu <= 1.0) {
        bail!("--mfu must be in (0, 1], not {mfu}");
    }
    let budget = Budget::parse(budget).map_err(anyhow::Error::msg)?;
    let dev = device(device_name)?;
    let compute = budget_compute(&budget, &dev, mfu)?;
    let assumption = match budget {
        Budget::Flops(_) => "the budget as given".to_string(),
        _ => format!(
            "{budget} on {} at {:.0} TFLOP/s peak and an assumed MFU of {:.0}%",
            dev.what,
            dev.flops / 1e12,
            100.0 * mfu
        ),
    };
    let (preset, base) = plan_base(&dir, preset)?;
    let points = PointSet::read_dir(&dir).ok();
    let critical = match batch {
        Some(path) => measured_critical(path)?,
        None => Vec::new(),
    };
    let p = plan(
        &report,
        points.as_ref(),
        &critical,
        &base,
        &preset,
        compute,
        assumption,
    );
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&p).expect("the plan serializes")
        );
    } else {
        print!("{}", p.table());
    }
    Ok(())
}
