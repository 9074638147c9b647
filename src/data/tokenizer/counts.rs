//! Word counts for tokenizer training, gathered batch by batch so that the
//! sample never has to be in memory at once: only its distinct pieces are.
//!
//! WordPiece: the documents' chunks between spaces, tabs and line breaks
//! are counted first (see `bert_chunks`); each distinct chunk is normalized
//! and pre-tokenized once at the end, which is where most of the time would
//! otherwise go. Byte-level BPE: the pre-tokenizer (GPT-2's regex) runs on
//! whole documents, since cutting at spaces would change its words.

use ahash::AHashMap;
use rayon::prelude::*;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{OffsetReferential, OffsetType};

use super::{train_error, TokenizerKind};
use crate::data::error::DataError;
use crate::data::words::{bert_chunks, pre_tokenize};

pub struct WordCounter {
    kind: TokenizerKind,
    /// Chunks (WordPiece) or words (BPE) and how often they occur.
    counts: AHashMap<String, u64>,
    pub documents: u64,
    pub bytes: u64,
}

impl WordCounter {
    pub fn new(kind: TokenizerKind) -> WordCounter {
        WordCounter {
            kind,
            counts: AHashMap::new(),
            documents: 0,
            bytes: 0,
        }
    }

    pub fn add(&mut self, documents: &[String]) -> Result<(), DataError> {
        self.documents += documents.len() as u64;
        self.bytes += documents.iter().map(|d| d.len() as u64).sum::<u64>();
        match self.kind {
            TokenizerKind::Wordpiece => {
                let batch = documents
                    .par_iter()
                    .fold(AHashMap::new, |mut counts, doc| {
                        for chunk in bert_chunks(doc) {
                            *counts.entry(chunk).or_insert(0) += 1;
                        }
                        counts
                    })
                    .reduce(AHashMap::new, merge_counts);
                add_into(&mut self.counts, batch);
            }
            TokenizerKind::Bpe => {
                let batch = documents
                    .par_iter()
                    .try_fold(AHashMap::new, |mut counts, doc| {
                        let words = pre_tokenize(None::<&BertNormalizer>, Some(&byte_level()), doc)
                            .map_err(train_error)?;
                        for (word, _, _) in
                            words.get_splits(OffsetReferential::Original, OffsetType::None)
                        {
                            bump(&mut counts, word, 1);
                        }
                        Ok::<_, DataError>(counts)
                    })
                    .try_reduce(AHashMap::new, |a, b| Ok(merge_counts(a, b)))?;
                for (word, n) in batch {
                    bump(&mut self.counts, &word, n);
                }
            }
        }
        Ok(())
    }

    /// The words the tokenizer's model will see and their counts, sorted by
    /// word so that training does not depend on hash order.
    pub fn finish(self) -> Result<Vec<(String, u64)>, DataError> {
        let words = match self.kind {
            TokenizerKind::Wordpiece => words_of_chunks(self.counts)?,
            TokenizerKind::Bpe => self.counts,
        };
        let mut words: Vec<(String, u64)> = words.into_iter().collect();
        words.par_sort_unstable();
        Ok(words)
    }
}

pub(super) fn byte_level() -> ByteLevel {
    ByteLevel::default().add_prefix_space(false)
}

/// Normalizes and pre-tokenizes each distinct chunk once, the way the BERT
/// tokenizer will, and counts the words.
fn words_of_chunks(chunks: AHashMap<String, u64>) -> Result<AHashMap<String, u64>, DataError> {
    let normalizer = super::wordpiece::bert_normalizer();
    chunks
        .par_iter()
        .try_fold(AHashMap::new, |mut counts, (chunk, &n)| {
            let words = pre_tokenize(Some(&normalizer), Some(&BertPreTokenizer), chunk)
                .map_err(train_error)?;
            for (word, _, _) in words.get_splits(OffsetReferential::Original, OffsetType::None) {
                bump(&mut counts, word, n);
            }
            Ok::<_, DataError>(counts)
        })
        .try_reduce(AHashMap::new, |a, b| Ok(merge_counts(a, b)))
}

/// Adds `n` to a word's count, allocating only for a new word.
fn bump(counts: &mut AHashMap<String, u64>, word: &str, n: u64) {
    match counts.get_mut(word) {
        Some(c) => *c += n,
        None => {
            counts.insert(word.to_string(), n);
        }
    }
}

fn add_into(counts: &mut AHashMap<String, u64>, batch: AHashMap<&str, u64>) {
    for (chunk, n) in batch {
        bump(counts, chunk, n);
    }
}

fn merge_counts<K: std::hash::Hash + Eq>(
    a: AHashMap<K, u64>,
    b: AHashMap<K, u64>,
) -> AHashMap<K, u64> {
    let (small, mut big) = if a.len() < b.len() { (a, b) } else { (b, a) };
    for (key, n) in small {
        *big.entry(key).or_insert(0) += n;
    }
    big
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wordpiece_counts_normalized_words_across_batches() {
        let mut counter = WordCounter::new(TokenizerKind::Wordpiece);
        counter.add(&["The cat, the CAT.".to_string()]).unwrap();
        counter.add(&["café cat".to_string()]).unwrap();
        let words = counter.finish().unwrap();
        assert_eq!(
            words,
            [
                (",".to_string(), 1),
                (".".to_string(), 1),
                ("cafe".to_string(), 1),
                ("cat".to_string(), 3),
                ("the".to_string(), 2),
            ]
        );
    }

    #[test]
    fn bpe_counts_byte_level_words_with_their_spaces() {
        let mut counter = WordCounter::new(TokenizerKind::Bpe);
        counter.add(&["the cat the Cat".to_string()]).unwrap();
        assert_eq!((counter.documents, counter.bytes), (1, 15));
        let words = counter.finish().unwrap();
        assert_eq!(
            words,
            [
                ("the".to_string(), 1),
                ("ĠCat".to_string(), 1),
                ("Ġcat".to_string(), 1),
                ("Ġthe".to_string(), 1),
            ]
        );
    }
}
