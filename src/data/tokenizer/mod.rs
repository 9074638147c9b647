//! Stage "tokenizer": a WordPiece (encoders, the default) or byte-level BPE
//! (decoders) tokenizer, trained on a sample of the cleaned train documents
//! or loaded from a `tokenizer.json`, and what the manifest records about
//! it. Both are saved as plain Hugging Face tokenizers that `tokenizers` and
//! `transformers` load unchanged.
//!
//! Training is deterministic: the trainer numbers characters in the order
//! it meets them and breaks ties between equally frequent pairs by those
//! numbers, so the word counts are handed over in a fixed order.

mod bpe;
mod counts;
mod wordpiece;

use std::path::Path;

use ahash::AHashMap;
use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use tokenizers::{AddedToken, ModelWrapper, NormalizedString, Normalizer, Tokenizer};

pub use counts::WordCounter;
pub use wordpiece::CONTINUATION_PREFIX;

pub use crate::config::TokenizerKind;

use super::error::DataError;

/// Trains a tokenizer of `kind` on counted words (see `WordCounter`).
pub fn train(
    kind: TokenizerKind,
    words: Vec<(String, u64)>,
    vocab_size: usize,
) -> Result<Tokenizer, DataError> {
    match kind {
        TokenizerKind::Wordpiece => wordpiece::train(words, vocab_size),
        TokenizerKind::Bpe => bpe::train(words, vocab_size),
    }
}

/// Trains a tokenizer of `kind` on documents held in memory.
pub fn train_on(
    kind: TokenizerKind,
    documents: &[String],
    vocab_size: usize,
) -> Result<Tokenizer, DataError> {
    let mut counter = WordCounter::new(kind);
    counter.add(documents)?;
    train(kind, counter.finish()?, vocab_size)
}

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

impl SpecialTokens {
    /// The ids of a tokenizer trained by cram (see [`SPECIAL_TOKENS`]).
    pub const TRAINED: SpecialTokens = SpecialTokens {
        pad: 0,
        unk: 1,
        cls: 2,
        sep: 3,
        mask: 4,
    };
}

/// The special tokens in id order of a trained tokenizer.
pub const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// Fixed hasher keys for the word counts handed to the trainer: its output
/// depends on their iteration order (see the module comment).
const WORD_COUNT_KEYS: [u64; 4] = [
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
    0x082e_fa98_ec4e_6c89,
];

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

/// For each id, whether its token continues a word rather than starting
/// one: WordPiece's `##` pieces, and byte-level BPE tokens that do not begin
/// with a space (`Ġ`). Special tokens start nothing and continue nothing;
/// they are `false`. Whole-word masking groups tokens by this table.
pub fn word_continuations(tokenizer: &Tokenizer) -> Vec<bool> {
    let vocab = tokenizer.get_vocab(true);
    let mut table = vec![false; vocab_size(tokenizer)];
    let byte_level = matches!(tokenizer.get_model(), ModelWrapper::BPE(_));
    for (token, id) in vocab {
        if SPECIAL_TOKENS.contains(&token.as_str()) {
            continue;
        }
        table[id as usize] = if byte_level {
            !token.starts_with('\u{120}')
        } else {
            token.starts_with(CONTINUATION_PREFIX)
        };
    }
    table
}

fn special_added_tokens() -> Vec<AddedToken> {
    SPECIAL_TOKENS
        .iter()
        .map(|t| AddedToken::from(*t, true))
        .collect()
}

fn train_error(e: impl std::fmt::Display) -> DataError {
    DataError::TokenizerTrain {
        message: e.to_string(),
    }
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

    /// Trains a WordPiece tokenizer on documents held in memory.
    pub(crate) fn train_wordpiece(
        documents: &[String],
        vocab_size: usize,
    ) -> Result<Tokenizer, DataError> {
        train_on(TokenizerKind::Wordpiece, documents, vocab_size)
    }

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
        assert_eq!(special, SpecialTokens::TRAINED);
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
    fn byte_level_bpe_encodes_any_text_and_decodes_it_back() {
        let tokenizer = train_on(TokenizerKind::Bpe, &corpus(), 300).unwrap();
        assert_eq!(model_kind(&tokenizer), "bpe");
        assert!(!lowercases(&tokenizer));
        assert_eq!(
            special_tokens(&tokenizer, None).unwrap(),
            SpecialTokens::TRAINED
        );
        assert_eq!(vocab_size(&tokenizer), 300);
        let text = "The cat sat, on ünseen\tMATS!";
        let ids = tokenizer.encode(text, false).unwrap().get_ids().to_vec();
        assert!(!ids.contains(&1), "no [UNK] in byte-level BPE");
        assert_eq!(tokenizer.decode(&ids, false).unwrap(), text);
        let common = tokenizer.encode("the cat sat on the mat", false).unwrap();
        assert!(common.get_ids().len() <= 6, "{:?}", common.get_tokens());
        let continuations = word_continuations(&tokenizer);
        let id = |t: &str| tokenizer.token_to_id(t).unwrap() as usize;
        assert!(!continuations[id("Ġcat")] && continuations[id("t")]);
        assert!(!continuations[3], "[SEP] is no continuation");
    }

    #[test]
    fn wordpiece_continuations_are_the_hash_pieces() {
        let tokenizer = train_wordpiece(&corpus(), 60).unwrap();
        let continuations = word_continuations(&tokenizer);
        assert_eq!(continuations.len(), 60);
        for (token, id) in tokenizer.get_vocab(true) {
            assert_eq!(
                continuations[id as usize],
                token.starts_with("##"),
                "{token}"
            );
        }
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
