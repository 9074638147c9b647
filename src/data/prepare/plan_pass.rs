//! The second pass: decide which documents the dataset uses (the mix) and
//! where each goes (the split), then get a tokenizer: reuse the one given,
//! or train one on a random sample of the train text.
//!
//! Two streaming scans of the spools: the first settles the mix and the
//! split rule (whose small-input guarantees need every key); the second
//! counts the words of the sample, chosen by a hash of each document's key,
//! so the sample is uniform over the whole corpus whatever its order.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokenizers::Tokenizer;

use super::clean_pass::CleanRecord;
use super::{PrepareOptions, StageTiming};
use crate::data::error::DataError;
use crate::data::manifest::Stage;
use crate::data::mix::{keep_probabilities, keeps};
use crate::data::output::{file_sha256, fingerprint, WorkDir};
use crate::data::progress::{bytes_bar, spinner};
use crate::data::split::{Split, SplitPlanner, SplitRule};
use crate::data::spool::SpoolReader;
use crate::data::tokenizer::{
    load_tokenizer, save_tokenizer, train, vocab_size, TokenizerKind, WordCounter,
};

const STAGE: &str = "plan";
/// The tokenizer's file in the work folder.
pub const TOKENIZER: &str = "tokenizer.json";

/// The tokenizer sample is counted in batches of about this many bytes.
const SAMPLE_BATCH_BYTES: usize = 16 << 20;

/// Salt of the sample's hash, so that it is independent of the mix's.
const SAMPLE_SALT: u64 = 0x7A3D_1E2F_95C4_B680;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlanRecord {
    pub fingerprint: String,
    /// The probability with which each input's documents are kept.
    pub keep: Vec<f64>,
    pub split: SplitRule,
    /// Bytes of text the dataset uses (before the compression filter).
    pub mixed_bytes: u64,
    /// mix, split, tokenizer.
    pub stages: Vec<Stage>,
    pub tokenizer_sha256: String,
}

#[derive(Serialize)]
struct PlanKey<'a> {
    clean: &'a str,
    weights: Vec<Option<f64>>,
    seed: u64,
    val_fraction: f64,
    tokenizer: Option<(TokenizerKind, usize, u64)>,
    reused_tokenizer: Option<String>,
}

pub(super) fn run(
    opts: &PrepareOptions,
    clean: &CleanRecord,
    reused: Option<Tokenizer>,
    work: &mut WorkDir,
    timings: &mut Vec<StageTiming>,
) -> Result<(PlanRecord, Tokenizer), DataError> {
    let reused_sha = opts.tokenizer.as_deref().map(file_sha256).transpose()?;
    let key = PlanKey {
        clean: &clean.fingerprint,
        weights: opts.inputs.iter().map(|i| i.weight).collect(),
        seed: opts.seed,
        val_fraction: opts.val_fraction,
        tokenizer: reused.is_none().then_some((
            opts.tokenizer_kind,
            opts.vocab_size,
            opts.tokenizer_sample_bytes,
        )),
        reused_tokenizer: reused_sha,
    };
    let fingerprint = fingerprint(&key);
    let tokenizer_path = work.file(TOKENIZER);
    if let Some(record) = work.finished::<PlanRecord>(STAGE, &fingerprint) {
        let intact = file_sha256(&tokenizer_path).ok() == Some(record.tokenizer_sha256.clone());
        if intact {
            if opts.progress {
                eprintln!(
                    "        plan: reusing the finished pass in {}",
                    work.path().display()
                );
            }
            timings.push(StageTiming::reused("mix", record.mixed_bytes));
            return Ok((record, load_tokenizer(&tokenizer_path)?));
        }
    }
    work.forget(STAGE)?;

    let start = Instant::now();
    let spool_bytes: Vec<u64> = clean.spools.iter().map(|s| s.bytes).collect();
    let keep = keep_probabilities(&key.weights, &spool_bytes);
    let (split, mix_stage, split_stage, mixed_bytes, train_bytes) =
        plan_mix_and_split(opts, clean, &keep, work)?;
    timings.push(StageTiming::since("mix", start, spool_bytes.iter().sum()));

    let (tokenizer, tokenizer_stage) = match reused {
        Some(tokenizer) => {
            let path = opts.tokenizer.as_deref().unwrap_or(&tokenizer_path);
            std::fs::copy(path, &tokenizer_path).map_err(DataError::write(&tokenizer_path))?;
            let documents = split_stage.docs_out as usize;
            let stage = Stage::new("tokenizer", documents, documents)
                .with("reused_from", path.display().to_string())
                .with("vocab_size", vocab_size(&tokenizer));
            (tokenizer, stage)
        }
        None => {
            let sample = opts.tokenizer_sample_bytes as f64 / train_bytes.max(1) as f64;
            let (tokenizer, stage) =
                train_on_sample(opts, clean, &keep, &split, sample.min(1.0), work, timings)?;
            save_tokenizer(&tokenizer, &tokenizer_path)?;
            (tokenizer, stage)
        }
    };
    let record = PlanRecord {
        fingerprint,
        keep,
        split,
        mixed_bytes,
        stages: vec![mix_stage, split_stage, tokenizer_stage],
        tokenizer_sha256: file_sha256(&tokenizer_path)?,
    };
    work.finish(STAGE, &record.fingerprint, &record)?;
    Ok((record, tokenizer))
}

