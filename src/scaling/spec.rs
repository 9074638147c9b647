//! The sweep spec, a TOML file: the base preset and data, the model shapes,
//! the budgets, and optionally batch sizes and learning rates. Every
//! combination is one run. Top-level keys come before the `[[models]]` tables:
//!
//! ```toml
//! preset = "tiny"                  # base preset of every run
//! data = "data/english"            # prepared folder, relative to this file
//! set = ["train.eval_every=50"]    # overrides for every run (optional)
//! budgets = ["200 steps", "1e14 flops", "4M tokens"]
//! widths = [64, 128]               # with depths: a grid of shapes (optional)
//! depths = [2, 4]
//! batch_sizes = [16, 32]           # optional
//! lrs = [1e-3, 3e-3]               # optional
//! measure_noise_scale = true       # log B_simple in every run (optional)
//! evals_per_run = 12               # held-out evaluations a run makes (optional)
//! head_dim = 32                    # heads = hidden / head_dim (default: the preset's)
//! ffn_ratio = 4.0                  # ffn = ffn_ratio·hidden (default: the preset's)
//! width_scaling = true             # lr ∝ 1/hidden, init std ∝ 1/√hidden (optional)
//! batch_lr_scaling = "sqrt"         # lr ∝ √batch ("sqrt") or ∝ batch ("linear") (optional)
//!
//! [[models]]                       # shapes listed one by one (optional)
//! hidden = 256
//! layers = 4
//! budgets = ["200 steps"]          # this shape's own budgets (optional)
//! ```
//!
//! Runs go level by level: every shape's run of the first budget, then of the
//! second, and so on, so that a sweep cut short leaves whole compute levels.
//! A `[[models]]` table with its own `budgets` runs at those instead of the
//! top-level ones: scaling sweeps rarely train every size at every budget
//! (the small models at the largest budgets cost the most time and are far
//! from compute-optimal there).
//!
//! A compute budget ("1e14 flops") becomes, for each shape, the token budget
//! D = C / (6N + 6·n_layer·n_ctx·d_model) of [`crate::scaling::counts`], so
//! that every run of one compute level spends the same C in that convention.
//!
//! `width_scaling = true` scales each run's learning rate by w₀/w and its
//! initialisation std by √(w₀/w), w₀ being the base config's width (768 for
//! crammed-bert). One rate for every width kept the smallest sweep shape on
//! the masked-LM plateau: h256-l4 at lr 1e-3 and std 0.02 ends 1e15 FLOPs at
//! held-out 6.74 (accuracy 0.067, the most frequent token's rate), at
//! 3e-3 and 0.04 (what the rule gives, rounded) at 4.95 (0.244); either
//! change alone stays on the plateau (bench/RESULTS.md, plateau probe).
//!
//! `batch_lr_scaling` scales each run's learning rate with its batch size
//! against the base config's (B/B₀ to the power ½ for "sqrt", 1 for
//! "linear"), on top of the width rule and of `lrs`. A batch-size sweep that
//! measures the critical batch (`cram scale batch`) compares the steps each
//! batch needs at a well-chosen rate (McCandlish et al. 2018 tuned it per
//! batch); one rate for every batch leaves the small batches too noisy: on
//! tiny (CPU, bench/RESULTS.md) batch 8 then needed more examples than batch
//! 16 to reach the same loss. √B is the rule for Adam of Malladi et al. 2022.
//!
//! `evals_per_run = K` sets each run's `train.eval_every` to a K-th of its
//! steps (counted at its full batch; a batch ramp adds a few), so that a run
//! of 600 steps and one of 70,000 both leave a held-out curve of about K
//! points: the curves that Chinchilla's approach 1 and Kaplan's compute
//! frontier take their lower envelope of. A time budget has no step count in
//! advance and keeps the configured `eval_every`.

