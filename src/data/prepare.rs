//! `prepare`: raw text in, a folder of token shards and a manifest out.
//!
//! read → min-length → split → tokenizer → tokenize + pack → shards, in that
//! order; each stage appends its record to the manifest's `stages`. All
//! inputs are read and checked before anything is written, and the output
//! appears only when complete (see `output`).

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokenizers::Tokenizer;

use super::clean::{apply_filter, MinLength};
use super::encode::DocumentEncoder;
use super::error::DataError;
use super::manifest::{
    InputFile, Manifest, SplitInfo, Splits, Stage, TokenizerInfo, FORMAT_VERSION, TOKENIZER_FILE,
};
use super::output::{check_out_dir, StagingDir};
use super::pack::{PackStats, Packer};
use super::progress::{bytes_bar, spinner};
use super::read::{list_input_files, read_input};
use super::shard::{Dtype, ShardWriter};
use super::split::{assign_splits, Split};
use super::store::TokenStore;
use super::tokenizer::{
    load_tokenizer, lowercases, model_kind, save_tokenizer, special_tokens, token_strings,
    train_wordpiece, vocab_size, SpecialTokens, SPECIAL_TOKENS,
};

/// Documents shorter than this many characters are dropped: headings,
/// signatures and stray lines carry little to learn from.
pub const MIN_DOC_CHARS: usize = 20;

/// Documents are encoded in parallel in batches of about this many bytes of
/// text per thread, so that only one batch's token ids are in memory at a
/// time, and the encoder's cache fills after the first batches.
const ENCODE_BATCH_BYTES_PER_THREAD: usize = 1 << 20;

#[derive(Clone, Debug)]
pub struct PrepareOptions {
    /// Files or folders (folders: every regular file inside, recursively,
    /// sorted by path).
    pub inputs: Vec<PathBuf>,
    pub out: PathBuf,
    pub vocab_size: usize,
    pub seq_len: usize,
    pub val_fraction: f64,
    /// Sequences per shard file.
    pub shard_sequences: usize,
    pub seed: u64,
    /// Reuse an existing tokenizer.json instead of training one.
    pub tokenizer: Option<PathBuf>,
    /// Encoders: every sequence starts with [CLS].
    pub cls_first: bool,
    /// Overwrite an existing non-empty output folder.
    pub force: bool,
    /// Show progress bars and, at the end, one decoded sample sequence.
    pub progress: bool,
}

pub fn prepare(opts: &PrepareOptions) -> Result<Manifest, DataError> {
    check_options(opts)?;
    let files = list_input_files(&opts.inputs)?;
    check_out_dir(&opts.out, opts.force)?;
    let mut stages = Vec::new();

    let (inputs, documents) = read_inputs(&files, opts.progress, &mut stages)?;
    let (documents, stage) = apply_filter(
        documents,
        &MinLength {
            min_chars: MIN_DOC_CHARS,
        },
    );
    stages.push(stage);
    if documents.is_empty() {
        return Err(DataError::NoDocuments {
            inputs: describe_inputs(&opts.inputs),
            min_chars: MIN_DOC_CHARS,
        });
    }
    let (train, val) = split_documents(documents, opts, &mut stages)?;
    let tokenizer = build_tokenizer(opts, &train, &mut stages)?;
    let special = special_tokens(&tokenizer, opts.tokenizer.as_deref())?;

    let staging = StagingDir::create(&opts.out)?;
    let tokenizer_info = save_tokenizer_info(opts, &tokenizer, special, staging.path())?;
    let layout = Layout {
        dir: staging.path(),
        dtype: Dtype::for_vocab(tokenizer_info.vocab_size),
        seq_len: opts.seq_len,
        shard_sequences: opts.shard_sequences,
        cls_first: opts.cls_first,
        special: tokenizer_info.special,
        progress: opts.progress,
    };
    let mut encoder = DocumentEncoder::new(&tokenizer);
    let (train_info, train_stats) = write_split(&layout, &mut encoder, Split::Train, &train)?;
    let (val_info, val_stats) = write_split(&layout, &mut encoder, Split::Val, &val)?;
    stages.extend(tokenize_and_pack_stages(
        &[train_stats, val_stats],
        opts,
        train.len() + val.len(),
    ));

    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        created_by: format!("cram {}", env!("CARGO_PKG_VERSION")),
        seed: opts.seed,
        seq_len: opts.seq_len,
        dtype: layout.dtype,
        cls_first: opts.cls_first,
        sorted_by: None,
        shard_sequences: opts.shard_sequences,
        tokenizer: tokenizer_info,
        splits: Splits {
            train: train_info,
            val: val_info,
        },
        stages,
        inputs,
    };
    manifest.write(staging.path())?;
    staging.commit()?;
    if opts.progress {
        print_sample(&opts.out, opts.seed)?;
    }
    Ok(manifest)
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
    Ok(())
}

