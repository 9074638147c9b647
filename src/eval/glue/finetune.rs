//! Fine-tuning one task from the pretrained parameters, and predicting its
//! evaluation splits. The backbone (the pretrained flat buffer, copied) and
//! the head (its own flat buffer) each get AdamW state; both are stepped with
//! one learning rate and clipped by one global gradient norm.

use super::encode::{eval_batches, host_batch, train_batches, Batch, Encoded};
use super::head::{Head, HeadActs, Targets};
use super::metrics::Predictions;
use super::tasks::{Label, Labels, Task};
use super::GlueError;
use crate::backend::argmax;
use crate::backend::{AdamW, Backend};
use crate::config::{ScheduleKind, TrainConfig};
use crate::model::{Activations, Model};
use crate::optim::{Weights, STAT_LOSS};
use crate::train::{schedule, Step, StepError};
use indicatif::ProgressBar;
use std::collections::HashMap;

/// The fine-tuning recipe: what one [`Protocol`] fixes. The default is the
/// paper's protocol.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Recipe {
    pub epochs: usize,
    /// Epochs of the large tasks (SST-2, QNLI, MNLI, QQP) when they differ.
    pub large_task_epochs: Option<usize>,
    pub batch_size: usize,
    pub lr: f64,
    /// Fraction of the steps spent warming up.
    pub warmup: f64,
    pub schedule: ScheduleKind,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// Global gradient-norm clip (0: off).
    pub max_norm: f32,
    pub dropout: f32,
}

/// A named GLUE protocol, so that two tables are compared only when they
/// name the same one. Both encode `[CLS] a [SEP] (b [SEP])` truncated to the
/// run's sequence length and pool [CLS] → dense → GELU → dropout → linear
/// (squared error for STS-B), with one seed unless `--seeds` says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// Cramming's own (its `eval/GLUE_sane` config): 5 epochs, batch 16,
    /// AdamW at 4e-5 with β = (0.9, 0.98), ε = 1e-6, no weight decay and no
    /// clipping, 10% warm-up then cosine decay to 0, dropout 0.1.
    CrammingPaper,
    /// A short protocol for quick comparisons (issue 15): 3 epochs (1 for
    /// SST-2, QNLI, MNLI and QQP), batch 32, AdamW at 1e-4 with weight decay
    /// 0.01, 10% linear warm-up then linear decay, dropout 0.1; β, ε and the
    /// clip are the Hugging Face Trainer's defaults, (0.9, 0.999), 1e-8, 1.0.
    CrammingShort,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::CrammingPaper => "cramming-paper",
            Protocol::CrammingShort => "cramming-short",
        }
    }

    pub fn recipe(self) -> Recipe {
        match self {
            Protocol::CrammingPaper => Recipe {
                epochs: 5,
                large_task_epochs: None,
                batch_size: 16,
                lr: 4e-5,
                warmup: 0.1,
                schedule: ScheduleKind::Cosine,
                beta1: 0.9,
                beta2: 0.98,
                eps: 1e-6,
                weight_decay: 0.0,
                max_norm: 0.0,
                dropout: 0.1,
            },
            Protocol::CrammingShort => Recipe {
                epochs: 3,
                large_task_epochs: Some(1),
                batch_size: 32,
                lr: 1e-4,
                warmup: 0.1,
                schedule: ScheduleKind::Linear,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.01,
                max_norm: 1.0,
                dropout: 0.1,
            },
        }
    }
}

impl Default for Recipe {
    fn default() -> Self {
        Protocol::CrammingPaper.recipe()
    }
}

impl Recipe {
    /// The recipe of one task: the large tasks' own epoch count, if any.
    pub fn for_task(&self, task: Task) -> Recipe {
        Recipe {
            epochs: match self.large_task_epochs {
                Some(epochs) if task.is_large() => epochs,
                _ => self.epochs,
            },
            ..self.clone()
        }
    }

    /// The learning rate at progress `p` ∈ [0, 1] through the fine-tuning steps.
    fn learning_rate(&self, base: &TrainConfig, p: f64) -> f64 {
        let cfg = TrainConfig {
            schedule: self.schedule,
            lr: self.lr,
            warmup: self.warmup,
            final_lr: 0.0,
            ..base.clone()
        };
        schedule::learning_rate(&cfg, p)
    }