use super::counts::Counts;
use super::ScalingError;
use crate::config::{Budget, BudgetSetting, Config};
use crate::data::TokenStore;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A model shape: width and depth, heads and feed-forward width optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shape {
    pub hidden: usize,
    pub layers: usize,
    pub heads: Option<usize>,
    pub ffn: Option<usize>,
}

/// A `[[models]]` table: a shape and, optionally, its own budgets.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub hidden: usize,
    pub layers: usize,
    pub heads: Option<usize>,
    pub ffn: Option<usize>,
    /// Replaces the top-level `budgets` for this shape.
    pub budgets: Option<Vec<String>>,
}

impl ModelEntry {
    pub fn shape(&self) -> Shape {
        Shape {
            hidden: self.hidden,
            layers: self.layers,
            heads: self.heads,
            ffn: self.ffn,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    pub preset: String,
    pub data: PathBuf,
    #[serde(default)]
    pub set: Vec<String>,
    pub budgets: Vec<String>,
    #[serde(default)]
    pub widths: Vec<usize>,
    #[serde(default)]
    pub depths: Vec<usize>,
    #[serde(default)]
    pub models: Vec<ModelEntry>,
    #[serde(default)]
    pub batch_sizes: Vec<usize>,
    #[serde(default)]
    pub lrs: Vec<f64>,
    #[serde(default)]
    pub measure_noise_scale: bool,
    pub evals_per_run: Option<usize>,
    pub head_dim: Option<usize>,
    pub ffn_ratio: Option<f64>,
    #[serde(default)]
    pub width_scaling: bool,
    pub batch_lr_scaling: Option<BatchLrScaling>,
}

/// How a sweep's learning rate follows its batch size (`batch_lr_scaling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchLrScaling {
    /// lr ∝ √B
    Sqrt,
    /// lr ∝ B
    Linear,
}

impl BatchLrScaling {
    /// The factor on the rate of batch `batch` against the base batch.
    pub fn factor(self, batch: usize, base: usize) -> f64 {
        let ratio = batch as f64 / base as f64;
        match self {
            BatchLrScaling::Sqrt => ratio.sqrt(),
            BatchLrScaling::Linear => ratio,
        }
    }
}

/// The rules that set each run's rate and initialisation from its shape and
/// batch against the base config's.
#[derive(Debug, Clone, Copy)]
struct RateRules {
    /// `width_scaling`: the base width.
    base_width: Option<usize>,
    /// `batch_lr_scaling` and the base batch size.
    batch: Option<(BatchLrScaling, usize)>,
}

/// One run of the sweep, fully resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRun {
    /// Folder name under `runs/`: shape, budget, batch and learning rate.
    pub name: String,
    pub config: Config,
    /// The budget as the spec wrote it (a compute level stays "1e14 flops").
    pub budget_label: String,
    pub counts: Counts,
}