fn describe_inputs(inputs: &[PathBuf]) -> String {
    inputs
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn read_inputs(
    files: &[PathBuf],
    progress: bool,
    stages: &mut Vec<Stage>,
) -> Result<(Vec<InputFile>, Vec<String>), DataError> {
    let total: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum();
    let bar = bytes_bar(progress, total, "read");
    let mut records = Vec::with_capacity(files.len());
    let mut documents = Vec::new();
    for file in files {
        let text = read_input(file)?;
        bar.inc(text.bytes);
        records.push(InputFile {
            path: text.path.display().to_string(),
            bytes: text.bytes,
        });
        documents.extend(text.documents);
    }
    bar.finish();
    let bytes: u64 = records.iter().map(|r| r.bytes).sum();
    stages.push(
        Stage::new("read", documents.len(), documents.len())
            .with("files", records.len())
            .with("bytes", bytes),
    );
    Ok((records, documents))
}

fn split_documents(
    documents: Vec<String>,
    opts: &PrepareOptions,
    stages: &mut Vec<Stage>,
) -> Result<(Vec<String>, Vec<String>), DataError> {
    let splits = assign_splits(&documents, opts.seed, opts.val_fraction)?;
    let total = documents.len();
    let (train, val): (Vec<_>, Vec<_>) = documents
        .into_iter()
        .zip(splits)
        .partition(|(_, split)| *split == Split::Train);
    let train: Vec<String> = train.into_iter().map(|(doc, _)| doc).collect();
    let val: Vec<String> = val.into_iter().map(|(doc, _)| doc).collect();
    stages.push(
        Stage::new("split", total, total)
            .with("train_documents", train.len())
            .with("val_documents", val.len())
            .with("val_fraction", opts.val_fraction)
            .with("rule", "sha256(seed, text) < val_fraction"),
    );
    Ok((train, val))
}

fn build_tokenizer(
    opts: &PrepareOptions,
    train: &[String],
    stages: &mut Vec<Stage>,
) -> Result<Tokenizer, DataError> {
    let stage = Stage::new("tokenizer", train.len(), train.len());
    let tokenizer = match &opts.tokenizer {
        Some(path) => {
            let tokenizer = load_tokenizer(path)?;
            stages.push(stage.with("reused_from", path.display().to_string()));
            tokenizer
        }
        None => {
            let bar = spinner(
                opts.progress,
                "tokenizer",
                format!("training WordPiece, {} ids", opts.vocab_size),
            );
            let tokenizer = train_wordpiece(train, opts.vocab_size)?;
            bar.finish();
            stages.push(
                stage
                    .with("trained", "wordpiece (BPE merges with ## prefix)")
                    .with("requested_vocab_size", opts.vocab_size)
                    .with("vocab_size", vocab_size(&tokenizer)),
            );
            tokenizer
        }
    };
    Ok(tokenizer)
}

/// Saves `tokenizer.json` into the output and describes it for the manifest.
fn save_tokenizer_info(
    opts: &PrepareOptions,
    tokenizer: &Tokenizer,
    special: SpecialTokens,
    dir: &Path,
) -> Result<TokenizerInfo, DataError> {
    let sha256 = save_tokenizer(tokenizer, &dir.join(TOKENIZER_FILE))?;
    Ok(TokenizerInfo {
        file: TOKENIZER_FILE.to_string(),
        sha256,
        kind: model_kind(tokenizer).to_string(),
        vocab_size: vocab_size(tokenizer),
        lowercase: lowercases(tokenizer),
        special,
        reused_from: opts.tokenizer.as_ref().map(|p| p.display().to_string()),
    })
}

/// Where and how sequences are written.
struct Layout<'a> {
    dir: &'a Path,
    dtype: Dtype,
    seq_len: usize,
    shard_sequences: usize,
    cls_first: bool,
    special: SpecialTokens,
    progress: bool,
}

