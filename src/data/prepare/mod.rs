//! `prepare`: raw text in, a folder of token shards and a manifest out.
//!
//! Four passes, each streaming, each recorded in the work folder so that a
//! re-run continues after the last finished one (see `output`):
//! 1. `clean_pass`: read → normalize → min-length → exact dedup → near-dup,
//!    into one spool file per input;
//! 2. `plan_pass`: mix weights and the train/validation rule, then the
//!    tokenizer, trained on a sample of the train text or reused;
//! 3. `encode_pass`: tokenize → compression filter → pack → shards;
//! 4. the unigram sort of the train sequences, when asked for.
//!
//! Every option and input is checked before anything is written, and the
//! output appears only when complete.

mod clean_pass;
mod encode_pass;
mod plan_pass;

use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokenizers::Tokenizer;

use super::error::DataError;
use super::input::{list_files, InputSpec};
use super::manifest::{Manifest, Splits, Stage, TokenizerInfo, FORMAT_VERSION, TOKENIZER_FILE};
use super::normalize::Normalization;
use super::output::{check_out_dir, sync_dir, WorkDir};
use super::read::TextSplit;
use super::shard::{sha256_hex, Dtype, ShardWriter};
use super::sort::{write_sorted, UnigramCounts, Unsorted, UNIGRAM};
use super::split::Split;
use super::store::TokenStore;
use super::tokenizer::{
    load_tokenizer, lowercases, model_kind, special_tokens, token_strings, vocab_size,
    TokenizerKind, SPECIAL_TOKENS,
};
use crate::config::{Arch, Config};

/// The default of `min_chars`: headings, signatures and stray lines carry
/// little to learn from.
pub const MIN_DOC_CHARS: usize = 20;

#[derive(Clone, Debug)]
pub struct PrepareOptions {
    /// Files or folders (folders: every regular file inside, recursively,
    /// sorted by path), each with an optional mixing weight.
    pub inputs: Vec<InputSpec>,
    pub out: PathBuf,
    /// JSON Lines inputs: the field holding the text.
    pub text_field: String,
    /// Plain-text inputs: how files are cut into documents.
    pub text_split: TextSplit,
    pub normalization: Normalization,
    pub min_chars: usize,
    /// Drop exact duplicates.
    pub dedup: bool,
    /// Drop near duplicates at this Jaccard similarity; `None`: keep them.
    pub near_dup_threshold: Option<f64>,
    pub tokenizer_kind: TokenizerKind,
    pub vocab_size: usize,
    /// Bytes of cleaned train text the tokenizer is trained on.
    pub tokenizer_sample_bytes: u64,
    /// Reuse an existing tokenizer.json instead of training one.
    pub tokenizer: Option<PathBuf>,
    /// Drop documents with more tokens per character; `None`: keep all.
    pub max_tokens_per_char: Option<f64>,
    pub seq_len: usize,
    pub val_fraction: f64,
    /// Sequences per shard file.
    pub shard_sequences: usize,
    /// Encoders: every sequence starts with [CLS].
    pub cls_first: bool,
    /// Sort the train sequences by unigram frequency, most common first.
    pub unigram_sort: bool,
    pub seed: u64,
    /// Replace an existing non-empty output folder.
    pub overwrite: bool,
    /// Show progress bars and, at the end, one decoded sample sequence.
    pub progress: bool,
}

impl PrepareOptions {
    /// The crammed-bert preset's data settings for these inputs.
    pub fn new(inputs: Vec<InputSpec>, out: PathBuf) -> PrepareOptions {
        PrepareOptions {
            inputs,
            out,
            text_field: "text".into(),
            text_split: TextSplit::BlankLine,
            normalization: Normalization::Nfkc,
            min_chars: MIN_DOC_CHARS,
            dedup: true,
            near_dup_threshold: Some(0.8),
            tokenizer_kind: TokenizerKind::Wordpiece,
            vocab_size: 32768,
            tokenizer_sample_bytes: 256 << 20,
            tokenizer: None,
            max_tokens_per_char: Some(0.3),
            seq_len: 128,
            val_fraction: 0.02,
            shard_sequences: 65536,
            cls_first: true,
            unigram_sort: true,
            seed: 0,
            overwrite: false,
            progress: false,
        }
    }