    /// AdamW at `lr` for the 1-based `step`; each parameter group applies its own `decay_len`.
    fn adamw(&self, lr: f64, step: u64) -> AdamW {
        AdamW {
            lr: lr as f32,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
            step,
            decay_len: 0,
            max_norm: self.max_norm,
            // A non-finite step is skipped; the epoch's loss check then stops the run.
            skipped_slot: None,
        }
    }
}

/// What a fine-tuning run needs besides the data.
pub struct Setup<'a, B: Backend> {
    pub be: &'a B,
    /// The backbone with fine-tuning dropout.
    pub model: &'a Model,
    pub pretrained: &'a B::Buf,
    /// The pretraining config's train section, the base of the schedule.
    pub train_cfg: &'a TrainConfig,
    pub recipe: &'a Recipe,
    pub max_len: usize,
    pub pad: u32,
}

/// Buffers for each batch shape met, kept across steps: batches come in a
/// handful of shapes (one per length bucket, and the smaller last batches).
struct Buffers<B: Backend> {
    acts: HashMap<(usize, usize), Activations<B>>,
    head: HashMap<usize, HeadActs<B>>,
}

impl<B: Backend> Buffers<B> {
    fn get(
        &mut self,
        be: &B,
        model: &Model,
        head: &Head,
        rows: usize,
        seq: usize,
    ) -> (&mut Activations<B>, &mut HeadActs<B>) {
        let acts = self
            .acts
            .entry((rows, seq))
            .or_insert_with(|| Activations::new(be, &model.cfg, rows, seq));
        let h = self
            .head
            .entry(rows)
            .or_insert_with(|| HeadActs::new(be, head, rows));
        (acts, h)
    }
}

/// Number of optimizer steps of fine-tuning on `train`.
pub fn total_steps(train: &[Encoded], recipe: &Recipe, max_len: usize) -> u64 {
    let per_epoch = train_batches(train, recipe.batch_size, max_len, 0, 0).len();
    (per_epoch * recipe.epochs) as u64
}

/// A fine-tuned model: the backbone's and the head's parameters.
pub struct Finetuned<B: Backend> {
    params: B::Buf,
    head: Head,
    head_params: B::Buf,
    labels: Labels,
    /// Mean training loss over the last epoch.
    pub last_epoch_loss: f64,
}

fn upload_targets<B: Backend>(
    be: &B,
    labels: Labels,
    data: &[Encoded],
    batch: &Batch,
) -> Targets<B> {
    let members = batch.examples.iter().map(|&i| data[i].label);
    match labels {
        Labels::Classes(_) => {
            Targets::Classes(be.upload_ids(&members.map(Label::class).collect::<Vec<_>>()))
        }
        Labels::Score => Targets::Scores(be.upload(&members.map(Label::score).collect::<Vec<_>>())),
    }
}

/// Mixes a seed and a step into the seed of that step's dropout masks.
fn step_seed(seed: u64, step: u64) -> u64 {
    let z = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(step.wrapping_mul(0xBF58_476D_1CE4_E5B9));
    z ^ (z >> 29)
}