/// What tokenizing one split found.
#[derive(Clone, Copy, Default)]
struct SplitStats {
    empty: usize,
    tokens: u64,
    unknown: u64,
    pack: PackStats,
}

/// Tokenizes a split's documents batch by batch, packs them and writes the
/// shards.
fn write_split(
    layout: &Layout,
    encoder: &mut DocumentEncoder,
    split: Split,
    documents: &[String],
) -> Result<(SplitInfo, SplitStats), DataError> {
    let total: usize = documents.iter().map(String::len).sum();
    let bar = bytes_bar(layout.progress, total as u64, split.name());
    let mut writer = ShardWriter::new(
        layout.dir,
        split,
        layout.dtype,
        layout.seq_len,
        layout.shard_sequences,
    );
    let mut packer = Packer::new(layout.seq_len, layout.cls_first, layout.special);
    let mut stats = SplitStats::default();
    let mut sequences = Vec::new();
    let batch_bytes = ENCODE_BATCH_BYTES_PER_THREAD * rayon::current_num_threads();
    for batch in byte_batches(documents, batch_bytes) {
        for ids in encoder.encode(batch)? {
            if ids.is_empty() {
                stats.empty += 1;
                continue;
            }
            stats.tokens += ids.len() as u64;
            stats.unknown += ids.iter().filter(|&&t| t == layout.special.unk).count() as u64;
            packer.push_document(&ids, &mut sequences);
        }
        writer.write_sequences(&sequences)?;
        sequences.clear();
        bar.inc(batch.iter().map(String::len).sum::<usize>() as u64);
    }
    stats.pack = packer.finish(&mut sequences);
    writer.write_sequences(&sequences)?;
    let shards = writer.finish()?;
    bar.finish();
    let info = SplitInfo {
        documents: stats.pack.documents,
        sequences: stats.pack.sequences,
        tokens: stats.pack.tokens,
        padding: stats.pack.padding,
        shards,
    };
    Ok((info, stats))
}

/// Consecutive runs of documents holding at least `max_bytes` of text each
/// (the last may hold less).
fn byte_batches(documents: &[String], max_bytes: usize) -> impl Iterator<Item = &[String]> {
    let mut rest = documents;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let end = rest
            .iter()
            .position(|doc| {
                bytes += doc.len();
                bytes >= max_bytes
            })
            .map_or(rest.len(), |i| i + 1);
        let (batch, tail) = rest.split_at(end);
        rest = tail;
        Some(batch)
    })
}

fn tokenize_and_pack_stages(
    stats: &[SplitStats],
    opts: &PrepareOptions,
    documents: usize,
) -> [Stage; 2] {
    let sum = |f: fn(&SplitStats) -> u64| stats.iter().map(f).sum::<u64>();
    let empty = sum(|s| s.empty as u64) as usize;
    let packed = documents - empty;
    let tokenize = Stage::new("tokenize", documents, packed)
        .with("tokens", sum(|s| s.tokens))
        .with("unknown_tokens", sum(|s| s.unknown))
        .with("dropped_empty", empty);
    let pack = Stage::new("pack", packed, packed)
        .with("seq_len", opts.seq_len)
        .with("cls_first", opts.cls_first)
        .with("sequences", sum(|s| s.pack.sequences))
        .with("tokens", sum(|s| s.pack.tokens))
        .with("padding", sum(|s| s.pack.padding));
    [tokenize, pack]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cover_every_document_once_in_order() {
        let docs: Vec<String> = ["aaaa", "bb", "c", "dddddd", "e"]
            .map(String::from)
            .to_vec();
        let batches: Vec<Vec<&str>> = byte_batches(&docs, 5)
            .map(|b| b.iter().map(String::as_str).collect())
            .collect();
        assert_eq!(
            batches,
            vec![vec!["aaaa", "bb"], vec!["c", "dddddd"], vec!["e"]]
        );
        assert_eq!(byte_batches(&[], 5).count(), 0);
    }
}
