//! Stage "tokenizer": a BERT-style WordPiece tokenizer, trained on the train
//! documents or loaded from a `tokenizer.json`, and what the manifest records
//! about it.
//!
//! Which "WordPiece" this is: Hugging Face's `WordPieceTrainer` is its BPE
//! trainer with a `##` continuation prefix, so the vocabulary is learned by
//! BPE merges (most frequent pair first), not by Google's likelihood-based
//! WordPiece training. Encoding is WordPiece's greedy longest-match-first
//! over that vocabulary, as in BERT. Cramming uses the same trainer. We call
//! the BPE trainer directly, as `WordPieceTrainer` does inside, so that we can
//! hand it the word counts in a fixed order: the trainer numbers `##`
//! characters in the order it meets them and breaks ties between equally
//! frequent pairs by those numbers, so a hash-ordered input would make the
//! vocabulary differ from run to run.
//!
//! The saved `tokenizer.json` is a plain Hugging Face tokenizer (BERT
//! normalizer, BertPreTokenizer, WordPiece model and decoder, "[CLS] $A [SEP]"
//! template) that `tokenizers` and `transformers` load unchanged.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::path::Path;

use ahash::AHashMap;
use compact_str::CompactString;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{
    AddedToken, ModelWrapper, NormalizedString, Normalizer, OffsetReferential, OffsetType,
    Tokenizer,
};

use super::error::DataError;
use super::words::{bert_chunks, pre_tokenize};

/// Ids of the special tokens. A trained tokenizer has them at 0..=4 in this
/// order; a reused one may have them anywhere.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SpecialTokens {
    pub pad: u32,
    pub unk: u32,
    pub cls: u32,
    pub sep: u32,
    pub mask: u32,
}

/// The special tokens in id order of a trained tokenizer.
pub const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

pub const CONTINUATION_PREFIX: &str = "##";

/// At most this many characters start the vocabulary (each takes two ids,
/// plain and `##`-prefixed); rarer characters become [UNK]. Hugging Face's
/// BERT tokenizer trainer uses the same limit.
const MAX_ALPHABET: usize = 1000;

/// Fixed hasher keys for the word counts handed to the trainer: its output
/// depends on their iteration order (see the module comment).
const WORD_COUNT_KEYS: [u64; 4] = [
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
    0x082e_fa98_ec4e_6c89,
];

/// Trains a WordPiece tokenizer on `documents`, aiming at `vocab_size` ids
/// (special tokens included). The vocabulary comes out smaller when the
/// documents run out of pairs to merge, and larger when the alphabet alone
/// exceeds the size.
pub fn train_wordpiece(documents: &[String], vocab_size: usize) -> Result<Tokenizer, DataError> {
    let normalizer = bert_normalizer();
    let counts = count_words(documents, &normalizer)?;
    let counts = limit_alphabet(counts, MAX_ALPHABET);
    let trainer = BpeTrainer::builder()
        .vocab_size(vocab_size)
        .special_tokens(special_added_tokens())
        .continuing_subword_prefix(CONTINUATION_PREFIX.into())
        .show_progress(false)
        .build();
    let mut bpe = BPE::default();
    trainer
        .do_train(&fixed_order_map(counts), &mut bpe)
        .map_err(train_error)?;
    let mut tokenizer = Tokenizer::new(WordPiece::from_bpe(&bpe));
    tokenizer
        .with_normalizer(Some(normalizer))
        .with_pre_tokenizer(Some(BertPreTokenizer))
        .with_decoder(Some(WordPieceDecoder::default()))
        .with_post_processor(Some(bert_template()?));
    tokenizer.add_special_tokens(&special_added_tokens());
    Ok(tokenizer)
}

/// Loads a `tokenizer.json`, with truncation and padding turned off so that
/// documents encode whole.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer, DataError> {
    let load_error = |e: tokenizers::Error| DataError::TokenizerLoad {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut tokenizer = Tokenizer::from_file(path).map_err(load_error)?;
    tokenizer.with_truncation(None).map_err(load_error)?;
    tokenizer.with_padding(None);
    Ok(tokenizer)
}

