//! A BERT-style WordPiece tokenizer trained from word counts.
//!
//! Which "WordPiece" this is: Hugging Face's `WordPieceTrainer` is its BPE
//! trainer with a `##` continuation prefix, so the vocabulary is learned by
//! BPE merges (most frequent pair first), not by Google's likelihood-based
//! WordPiece training. Encoding is WordPiece's greedy longest-match-first
//! over that vocabulary, as in BERT. Cramming uses the same trainer. We call
//! the BPE trainer directly, as `WordPieceTrainer` does inside, so that we
//! can hand it the word counts in a fixed order (see `fixed_order_map`).
//!
//! The tokenizer is a plain Hugging Face one (BERT normalizer,
//! BertPreTokenizer, WordPiece model and decoder, "[CLS] $A [SEP]"
//! template) that `tokenizers` and `transformers` load unchanged.

use std::collections::{BTreeMap, HashMap, HashSet};

use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::Tokenizer;

use super::{fixed_order_map, special_added_tokens, train_error};
use crate::data::error::DataError;

pub const CONTINUATION_PREFIX: &str = "##";

/// At most this many characters start the vocabulary (each takes two ids,
/// plain and `##`-prefixed); rarer characters become [UNK]. Hugging Face's
/// BERT tokenizer trainer uses the same limit.
const MAX_ALPHABET: usize = 1000;

/// Trains on `words` (as `WordCounter` gives them: normalized, sorted),
/// aiming at `vocab_size` ids, special tokens included. The vocabulary comes
/// out smaller when the words run out of pairs to merge, and larger when the
/// alphabet alone exceeds the size.
pub fn train(words: Vec<(String, u64)>, vocab_size: usize) -> Result<Tokenizer, DataError> {
    let words = limit_alphabet(words, MAX_ALPHABET);
    let trainer = BpeTrainer::builder()
        .vocab_size(vocab_size)
        .special_tokens(special_added_tokens())
        .continuing_subword_prefix(CONTINUATION_PREFIX.into())
        .show_progress(false)
        .build();
    let mut bpe = BPE::default();
    trainer
        .do_train(&fixed_order_map(words), &mut bpe)
        .map_err(train_error)?;
    let mut tokenizer = Tokenizer::new(WordPiece::from_bpe(&bpe));
    tokenizer
        .with_normalizer(Some(bert_normalizer()))
        .with_pre_tokenizer(Some(BertPreTokenizer))
        .with_decoder(Some(WordPieceDecoder::default()))
        .with_post_processor(Some(bert_template()?));
    tokenizer.add_special_tokens(&special_added_tokens());
    Ok(tokenizer)
}

pub(super) fn bert_normalizer() -> BertNormalizer {
    // clean text, handle Chinese characters, strip accents, lowercase
    BertNormalizer::new(true, true, Some(true), true)
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
    let kept: HashSet<char> = ranked[..max].iter().map(|(c, _)| *c).collect();
    let mut merged: BTreeMap<String, u64> = BTreeMap::new();
    for (word, count) in words {
        let word: String = word.chars().filter(|c| kept.contains(c)).collect();
        if !word.is_empty() {
            *merged.entry(word).or_default() += count;
        }
    }
    merged.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
