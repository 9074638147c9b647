//! Stage "sort": train sequences ordered by the average unigram log
//! probability of their tokens, most common language first (Cramming,
//! section 4.4), so that a loader that keeps the order (`data.keep_order`)
//! shows the model common text early.
//!
//! Probabilities are the train split's token frequencies with add-one
//! smoothing; special tokens ([CLS], [SEP], [PAD], ...) are left out of both
//! the counts and the averages, since every sequence has them and they say
//! nothing about its language. Ties keep the packed order. Only the train
//! split is sorted: evaluation reads the first validation batches, which
//! must stay a fair sample.

use std::fs::File;
use std::path::Path;

use memmap2::Mmap;
use rayon::prelude::*;

use super::error::DataError;
use super::manifest::ShardInfo;
use super::progress::count_bar;
use super::shard::{Dtype, ShardWriter};
use super::tokenizer::SpecialTokens;

/// The name recorded in the manifest's `sorted_by`.
pub const UNIGRAM: &str = "unigram";

/// Token frequencies of one split, special tokens not counted.
pub struct UnigramCounts {
    counts: Vec<u64>,
}

impl UnigramCounts {
    pub fn new(vocab_size: usize) -> UnigramCounts {
        UnigramCounts {
            counts: vec![0; vocab_size],
        }
    }

    pub fn from_vec(counts: Vec<u64>) -> UnigramCounts {
        UnigramCounts { counts }
    }

    pub fn into_vec(self) -> Vec<u64> {
        self.counts
    }

    /// Counts a document's tokens (which have no special tokens yet).
    pub fn add(&mut self, tokens: &[u32]) {
        for &t in tokens {
            if let Some(c) = self.counts.get_mut(t as usize) {
                *c += 1;
            }
        }
    }

    /// log2 of each token's add-one-smoothed probability.
    pub fn log_probs(&self) -> Vec<f32> {
        let total: u64 = self.counts.iter().sum();
        let denominator = (total + self.counts.len() as u64) as f64;
        self.counts
            .iter()
            .map(|&c| ((c + 1) as f64 / denominator).log2() as f32)
            .collect()
    }
}

/// The mean log probability of a sequence's ordinary tokens; sequences of
/// special tokens only score lowest.
pub fn sequence_score(tokens: &[u32], log_probs: &[f32], special: &SpecialTokens) -> f32 {
    let mut sum = 0.0f64;
    let mut n = 0u32;
    for &t in tokens {
        if is_special(t, special) {
            continue;
        }
        sum += f64::from(log_probs.get(t as usize).copied().unwrap_or(f32::MIN));
        n += 1;
    }
    if n == 0 {
        f32::NEG_INFINITY
    } else {
        (sum / f64::from(n)) as f32
    }
}

fn is_special(t: u32, s: &SpecialTokens) -> bool {
    t == s.pad || t == s.unk || t == s.cls || t == s.sep || t == s.mask
}

/// Sequence indices by descending score, ties in index order.
pub fn order_by_score(scores: &[f32]) -> Vec<u32> {
    let mut order: Vec<u32> = (0..scores.len() as u32).collect();
    order.par_sort_by(|&a, &b| {
        scores[b as usize]
            .total_cmp(&scores[a as usize])
            .then(a.cmp(&b))
    });
    order
}

/// Where the unsorted sequences are and how they are laid out.
pub struct Unsorted<'a> {
    pub dir: &'a Path,
    pub shards: &'a [ShardInfo],
    pub dtype: Dtype,
    pub seq_len: usize,
}

/// Reads the unsorted shards, scores every sequence and writes them in
/// sorted order through `writer`. Memory: the score and index of each
/// sequence (8 bytes); the shards themselves are mapped, not loaded.
pub fn write_sorted(
    unsorted: &Unsorted,
    log_probs: &[f32],
    special: &SpecialTokens,
    writer: &mut ShardWriter,
    progress: bool,
) -> Result<u64, DataError> {
    let maps = unsorted
        .shards
        .iter()
        .map(|info| map_shard(&unsorted.dir.join(&info.file)))
        .collect::<Result<Vec<_>, _>>()?;
    let width = unsorted.seq_len * unsorted.dtype.bytes();
    let sequences: Vec<&[u8]> = maps
        .iter()
        .flat_map(|map| map.chunks_exact(width))
        .collect();
    let scores: Vec<f32> = sequences
        .par_iter()
        .map_init(
            || vec![0u32; unsorted.seq_len],
            |tokens, bytes| {
                unsorted.dtype.decode(bytes, tokens);
                sequence_score(tokens, log_probs, special)
            },
        )
        .collect();
    let order = order_by_score(&scores);
    let bar = count_bar(progress, order.len() as u64, "sort");
    let mut tokens = vec![0u32; unsorted.seq_len];
    for &index in &order {
        unsorted
            .dtype
            .decode(sequences[index as usize], &mut tokens);
        writer.write_sequences(&tokens)?;
        bar.inc(1);
    }
    bar.finish();
    Ok(order.len() as u64)
}

