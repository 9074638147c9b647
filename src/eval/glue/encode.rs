//! Examples into token ids, and ids into padded batches.
//!
//! A sentence becomes `[CLS] a [SEP]`, a pair `[CLS] a [SEP] b [SEP]`, with
//! the run's tokenizer; a pair too long for `max_len` loses tokens from the
//! end of its longer sentence first (BERT's "longest first").
//!
//! The attention ops have no padding mask, so padding is visible to the
//! model. To keep an example's prediction independent of the examples it is
//! batched with, each example is padded to its own bucket (its length rounded
//! up to a multiple of [`BUCKET`], at most `max_len`) and batches are drawn
//! within a bucket. Training shuffles examples, cuts each bucket's share into
//! batches, then shuffles the batches; evaluation keeps the file order within
//! each bucket.

use super::tasks::{Example, Label, Task};
use super::GlueError;
use crate::data::SpecialTokens;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use tokenizers::Tokenizer;

/// Width of the length buckets.
pub const BUCKET: usize = 16;

/// An example as token ids.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub label: Label,
}

/// Encodes `examples` of `task`, truncated to `max_len` tokens.
pub fn encode(
    tokenizer: &Tokenizer,
    special: SpecialTokens,
    task: Task,
    examples: &[Example],
    max_len: usize,
) -> Result<Vec<Encoded>, GlueError> {
    let tokens = |texts: Vec<&str>| -> Result<Vec<Vec<u32>>, GlueError> {
        let encodings = tokenizer
            .encode_batch(texts, false)
            .map_err(|e| GlueError::Encode {
                task: task.title(),
                message: e.to_string(),
            })?;
        Ok(encodings
            .into_iter()
            .map(|e| e.get_ids().to_vec())
            .collect())
    };
    let a = tokens(examples.iter().map(|e| e.a.as_str()).collect())?;
    let b = if task.is_pair() {
        tokens(
            examples
                .iter()
                .map(|e| e.b.as_deref().unwrap_or(""))
                .collect(),
        )?
    } else {
        vec![Vec::new(); examples.len()]
    };
    Ok(a.into_iter()
        .zip(b)
        .zip(examples)
        .map(|((a, b), e)| Encoded {
            ids: join(special, a, task.is_pair().then_some(b), max_len),
            label: e.label,
        })
        .collect())
}

/// `[CLS] a [SEP] (b [SEP])`, with the longer of a and b cut first until it fits.
pub fn join(
    special: SpecialTokens,
    mut a: Vec<u32>,
    b: Option<Vec<u32>>,
    max_len: usize,
) -> Vec<u32> {
    let mut b = b;
    let specials = if b.is_some() { 3 } else { 2 };
    let budget = max_len.saturating_sub(specials);
    loop {
        let b_len = b.as_ref().map_or(0, Vec::len);
        if a.len() + b_len <= budget {
            break;
        }
        match b.as_mut() {
            Some(b) if b.len() > a.len() => b.truncate(b.len() - 1),
            _ => a.truncate(a.len() - 1),
        }
    }
    let mut ids = Vec::with_capacity(max_len);
    ids.push(special.cls);
    ids.extend(a);
    ids.push(special.sep);
    if let Some(b) = b {
        ids.extend(b);
        ids.push(special.sep);
    }
    ids
}

/// The padded length of an example of `len` tokens.
pub fn bucket_len(len: usize, max_len: usize) -> usize {
    len.div_ceil(BUCKET)
        .max(1)
        .saturating_mul(BUCKET)
        .min(max_len)
}

/// A batch: the examples (indices) and the length they are padded to.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub examples: Vec<usize>,
    pub seq: usize,
}

