//! What `cram glue` reports: `glue.json` (every number, per seed) and
//! `glue.md` (the paper-style table, details and settings), both written
//! under a temporary name, synced, then renamed into the run folder.
//! Scores are fractions in the JSON and percentages in the tables.

use super::metrics::{glue_average, median, Average};
use super::tasks::{Metric, Task};
use super::{GlueError, GlueOptions, Recipe};
use crate::backend::Backend;
use crate::train::LoadedRun;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One metric on one evaluation split, over the seeds.
#[derive(Debug, Clone, Serialize)]
pub struct ScoreResult {
    pub split: &'static str,
    pub metric: &'static str,
    /// The median over the seeds.
    pub median: f64,
    pub per_seed: Vec<f64>,
    #[serde(skip)]
    kind: Metric,
}

impl ScoreResult {
    pub fn new(split: &'static str, metric: Metric) -> Self {
        ScoreResult {
            split,
            metric: metric.name(),
            median: f64::NAN,
            per_seed: Vec::new(),
            kind: metric,
        }
    }

    pub fn metric(&self) -> Metric {
        self.kind
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskResult {
    pub task: &'static str,
    pub title: &'static str,
    /// Training examples used, and how many the file holds.
    pub train_examples: usize,
    pub train_available: usize,
    /// Examples per evaluation split.
    pub dev_examples: Vec<(String, usize)>,
    pub scores: Vec<ScoreResult>,
    /// Epochs and optimizer steps of one seed's fine-tuning.
    pub epochs: usize,
    pub steps: u64,
    /// Median over the seeds of the mean training loss of the last epoch.
    pub train_loss: f64,
    pub seconds: f64,
    #[serde(skip)]
    kind: Task,
}

/// How a task was fine-tuned: per seed, its epochs and steps; over the
/// seeds, each one's last-epoch loss and the time they took together.
pub struct Training {
    pub epochs: usize,
    pub steps: u64,
    pub losses: Vec<f64>,
    pub seconds: f64,
}

impl TaskResult {
    pub fn new(
        task: Task,
        train_examples: usize,
        train_available: usize,
        dev_examples: Vec<(String, usize)>,
        mut scores: Vec<ScoreResult>,
        training: Training,
    ) -> Self {
        for s in &mut scores {
            s.median = median(&s.per_seed);
        }
        TaskResult {
            task: task.key(),
            title: task.title(),
            train_examples,
            train_available,
            dev_examples,
            scores,
            epochs: training.epochs,
            steps: training.steps,
            train_loss: median(&training.losses),
            seconds: training.seconds,
            kind: task,
        }
    }

    /// The table cell: the medians joined by "/" (e.g. F1/accuracy), in percent.
    fn cell(&self) -> String {
        self.scores
            .iter()
            .map(|s| format!("{:.1}", 100.0 * s.median))
            .collect::<Vec<_>>()
            .join("/")
    }

    fn metrics_label(&self) -> String {
        self.scores
            .iter()
            .map(|s| match s.split {
                "dev" => s.metric.to_string(),
                split => format!("{} ({split})", s.metric),
            })
            .collect::<Vec<_>>()
            .join(" / ")
    }
}

/// A task that did not run, and the first of its files that is absent.
#[derive(Debug, Clone, Serialize)]
pub struct MissingTask {
    pub task: &'static str,
    pub title: &'static str,
    pub file: PathBuf,
    #[serde(skip)]
    kind: Task,
}

impl MissingTask {
    pub fn new(task: Task, file: &Path) -> Self {
        MissingTask {
            task: task.key(),
            title: task.title(),
            file: file.to_path_buf(),
            kind: task,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AverageReport {
    /// Mean over `covers` of each task's mean metric; `None` when none ran.
    pub value: Option<f64>,
    pub covers: Vec<&'static str>,
    pub missing: Vec<&'static str>,
}

impl From<Average> for AverageReport {
    fn from(a: Average) -> Self {
        AverageReport {
            value: a.value,
            covers: a.covered.iter().map(|t| t.title()).collect(),
            missing: a.missing.iter().map(|t| t.title()).collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct GlueReport {
    pub checkpoint: PathBuf,
    pub device: String,
    /// The named protocol (`cram glue --protocol`), with any flag that changed it.
    pub protocol: String,
    pub recipe: Recipe,
    pub seeds: usize,
    pub max_len: usize,
    pub max_train_examples: Option<usize>,
    pub tasks: Vec<TaskResult>,
    pub missing: Vec<MissingTask>,
    pub average: AverageReport,
}

/// The paper's column order (Cramming, Table 3), then WNLI, which GLUE
/// reports but leaves out of the average.
const COLUMNS: [Task; 9] = [
    Task::Mnli,
    Task::Sst2,
    Task::Stsb,
    Task::Rte,
    Task::Qnli,
    Task::Qqp,
    Task::Mrpc,
    Task::Cola,
    Task::Wnli,
];

fn column_title(task: Task) -> &'static str {
    match task {
        Task::Mnli => "MNLI-m/mm",
        Task::Mrpc => "MRPC F1/acc",
        Task::Qqp => "QQP F1/acc",
        Task::Stsb => "STS-B P/S",
        Task::Cola => "CoLA MCC",
        t => t.title(),
    }
}

impl GlueReport {
    pub fn new<B: Backend>(
        run: &LoadedRun<B>,
        device: String,
        opts: &GlueOptions,
        max_len: usize,
        tasks: Vec<TaskResult>,
        mut missing: Vec<MissingTask>,
    ) -> Self {
        missing.sort_by_key(|m| m.kind);
        let scored: Vec<(Task, Vec<f64>)> = tasks
            .iter()
            .map(|t| (t.kind, t.scores.iter().map(|s| s.median).collect()))
            .collect();
        GlueReport {
            checkpoint: run.checkpoint.clone(),
            device,
            protocol: opts.protocol.clone(),
            recipe: opts.recipe.clone(),
            seeds: opts.seeds,
            max_len,
            max_train_examples: opts.max_train_examples,
            tasks,
            missing,
            average: glue_average(&scored).into(),
        }
    }

    /// The report as Markdown: the paper-style table, then details.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "# GLUE dev scores, protocol {}: {}\n",
            self.protocol,
            self.checkpoint.display()
        );
        let head: Vec<&str> = COLUMNS[..8]
            .iter()
            .map(|&t| column_title(t))
            .chain(["GLUE avg", column_title(Task::Wnli)])
            .collect();
        let _ = writeln!(md, "| {} |", head.join(" | "));
        let _ = writeln!(md, "|{}", "---|".repeat(head.len()));
        let cell = |task: Task| {
            self.tasks
                .iter()
                .find(|t| t.kind == task)
                .map_or("–".to_string(), TaskResult::cell)
        };
        let average = self
            .average
            .value
            .map_or("–".to_string(), |v| format!("{:.1}", 100.0 * v));
        let cells: Vec<String> = COLUMNS[..8]
            .iter()
            .map(|&t| cell(t))
            .chain([average, cell(Task::Wnli)])
            .collect();
        let _ = writeln!(md, "| {} |\n", cells.join(" | "));
        let _ = writeln!(md, "{}\n", self.average_note());

        let _ = writeln!(
            md,
            "| task | metric | dev (median of {}) | per seed | train examples | last-epoch loss | time |",
            self.seeds
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|");
        for t in &self.tasks {
            let per_seed: Vec<String> = t
                .scores
                .iter()
                .map(|s| {
                    s.per_seed
                        .iter()
                        .map(|v| format!("{:.1}", 100.0 * v))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .collect();
            let train = if t.train_examples < t.train_available {
                format!(
                    "{} of {} (--max-train-examples)",
                    t.train_examples, t.train_available
                )
            } else {
                t.train_examples.to_string()
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {:.4} | {:.0}s |",
                t.title,
                t.metrics_label(),
                t.cell(),
                per_seed.join(" / "),
                train,
                t.train_loss,
                t.seconds
            );
        }
        for m in &self.missing {
            let _ = writeln!(
                md,
                "| {} | missing: no {} | – | – | – | – | – |",
                m.title,
                m.file.display()
            );
        }
        let _ = writeln!(md, "\n{}", self.settings());
        md
    }

    fn average_note(&self) -> String {
        let a = &self.average;
        let mut note = match a.value {
            Some(_) if a.missing.is_empty() => {
                "GLUE avg: mean over the 8 tasks other than WNLI".to_string()
            }
            Some(_) => format!(
                "GLUE avg covers {} of 8 tasks ({}); not run: {}",
                a.covers.len(),
                a.covers.join(", "),
                a.missing.join(", ")
            ),
            None => "GLUE avg: none of the 8 averaged tasks ran".to_string(),
        };
        note.push_str(
            ". A task's score is the mean of its metrics (MNLI: matched and mismatched); WNLI is never averaged.",
        );
        note
    }

    fn settings(&self) -> String {
        let r = &self.recipe;
        let mut s = format!(
            "Settings: {} epochs{}, batch {}, AdamW lr {:e} ({} decay after {}% warm-up, β = ({}, {}), ε = {:e}, weight decay {}), gradient clip {}, dropout {}, max length {}, seeds 0..{} (median reported), device {}.",
            r.epochs,
            r.large_task_epochs
                .map_or(String::new(), |e| format!(" ({e} for SST-2, QNLI, MNLI, QQP)")),
            r.batch_size,
            r.lr,
            format!("{:?}", r.schedule).to_lowercase(),
            100.0 * r.warmup,
            r.beta1,
            r.beta2,
            r.eps,
            r.weight_decay,
            if r.max_norm > 0.0 { r.max_norm.to_string() } else { "off".into() },
            r.dropout,
            self.max_len,
            self.seeds,
            self.device,
        );
        if let Some(n) = self.max_train_examples {
            let _ = write!(
                s,
                " --max-train-examples {n}: larger training sets were sampled down to {n} examples."
            );
        }
        s
    }

    /// Writes `glue.json` and `glue.md` into `dir`: both are written and
    /// synced under temporary names first, then renamed.
    pub fn write(&self, dir: &Path) -> Result<(PathBuf, PathBuf), GlueError> {
        let json = serde_json::to_string_pretty(self).expect("the report serializes") + "\n";
        let outputs = [
            (dir.join("glue.json"), json),
            (dir.join("glue.md"), self.markdown()),
        ];
        for (path, text) in &outputs {
            crate::fsio::write_atomically(path, text.as_bytes()).map_err(|source| {
                GlueError::Write {
                    path: path.clone(),
                    source,
                }
            })?;
        }
        let [(json, _), (md, _)] = outputs;
        Ok((json, md))
    }
}