    /// A config's `[data]` settings and seed for these inputs.
    pub fn from_config(inputs: Vec<InputSpec>, out: PathBuf, config: &Config) -> PrepareOptions {
        let d = &config.data;
        PrepareOptions {
            text_field: d.text_field.clone(),
            text_split: d.text_split,
            normalization: d.normalization,
            min_chars: d.min_chars,
            dedup: d.dedup,
            near_dup_threshold: d.near_dup.then_some(d.near_dup_threshold),
            tokenizer_kind: d.tokenizer,
            vocab_size: d.vocab_size,
            tokenizer_sample_bytes: d.tokenizer_sample_mb << 20,
            max_tokens_per_char: d.compression_filter.then_some(d.max_tokens_per_char),
            seq_len: d.seq_len,
            val_fraction: d.val_fraction,
            shard_sequences: d.shard_sequences,
            cls_first: config.model.arch == Arch::Encoder,
            unigram_sort: d.unigram_sort,
            seed: config.train.seed,
            ..PrepareOptions::new(inputs, out)
        }
    }
}

/// How long one pass took and how many bytes of text it went through.
#[derive(Clone, Debug, PartialEq)]
pub struct StageTiming {
    pub stage: &'static str,
    pub seconds: f64,
    pub bytes: u64,
    /// Finished by an earlier run and skipped in this one.
    pub reused: bool,
}

impl StageTiming {
    fn since(stage: &'static str, start: Instant, bytes: u64) -> StageTiming {
        StageTiming {
            stage,
            seconds: start.elapsed().as_secs_f64(),
            bytes,
            reused: false,
        }
    }

    fn reused(stage: &'static str, bytes: u64) -> StageTiming {
        StageTiming {
            stage,
            seconds: 0.0,
            bytes,
            reused: true,
        }
    }

    pub fn mb_per_s(&self) -> f64 {
        if self.seconds > 0.0 {
            self.bytes as f64 / 1e6 / self.seconds
        } else {
            0.0
        }
    }
}

/// What `prepare_timed` gives beyond the manifest.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub manifest: Manifest,
    pub timings: Vec<StageTiming>,
    /// Things the user should look at, such as a filter that dropped most
    /// documents.
    pub warnings: Vec<String>,
}

/// An input and the files it stands for.
struct ListedInput {
    spec: InputSpec,
    files: Vec<PathBuf>,
}

pub fn prepare(opts: &PrepareOptions) -> Result<Manifest, DataError> {
    prepare_timed(opts).map(|p| p.manifest)
}

pub fn prepare_timed(opts: &PrepareOptions) -> Result<Prepared, DataError> {
    check_options(opts)?;
    let inputs = opts
        .inputs
        .iter()
        .map(|spec| {
            Ok(ListedInput {
                spec: spec.clone(),
                files: list_files(&spec.path)?,
            })
        })
        .collect::<Result<Vec<_>, DataError>>()?;
    let reused = match &opts.tokenizer {
        Some(path) => {
            let tokenizer = load_tokenizer(path)?;
            special_tokens(&tokenizer, Some(path))?;
            Some(tokenizer)
        }
        None => None,
    };
    check_out_dir(&opts.out, opts.overwrite)?;
    let mut work = WorkDir::open(&opts.out)?;
    let result = run_passes(opts, &inputs, reused, &mut work);
    match result {
        Ok(mut prepared) => {
            if let Some(w) = empty_val_warning(&prepared.manifest, opts.val_fraction) {
                prepared.warnings.push(w);
            }
            work.commit()?;
            if opts.progress {
                print_sample(&opts.out, opts.seed)?;
            }
            Ok(prepared)
        }
        Err(e) => {
            if opts.progress && work.kept_on_failure() {
                eprintln!(
                    "note: finished stages are kept in {}; the same command continues from there \
                     (delete the folder to start over)",
                    work.path().display()
                );
            }
            Err(e)
        }
    }
}