/// The split rule, the mix and split stage records, and the bytes of text
/// mixed in and of it in the train split.
fn plan_mix_and_split(
    opts: &PrepareOptions,
    clean: &CleanRecord,
    keep: &[f64],
    work: &WorkDir,
) -> Result<(SplitRule, Stage, Stage, u64, u64), DataError> {
    let total: u64 = clean.spools.iter().map(|s| s.bytes).sum();
    let bar = bytes_bar(opts.progress, total, "mix");
    let mut planner = SplitPlanner::new(opts.seed, opts.val_fraction);
    let mut per_input = Vec::new();
    let (mut documents_in, mut documents_out, mut bytes_out) = (0u64, 0u64, 0u64);
    for (input, spool) in clean.spools.iter().enumerate() {
        let mut reader = SpoolReader::open(&work.file(&spool.file))?;
        let (mut kept, mut kept_bytes) = (0u64, 0u64);
        while let Some((key, text)) = reader.next_document()? {
            bar.inc(text.len() as u64);
            if keeps(opts.seed, key, keep[input]) {
                planner.observe(key, text.len() as u64);
                kept += 1;
                kept_bytes += text.len() as u64;
            }
        }
        documents_in += spool.documents;
        documents_out += kept;
        bytes_out += kept_bytes;
        per_input.push((spool, kept, kept_bytes));
    }
    bar.finish();
    let inputs: Vec<_> = per_input
        .iter()
        .zip(&opts.inputs)
        .zip(keep)
        .map(|(((spool, kept, kept_bytes), spec), p)| {
            json!({
                "path": spec.path.display().to_string(),
                "weight": spec.weight,
                "documents": spool.documents,
                "bytes": spool.bytes,
                "keep_probability": p,
                "kept_documents": kept,
                "kept_bytes": kept_bytes,
                "share": *kept_bytes as f64 / bytes_out.max(1) as f64,
            })
        })
        .collect();
    let mix = Stage::new("mix", documents_in as usize, documents_out as usize)
        .with("dropped", documents_in - documents_out)
        .with("bytes", bytes_out)
        .with("weighted", opts.inputs.iter().any(|i| i.weight.is_some()))
        .with("inputs", inputs);
    let (rule, counts) = planner.finish()?;
    let split = Stage::new("split", documents_out as usize, documents_out as usize)
        .with("train_documents", counts.train_documents)
        .with("val_documents", counts.val_documents)
        .with("val_fraction", opts.val_fraction)
        .with("rule", "hash(seed, text) < val_fraction, by whole document");
    Ok((rule, mix, split, bytes_out, counts.train_bytes))
}

/// Counts the words of a `fraction` of the train documents and trains the
/// tokenizer on them.
fn train_on_sample(
    opts: &PrepareOptions,
    clean: &CleanRecord,
    keep: &[f64],
    split: &SplitRule,
    fraction: f64,
    work: &WorkDir,
    timings: &mut Vec<StageTiming>,
) -> Result<(Tokenizer, Stage), DataError> {
    let start = Instant::now();
    let total: u64 = clean.spools.iter().map(|s| s.bytes).sum();
    let bar = bytes_bar(opts.progress, total, "sample");
    let mut counter = WordCounter::new(opts.tokenizer_kind);
    let mut batch = Vec::new();
    let mut batch_bytes = 0;
    for (input, spool) in clean.spools.iter().enumerate() {
        let mut reader = SpoolReader::open(&work.file(&spool.file))?;
        while let Some((key, text)) = reader.next_document()? {
            bar.inc(text.len() as u64);
            let chosen = keeps(opts.seed, key, keep[input])
                && split.split(key) == Split::Train
                && keeps(opts.seed ^ SAMPLE_SALT, key, fraction);
            if chosen {
                batch_bytes += text.len();
                batch.push(text);
                if batch_bytes >= SAMPLE_BATCH_BYTES {
                    counter.add(&batch)?;
                    batch.clear();
                    batch_bytes = 0;
                }
            }
        }
    }
    counter.add(&batch)?;
    bar.finish();
    let (documents, bytes) = (counter.documents, counter.bytes);
    timings.push(StageTiming::since("tokenizer sample", start, total));

    let start = Instant::now();
    let bar = spinner(
        opts.progress,
        "tokenizer",
        format!(
            "training {} on {:.0} MB, {} ids",
            opts.tokenizer_kind.name(),
            bytes as f64 / 1e6,
            opts.vocab_size
        ),
    );
    let tokenizer = train(opts.tokenizer_kind, counter.finish()?, opts.vocab_size)?;
    bar.finish();
    timings.push(StageTiming::since("tokenizer train", start, bytes));
    let stage = Stage::new("tokenizer", documents as usize, documents as usize)
        .with("trained", trained_name(opts.tokenizer_kind))
        .with("sample_documents", documents)
        .with("sample_bytes", bytes)
        .with("sample_fraction", fraction)
        .with("requested_vocab_size", opts.vocab_size)
        .with("vocab_size", vocab_size(&tokenizer));
    Ok((tokenizer, stage))
}

fn trained_name(kind: TokenizerKind) -> &'static str {
    match kind {
        TokenizerKind::Wordpiece => "wordpiece (BPE merges with ## prefix)",
        TokenizerKind::Bpe => "byte-level bpe",
    }
}