/// Writes `tokenizer.json` (pretty, fsynced) and returns its sha256.
pub fn save_tokenizer(tokenizer: &Tokenizer, path: &Path) -> Result<String, DataError> {
    tokenizer
        .save(path, true)
        .map_err(|e| DataError::TokenizerSave {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    let file = std::fs::File::open(path).map_err(DataError::write(path))?;
    file.sync_all().map_err(DataError::write(path))?;
    let bytes = std::fs::read(path).map_err(DataError::write(path))?;
    Ok(super::shard::sha256_hex(&bytes))
}

/// The ids of [PAD], [UNK], [CLS], [SEP] and [MASK]; `path`, the file the
/// tokenizer came from, is named in the error when one is missing.
pub fn special_tokens(
    tokenizer: &Tokenizer,
    path: Option<&Path>,
) -> Result<SpecialTokens, DataError> {
    let id = |token: &'static str| {
        tokenizer
            .token_to_id(token)
            .ok_or_else(|| DataError::TokenizerMissingToken {
                path: path.map_or_else(|| "the trained tokenizer".into(), Path::to_path_buf),
                token,
            })
    };
    Ok(SpecialTokens {
        pad: id("[PAD]")?,
        unk: id("[UNK]")?,
        cls: id("[CLS]")?,
        sep: id("[SEP]")?,
        mask: id("[MASK]")?,
    })
}

/// One more than the largest id, added tokens included.
pub fn vocab_size(tokenizer: &Tokenizer) -> usize {
    tokenizer
        .get_vocab(true)
        .values()
        .max()
        .map_or(0, |&id| id as usize + 1)
}

pub fn model_kind(tokenizer: &Tokenizer) -> &'static str {
    match tokenizer.get_model() {
        ModelWrapper::WordPiece(_) => "wordpiece",
        ModelWrapper::BPE(_) => "bpe",
        ModelWrapper::WordLevel(_) => "wordlevel",
        ModelWrapper::Unigram(_) => "unigram",
    }
}

/// Whether the tokenizer's normalizer lowercases, found by asking it.
pub fn lowercases(tokenizer: &Tokenizer) -> bool {
    let Some(normalizer) = tokenizer.get_normalizer() else {
        return false;
    };
    let mut probe = NormalizedString::from("CRAM");
    normalizer.normalize(&mut probe).is_ok() && probe.get() == "cram"
}

/// The tokens of `ids` as strings, for showing a sample.
pub fn token_strings(tokenizer: &Tokenizer, ids: &[u32]) -> Vec<String> {
    ids.iter()
        .map(|&id| {
            tokenizer
                .id_to_token(id)
                .unwrap_or_else(|| format!("<{id}>"))
        })
        .collect()
}

fn bert_normalizer() -> BertNormalizer {
    // clean text, handle Chinese characters, strip accents, lowercase
    BertNormalizer::new(true, true, Some(true), true)
}

fn special_added_tokens() -> Vec<AddedToken> {
    SPECIAL_TOKENS
        .iter()
        .map(|t| AddedToken::from(*t, true))
        .collect()
}

fn bert_template() -> Result<TemplateProcessing, DataError> {
    let cls = ("[CLS]", 2);
    let sep = ("[SEP]", 3);
    TemplateProcessing::builder()
        .try_single("[CLS] $A [SEP]")
        .map_err(train_error)?
        .try_pair("[CLS] $A [SEP] $B:1 [SEP]:1")
        .map_err(train_error)?
        .special_tokens(vec![cls, sep])
        .build()
        .map_err(train_error)
}

fn train_error(e: impl std::fmt::Display) -> DataError {
    DataError::TokenizerTrain {
        message: e.to_string(),
    }
}

/// How often each pre-tokenized word occurs, sorted by word. Counts the
/// documents' chunks first (see `bert_chunks`) and normalizes each distinct
/// chunk once.
fn count_words(
    documents: &[String],
    normalizer: &BertNormalizer,
) -> Result<Vec<(String, u64)>, DataError> {
    let chunks: HashMap<&str, u64> = documents
        .par_iter()
        .fold(HashMap::new, |mut counts, doc| {
            for chunk in bert_chunks(doc) {
                *counts.entry(chunk).or_default() += 1;
            }
            counts
        })
        .reduce(HashMap::new, merge_counts);
    let words: HashMap<String, u64> = chunks
        .par_iter()
        .try_fold(
            HashMap::new,
            |mut counts: HashMap<String, u64>, (chunk, &n)| {
                let words = pre_tokenize(Some(normalizer), Some(&BertPreTokenizer), chunk)
                    .map_err(train_error)?;
                for (word, _, _) in words.get_splits(OffsetReferential::Original, OffsetType::None)
                {
                    match counts.get_mut(word) {
                        Some(c) => *c += n,
                        None => {
                            counts.insert(word.to_string(), n);
                        }
                    }
                }
                Ok::<_, DataError>(counts)
            },
        )
        .try_reduce(HashMap::new, |a, b| Ok(merge_counts(a, b)))?;
    let mut words: Vec<(String, u64)> = words.into_iter().collect();
    words.sort_unstable();
    Ok(words)
}

fn merge_counts<K: Hash + Eq>(a: HashMap<K, u64>, b: HashMap<K, u64>) -> HashMap<K, u64> {
    let (small, mut big) = if a.len() < b.len() { (a, b) } else { (b, a) };
    for (key, n) in small {
        *big.entry(key).or_default() += n;
    }
    big
}