/// Pretraining evaluates on the held-out split, so data without one can be
/// prepared (a training-only set is a choice) but is flagged, naming why it
/// is empty and the fix.
fn empty_val_warning(manifest: &Manifest, val_fraction: f64) -> Option<String> {
    if manifest.splits.val.sequences > 0 {
        return None;
    }
    let why = if val_fraction <= 0.0 {
        "--val-fraction is 0".to_string()
    } else {
        format!(
            "the input holds {} document(s) and the split holds out whole documents",
            manifest.splits.train.documents
        )
    };
    Some(format!(
        "the validation split is empty ({why}); `cram pretrain` refuses data without held-out \
         sequences: prepare with --val-fraction above 0 and more than one document (plain text \
         is split into documents at blank lines; --set data.text_split=line splits at every line)"
    ))
}

fn run_passes(
    opts: &PrepareOptions,
    inputs: &[ListedInput],
    reused: Option<Tokenizer>,
    work: &mut WorkDir,
) -> Result<Prepared, DataError> {
    let mut timings = Vec::new();
    let clean = clean_pass::run(opts, inputs, work, &mut timings)?;
    let (plan, tokenizer) = plan_pass::run(opts, &clean, reused, work, &mut timings)?;
    let special = special_tokens(&tokenizer, opts.tokenizer.as_deref())?;
    let encoded = encode_pass::run(opts, &clean, &plan, &tokenizer, work, &mut timings)?;
    let dataset = work.dataset()?;
    let layout = SequenceLayout {
        dtype: Dtype::for_vocab(vocab_size(&tokenizer)),
        seq_len: opts.seq_len,
        shard_sequences: opts.shard_sequences,
    };

    let mut stages: Vec<Stage> = clean.stages.clone();
    stages.extend(plan.stages.iter().cloned());
    stages.extend(encoded.stages.iter().cloned());
    let mut splits = encoded.splits.clone();
    if opts.unigram_sort {
        let start = Instant::now();
        let unsorted_dir = work.file(encode_pass::UNSORTED);
        let counts = UnigramCounts::from_vec(encoded.unigram_counts.clone());
        let mut writer = ShardWriter::new(
            &dataset,
            Split::Train,
            layout.dtype,
            layout.seq_len,
            layout.shard_sequences,
        );
        let unsorted = Unsorted {
            dir: &unsorted_dir,
            shards: &encoded.splits.train.shards,
            dtype: layout.dtype,
            seq_len: layout.seq_len,
        };
        let sequences = write_sorted(
            &unsorted,
            &counts.log_probs(),
            &special,
            &mut writer,
            opts.progress,
        )?;
        splits.train.shards = writer.finish()?;
        std::fs::remove_dir_all(&unsorted_dir).map_err(DataError::write(&unsorted_dir))?;
        let documents = splits.train.documents as usize;
        stages.push(
            Stage::new("sort", documents, documents)
                .with("split", "train")
                .with("sequences", sequences)
                .with(
                    "by",
                    "mean log2 unigram probability of ordinary tokens, most common first",
                ),
        );
        let bytes = sequences * (layout.seq_len * layout.dtype.bytes()) as u64;
        timings.push(StageTiming::since("sort", start, bytes));
    }

    let tokenizer_info = install_tokenizer(opts, work, &dataset, &tokenizer)?;
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        created_by: format!("cram {}", env!("CARGO_PKG_VERSION")),
        seed: opts.seed,
        seq_len: opts.seq_len,
        dtype: layout.dtype,
        cls_first: opts.cls_first,
        sorted_by: opts.unigram_sort.then(|| UNIGRAM.to_string()),
        shard_sequences: opts.shard_sequences,
        tokenizer: tokenizer_info,
        splits: Splits {
            train: splits.train,
            val: splits.val,
        },
        stages,
        inputs: clean.inputs.clone(),
    };
    manifest.write(&dataset)?;
    sync_dir(&dataset)?;
    Ok(Prepared {
        manifest,
        timings,
        warnings: encoded.warnings.clone(),
    })
}

/// How sequences are laid out in the shards.
#[derive(Clone, Copy)]
struct SequenceLayout {
    dtype: Dtype,
    seq_len: usize,
    shard_sequences: usize,
}