/// Fine-tunes on `train` with `seed` (head initialisation, data order,
/// dropout), advancing `bar` by one per step. `task` names the task in errors.
pub fn finetune<B: Backend>(
    s: &Setup<B>,
    task: &'static str,
    labels: Labels,
    train: &[Encoded],
    seed: u64,
    bar: &ProgressBar,
) -> Result<Finetuned<B>, GlueError> {
    let (be, model, recipe) = (s.be, s.model, s.recipe);
    let n = model.num_params();
    let mut backbone = Weights {
        params: be.alloc(n),
        grads: be.alloc(n),
        m: be.alloc(n),
        v: be.alloc(n),
        decay_len: model.layout.decay_len,
    };
    be.copy(&mut backbone.params, s.pretrained);
    let head = Head::new(model.cfg.hidden, labels.outputs(), recipe.dropout);
    let head_weights = Weights::new(
        be,
        &head.init_params(model.cfg.init_std, seed),
        head.decay_len,
    );
    // One step over both groups, clipped by their joint gradient norm.
    let mut groups = [backbone, head_weights];
    let mut buffers = Buffers {
        acts: HashMap::new(),
        head: HashMap::new(),
    };
    let mut stats = be.alloc(1);
    let mut step_fn = Step::alone();
    let total = total_steps(train, recipe, s.max_len).max(1);
    let mut step = 0u64;
    let mut last_epoch_loss = f64::NAN;
    for epoch in 0..recipe.epochs as u64 {
        let batches = train_batches(train, recipe.batch_size, s.max_len, seed, epoch);
        be.zero(&mut stats);
        for batch in &batches {
            let lr = recipe.learning_rate(s.train_cfg, step as f64 / total as f64);
            let rows = batch.examples.len();
            let hb = host_batch(train, batch, s.pad);
            let ids = be.upload_ids(&hb.ids);
            let cls = be.upload_ids(&hb.cls_rows);
            let targets = upload_targets(be, labels, train, batch);
            let (acts, hacts) = buffers.get(be, model, &head, rows, batch.seq);
            let dropout_seed = step_seed(seed, step);
            let scale = 1.0 / rows as f32;
            step += 1;
            let hp = recipe.adamw(lr, step);
            step_fn
                .run(
                    be,
                    &mut groups,
                    &mut stats,
                    0..1,
                    hp,
                    |(_, groups, stats, _)| {
                        let [backbone, head_w] = groups else {
                            unreachable!("two parameter groups")
                        };
                        let hidden = model.forward_hidden(
                            be,
                            &backbone.params,
                            acts,
                            &ids,
                            true,
                            dropout_seed,
                        );
                        head.forward(be, &head_w.params, hacts, hidden, &cls, true, dropout_seed);
                        head.loss(be, hacts, &targets, Some(scale));
                        be.sum_into(stats, STAT_LOSS, &hacts.losses, scale);
                        head.backward(
                            be,
                            &head_w.params,
                            &mut head_w.grads,
                            hacts,
                            &cls,
                            &mut acts.d_hidden,
                            true,
                            dropout_seed,
                        );
                        model.backward_hidden(
                            be,
                            &backbone.params,
                            &mut backbone.grads,
                            acts,
                            &ids,
                            true,
                        );
                    },
                )
                .map_err(|e| match e {
                    StepError::Device(error) => GlueError::Device { task, error },
                    StepError::Comm(_) => unreachable!("a step alone has no collective"),
                })?;
            bar.inc(1);
        }
        last_epoch_loss = be.read(&stats, STAT_LOSS, 1)[0] as f64 / batches.len().max(1) as f64;
        if !last_epoch_loss.is_finite() {
            return Err(GlueError::Diverged {
                task,
                seed,
                epoch: epoch + 1,
            });
        }
        bar.set_message(format!(
            "seed {seed} epoch {}/{} loss {last_epoch_loss:.4}",
            epoch + 1,
            recipe.epochs
        ));
    }
    let [backbone, head_weights] = groups;
    Ok(Finetuned {
        params: backbone.params,
        head,
        head_params: head_weights.params,
        labels,
        last_epoch_loss,
    })
}

/// Predictions of a fine-tuned model on `data`, in the order of `data`.
pub fn predict<B: Backend>(s: &Setup<B>, tuned: &Finetuned<B>, data: &[Encoded]) -> Predictions {
    let (be, model, head) = (s.be, s.model, &tuned.head);
    let mut buffers = Buffers {
        acts: HashMap::new(),
        head: HashMap::new(),
    };
    let outputs = head.outputs;
    let mut raw = vec![0f32; data.len() * outputs];
    for batch in eval_batches(data, s.recipe.batch_size, s.max_len) {
        let rows = batch.examples.len();
        let hb = host_batch(data, &batch, s.pad);
        let ids = be.upload_ids(&hb.ids);
        let cls = be.upload_ids(&hb.cls_rows);
        let (acts, hacts) = buffers.get(be, model, head, rows, batch.seq);
        let hidden = model.forward_hidden(be, &tuned.params, acts, &ids, false, 0);
        head.forward(be, &tuned.head_params, hacts, hidden, &cls, false, 0);
        let out = be.read(&hacts.out, 0, rows * outputs);
        for (row, &i) in batch.examples.iter().enumerate() {
            raw[i * outputs..(i + 1) * outputs]
                .copy_from_slice(&out[row * outputs..(row + 1) * outputs]);
        }
    }
    match tuned.labels {
        Labels::Score => Predictions::Scores {
            pred: raw.iter().map(|&x| x as f64).collect(),
            gold: data.iter().map(|e| e.label.score() as f64).collect(),
        },
        Labels::Classes(_) => Predictions::Classes {
            pred: raw
                .chunks_exact(outputs)
                .map(|r| argmax(r) as u32)
                .collect(),
            gold: data.iter().map(|e| e.label.class()).collect(),
        },
    }
}