impl SweepSpec {
    /// Reads a spec; a relative `data` is taken from the spec's folder.
    pub fn load(path: &Path) -> Result<SweepSpec, ScalingError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScalingError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut spec: SweepSpec = toml::from_str(&text).map_err(|e| ScalingError::Spec {
            path: path.to_path_buf(),
            reason: e.message().to_string(),
        })?;
        if spec.data.is_relative() {
            spec.data = path.parent().unwrap_or(Path::new(".")).join(&spec.data);
        }
        spec.check(path)?;
        Ok(spec)
    }

    fn check(&self, path: &Path) -> Result<(), ScalingError> {
        let bad = |reason: String| {
            Err(ScalingError::Spec {
                path: path.to_path_buf(),
                reason,
            })
        };
        if self.budgets.is_empty() {
            return bad(
                "'budgets' is empty; list at least one, e.g. budgets = [\"200 steps\"]".into(),
            );
        }
        let own = self.models.iter().filter_map(|m| m.budgets.as_ref());
        for b in self.budgets.iter().chain(own.flatten()) {
            if let Err(e) = Budget::parse(b) {
                return bad(format!("budgets: {e}"));
            }
        }
        if let Some(m) = self
            .models
            .iter()
            .find(|m| m.budgets.as_ref().is_some_and(Vec::is_empty))
        {
            return bad(format!(
                "the model hidden = {}, layers = {} has an empty 'budgets'; leave it out to use the top-level budgets",
                m.hidden, m.layers
            ));
        }
        if self.widths.is_empty() != self.depths.is_empty() {
            return bad("'widths' and 'depths' go together: give both or neither".into());
        }
        if self.shapes().is_empty() {
            return bad("no model shapes; give widths and depths, or [[models]] tables".into());
        }
        if self.ffn_ratio.is_some_and(|r| r.is_nan() || r <= 0.0) || self.head_dim == Some(0) {
            return bad("'ffn_ratio' and 'head_dim' must be positive".into());
        }
        if self.batch_lr_scaling.is_some() && self.batch_sizes.is_empty() {
            return bad("'batch_lr_scaling' scales the rate with 'batch_sizes', which is empty; list the batch sizes or leave the rule out".into());
        }
        if self.evals_per_run == Some(0) {
            return bad("'evals_per_run' must be at least 1 (the final evaluation)".into());
        }
        Ok(())
    }

    /// The listed shapes, then the grid of widths × depths, without repeats.
    pub fn shapes(&self) -> Vec<Shape> {
        let mut out: Vec<Shape> = self.models.iter().map(ModelEntry::shape).collect();
        for &hidden in &self.widths {
            for &layers in &self.depths {
                out.push(Shape {
                    hidden,
                    layers,
                    heads: None,
                    ffn: None,
                });
            }
        }
        let mut seen = Vec::new();
        out.retain(|s| {
            let new = !seen.contains(s);
            seen.push(*s);
            new
        });
        out
    }

    /// Every run, resolved against the base preset and fitted to the data.
    pub fn expand(&self, store: &TokenStore) -> Result<Vec<PlannedRun>, ScalingError> {
        let base =
            Config::resolve(&self.preset, &self.set).map_err(|source| ScalingError::Config {
                run: "(base preset)".into(),
                source,
            })?;
        let head_dim = self
            .head_dim
            .unwrap_or(base.model.hidden / base.model.heads);
        let ffn_ratio = self
            .ffn_ratio
            .unwrap_or(base.model.ffn as f64 / base.model.hidden as f64);
        // The rate rules measure every width and batch against the base config's.
        let rules = RateRules {
            base_width: self.width_scaling.then_some(base.model.hidden),
            batch: self
                .batch_lr_scaling
                .map(|rule| (rule, base.train.batch_size)),
        };
        let batches: Vec<Option<usize>> = option_list(&self.batch_sizes);
        let lrs: Vec<Option<f64>> = option_list(&self.lrs);
        let shapes = self.shapes();
        let mut runs = Vec::new();
        for label in self.budget_levels() {
            for &shape in shapes
                .iter()
                .filter(|s| self.budgets_of(s).contains(&label))
            {
                for &batch in &batches {
                    for &lr in &lrs {
                        runs.push(self.plan_one(
                            store, shape, &label, batch, lr, head_dim, ffn_ratio, rules,
                        )?);
                    }
                }
            }
        }
        let mut names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(ScalingError::Spec {
                path: PathBuf::from("(sweep spec)"),
                reason: format!(
                    "two runs would share the folder runs/{}: list each shape and budget once",
                    w[0]
                ),
            });
        }
        Ok(runs)
    }

    /// The budgets a shape runs at: its table's own, else the top-level list.
    fn budgets_of(&self, shape: &Shape) -> &[String] {
        self.models
            .iter()
            .find(|m| m.shape() == *shape)
            .and_then(|m| m.budgets.as_deref())
            .unwrap_or(&self.budgets)
    }

    /// Every budget of the sweep once, the top-level ones first, in the order
    /// written: the order the runs go in.
    fn budget_levels(&self) -> Vec<String> {
        let own = self.models.iter().filter_map(|m| m.budgets.as_ref());
        let mut levels: Vec<String> = Vec::new();
        for b in self.budgets.iter().chain(own.flatten()) {
            if !levels.contains(b) {
                levels.push(b.clone());
            }
        }
        levels
    }

    #[allow(clippy::too_many_arguments)]
    fn plan_one(
        &self,
        store: &TokenStore,
        shape: Shape,
        label: &str,
        batch: Option<usize>,
        lr: Option<f64>,
        head_dim: usize,
        ffn_ratio: f64,
        rules: RateRules,
    ) -> Result<PlannedRun, ScalingError> {
        // Heads and FFN width join the name when the spec gives them, so
        // that shapes differing only there get folders of their own.
        let mut name = format!("h{}-l{}", shape.hidden, shape.layers);
        if let Some(h) = shape.heads {
            name.push_str(&format!("-{h}heads"));
        }
        if let Some(f) = shape.ffn {
            name.push_str(&format!("-ffn{f}"));
        }
        name.push_str(&format!("-{}", slug(label)));
        let heads = shape.heads.unwrap_or((shape.hidden / head_dim).max(1));
        // A gated feed-forward needs an even width.
        let ffn = shape
            .ffn
            .unwrap_or(((ffn_ratio * shape.hidden as f64 / 2.0).round() as usize).max(1) * 2);
        let mut sets = self.set.clone();
        sets.extend([
            format!("model.hidden={}", shape.hidden),
            format!("model.layers={}", shape.layers),
            format!("model.heads={heads}"),
            format!("model.ffn={ffn}"),
        ]);
        if let Some(b) = batch {
            name.push_str(&format!("-b{b}"));
            sets.push(format!("train.batch_size={b}"));
        }
        if let Some(lr) = lr {
            name.push_str(&format!("-lr{lr:e}"));
            sets.push(format!("train.lr={lr}"));
        }
        let config_err = |source| ScalingError::Config {
            run: name.clone(),
            source,
        };
        let mut config = Config::resolve(&self.preset, &sets).map_err(config_err)?;
        if let Some(base_width) = rules.base_width {
            let ratio = base_width as f64 / shape.hidden as f64;
            config.train.lr *= ratio;
            config.model.init_std *= ratio.sqrt() as f32;
        }
        if let (Some((rule, base_batch)), Some(b)) = (rules.batch, batch) {
            config.train.lr *= rule.factor(b, base_batch);
        }
        crate::train::fit_to_data(&mut config, store).map_err(|source| ScalingError::Train {
            run: name.clone(),
            source,
        })?;
        let counts = Counts::of(&config);
        let budget = match Budget::parse(label).expect("checked at load") {
            Budget::Flops(c) => format!("{} tokens", (c / counts.flops_per_token).ceil()),
            _ => label.to_string(),
        };
        config.train.budget =
            BudgetSetting::parse(&budget).expect("a checked budget or a token count");
        if let Some(k) = self.evals_per_run {
            if let Some(steps) = planned_steps(&config, store.seq_len()) {
                config.train.eval_every = steps.div_ceil(k as u64).max(1) as usize;
            }
        }
        config.validate().map_err(config_err)?;
        Ok(PlannedRun {
            name,
            config,
            budget_label: label.to_string(),
            counts,
        })
    }
}

