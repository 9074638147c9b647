//! Training and evaluation batches from packed token shards: masked-LM
//! masking (Devlin et al.'s 80/10/10 rule, a fixed number of positions per
//! sequence, optionally whole words) and next-token targets for causal LM.
//!
//! Everything here is a pure function of `(seed, position)`: the data order is
//! a ChaCha permutation per epoch (or the stored order, for data sorted on
//! purpose) and each sequence's masks come from a ChaCha stream keyed by its
//! position in the stream ([`MaskKey`]), so a resumed run sees the same
//! batches without storing any RNG state, and the masked stream does not
//! depend on how it is cut into steps and micro-batches: `cram data stream`
//! writes exactly what training reads, for a reference trainer to read too.

use std::sync::Arc;

use super::whole_word::pick_whole_words;
use super::{DataError, SpecialTokens, Split, TokenStore};
use crate::backend::IGNORE;
use crate::config::{ObjectiveConfig, ObjectiveKind};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One micro-batch on the host, ready to upload.
#[derive(Debug, Clone, PartialEq)]
pub struct HostBatch {
    pub batch: usize,
    pub seq: usize,
    pub ids: Vec<u32>,
    /// One target per predicted row; [`IGNORE`] where no prediction counts.
    pub targets: Vec<u32>,
    /// Flat row indices (`b·seq + t`) that get logits; `None` = every row.
    pub predict: Option<Vec<u32>>,
    /// Targets that are not [`IGNORE`].
    pub counted: usize,
}

/// How inputs become predictions.
#[derive(Debug, Clone)]
pub struct Objective {
    pub kind: ObjectiveKind,
    pub mask_rate: f32,
    pub sparse: bool,
    pub special: SpecialTokens,
    pub vocab_size: usize,
    /// Replace every selected position by [MASK] (evaluation) instead of the
    /// 80/10/10 rule (training), so that no prediction can copy its input.
    pub mask_all: bool,
    /// Whole-word masking: for each token id, whether it continues the word
    /// before it. `None`: positions are chosen token by token.
    pub word_continuations: Option<Arc<[bool]>>,
}

impl Objective {
    /// Token-level masking; `for_store` also honours `whole_word_masking`.
    pub fn new(cfg: &ObjectiveConfig, special: SpecialTokens, vocab_size: usize) -> Objective {
        Objective {
            kind: cfg.kind,
            mask_rate: cfg.mask_rate,
            sparse: cfg.sparse_prediction,
            special,
            vocab_size,
            mask_all: false,
            word_continuations: None,
        }
    }

    /// The objective for a prepared dataset: its special tokens and
    /// vocabulary, and, when the config asks for whole-word masking, the
    /// word structure of its tokenizer.
    pub fn for_store(cfg: &ObjectiveConfig, store: &TokenStore) -> Result<Objective, DataError> {
        let mut objective = Objective::new(cfg, store.special(), store.vocab_size());
        if cfg.whole_word_masking && cfg.kind == ObjectiveKind::Mlm {
            objective.word_continuations = Some(store.word_continuations()?.into());
        }
        Ok(objective)
    }

    /// The same objective for held-out evaluation: every selected position masked.
    pub fn for_eval(&self) -> Objective {
        Objective {
            mask_all: true,
            ..self.clone()
        }
    }

    /// Positions masked per sequence of length `seq` (the [CLS] slot excluded).
    pub fn masks_per_sequence(&self, seq: usize) -> usize {
        ((seq.saturating_sub(1)) as f32 * self.mask_rate)
            .round()
            .max(1.0) as usize
    }

    fn is_special(&self, token: u32) -> bool {
        let s = &self.special;
        token == s.pad || token == s.cls || token == s.sep || token == s.mask
    }

    /// Builds a batch from `batch` sequences laid out back to back in
    /// `tokens`; row `b` is masked with `key.rng(first + b)`, `first` being
    /// the stream position of the first row.
    pub fn make_batch(&self, tokens: Vec<u32>, seq: usize, key: MaskKey, first: u64) -> HostBatch {
        match self.kind {
            ObjectiveKind::Mlm => self.mask(tokens, seq, key, first),
            ObjectiveKind::Causal => self.shift(tokens, seq),
        }
    }