/// Keeps the `max` most frequent characters (ties broken by the character)
/// and deletes the others from the words, as the trainer would, but without
/// its hash-ordered choice among equally rare characters.
fn limit_alphabet(words: Vec<(String, u64)>, max: usize) -> Vec<(String, u64)> {
    let mut chars: HashMap<char, u64> = HashMap::new();
    for (word, count) in &words {
        for c in word.chars() {
            *chars.entry(c).or_default() += count;
        }
    }
    if chars.len() <= max {
        return words;
    }
    let mut ranked: Vec<(char, u64)> = chars.into_iter().collect();
    ranked.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let kept: std::collections::HashSet<char> = ranked[..max].iter().map(|(c, _)| *c).collect();
    let mut merged: BTreeMap<String, u64> = BTreeMap::new();
    for (word, count) in words {
        let word: String = word.chars().filter(|c| kept.contains(c)).collect();
        if !word.is_empty() {
            *merged.entry(word).or_default() += count;
        }
    }
    merged.into_iter().collect()
}

/// The trainer's input map, filled in sorted order with fixed keys, so that
/// its iteration order is the same in every run.
fn fixed_order_map(words: Vec<(String, u64)>) -> AHashMap<CompactString, u64> {
    let [k0, k1, k2, k3] = WORD_COUNT_KEYS;
    let mut map = AHashMap::with_capacity_and_hasher(
        words.len(),
        ahash::RandomState::with_seeds(k0, k1, k2, k3),
    );
    for (word, count) in words {
        map.insert(CompactString::from(word), count);
    }
    map
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Sentences over a 15-word vocabulary, for training tiny tokenizers.
    pub(crate) fn corpus() -> Vec<String> {
        let words = [
            "the", "cat", "sat", "on", "mat", "a", "dog", "ran", "far", "away", "running", "cats",
            "dogs", "mats", "sitting",
        ];
        (0..200)
            .map(|i| {
                (0..12)
                    .map(|j| words[(i * 7 + j * 3 + i * j) % words.len()])
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    #[test]
    fn special_tokens_come_first_in_fixed_order() {
        let tokenizer = train_wordpiece(&corpus(), 60).unwrap();
        let special = special_tokens(&tokenizer, None).unwrap();
        assert_eq!(
            special,
            SpecialTokens {
                pad: 0,
                unk: 1,
                cls: 2,
                sep: 3,
                mask: 4
            }
        );
        assert_eq!(model_kind(&tokenizer), "wordpiece");
        assert!(lowercases(&tokenizer));
    }

    #[test]
    fn trained_vocabulary_hits_the_requested_size_and_encodes_greedily() {
        let tokenizer = train_wordpiece(&corpus(), 60).unwrap();
        assert_eq!(vocab_size(&tokenizer), 60);
        let enc = tokenizer.encode("The CATS sat running", false).unwrap();
        let tokens = enc.get_tokens().join(" ");
        assert!(tokens.starts_with("the cats sat r"), "{tokens}");
        assert!(!enc.get_ids().contains(&1), "no [UNK] in {tokens}");
        let unseen = tokenizer.encode("cat, dog", false).unwrap();
        assert_eq!(
            unseen.get_tokens(),
            ["cat", "[UNK]", "dog"],
            "',' was never seen"
        );
        let with_special = tokenizer.encode("the cat", true).unwrap();
        assert_eq!(with_special.get_tokens(), ["[CLS]", "the", "cat", "[SEP]"]);
    }

    #[test]
    fn training_is_deterministic() {
        let a = train_wordpiece(&corpus(), 50).unwrap();
        let b = train_wordpiece(&corpus(), 50).unwrap();
        assert_eq!(a.to_string(true).unwrap(), b.to_string(true).unwrap());
    }

    #[test]
    fn rare_characters_beyond_the_alphabet_limit_are_dropped_by_count_then_char() {
        let words = vec![
            ("ab".to_string(), 5),
            ("ba".to_string(), 1),
            ("cd".to_string(), 1),
        ];
        let limited = limit_alphabet(words, 3);
        assert_eq!(
            limited,
            vec![
                ("ab".to_string(), 5),
                ("ba".to_string(), 1),
                ("c".to_string(), 1)
            ]
        );
    }

    #[test]
    fn a_tokenizer_without_mask_is_refused_by_name() {
        let mut tokenizer = train_wordpiece(&corpus(), 40).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        let text = tokenizer
            .to_string(false)
            .unwrap()
            .replace("[MASK]", "[MSK]");
        std::fs::write(&path, text).unwrap();
        tokenizer = load_tokenizer(&path).unwrap();
        let err = special_tokens(&tokenizer, Some(&path)).unwrap_err();
        assert!(err.to_string().contains("[MASK]"), "{err}");
        assert!(err.to_string().contains("tokenizer.json"), "{err}");
    }
}