/// Optimizer steps of a run at its full batch, when its budget fixes them.
fn planned_steps(config: &Config, seq_len: usize) -> Option<u64> {
    let batch_tokens = (config.train.batch_size * seq_len) as f64;
    match config.train.budget.get() {
        Budget::Steps(s) => Some(s),
        Budget::Tokens(t) => Some((t / batch_tokens).ceil() as u64),
        Budget::Flops(_) | Budget::Seconds(_) => None,
    }
}

fn option_list<T: Copy>(values: &[T]) -> Vec<Option<T>> {
    if values.is_empty() {
        vec![None]
    } else {
        values.iter().copied().map(Some).collect()
    }
}

/// "1e14 flops" → "1e14flops": a budget as part of a folder name.
fn slug(label: &str) -> String {
    label
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SweepSpec, ScalingError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sweep.toml");
        std::fs::write(&path, text).unwrap();
        SweepSpec::load(&path)
    }

    #[test]
    fn evals_per_run_of_zero_is_refused() {
        let err = parse(
            "preset = \"tiny\"\ndata = \"d\"\nbudgets = [\"9 steps\"]\nevals_per_run = 0\nwidths = [8]\ndepths = [1]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("'evals_per_run' must be at least 1"), "{err}");
    }

    #[test]
    fn grid_and_listed_shapes_without_repeats() {
        let spec = parse(
            "preset = \"tiny\"\ndata = \"d\"\nbudgets = [\"10 steps\"]\nwidths = [32, 64]\ndepths = [1, 2]\n\
             [[models]]\nhidden = 32\nlayers = 1\n[[models]]\nhidden = 96\nlayers = 3\nheads = 3\n",
        )
        .unwrap();
        let shapes: Vec<(usize, usize)> =
            spec.shapes().iter().map(|s| (s.hidden, s.layers)).collect();
        assert_eq!(shapes, vec![(32, 1), (96, 3), (32, 2), (64, 1), (64, 2)]);
        assert!(spec.data.ends_with("d") && spec.data.is_absolute());
    }

    #[test]
    fn bad_specs_name_the_field() {
        let e = parse(
            "preset = \"tiny\"\ndata = \"d\"\nbudgets = [\"soon\"]\nwidths=[32]\ndepths=[1]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("budgets") && e.contains("soon"), "{e}");
        let e = parse("preset = \"tiny\"\ndata = \"d\"\nbudgets = [\"1 steps\"]\nwidths=[32]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("'widths' and 'depths'"), "{e}");
        let e = parse("preset = \"tiny\"\ndata = \"d\"\nbudget = [\"1 steps\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("budget"), "{e}");
    }

    #[test]
    fn a_model_may_have_its_own_budgets_and_runs_go_level_by_level() {
        let spec = parse(
            "preset = \"tiny\"\ndata = \"d\"\nbudgets = [\"1e12 flops\", \"1e13 flops\"]\n\
             [[models]]\nhidden = 32\nlayers = 1\nbudgets = [\"1e12 flops\"]\n\
             [[models]]\nhidden = 64\nlayers = 2\nbudgets = [\"1e13 flops\", \"1e14 flops\"]\n\
             [[models]]\nhidden = 96\nlayers = 2\n",
        )
        .unwrap();
        assert_eq!(
            spec.budget_levels(),
            ["1e12 flops", "1e13 flops", "1e14 flops"]
        );
        let [small, mid, large] = spec.shapes()[..] else {
            panic!("three shapes")
        };
        assert_eq!(spec.budgets_of(&small), ["1e12 flops"]);
        assert_eq!(spec.budgets_of(&mid), ["1e13 flops", "1e14 flops"]);
        assert_eq!(spec.budgets_of(&large), ["1e12 flops", "1e13 flops"]);

        let e = parse(
            "preset = \"tiny\"\ndata = \"d\"\nbudgets = [\"1e12 flops\"]\n\
             [[models]]\nhidden = 32\nlayers = 1\nbudgets = [\"lots\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("budgets") && e.contains("lots"), "{e}");
        let e = parse(
            "preset = \"tiny\"\ndata = \"d\"\nbudgets = [\"1e12 flops\"]\n\
             [[models]]\nhidden = 32\nlayers = 1\nbudgets = []\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("empty 'budgets'"), "{e}");
    }

    #[test]
    fn slugs_are_folder_safe() {
        assert_eq!(slug("1e14 flops"), "1e14flops");
        assert_eq!(slug("4M tokens"), "4mtokens");
        assert_eq!(slug("1.5h"), "1.5h");
    }
}
