//! A byte-level BPE tokenizer (GPT-2's scheme) trained from word counts,
//! for decoders: every byte sequence encodes without [UNK], and decoding
//! gives back the text exactly.
//!
//! No normalizer: the pipeline's own normalization (NFC/NFKC, cleaning) has
//! already run, and case matters to a generative model. The special tokens
//! are the same five as WordPiece's, so packing and the loader need not
//! know which kind they read: [SEP] ends each document (the end-of-text
//! token), [PAD] fills the last sequence.

use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::Tokenizer;

use super::counts::byte_level;
use super::{fixed_order_map, special_added_tokens, train_error};
use crate::data::error::DataError;

/// Trains on byte-level `words` (as `WordCounter` gives them), aiming at
/// `vocab_size` ids: 5 special tokens, the 256 byte symbols, then merges.
pub fn train(words: Vec<(String, u64)>, vocab_size: usize) -> Result<Tokenizer, DataError> {
    let trainer = BpeTrainer::builder()
        .vocab_size(vocab_size)
        .special_tokens(special_added_tokens())
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .show_progress(false)
        .build();
    let mut bpe = BPE::default();
    trainer
        .do_train(&fixed_order_map(words), &mut bpe)
        .map_err(train_error)?;
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer
        .with_pre_tokenizer(Some(byte_level()))
        .with_decoder(Some(ByteLevel::default()))
        .with_post_processor(Some(ByteLevel::default().trim_offsets(false)));
    tokenizer.add_special_tokens(&special_added_tokens());
    Ok(tokenizer)
}