    fn mask(&self, mut ids: Vec<u32>, seq: usize, key: MaskKey, first: u64) -> HostBatch {
        let batch = ids.len() / seq;
        let k = self.masks_per_sequence(seq);
        let first_ordinary = 5u32.min(self.vocab_size as u32 - 1);
        let mut chosen: Vec<(usize, u32)> = Vec::with_capacity(batch * k);
        let mut candidates = Vec::with_capacity(seq);
        for b in 0..batch {
            let rng = &mut key.rng(first + b as u64);
            let row = &mut ids[b * seq..(b + 1) * seq];
            candidates.clear();
            let picked: &[usize] = match &self.word_continuations {
                Some(continues) => {
                    let candidate = |t: u32| !self.is_special(t);
                    pick_whole_words(row, k, candidate, continues, rng, &mut candidates);
                    &candidates
                }
                None => {
                    candidates.extend((0..seq).filter(|&t| !self.is_special(row[t])));
                    let take = k.min(candidates.len());
                    let (picked, _) = candidates.partial_shuffle(rng, take);
                    picked.sort_unstable();
                    picked
                }
            };
            for &t in picked.iter() {
                let original = row[t];
                let r: f32 = rng.random();
                if self.mask_all || r < 0.8 {
                    row[t] = self.special.mask;
                } else if r < 0.9 {
                    row[t] = rng.random_range(first_ordinary..self.vocab_size as u32);
                }
                chosen.push((b * seq + t, original));
            }
        }
        let counted = chosen.len();
        if self.sparse {
            HostBatch {
                batch,
                seq,
                ids,
                targets: chosen.iter().map(|&(_, tok)| tok).collect(),
                predict: Some(chosen.iter().map(|&(row, _)| row as u32).collect()),
                counted,
            }
        } else {
            let mut targets = vec![IGNORE; batch * seq];
            for &(row, tok) in &chosen {
                targets[row] = tok;
            }
            HostBatch {
                batch,
                seq,
                ids,
                targets,
                predict: None,
                counted,
            }
        }
    }

    fn shift(&self, ids: Vec<u32>, seq: usize) -> HostBatch {
        let batch = ids.len() / seq;
        let mut targets = vec![IGNORE; ids.len()];
        for b in 0..batch {
            for t in 0..seq - 1 {
                let next = ids[b * seq + t + 1];
                if next != self.special.pad {
                    targets[b * seq + t] = next;
                }
            }
        }
        let counted = targets.iter().filter(|&&t| t != IGNORE).count();
        HostBatch {
            batch,
            seq,
            ids,
            targets,
            predict: None,
            counted,
        }
    }
}

/// A deterministic stream of training sequences: epoch e visits every
/// sequence once in the order of a permutation seeded by `(seed, e)`, or in
/// stored order (for data sorted on purpose, such as the unigram sort).
pub struct Order {
    seed: u64,
    len: usize,
    shuffle: bool,
    epoch: u64,
    perm: Vec<u32>,
}

impl Order {
    /// A fresh permutation every epoch.
    pub fn new(seed: u64, len: usize) -> Order {
        let mut order = Order {
            seed,
            len,
            shuffle: true,
            epoch: u64::MAX,
            perm: Vec::new(),
        };
        order.load_epoch(0);
        order
    }

    /// Every epoch in stored order.
    pub fn in_stored_order(len: usize) -> Order {
        Order {
            seed: 0,
            len,
            shuffle: false,
            epoch: 0,
            perm: Vec::new(),
        }
    }

    /// `data.keep_order` chooses between the two.
    pub fn for_training(seed: u64, len: usize, keep_order: bool) -> Order {
        if keep_order {
            Order::in_stored_order(len)
        } else {
            Order::new(seed, len)
        }
    }

    fn load_epoch(&mut self, epoch: u64) {
        if self.epoch == epoch || !self.shuffle {
            return;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0x5EED_0DE5);
        rng.set_stream(epoch);
        self.perm = (0..self.len as u32).collect();
        self.perm.shuffle(&mut rng);
        self.epoch = epoch;
    }

