//! GLUE: fine-tune a pretrained encoder on each task found in a GLUE folder,
//! score its dev splits as the benchmark does, and report the paper-style
//! table.
//!
//! `tasks` reads the TSV files, `encode` turns examples into padded batches,
//! `head` is the classification/regression head, `finetune` the training
//! loop and prediction, `metrics` GLUE's metrics and average, `report` the
//! `glue.json` / `glue.md` output. Everything runs over [`Backend`] ops, so
//! any backend fine-tunes.

pub mod encode;
pub mod finetune;
pub mod head;
pub mod metrics;
pub mod report;
pub mod tasks;

pub use finetune::{Protocol, Recipe};
pub use report::{GlueReport, MissingTask, ScoreResult, TaskResult, Training};
pub use tasks::{Task, TaskData};

use crate::backend::Backend;
use crate::config::Arch;
use crate::data::SpecialTokens;
use crate::model::Model;
use crate::train::LoadedRun;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::Instant;
use thiserror::Error;
use tokenizers::Tokenizer;

#[derive(Debug, Error)]
pub enum GlueError {
    #[error("GLUE folder {0} does not exist; pass --glue-dir the folder that holds CoLA/, SST-2/, MRPC/, ...")]
    NoGlueDir(PathBuf),
    #[error(
        "unknown GLUE task '{0}' (the tasks: cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli)"
    )]
    UnknownTask(String),
    #[error("{task}: {path} is missing")]
    MissingFile { task: &'static str, path: PathBuf },
    #[error("{task}: cannot read {path}: {source}")]
    Read {
        task: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{task}: {path} is not UTF-8 text")]
    NotUtf8 { task: &'static str, path: PathBuf },
    #[error("{task}: {path} has no column '{column}' in its header line (it has: {found})")]
    MissingColumn {
        task: &'static str,
        path: PathBuf,
        column: &'static str,
        found: String,
    },
    #[error("{task}: line {line} of {path} has {found} field(s), fewer than the {needed} the task reads")]
    ShortRow {
        task: &'static str,
        path: PathBuf,
        line: usize,
        found: usize,
        needed: usize,
    },
    #[error(
        "{task}: line {line} of {path} has the label '{value}', which is not one of: {expected}"
    )]
    BadLabel {
        task: &'static str,
        path: PathBuf,
        line: usize,
        value: String,
        expected: String,
    },
    #[error("{task}: {path} holds no examples")]
    Empty { task: &'static str, path: PathBuf },
    #[error("{task}: the tokenizer failed: {message}")]
    Encode { task: &'static str, message: String },
    #[error("{task}: the training loss became NaN or infinite in epoch {epoch} with seed {seed}; lower --lr or set --max-norm")]
    Diverged {
        task: &'static str,
        seed: u64,
        epoch: u64,
    },
    #[error("{0}")]
    Setup(String),
    #[error("{task}: {error}{}", if error.is_size_limit() { "; lower --batch-size or --max-len" } else { "" })]
    Device {
        task: &'static str,
        error: crate::backend::DeviceError,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The tasks to run, read from disk, and those left out for missing files.
#[derive(Debug)]
pub struct Plan {
    pub tasks: Vec<TaskData>,
    pub missing: Vec<MissingTask>,
}

/// Reads the tasks of `glue_dir`. Named tasks (`requested`) must be whole:
/// a missing file is an error. Without names, every task whose files are all
/// there runs and the others are listed as missing. A file that is there but
/// unreadable or malformed is an error either way.
pub fn plan(glue_dir: &Path, requested: Option<&[Task]>) -> Result<Plan, GlueError> {
    if !glue_dir.is_dir() {
        return Err(GlueError::NoGlueDir(glue_dir.to_path_buf()));
    }
    let mut plan = Plan {
        tasks: Vec::new(),
        missing: Vec::new(),
    };
    let named = requested.is_some();
    let mut wanted: Vec<Task> = requested.map_or(Task::ALL.to_vec(), <[Task]>::to_vec);
    wanted.sort_unstable();
    wanted.dedup();
    for task in wanted {
        if let Some(path) = task.first_missing_file(glue_dir) {
            if named {
                return Err(GlueError::MissingFile {
                    task: task.title(),
                    path,
                });
            }
            plan.missing.push(MissingTask::new(task, &path));
            continue;
        }
        plan.tasks.push(task.load(glue_dir)?);
    }
    Ok(plan)
}

/// How to run GLUE beyond the recipe.
#[derive(Debug, Clone)]
pub struct GlueOptions {
    /// The protocol's name as the table prints it (with any flag that changed it).
    pub protocol: String,
    pub recipe: Recipe,
    /// Seeds 0..seeds per task; the median score is reported.
    pub seeds: usize,
    /// Train on a fixed sample of at most this many examples per task.
    pub max_train_examples: Option<usize>,
    /// Tokens per example (default: the pretraining sequence length).
    pub max_len: Option<usize>,
    pub progress: bool,
}

impl Default for GlueOptions {
    fn default() -> Self {
        GlueOptions {
            protocol: Protocol::CrammingPaper.name().to_string(),
            recipe: Recipe::default(),
            seeds: 1,
            max_train_examples: None,
            max_len: None,
            progress: false,
        }
    }
}

/// The sequence length to fine-tune with: the pretraining length unless
/// asked otherwise, never more than the model has positions for.
fn resolve_max_len(run: &crate::config::Config, asked: Option<usize>) -> Result<usize, GlueError> {
    let max_len = asked.unwrap_or(run.data.seq_len);
    if !(8..=run.model.max_positions).contains(&max_len) {
        return Err(GlueError::Setup(format!(
            "--max-len {max_len} is outside 8..={} (the run's model.max_positions)",
            run.model.max_positions
        )));
    }
    Ok(max_len)
}

fn check_options(opts: &GlueOptions) -> Result<(), GlueError> {
    let r = &opts.recipe;
    let problem = if opts.seeds == 0 {
        Some("--seeds must be at least 1")
    } else if r.epochs == 0 || r.large_task_epochs == Some(0) {
        Some("--epochs must be at least 1")
    } else if r.batch_size == 0 {
        Some("--batch-size must be at least 1")
    } else if !(0.0..1.0).contains(&r.dropout) {
        Some("--dropout must be in [0, 1)")
    } else if !(0.0..=1.0).contains(&r.warmup) {
        Some("--warmup must be a fraction in [0, 1]")
    } else if opts.max_train_examples == Some(0) {
        Some("--max-train-examples must be at least 1")
    } else {
        None
    };
    problem.map_or(Ok(()), |p| Err(GlueError::Setup(p.into())))
}

fn progress_bar(show: bool, task: Task, steps: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(steps);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>6} {bar:30.cyan/blue} {pos}/{len} steps {msg}")
            .expect("valid template")
            .progress_chars("█▉▊▋▌▍▎▏ "),
    );
    bar.set_prefix(task.title());
    bar
}

/// Fine-tunes and scores every task of `plan` from `run`'s checkpoint.
pub fn run_glue<B: Backend>(
    be: &B,
    run: &LoadedRun<B>,
    tokenizer: &Tokenizer,
    special: SpecialTokens,
    plan: Plan,
    opts: &GlueOptions,
) -> Result<GlueReport, GlueError> {
    check_options(opts)?;
    if run.config.model.arch != Arch::Encoder {
        return Err(GlueError::Setup(format!(
            "GLUE fine-tunes encoders, and the model of {} is a decoder (model.arch)",
            run.checkpoint.display()
        )));
    }
    let max_len = resolve_max_len(&run.config, opts.max_len)?;
    let mut cfg = run.config.model.clone();
    cfg.dropout = opts.recipe.dropout;
    let model = Model::new(&cfg);
    let setup = finetune::Setup {
        be,
        model: &model,
        pretrained: &run.params,
        train_cfg: &run.config.train,
        recipe: &opts.recipe,
        max_len,
        pad: special.pad,
    };
    // On the CPU, inside rayon's pool (`Backend::run_job`), as pretraining.
    let tasks = plan.tasks;
    let results = be.run_job(|| {
        tasks
            .into_iter()
            .map(|data| run_task(&setup, tokenizer, special, data, opts))
            .collect::<Result<Vec<_>, GlueError>>()
    })?;
    Ok(GlueReport::new(
        run,
        be.name(),
        opts,
        max_len,
        results,
        plan.missing,
    ))
}

fn run_task<B: Backend>(
    s: &finetune::Setup<B>,
    tokenizer: &Tokenizer,
    special: SpecialTokens,
    data: TaskData,
    opts: &GlueOptions,
) -> Result<TaskResult, GlueError> {
    let clock = Instant::now();
    let task = data.task;
    let available = data.train.len();
    let train = encode::limit_examples(data.train, opts.max_train_examples);
    let train = encode::encode(tokenizer, special, task, &train, s.max_len)?;
    let dev = data
        .dev
        .iter()
        .map(|split| {
            let encoded = encode::encode(tokenizer, special, task, &split.examples, s.max_len)?;
            Ok((split.name, encoded))
        })
        .collect::<Result<Vec<_>, GlueError>>()?;
    let recipe = s.recipe.for_task(task);
    let s = &finetune::Setup {
        recipe: &recipe,
        ..*s
    };
    let steps = finetune::total_steps(&train, s.recipe, s.max_len);
    let bar = progress_bar(opts.progress, task, steps * opts.seeds as u64);
    let mut scores: Vec<ScoreResult> = dev
        .iter()
        .flat_map(|(split, _)| {
            task.metrics()
                .iter()
                .map(|&metric| ScoreResult::new(split, metric))
        })
        .collect();
    let mut losses = Vec::new();
    for seed in 0..opts.seeds as u64 {
        let tuned = finetune::finetune(s, task.title(), task.labels(), &train, seed, &bar)?;
        losses.push(tuned.last_epoch_loss);
        for (split, examples) in &dev {
            let predictions = finetune::predict(s, &tuned, examples);
            // A failed device reads as NaN: say why instead of scoring it.
            s.be.check().map_err(|error| GlueError::Device {
                task: task.title(),
                error,
            })?;
            for score in scores.iter_mut().filter(|r| r.split == *split) {
                score.per_seed.push(predictions.score(score.metric()));
            }
        }
    }
    bar.finish_and_clear();
    Ok(TaskResult::new(
        task,
        train.len(),
        available,
        dev.iter()
            .map(|(name, d)| (name.to_string(), d.len()))
            .collect(),
        scores,
        Training {
            epochs: s.recipe.epochs,
            steps,
            losses,
            seconds: clock.elapsed().as_secs_f64(),
        },
    ))
}
