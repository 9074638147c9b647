//! The data pipeline: raw text in, memory-mapped token shards and a manifest
//! out (`prepare`), and the reader of such a folder (`TokenStore`).
//!
//! One file per stage or concept: `read` (inputs into documents), `clean`
//! (document filters), `split` (train/val), `tokenizer` (WordPiece training
//! and loading), `words` (normalizing and pre-tokenizing), `encode`
//! (documents into ids), `pack` (ids into sequences), `shard` (the token file
//! format), `manifest`, `store` (reading), `output` (all-or-nothing output
//! folder), `progress` and `prepare`, which runs them in order.

pub mod batches;
mod clean;
mod encode;
mod error;
mod manifest;
mod output;
mod pack;
mod prepare;
mod progress;
mod read;
mod shard;
mod split;
mod store;
mod tokenizer;
mod words;

pub use error::DataError;
pub use manifest::{
    InputFile, Manifest, ShardInfo, SplitInfo, Splits, Stage, TokenizerInfo, FORMAT_VERSION,
    MANIFEST_FILE, TOKENIZER_FILE,
};
pub use output::{check_out_dir, StagingDir};
pub use prepare::{prepare, PrepareOptions, MIN_DOC_CHARS};
pub use read::split_documents;
pub use shard::Dtype;
pub use split::Split;
pub use store::TokenStore;
pub use tokenizer::{load_tokenizer, special_tokens, vocab_size, SpecialTokens, SPECIAL_TOKENS};
