//! The data pipeline: raw text in, memory-mapped token shards and a manifest
//! out (`prepare`), and the reader of such a folder (`TokenStore`).
//!
//! One file per stage or concept: `input` (what `--input` names: files,
//! formats, compression, weights), `read` (files into documents),
//! `normalize` (Unicode and whitespace), `clean` (document filters),
//! `minhash` and `dedup` (exact and near-duplicate removal), `spool`
//! (cleaned documents on disk between passes), `mix` (weights and
//! interleaving), `split` (train/val), `tokenizer` (WordPiece or byte-level
//! BPE training and loading), `words` (normalizing and pre-tokenizing),
//! `encode` (documents into ids), `pack` (ids into sequences), `sort`
//! (unigram order), `shard` (the token file format), `manifest`, `store`
//! (reading), `output` (work folder and all-or-nothing output), `progress`,
//! and `prepare`, which runs them in passes. `batches` turns stored
//! sequences into training batches (masking, causal targets, data order);
//! `stream` writes those masked sequences out for a trainer outside cram.

pub mod batches;
mod clean;
mod dedup;
mod encode;
mod error;
mod input;
mod manifest;
mod minhash;
mod mix;
mod normalize;
mod output;
mod pack;
mod prepare;
mod progress;
mod read;
mod shard;
mod sort;
mod split;
mod spool;
mod store;
mod stream;
mod tokenizer;
mod whole_word;
mod words;

pub use encode::DocumentEncoder;
pub use error::DataError;
pub use input::InputSpec;
pub use manifest::{
    InputFile, Manifest, ShardInfo, SplitInfo, Splits, Stage, TokenizerInfo, FORMAT_VERSION,
    MANIFEST_FILE, TOKENIZER_FILE,
};
pub use minhash::{signature as minhash_signature, Signature};
pub use normalize::{normalize, Normalization};
pub use output::{check_out_dir, StagingDir};
pub use prepare::{prepare, prepare_timed, PrepareOptions, Prepared, StageTiming, MIN_DOC_CHARS};
pub use read::{split_documents, TextSplit};
pub use shard::Dtype;
pub use split::Split;
pub use store::TokenStore;
pub use stream::{write_stream, StreamInfo, StreamSpec};
pub use tokenizer::{
    load_tokenizer, special_tokens, train_on, vocab_size, word_continuations, SpecialTokens,
    TokenizerKind, SPECIAL_TOKENS,
};
