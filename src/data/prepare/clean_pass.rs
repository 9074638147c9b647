//! The first pass: every input file read once, its documents normalized,
//! filtered by length, deduplicated (exactly, then nearly) and written to
//! one spool per input.
//!
//! A reader thread decodes the files (decompression and JSON parsing are
//! sequential per file) and hands batches of documents over a bounded
//! channel; this thread normalizes, hashes and MinHashes each batch on all
//! cores, then applies the deduplication indexes in document order, so the
//! result does not depend on thread timing.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::{Instant, UNIX_EPOCH};

use indicatif::ProgressBar;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Map;
use sha2::{Digest, Sha256};

use super::{ListedInput, PrepareOptions, StageTiming};
use crate::data::clean::{DocumentFilter, FilterCount, MinLength};
use crate::data::dedup::{ExactDedup, NearDedup};
use crate::data::error::DataError;
use crate::data::manifest::{InputFile, Stage, FORMAT_VERSION};
use crate::data::minhash::{signature, Signature, SHINGLE_WORDS};
use crate::data::normalize::{normalize, NormalizeStats};
use crate::data::output::{fingerprint, WorkDir};
use crate::data::progress::bytes_bar;
use crate::data::read::{DocumentReader, TextSplit};
use crate::data::spool::{SpoolInfo, SpoolWriter};

/// The stage record's name in the work folder.
const STAGE: &str = "clean";

/// Documents are handed to the cleaning threads in batches of about this
/// many bytes: large enough to keep all cores busy, small enough that two
/// batches in flight are nothing next to the memory budget.
const BATCH_BYTES: usize = 8 << 20;

/// What the pass produced, kept in the work folder.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CleanRecord {
    pub fingerprint: String,
    pub inputs: Vec<InputFile>,
    /// One spool per input, in input order.
    pub spools: Vec<SpoolInfo>,
    /// read, normalize, min-length, dedup-exact, near-dup.
    pub stages: Vec<Stage>,
    /// Bytes of the input files as stored (compressed or not).
    pub input_bytes: u64,
}

/// Everything that decides the spools.
#[derive(Serialize)]
struct CleanKey<'a> {
    format_version: u32,
    files: Vec<Vec<(String, u64, u128)>>,
    text_field: &'a str,
    text_split: TextSplit,
    normalization: &'static str,
    min_chars: usize,
    dedup: bool,
    near_dup_threshold: Option<f64>,
}

pub(super) fn run(
    opts: &PrepareOptions,
    inputs: &[ListedInput],
    work: &mut WorkDir,
    timings: &mut Vec<StageTiming>,
) -> Result<CleanRecord, DataError> {
    let key = CleanKey {
        format_version: FORMAT_VERSION,
        files: inputs
            .iter()
            .map(|i| i.files.iter().map(|f| file_identity(f)).collect())
            .collect::<Result<_, _>>()?,
        text_field: &opts.text_field,
        text_split: opts.text_split,
        normalization: opts.normalization.name(),
        min_chars: opts.min_chars,
        dedup: opts.dedup,
        near_dup_threshold: opts.near_dup_threshold,
    };
    let fingerprint = fingerprint(&key);
    if let Some(record) = work.finished::<CleanRecord>(STAGE, &fingerprint) {
        if opts.progress {
            eprintln!(
                "       clean: reusing the finished pass in {}",
                work.path().display()
            );
        }
        timings.push(StageTiming::reused("clean", record.input_bytes));
        return Ok(record);
    }
    work.forget(STAGE)?;
    let start = Instant::now();
    let input_bytes: u64 = key.files.iter().flatten().map(|(_, size, _)| size).sum();
    let bar = bytes_bar(opts.progress, input_bytes, "clean");
    let mut cleaner = Cleaner::new(opts, inputs, work)?;
    let (sender, receiver) = sync_channel(2);
    let reader_bar = bar.clone();
    std::thread::scope(|scope| {
        // The reader owns the sender, so the channel closes when it ends.
        let reader = scope.spawn(move || read_inputs(opts, inputs, &sender, &reader_bar));
        let cleaned = cleaner.consume(receiver);
        let read = reader
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        cleaned.and(read)
    })?;
    bar.finish();
    let record = cleaner.finish(fingerprint, input_bytes)?;
    if record.spools.iter().all(|s| s.documents == 0) {
        return Err(DataError::NoDocuments {
            inputs: super::describe_inputs(&opts.inputs),
            min_chars: opts.min_chars,
        });
    }
    work.finish(STAGE, &record.fingerprint, &record)?;
    timings.push(StageTiming::since("clean", start, input_bytes));
    Ok(record)
}

