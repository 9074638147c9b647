//! The one error type of the data pipeline. Every variant names the file or
//! option involved and, where the user can fix it, says how. Underlying
//! errors are part of the message (fields named `cause`, not `source`), so
//! that printing the error chain does not repeat them.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum DataError {
    #[error("input {path} does not exist; check the --input path")]
    InputNotFound { path: PathBuf },

    #[error("cannot read input {path}: {cause}")]
    ReadInput {
        path: PathBuf,
        cause: std::io::Error,
    },

    #[error(
        "input {path} is not valid UTF-8 (first bad byte at offset {offset} of its decoded text); \
         convert it to UTF-8 (e.g. `iconv -t UTF-8`) or leave it out of the inputs"
    )]
    NotUtf8 { path: PathBuf, offset: u64 },

    #[error(
        "input {path} is not a valid {kind} stream: {cause}; \
         the file is corrupt or truncated, download or compress it again"
    )]
    Decompress {
        path: PathBuf,
        kind: &'static str,
        cause: std::io::Error,
    },

    #[error(
        "input {path}, line {line}, is not a JSON object: {message}; \
         JSON Lines files (.jsonl, .ndjson, .json) need one object per line, \
         rename the file if it is plain text"
    )]
    JsonLine {
        path: PathBuf,
        line: u64,
        message: String,
    },

    #[error(
        "input {path}, line {line}, has no string field \"{field}\" (found {found}); \
         pass --text-field with the field that holds the text"
    )]
    JsonField {
        path: PathBuf,
        line: u64,
        field: String,
        found: String,
    },

    #[error("input weight in '{input}' must be a positive number, as in --input books/:0.3")]
    InvalidInputWeight { input: String },

    #[error(
        "some inputs have a weight and some do not ({inputs}); \
         give every --input a weight (PATH:WEIGHT) or none"
    )]
    PartialWeights { inputs: String },

    #[error(
        "no documents of at least {min_chars} characters in the inputs ({inputs}); \
         check that they hold text (JSON Lines need --text-field, plain text \
         separates documents by blank lines)"
    )]
    NoDocuments { inputs: String, min_chars: usize },

    #[error(
        "the compression filter left no training text: it dropped {documents} documents \
         (more than {max_tokens_per_char} tokens per character); a small vocabulary \
         compresses less: raise data.max_tokens_per_char or set data.compression_filter=false"
    )]
    AllFiltered {
        documents: u64,
        max_tokens_per_char: f64,
    },

    #[error(
        "all {documents} documents went to the validation split, so there is nothing to train on; \
         lower --val-fraction (now {val_fraction}) or add more documents"
    )]
    EmptyTrainSplit { documents: usize, val_fraction: f64 },

    #[error("invalid option {name} = {value}: {reason}")]
    InvalidOption {
        name: &'static str,
        value: String,
        reason: &'static str,
    },

    #[error(
        "output folder {path} already exists and is not empty; \
         pass --overwrite to replace it, or choose another --out"
    )]
    OutputExists { path: PathBuf },

    #[error("output path {path} exists and is not a folder; choose another --out")]
    OutputNotADir { path: PathBuf },

    #[error("cannot write {path}: {cause}")]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },

    #[error(
        "a document of {bytes} bytes is larger than the 4 GiB one document may hold; split it"
    )]
    DocumentTooLarge { bytes: u64 },

    #[error(
        "work file {path} is damaged ({message}); delete the folder holding it \
         and run `cram data prepare` again"
    )]
    WorkFile { path: PathBuf, message: String },

    #[error("training the tokenizer failed: {message}")]
    TokenizerTrain { message: String },

    #[error(
        "cannot load tokenizer {path}: {message}; \
         pass a tokenizer.json written by Hugging Face tokenizers or by `cram data prepare`"
    )]
    TokenizerLoad { path: PathBuf, message: String },

    #[error(
        "tokenizer {path} has no special token {token}; \
         a BERT-style tokenizer needs [PAD], [UNK], [CLS], [SEP] and [MASK]"
    )]
    TokenizerMissingToken { path: PathBuf, token: &'static str },

    #[error("cannot save tokenizer to {path}: {message}")]
    TokenizerSave { path: PathBuf, message: String },

    #[error("tokenizing {what} failed: {message}")]
    Encode { what: String, message: String },

    #[error(
        "cannot read manifest {path}: {cause}; \
         is this a folder written by `cram data prepare`?"
    )]
    ManifestRead {
        path: PathBuf,
        cause: std::io::Error,
    },

    #[error("manifest {path} is not valid: {cause}; re-run `cram data prepare`")]
    ManifestParse {
        path: PathBuf,
        cause: serde_json::Error,
    },

    #[error(
        "manifest {path} has format_version {found}, this cram reads version {expected}; \
         re-run `cram data prepare` with this cram"
    )]
    ManifestVersion {
        path: PathBuf,
        found: u32,
        expected: u32,
    },

    #[error("manifest {path} is inconsistent: {reason}; re-run `cram data prepare`")]
    ManifestInvalid { path: PathBuf, reason: String },

    #[error(
        "tokenizer {path} has sha256 {actual} but the manifest was written for {expected}; \
         the folder mixes files of two runs: re-run `cram data prepare`"
    )]
    TokenizerMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },

    #[error(
        "cannot read {path}: {cause}; \
         the prepared folder is incomplete, re-run `cram data prepare`"
    )]
    DatasetFile {
        path: PathBuf,
        cause: std::io::Error,
    },

    #[error(
        "cannot open shard {path}: {cause}; \
         the prepared folder is incomplete, re-run `cram data prepare`"
    )]
    ShardOpen {
        path: PathBuf,
        cause: std::io::Error,
    },

    #[error(
        "shard {path} holds {actual} bytes but the manifest expects {expected}; \
         the file is truncated or from another run, re-run `cram data prepare`"
    )]
    ShardSize {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },

    #[error(
        "shard {path} is corrupt: its sha256 is {actual} but the manifest says {expected}; \
         re-run `cram data prepare`"
    )]
    ShardChecksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
}

impl DataError {
    pub(crate) fn write(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DataError {
        let path = path.into();
        move |cause| DataError::Write { path, cause }
    }

    pub(crate) fn read_input(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DataError {
        let path = path.into();
        move |cause| DataError::ReadInput { path, cause }
    }
}