/// Cuts `order` into batches of at most `size` examples of one bucket each.
fn batches_by_bucket(data: &[Encoded], order: &[usize], size: usize, max_len: usize) -> Vec<Batch> {
    let mut buckets: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for &i in order {
        buckets
            .entry(bucket_len(data[i].ids.len(), max_len))
            .or_default()
            .push(i);
    }
    buckets
        .into_iter()
        .flat_map(|(seq, members)| {
            members
                .chunks(size)
                .map(|c| Batch {
                    examples: c.to_vec(),
                    seq,
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// One epoch's training batches, in an order fixed by `(seed, epoch)`.
pub fn train_batches(
    data: &[Encoded],
    size: usize,
    max_len: usize,
    seed: u64,
    epoch: u64,
) -> Vec<Batch> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut order: Vec<usize> = (0..data.len()).collect();
    order.shuffle(&mut rng);
    let mut batches = batches_by_bucket(data, &order, size, max_len);
    batches.shuffle(&mut rng);
    batches
}

/// Evaluation batches: every example once, file order within each bucket.
pub fn eval_batches(data: &[Encoded], size: usize, max_len: usize) -> Vec<Batch> {
    let order: Vec<usize> = (0..data.len()).collect();
    batches_by_bucket(data, &order, size, max_len)
}

/// A batch on the host: ids padded with `[PAD]`, and the row of each [CLS].
pub struct HostBatch {
    pub ids: Vec<u32>,
    pub cls_rows: Vec<u32>,
}

pub fn host_batch(data: &[Encoded], batch: &Batch, pad: u32) -> HostBatch {
    let mut ids = vec![pad; batch.examples.len() * batch.seq];
    for (row, &i) in batch.examples.iter().enumerate() {
        let src = &data[i].ids;
        ids[row * batch.seq..row * batch.seq + src.len()].copy_from_slice(src);
    }
    let cls_rows = (0..batch.examples.len())
        .map(|row| (row * batch.seq) as u32)
        .collect();
    HostBatch { ids, cls_rows }
}

/// A fixed sample of `limit` training examples (the same for every seed),
/// in file order; all of them when there are no more than `limit`.
pub fn limit_examples(examples: Vec<Example>, limit: Option<usize>) -> Vec<Example> {
    match limit {
        Some(n) if n < examples.len() => {
            let mut keep: Vec<usize> = (0..examples.len()).collect();
            keep.shuffle(&mut ChaCha8Rng::seed_from_u64(0x5EED));
            keep.truncate(n);
            keep.sort_unstable();
            let mut examples: Vec<Option<Example>> = examples.into_iter().map(Some).collect();
            keep.into_iter()
                .map(|i| examples[i].take().expect("indices are distinct"))
                .collect()
        }
        _ => examples,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECIAL: SpecialTokens = SpecialTokens::TRAINED;

    #[test]
    fn pairs_lose_tokens_from_the_longer_sentence_first() {
        let ids = join(SPECIAL, vec![10, 11], Some(vec![20, 21, 22, 23, 24]), 8);
        assert_eq!(ids, [2, 10, 11, 3, 20, 21, 22, 3]);
        let ids = join(SPECIAL, vec![10, 11, 12, 13], Some(vec![20, 21, 22, 23]), 7);
        assert_eq!(ids, [2, 10, 11, 3, 20, 21, 3]);
        let ids = join(SPECIAL, vec![10, 11, 12], None, 4);
        assert_eq!(ids, [2, 10, 11, 3]);
    }

    fn encoded(lens: &[usize]) -> Vec<Encoded> {
        lens.iter()
            .map(|&n| Encoded {
                ids: vec![7; n],
                label: Label::Class(0),
            })
            .collect()
    }

    #[test]
    fn batches_hold_one_bucket_and_cover_every_example_once() {
        let data = encoded(&[3, 20, 5, 17, 40, 9, 33, 2]);
        for batches in [
            train_batches(&data, 2, 40, 1, 0),
            eval_batches(&data, 2, 40),
        ] {
            let mut seen: Vec<usize> = batches.iter().flat_map(|b| b.examples.clone()).collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..data.len()).collect::<Vec<_>>());
            for b in &batches {
                assert!(b.examples.len() <= 2);
                for &i in &b.examples {
                    assert_eq!(bucket_len(data[i].ids.len(), 40), b.seq);
                }
            }
        }
        // Lengths 3, 5, 9, 2 share the first bucket; 40 is capped at max_len.
        assert_eq!(bucket_len(40, 40), 40);
        assert_eq!(bucket_len(33, 40), 40);
        assert_eq!(eval_batches(&data, 8, 40)[0].examples, [0, 2, 5, 7]);
        assert_ne!(
            train_batches(&data, 2, 40, 1, 0),
            train_batches(&data, 2, 40, 1, 1),
            "each epoch has its own order"
        );
    }

    #[test]
    fn host_batch_pads_and_points_at_cls() {
        let data = vec![
            Encoded {
                ids: vec![2, 9, 3],
                label: Label::Class(1),
            },
            Encoded {
                ids: vec![2, 3],
                label: Label::Class(0),
            },
        ];
        let hb = host_batch(
            &data,
            &Batch {
                examples: vec![1, 0],
                seq: 4,
            },
            0,
        );
        assert_eq!(hb.ids, [2, 3, 0, 0, 2, 9, 3, 0]);
        assert_eq!(hb.cls_rows, [0, 4]);
    }

    #[test]
    fn limited_examples_are_a_fixed_sample_in_file_order() {
        let examples: Vec<Example> = (0..50)
            .map(|i| Example {
                a: i.to_string(),
                b: None,
                label: Label::Class(0),
            })
            .collect();
        let a = limit_examples(examples.clone(), Some(10));
        assert_eq!(a, limit_examples(examples.clone(), Some(10)));
        assert_eq!(a.len(), 10);
        let idx: Vec<usize> = a.iter().map(|e| e.a.parse().unwrap()).collect();
        assert!(idx.windows(2).all(|w| w[0] < w[1]));
        assert_ne!(idx, (0..10).collect::<Vec<_>>(), "a sample, not the head");
        assert_eq!(limit_examples(examples.clone(), Some(80)).len(), 50);
        assert_eq!(limit_examples(examples, None).len(), 50);
    }
}
