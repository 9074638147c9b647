//! Held-out evaluation: masked-LM (or causal LM) loss and prediction accuracy
//! on the validation split, with masks fixed by the seed so that evaluations
//! at different steps, and of different runs, see the same predictions.

pub mod glue;
pub mod guess;
pub mod infer;

use crate::backend::Backend;
use crate::backend::IGNORE;
use crate::data::batches::{read_sequences, HostBatch, MaskKey, Objective};
use crate::data::{Split, TokenStore};
use crate::model::upload_batch;
use crate::model::{Activations, LossPass, Model};

/// Held-out sequences a full evaluation reads at most: every split of the
/// development and built-in corpora is smaller, so `cram eval` and the demo
/// score the whole split; a larger one is sampled to its first this many.
pub const FULL_EVAL_SEQUENCES: usize = 4096;

/// Micro-batches of `micro_batch` that cover the full evaluation set: the
/// whole validation split, or its first [`FULL_EVAL_SEQUENCES`].
pub fn full_eval_batches(store: &TokenStore, micro_batch: usize) -> usize {
    store
        .len(Split::Val)
        .min(FULL_EVAL_SEQUENCES)
        .div_ceil(micro_batch.max(1))
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalResult {
    /// Mean cross-entropy (nats) per predicted token.
    pub loss: f64,
    /// Fraction of predicted tokens whose arg-max is the target.
    pub accuracy: f64,
    pub predictions: usize,
    /// Held-out sequences scored, each once.
    pub sequences: usize,
}

/// Evaluates on the first `max_batches · acts.batch` sequences of the
/// validation split, each once: the whole split when it is that small.
/// Every selected position is masked: no prediction can copy its input, so
/// the loss measures what the model infers from context.
#[allow(clippy::too_many_arguments)]
pub fn evaluate<B: Backend>(
    be: &B,
    model: &Model,
    params: &B::Buf,
    acts: &mut Activations<B>,
    store: &TokenStore,
    objective: &Objective,
    max_batches: usize,
    seed: u64,
) -> EvalResult {
    // On the CPU, inside rayon's pool (`Backend::run_job`); inline when the
    // caller is already there (a training run's periodic evaluation).
    be.run_job(|| {
        let n = store.len(Split::Val);
        let mb = acts.batch;
        let batches = max_batches.min(n.div_ceil(mb)).max(1);
        let (mut loss_sum, mut correct, mut count) = (0f64, 0usize, 0usize);
        let objective = objective.for_eval();
        let mut hits = None;
        for i in 0..batches {
            let tokens = read_sequences(store, Split::Val, (i * mb..(i + 1) * mb).map(|j| j % n));
            let mut hb = objective.make_batch(
                tokens,
                store.seq_len(),
                MaskKey::eval(seed),
                (i * mb) as u64,
            );
            ignore_repeats(&mut hb, n.saturating_sub(i * mb));
            let batch = upload_batch(be, &hb);
            // Accuracy on the device: only one number a row comes back.
            // Batches of a masked objective differ in their number of predictions.
            let hits = match hits.take() {
                Some(h) if be.len(&h) >= batch.predicted => hits.insert(h),
                _ => hits.insert(be.alloc(batch.predicted)),
            };
            let pass = LossPass::Hits(&mut *hits);
            model.forward_loss(be, params, acts, &batch, false, 0, pass);
            correct += be
                .read(hits, 0, hb.targets.len())
                .iter()
                .filter(|&&h| h > 0.0)
                .count();
            let head = &acts.head;
            loss_sum += be
                .download(&head.losses)
                .iter()
                .map(|&l| l as f64)
                .sum::<f64>();
            count += hb.counted;
        }
        EvalResult {
            loss: loss_sum / count.max(1) as f64,
            accuracy: correct as f64 / count.max(1) as f64,
            predictions: count,
            sequences: n.min(batches * mb),
        }
    })
}

/// A last batch that wraps around the split repeats its first sequences
/// (a batch has a fixed number of rows): their predictions are ignored, so
/// that every held-out sequence counts once and the result is that of the
/// stated set, whatever the micro-batch.
fn ignore_repeats(hb: &mut HostBatch, real_rows: usize) {
    if real_rows >= hb.batch {
        return;
    }
    let first_repeat = (real_rows * hb.seq) as u32;
    match &hb.predict {
        Some(rows) => {
            for (target, &row) in hb.targets.iter_mut().zip(rows) {
                if row >= first_repeat {
                    *target = IGNORE;
                }
            }
        }
        None => hb.targets[first_repeat as usize..].fill(IGNORE),
    }
    hb.counted = hb.targets.iter().filter(|&&t| t != IGNORE).count();
}

/// Cross-entropy (nats per token) of the unigram model of the training split,
/// evaluated on the validation split's tokens: the loss a model that ignores
/// context would reach, the bar a trained model must clear.
pub fn unigram_cross_entropy(store: &TokenStore) -> f64 {
    let (train, val, skip) = unigram_tables(store);
    // Add-one smoothing so that a validation token unseen in training has a finite cost.
    let total: f64 = train
        .iter()
        .enumerate()
        .filter(|(t, _)| !skip(*t))
        .map(|(_, &c)| c as f64 + 1.0)
        .sum();
    let (mut nll, mut n) = (0f64, 0f64);
    for (t, &c) in val.iter().enumerate() {
        if c == 0 || skip(t) {
            continue;
        }
        let p = (train[t] as f64 + 1.0) / total;
        nll -= c as f64 * p.ln();
        n += c as f64;
    }
    nll / n.max(1.0)
}

/// Accuracy of always predicting the training split's most frequent token,
/// on the validation split's tokens: where a masked-LM's accuracy sits while
/// its top prediction is still that one token, whatever its loss.
pub fn unigram_accuracy(store: &TokenStore) -> f64 {
    let (train, val, skip) = unigram_tables(store);
    let mode = (0..train.len())
        .filter(|&t| !skip(t))
        .max_by_key(|&t| (train[t], std::cmp::Reverse(t)));
    let n: u64 = (0..val.len()).filter(|&t| !skip(t)).map(|t| val[t]).sum();
    mode.map_or(0.0, |t| val[t] as f64 / n.max(1) as f64)
}

/// Token counts of the training and validation splits, and which ids are
/// special tokens (never a prediction target).
fn unigram_tables(store: &TokenStore) -> (Vec<u64>, Vec<u64>, impl Fn(usize) -> bool) {
    let special = store.special();
    let specials = [special.pad, special.cls, special.sep, special.mask];
    (
        store.unigram_counts(Split::Train),
        store.unigram_counts(Split::Val),
        move |t: usize| specials.contains(&(t as u32)),
    )
}

/// The held-out data must exist and fit the run's model: token ids below its
/// vocabulary, sequences no longer than its positions. Otherwise the model
/// would index past its tables (a panic, or on the GPU a fault).
pub fn check_data_fits(
    store: &TokenStore,
    cfg: &crate::config::Config,
    data: &std::path::Path,
    run: &std::path::Path,
) -> Result<(), String> {
    if store.len(Split::Val) == 0 {
        return Err(format!(
            "{} holds no held-out sequences to evaluate on (its validation split is empty)",
            data.display()
        ));
    }
    if store.vocab_size() > cfg.model.vocab_size {
        return Err(format!(
            "{} has a vocabulary of {} tokens and the model in {} has {}: evaluate on data prepared \
             with the run's tokenizer (cram data prepare --tokenizer {}/tokenizer.json)",
            data.display(),
            store.vocab_size(),
            run.display(),
            cfg.model.vocab_size,
            run.display()
        ));
    }
    if store.seq_len() > cfg.model.max_positions {
        return Err(format!(
            "{} holds sequences of {} tokens and the model in {} has {} positions: prepare the data \
             with --seq-len {} or less",
            data.display(),
            store.seq_len(),
            run.display(),
            cfg.model.max_positions,
            cfg.model.max_positions
        ));
    }
    Ok(())
}