fn map_shard(path: &Path) -> Result<Mmap, DataError> {
    let damaged = |cause: std::io::Error| DataError::WorkFile {
        path: path.to_path_buf(),
        message: cause.to_string(),
    };
    let file = File::open(path).map_err(damaged)?;
    // SAFETY: the unsorted shards are this run's own files in its work
    // folder, written and closed before this point and not changed after.
    unsafe { Mmap::map(&file) }.map_err(damaged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::split::Split;

    const SPECIAL: SpecialTokens = SpecialTokens::TRAINED;

    #[test]
    fn common_tokens_score_higher_and_specials_do_not_count() {
        let mut counts = UnigramCounts::new(10);
        counts.add(&[5, 5, 5, 5, 6, 6, 7]);
        let lp = counts.log_probs();
        // (4 + 1) / (7 + 10)
        assert!((lp[5] - (5.0f32 / 17.0).log2()).abs() < 1e-6);
        let common = sequence_score(&[2, 5, 5, 3], &lp, &SPECIAL);
        let rare = sequence_score(&[2, 7, 8, 3], &lp, &SPECIAL);
        assert!(common > rare);
        assert_eq!(common, sequence_score(&[5, 5, 0, 0], &lp, &SPECIAL));
        assert_eq!(sequence_score(&[2, 3, 0], &lp, &SPECIAL), f32::NEG_INFINITY);
    }

    #[test]
    fn order_is_descending_and_stable() {
        assert_eq!(order_by_score(&[1.0, 3.0, 1.0, 2.0, 3.0]), [1, 4, 3, 0, 2]);
    }

    #[test]
    fn sorted_shards_hold_the_same_sequences_most_common_first() {
        let dir = tempfile::tempdir().unwrap();
        let unsorted_dir = dir.path().join("unsorted");
        std::fs::create_dir(&unsorted_dir).unwrap();
        let sequences: Vec<[u32; 4]> = vec![
            [2, 9, 8, 3],
            [2, 5, 5, 5],
            [2, 6, 5, 3],
            [2, 7, 9, 8],
            [2, 5, 6, 0],
        ];
        let mut counts = UnigramCounts::new(10);
        let mut writer = ShardWriter::new(&unsorted_dir, Split::Train, Dtype::U16, 4, 2);
        for s in &sequences {
            counts.add(&s[1..]);
            writer.write_sequences(s).unwrap();
        }
        let shards = writer.finish().unwrap();
        let lp = counts.log_probs();
        let unsorted = Unsorted {
            dir: &unsorted_dir,
            shards: &shards,
            dtype: Dtype::U16,
            seq_len: 4,
        };
        let mut out = ShardWriter::new(dir.path(), Split::Train, Dtype::U16, 4, 3);
        assert_eq!(
            write_sorted(&unsorted, &lp, &SPECIAL, &mut out, false).unwrap(),
            5
        );
        let written = out.finish().unwrap();
        let mut all = Vec::new();
        for shard in &written {
            let bytes = std::fs::read(dir.path().join(&shard.file)).unwrap();
            let mut tokens = vec![0; bytes.len() / 2];
            Dtype::U16.decode(&bytes, &mut tokens);
            all.extend(tokens.chunks(4).map(|c| c.to_vec()));
        }
        let scores: Vec<f32> = all
            .iter()
            .map(|s| sequence_score(s, &lp, &SPECIAL))
            .collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
        assert_eq!(all[0], [2, 5, 5, 5]);
        let mut a: Vec<Vec<u32>> = all.clone();
        let mut b: Vec<Vec<u32>> = sequences.iter().map(|s| s.to_vec()).collect();
        a.sort();
        b.sort();
        assert_eq!(a, b, "the same sequences, reordered");
    }
}