    /// The sequence index at global position `pos` (sequences consumed so far).
    pub fn at(&mut self, pos: u64) -> usize {
        let within = (pos % self.len as u64) as usize;
        if !self.shuffle {
            return within;
        }
        self.load_epoch(pos / self.len as u64);
        self.perm[within] as usize
    }
}

/// Where a sequence's masks come from: one ChaCha stream per (seed, split,
/// position in the split's stream). Training positions count sequences
/// consumed since the start of the run (each epoch gets fresh masks);
/// evaluation positions index the validation split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaskKey {
    seed: u64,
    base: u64,
}

impl MaskKey {
    /// Evaluation streams start here, far from any training position.
    const EVAL_BASE: u64 = 1 << 62;

    pub fn train(seed: u64) -> MaskKey {
        MaskKey { seed, base: 0 }
    }

    pub fn eval(seed: u64) -> MaskKey {
        MaskKey {
            seed,
            base: Self::EVAL_BASE,
        }
    }

    /// The RNG of the sequence at `position`.
    pub fn rng(&self, position: u64) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(self.base.wrapping_add(position));
        rng
    }
}

/// Reads `count` sequences of `split` at the given indices, back to back.
pub fn read_sequences(
    store: &TokenStore,
    split: Split,
    indices: impl Iterator<Item = usize>,
) -> Vec<u32> {
    let seq = store.seq_len();
    let mut out = Vec::new();
    for i in indices {
        let start = out.len();
        out.resize(start + seq, 0);
        store.read(split, i, &mut out[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objective(kind: ObjectiveKind, sparse: bool) -> Objective {
        Objective {
            kind,
            mask_rate: 0.25,
            sparse,
            special: SpecialTokens::TRAINED,
            vocab_size: 100,
            mask_all: false,
            word_continuations: None,
        }
    }

    fn sequences(batch: usize, seq: usize) -> Vec<u32> {
        (0..batch)
            .flat_map(|b| {
                (0..seq).map(move |t| match t {
                    0 => 2,
                    t if t % 9 == 0 => 3,
                    t => 10 + ((b * 7 + t) % 80) as u32,
                })
            })
            .collect()
    }

    #[test]
    fn mlm_masks_fixed_count_of_ordinary_tokens_80_10_10() {
        let obj = objective(ObjectiveKind::Mlm, true);
        let (batch, seq) = (64, 65);
        let original = sequences(batch, seq);
        let hb = obj.make_batch(original.clone(), seq, MaskKey::train(1), 0);
        let k = obj.masks_per_sequence(seq);
        assert_eq!(k, 16);
        assert_eq!(hb.counted, batch * k);
        let rows = hb.predict.as_ref().unwrap();
        let (mut masked, mut kept) = (0, 0);
        for (j, &row) in rows.iter().enumerate() {
            let row = row as usize;
            assert_eq!(hb.targets[j], original[row], "target is the original token");
            assert!(original[row] >= 10, "special tokens are never selected");
            if hb.ids[row] == 4 {
                masked += 1;
            } else if hb.ids[row] == original[row] {
                kept += 1;
            }
        }
        let n = rows.len() as f64;
        assert!(
            (masked as f64 / n - 0.8).abs() < 0.05,
            "masked {masked}/{n}"
        );
        assert!((kept as f64 / n) > 0.05, "kept {kept}/{n}");
        // Unselected positions are untouched.
        let selected: std::collections::HashSet<u32> = rows.iter().copied().collect();
        for (i, (&a, &b)) in hb.ids.iter().zip(&original).enumerate() {
            if !selected.contains(&(i as u32)) {
                assert_eq!(a, b);
            }
        }
    }

    #[test]
    fn eval_masks_every_selected_position() {
        let obj = objective(ObjectiveKind::Mlm, true).for_eval();
        let hb = obj.make_batch(sequences(8, 33), 33, MaskKey::train(1), 0);
        for &row in hb.predict.as_ref().unwrap() {
            assert_eq!(hb.ids[row as usize], 4);
        }
    }

    #[test]
    fn dense_mlm_targets_every_row() {
        let obj = objective(ObjectiveKind::Mlm, false);
        let hb = obj.make_batch(sequences(4, 32), 32, MaskKey::train(1), 0);
        assert!(hb.predict.is_none());
        assert_eq!(hb.targets.len(), 4 * 32);
        assert_eq!(
            hb.targets.iter().filter(|&&t| t != IGNORE).count(),
            hb.counted
        );
        assert_eq!(hb.counted, 4 * obj.masks_per_sequence(32));
    }

    #[test]
    fn causal_targets_are_next_tokens() {
        let obj = objective(ObjectiveKind::Causal, false);
        let ids = vec![2, 11, 12, 3, 13, 0, 0];
        let hb = obj.make_batch(ids, 7, MaskKey::train(0), 0);
        assert_eq!(hb.targets, vec![11, 12, 3, 13, IGNORE, IGNORE, IGNORE]);
        assert_eq!(hb.counted, 4);
    }

    #[test]
    fn order_is_a_permutation_per_epoch_and_reproducible() {
        let mut a = Order::new(3, 10);
        let first: Vec<usize> = (0..10).map(|p| a.at(p)).collect();
        let mut sorted = first.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        let second: Vec<usize> = (10..20).map(|p| a.at(p)).collect();
        assert_ne!(first, second);
        let mut b = Order::new(3, 10);
        assert_eq!(b.at(13), second[3]);
        assert_eq!(b.at(2), first[2]);
    }

    #[test]
    fn stored_order_repeats_every_epoch_and_resumes_anywhere() {
        let mut order = Order::for_training(3, 5, true);
        let seen: Vec<usize> = (0..12).map(|p| order.at(p)).collect();
        assert_eq!(seen, [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]);
        let mut resumed = Order::for_training(3, 5, true);
        assert_eq!(resumed.at(7), 2);
        let mut shuffled = Order::for_training(3, 5, false);
        let mut plain = Order::new(3, 5);
        assert!((0..12).all(|p| shuffled.at(p) == plain.at(p)));
    }

    #[test]
    fn whole_word_masking_keeps_the_count_and_masks_words_together() {
        // Ids 10..50 start words, 50..100 continue them.
        let continues: Vec<bool> = (0..100).map(|id| id >= 50).collect();
        let obj = Objective {
            word_continuations: Some(continues.into()),
            ..objective(ObjectiveKind::Mlm, true)
        };
        let (batch, seq) = (16, 33);
        let rows: Vec<u32> = (0..batch * seq)
            .map(|i| match i % seq {
                0 => 2,
                t if t % 3 == 1 => 10 + (i % 40) as u32,
                _ => 50 + (i % 50) as u32,
            })
            .collect();
        let hb = obj.make_batch(rows.clone(), seq, MaskKey::train(4), 0);
        let k = obj.masks_per_sequence(seq);
        assert_eq!(k, 8);
        assert_eq!(hb.counted, batch * k, "the same count as token masking");
        let picked: std::collections::HashSet<u32> =
            hb.predict.as_ref().unwrap().iter().copied().collect();
        for b in 0..batch {
            // Words are (1,2,3), (4,5,6), ..., (31,32): 8 positions are two
            // whole words and the last one, or a cut word otherwise.
            let mut cut = 0;
            for start in (1..seq).step_by(3) {
                let word: Vec<bool> = (start..(start + 3).min(seq))
                    .map(|t| picked.contains(&((b * seq + t) as u32)))
                    .collect();
                if word.iter().any(|&p| p) && !word.iter().all(|&p| p) {
                    cut += 1;
                    assert!(word[0], "a cut word keeps its leading pieces");
                }
            }
            assert!(cut <= 1, "row {b} has {cut} cut words");
        }
    }

    #[test]
    fn masks_depend_only_on_seed_and_position() {
        let obj = objective(ObjectiveKind::Mlm, true);
        let a = obj.make_batch(sequences(2, 33), 33, MaskKey::train(5), 7);
        let b = obj.make_batch(sequences(2, 33), 33, MaskKey::train(5), 7);
        let c = obj.make_batch(sequences(2, 33), 33, MaskKey::train(5), 9);
        let e = obj.make_batch(sequences(2, 33), 33, MaskKey::eval(5), 7);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, e);
        // A row's masks depend on its position, not on the batch it is in.
        let seq = 33;
        let one = obj.make_batch(sequences(2, seq)[seq..].to_vec(), seq, MaskKey::train(5), 8);
        assert_eq!(one.ids, a.ids[seq..]);
    }
}