/// Path, size and modification time: a changed input invalidates the pass.
fn file_identity(path: &Path) -> Result<(String, u64, u128), DataError> {
    let meta = std::fs::metadata(path).map_err(DataError::read_input(path))?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok((path.display().to_string(), meta.len(), modified))
}

enum Message {
    Documents {
        input: usize,
        documents: Vec<String>,
    },
    FileDone {
        file: InputFile,
        decoded: u64,
        skipped: u64,
    },
}

/// Reads every file of every input in order and sends its documents in
/// batches. Stops quietly when the receiver has gone (it failed first).
fn read_inputs(
    opts: &PrepareOptions,
    inputs: &[ListedInput],
    sender: &SyncSender<Message>,
    bar: &ProgressBar,
) -> Result<(), DataError> {
    for (input, listed) in inputs.iter().enumerate() {
        for path in &listed.files {
            let mut reader = DocumentReader::open(path, opts.text_split, &opts.text_field, bar)?;
            let mut batch = Vec::new();
            let mut bytes = 0;
            while let Some(document) = reader.next_document()? {
                bytes += document.len();
                batch.push(document);
                if bytes >= BATCH_BYTES {
                    let documents = std::mem::take(&mut batch);
                    if sender
                        .send(Message::Documents { input, documents })
                        .is_err()
                    {
                        return Ok(());
                    }
                    bytes = 0;
                }
            }
            let size = std::fs::metadata(path).map_or(0, |m| m.len());
            let done = [
                Message::Documents {
                    input,
                    documents: batch,
                },
                Message::FileDone {
                    file: InputFile {
                        path: path.display().to_string(),
                        bytes: size,
                        weight: listed.spec.weight,
                    },
                    decoded: reader.decoded_bytes(),
                    skipped: reader.skipped_records,
                },
            ];
            for message in done {
                if sender.send(message).is_err() {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// One document after the parallel part of cleaning.
struct Cleaned {
    text: String,
    stats: NormalizeStats,
    long_enough: bool,
    digest: u128,
    key: u64,
    signature: Option<Box<Signature>>,
}

/// The sequential part: filters in document order and the spools.
struct Cleaner<'a> {
    opts: &'a PrepareOptions,
    spools: Vec<Option<SpoolWriter>>,
    finished: Vec<SpoolInfo>,
    inputs: Vec<InputFile>,
    exact: Option<ExactDedup>,
    near: Option<NearDedup>,
    near_spill: PathBuf,
    min_length: MinLength,
    documents: u64,
    skipped: u64,
    decoded: u64,
    normalized: NormalizeStats,
    counts: [FilterCount; 3],
}

impl<'a> Cleaner<'a> {
    fn new(
        opts: &'a PrepareOptions,
        inputs: &[ListedInput],
        work: &WorkDir,
    ) -> Result<Cleaner<'a>, DataError> {
        let spools = (0..inputs.len())
            .map(|i| SpoolWriter::create(&work.file(&spool_name(i))).map(Some))
            .collect::<Result<_, _>>()?;
        let near_spill = work.file("signatures.bin");
        let near = match opts.near_dup_threshold {
            Some(threshold) => Some(NearDedup::new(threshold, &near_spill)?),
            None => None,
        };
        Ok(Cleaner {
            opts,
            spools,
            finished: Vec::new(),
            inputs: Vec::new(),
            exact: opts.dedup.then(ExactDedup::default),
            near,
            near_spill,
            min_length: MinLength {
                min_chars: opts.min_chars,
            },
            documents: 0,
            skipped: 0,
            decoded: 0,
            normalized: NormalizeStats::default(),
            counts: [FilterCount::default(); 3],
        })
    }

    fn consume(&mut self, receiver: Receiver<Message>) -> Result<(), DataError> {
        for message in receiver {
            match message {
                Message::Documents { input, documents } => self.clean_batch(input, documents)?,
                Message::FileDone {
                    file,
                    decoded,
                    skipped,
                } => {
                    self.inputs.push(file);
                    self.decoded += decoded;
                    self.skipped += skipped;
                }
            }
        }
        Ok(())
    }

    fn clean_batch(&mut self, input: usize, documents: Vec<String>) -> Result<(), DataError> {
        self.documents += documents.len() as u64;
        let form = self.opts.normalization;
        let near_dup = self.near.is_some();
        let min_length = &self.min_length;
        let cleaned: Vec<Cleaned> = documents
            .into_par_iter()
            .map(|document| {
                let (text, stats) = normalize(document, form);
                let long_enough = min_length.keep(&text);
                let digest: [u8; 32] = Sha256::digest(text.as_bytes()).into();
                let signature = (near_dup && long_enough).then(|| Box::new(signature(&text)));
                Cleaned {
                    stats,
                    long_enough,
                    digest: u128::from_le_bytes(digest[..16].try_into().unwrap_or_default()),
                    key: u64::from_le_bytes(digest[16..24].try_into().unwrap_or_default()),
                    signature,
                    text,
                }
            })
            .collect();
        for doc in cleaned {
            self.normalized.add(doc.stats);
            if !self.counts[0].count(doc.long_enough) {
                continue;
            }
            if let Some(exact) = &mut self.exact {
                if !self.counts[1].count(exact.insert(doc.digest)) {
                    continue;
                }
            }
            if let (Some(near), Some(signature)) = (&mut self.near, &doc.signature) {
                if !self.counts[2].count(near.insert(signature)?) {
                    continue;
                }
            }
            if let Some(spool) = &mut self.spools[input] {
                spool.write(doc.key, &doc.text)?;
            }
        }
        Ok(())
    }

    fn finish(mut self, fingerprint: String, input_bytes: u64) -> Result<CleanRecord, DataError> {
        for spool in &mut self.spools {
            if let Some(writer) = spool.take() {
                self.finished.push(writer.finish()?);
            }
        }
        let stages = self.stages();
        if self.near.take().is_some() {
            std::fs::remove_file(&self.near_spill).map_err(DataError::write(&self.near_spill))?;
        }
        Ok(CleanRecord {
            fingerprint,
            inputs: self.inputs,
            spools: self.finished,
            stages,
            input_bytes,
        })
    }

    fn stages(&self) -> Vec<Stage> {
        let documents = self.documents as usize;
        let read = Stage::new("read", documents + self.skipped as usize, documents)
            .with("files", self.inputs.len())
            .with("bytes", self.inputs.iter().map(|i| i.bytes).sum::<u64>())
            .with("text_bytes", self.decoded)
            .with("skipped_records", self.skipped);
        let normalize = Stage::new("normalize", documents, documents)
            .with("form", self.opts.normalization.name())
            .with("changed", self.normalized.changed)
            .with("bytes_in", self.normalized.bytes_in)
            .with("bytes_out", self.normalized.bytes_out);
        let min_length = self.counts[0].stage(self.min_length.name(), self.min_length.params());
        let after_length = (self.counts[0].seen - self.counts[0].dropped) as usize;
        let exact = match self.exact {
            Some(_) => self.counts[1]
                .stage("dedup-exact", Map::new())
                .with("key", "sha256"),
            None => Stage::new("dedup-exact", after_length, after_length).with("enabled", false),
        };
        let after_exact = exact.docs_out as usize;
        let near = match (&self.near, self.opts.near_dup_threshold) {
            (Some(near), Some(threshold)) => {
                let banding = near.banding();
                self.counts[2]
                    .stage("near-dup", Map::new())
                    .with("threshold", threshold)
                    .with("shingle_words", SHINGLE_WORDS)
                    .with("bands", banding.bands)
                    .with("rows", banding.rows)
                    .with("candidates_checked", near.candidates_checked)
            }
            _ => Stage::new("near-dup", after_exact, after_exact).with("enabled", false),
        };
        vec![read, normalize, min_length, exact, near]
    }
}

pub fn spool_name(input: usize) -> String {
    format!("spool-{input:03}.zst")
}