fn check_options(opts: &PrepareOptions) -> Result<(), DataError> {
    let invalid = |name, value: String, reason| {
        Err(DataError::InvalidOption {
            name,
            value,
            reason,
        })
    };
    if opts.inputs.is_empty() {
        return invalid(
            "inputs",
            "none".into(),
            "give at least one input file or folder",
        );
    }
    let weighted = opts.inputs.iter().filter(|i| i.weight.is_some()).count();
    if weighted != 0 && weighted != opts.inputs.len() {
        return Err(DataError::PartialWeights {
            inputs: describe_inputs(&opts.inputs),
        });
    }
    if opts.seq_len < 2 {
        return invalid("seq_len", opts.seq_len.to_string(), "must be at least 2");
    }
    if opts.tokenizer.is_none() && opts.vocab_size <= SPECIAL_TOKENS.len() {
        return invalid(
            "vocab_size",
            opts.vocab_size.to_string(),
            "must leave room beyond the 5 special tokens",
        );
    }
    if !(0.0..=1.0).contains(&opts.val_fraction) {
        return invalid(
            "val_fraction",
            opts.val_fraction.to_string(),
            "must be between 0 and 1",
        );
    }
    if opts.shard_sequences == 0 {
        return invalid("shard_sequences", "0".into(), "must be positive");
    }
    if opts
        .near_dup_threshold
        .is_some_and(|t| !(t > 0.0 && t <= 1.0))
    {
        return invalid(
            "near_dup_threshold",
            format!("{:?}", opts.near_dup_threshold),
            "must be in (0, 1]",
        );
    }
    if opts
        .max_tokens_per_char
        .is_some_and(|t| !(t.is_finite() && t > 0.0))
    {
        return invalid(
            "max_tokens_per_char",
            format!("{:?}", opts.max_tokens_per_char),
            "must be positive",
        );
    }
    if opts.tokenizer.is_none() && opts.tokenizer_sample_bytes == 0 {
        return invalid("tokenizer_sample_bytes", "0".into(), "must be positive");
    }
    if opts.text_field.is_empty() {
        return invalid(
            "text_field",
            "\"\"".into(),
            "name the JSON field with the text",
        );
    }
    Ok(())
}

pub(super) fn describe_inputs(inputs: &[InputSpec]) -> String {
    inputs
        .iter()
        .map(|i| match i.weight {
            Some(w) => format!("{}:{w}", i.path.display()),
            None => i.path.display().to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Copies the tokenizer into the dataset and describes it for the manifest.
fn install_tokenizer(
    opts: &PrepareOptions,
    work: &WorkDir,
    dataset: &Path,
    tokenizer: &Tokenizer,
) -> Result<TokenizerInfo, DataError> {
    let from = work.file(plan_pass::TOKENIZER);
    let to = dataset.join(TOKENIZER_FILE);
    let bytes = std::fs::read(&from).map_err(|e| DataError::WorkFile {
        path: from.clone(),
        message: e.to_string(),
    })?;
    std::fs::write(&to, &bytes)
        .and_then(|()| std::fs::File::open(&to)?.sync_all())
        .map_err(DataError::write(&to))?;
    Ok(TokenizerInfo {
        file: TOKENIZER_FILE.to_string(),
        sha256: sha256_hex(&bytes),
        kind: model_kind(tokenizer).to_string(),
        vocab_size: vocab_size(tokenizer),
        lowercase: lowercases(tokenizer),
        special: special_tokens(tokenizer, opts.tokenizer.as_deref())?,
        reused_from: opts.tokenizer.as_ref().map(|p| p.display().to_string()),
    })
}

/// Prints one random train sequence split into its tokens, to eyeball what
/// the model will see.
fn print_sample(out: &Path, seed: u64) -> Result<(), DataError> {
    let store = TokenStore::open(out)?;
    let count = store.len(Split::Train);
    if count == 0 {
        return Ok(());
    }
    let index = ChaCha8Rng::seed_from_u64(seed).random_range(0..count);
    let mut ids = vec![0; store.seq_len()];
    store.read(Split::Train, index, &mut ids);
    let tokens = token_strings(&store.tokenizer()?, &ids);
    eprintln!(
        "sample: train sequence {index} of {count}, {} tokens:\n{}",
        ids.len(),
        tokens.join(" ")
    );
    Ok(())
}
