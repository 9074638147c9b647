//! The third pass: the mixed documents, interleaved across inputs, are
//! tokenized on all cores, filtered by compression ratio, packed into
//! sequences and written as shards: validation straight into the dataset,
//! train into the dataset or, when it is to be sorted, into the work
//! folder's `unsorted/`.
//!
//! A reader thread decompresses the spools and picks the documents; this
//! thread encodes each batch in parallel and then packs in document order,
//! so the shards do not depend on thread timing.

use std::sync::mpsc::{sync_channel, SyncSender};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use super::clean_pass::CleanRecord;
use super::plan_pass::PlanRecord;
use super::{PrepareOptions, StageTiming};
use crate::data::clean::FilterCount;
use crate::data::encode::DocumentEncoder;
use crate::data::error::DataError;
use crate::data::manifest::{SplitInfo, Splits, Stage};
use crate::data::mix::{keeps, Interleave};
use crate::data::output::{fingerprint, WorkDir};
use crate::data::pack::{PackStats, Packer};
use crate::data::progress::bytes_bar;
use crate::data::shard::{Dtype, ShardWriter};
use crate::data::sort::UnigramCounts;
use crate::data::split::Split;
use crate::data::spool::SpoolReader;
use crate::data::tokenizer::{special_tokens, vocab_size};

const STAGE: &str = "encode";
/// The work subfolder of the train shards before sorting.
pub const UNSORTED: &str = "unsorted";

/// Documents are encoded in parallel in batches of about this many bytes of
/// text per thread, so that only one batch's token ids are in memory at a
/// time, and the encoder's cache fills after the first batches.
const BATCH_BYTES_PER_THREAD: usize = 1 << 20;

/// A compression filter that drops more than this share of the documents
/// earns a warning: the threshold probably does not suit the vocabulary.
const WARN_DROPPED_SHARE: f64 = 0.5;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EncodeRecord {
    pub fingerprint: String,
    /// tokenize, compression-filter, pack.
    pub stages: Vec<Stage>,
    pub splits: Splits,
    /// Train token counts, for the unigram sort (empty when not sorting).
    pub unigram_counts: Vec<u64>,
    pub warnings: Vec<String>,
    /// Bytes of text encoded.
    pub bytes: u64,
    /// Time spent inside the encoder (not in the manifest: it differs from
    /// run to run).
    pub encode_seconds: f64,
}

#[derive(Serialize)]
struct EncodeKey<'a> {
    plan: &'a str,
    tokenizer: &'a str,
    seq_len: usize,
    cls_first: bool,
    shard_sequences: usize,
    max_tokens_per_char: Option<f64>,
    unigram_sort: bool,
}

pub(super) fn run(
    opts: &PrepareOptions,
    clean: &CleanRecord,
    plan: &PlanRecord,
    tokenizer: &Tokenizer,
    work: &mut WorkDir,
    timings: &mut Vec<StageTiming>,
) -> Result<EncodeRecord, DataError> {
    let key = EncodeKey {
        plan: &plan.fingerprint,
        tokenizer: &plan.tokenizer_sha256,
        seq_len: opts.seq_len,
        cls_first: opts.cls_first,
        shard_sequences: opts.shard_sequences,
        max_tokens_per_char: opts.max_tokens_per_char,
        unigram_sort: opts.unigram_sort,
    };
    let fingerprint = fingerprint(&key);
    if let Some(record) = work.finished::<EncodeRecord>(STAGE, &fingerprint) {
        if opts.progress {
            eprintln!(
                "      encode: reusing the finished pass in {}",
                work.path().display()
            );
        }
        timings.push(StageTiming::reused("encode", record.bytes));
        return Ok(record);
    }
    work.forget(STAGE)?;
    let start = Instant::now();
    let dataset = work.clear_subfolder("dataset")?;
    let train_dir = if opts.unigram_sort {
        work.clear_subfolder(UNSORTED)?
    } else {
        dataset.clone()
    };
    let special = special_tokens(tokenizer, opts.tokenizer.as_deref())?;
    let dtype = Dtype::for_vocab(vocab_size(tokenizer));
    let writer =
        |dir, split| ShardWriter::new(dir, split, dtype, opts.seq_len, opts.shard_sequences);
    let mut state = Packing {
        encoder: DocumentEncoder::new(tokenizer),
        packers: [
            Packer::new(opts.seq_len, opts.cls_first, special),
            Packer::new(opts.seq_len, opts.cls_first, special),
        ],
        writers: [
            writer(&train_dir, Split::Train),
            writer(&dataset, Split::Val),
        ],
        sequences: Vec::new(),
        filter: FilterCount::default(),
        max_tokens_per_char: opts.max_tokens_per_char,
        documents: 0,
        empty: 0,
        tokens: 0,
        characters: 0,
        unknown: 0,
        unk: special.unk,
        unigrams: UnigramCounts::new(if opts.unigram_sort {
            vocab_size(tokenizer)
        } else {
            0
        }),
        encode_time: Duration::ZERO,
        bytes: 0,
    };
    let bar = bytes_bar(opts.progress, plan.mixed_bytes, "encode");
    let (sender, receiver) = sync_channel(2);
    let batch_bytes = BATCH_BYTES_PER_THREAD * rayon::current_num_threads();
    let reader_bar = bar.clone();
    let spools: &WorkDir = work;
    std::thread::scope(|scope| {
        // The reader owns the sender, so the channel closes when it ends.
        let reader = scope.spawn(move || {
            read_mixed(opts, clean, plan, spools, batch_bytes, &sender)?;
            reader_bar.finish();
            Ok::<_, DataError>(())
        });
        let packed = receiver
            .into_iter()
            .try_for_each(|batch| state.add_batch(batch, &bar));
        let read = reader
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        packed.and(read)
    })?;
    let record = state.finish(fingerprint, opts)?;
    work.finish(STAGE, &record.fingerprint, &record)?;
    timings.push(StageTiming {
        stage: "tokenize (encoder only)",
        seconds: record.encode_seconds,
        bytes: record.bytes,
        reused: false,
    });
    timings.push(StageTiming::since("encode", start, record.bytes));
    Ok(record)
}

/// Documents of one split, ready to encode.
struct Batch {
    texts: Vec<String>,
    splits: Vec<Split>,
    bytes: u64,
}

/// Reads the spools interleaved, keeps the mixed-in documents and sends
/// them in batches with their splits.
fn read_mixed(
    opts: &PrepareOptions,
    clean: &CleanRecord,
    plan: &PlanRecord,
    work: &WorkDir,
    batch_bytes: usize,
    sender: &SyncSender<Batch>,
) -> Result<(), DataError> {
    let mut readers = clean
        .spools
        .iter()
        .map(|s| SpoolReader::open(&work.file(&s.file)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut interleave = Interleave::new(clean.spools.iter().map(|s| s.bytes).collect());
    let mut batch = Batch {
        texts: Vec::new(),
        splits: Vec::new(),
        bytes: 0,
    };
    while let Some(input) = interleave.next_input() {
        let Some((key, text)) = readers[input].next_document()? else {
            interleave.finish(input);
            continue;
        };
        interleave.consumed(input, text.len() as u64);
        if !keeps(opts.seed, key, plan.keep[input]) {
            continue;
        }
        batch.bytes += text.len() as u64;
        batch.splits.push(plan.split.split(key));
        batch.texts.push(text);
        if batch.bytes as usize >= batch_bytes {
            let full = std::mem::replace(
                &mut batch,
                Batch {
                    texts: Vec::new(),
                    splits: Vec::new(),
                    bytes: 0,
                },
            );
            if sender.send(full).is_err() {
                return Ok(());
            }
        }
    }
    // A failed send means the receiver stopped on an error of its own.
    let _ = sender.send(batch);
    Ok(())
}

/// Everything the sequential part of the pass accumulates.
struct Packing<'t> {
    encoder: DocumentEncoder<'t>,
    /// Train and validation, in `Split` order.
    packers: [Packer; 2],
    writers: [ShardWriter; 2],
    sequences: Vec<u32>,
    filter: FilterCount,
    max_tokens_per_char: Option<f64>,
    documents: u64,
    empty: u64,
    tokens: u64,
    characters: u64,
    unknown: u64,
    unk: u32,
    unigrams: UnigramCounts,
    encode_time: Duration,
    bytes: u64,
}

fn slot(split: Split) -> usize {
    match split {
        Split::Train => 0,
        Split::Val => 1,
    }
}

impl Packing<'_> {
    fn add_batch(&mut self, batch: Batch, bar: &indicatif::ProgressBar) -> Result<(), DataError> {
        let start = Instant::now();
        let encoded = self.encoder.encode(&batch.texts)?;
        self.encode_time += start.elapsed();
        for ((text, split), ids) in batch.texts.iter().zip(&batch.splits).zip(encoded) {
            self.documents += 1;
            if ids.is_empty() {
                self.empty += 1;
                continue;
            }
            let characters = text.chars().count() as u64;
            let ratio = ids.len() as f64 / characters.max(1) as f64;
            let kept = self.max_tokens_per_char.is_none_or(|t| ratio <= t);
            if !self.filter.count(kept) {
                continue;
            }
            self.tokens += ids.len() as u64;
            self.characters += characters;
            self.unknown += ids.iter().filter(|&&t| t == self.unk).count() as u64;
            if *split == Split::Train {
                self.unigrams.add(&ids);
            }
            let i = slot(*split);
            self.packers[i].push_document(&ids, &mut self.sequences);
            self.writers[i].write_sequences(&self.sequences)?;
            self.sequences.clear();
        }
        self.bytes += batch.bytes;
        bar.inc(batch.bytes);
        Ok(())
    }

    fn finish(self, fingerprint: String, opts: &PrepareOptions) -> Result<EncodeRecord, DataError> {
        let mut infos = Vec::new();
        let mut stats = Vec::new();
        let mut sequences = Vec::new();
        for (packer, mut writer) in self.packers.into_iter().zip(self.writers) {
            let pack = packer.finish(&mut sequences);
            writer.write_sequences(&sequences)?;
            sequences.clear();
            infos.push(split_info(pack, writer.finish()?));
            stats.push(pack);
        }
        let kept = self.filter.seen - self.filter.dropped;
        if infos[0].sequences == 0 && self.filter.dropped > 0 {
            return Err(DataError::AllFiltered {
                documents: self.filter.dropped,
                max_tokens_per_char: opts.max_tokens_per_char.unwrap_or(0.0),
            });
        }
        let mut warnings = Vec::new();
        let dropped_share = self.filter.dropped as f64 / self.filter.seen.max(1) as f64;
        if dropped_share > WARN_DROPPED_SHARE {
            warnings.push(format!(
                "the compression filter dropped {:.0}% of the documents (more than {} tokens \
                 per character); for a vocabulary of this size, consider a higher \
                 data.max_tokens_per_char",
                dropped_share * 100.0,
                opts.max_tokens_per_char.unwrap_or(0.0)
            ));
        }
        let tokenized = self.documents - self.empty;
        let tokenize = Stage::new("tokenize", self.documents as usize, tokenized as usize)
            .with("dropped_empty", self.empty)
            .with("bytes", self.bytes);
        let compression = match opts.max_tokens_per_char {
            Some(threshold) => self
                .filter
                .stage("compression-filter", serde_json::Map::new())
                .with("max_tokens_per_char", threshold),
            None => Stage::new("compression-filter", tokenized as usize, tokenized as usize)
                .with("enabled", false),
        }
        .with(
            "kept_tokens_per_char",
            self.tokens as f64 / self.characters.max(1) as f64,
        );
        let sum = |f: fn(&PackStats) -> u64| stats.iter().map(f).sum::<u64>();
        let pack = Stage::new("pack", kept as usize, kept as usize)
            .with("tokens", self.tokens)
            .with("unknown_tokens", self.unknown)
            .with("seq_len", opts.seq_len)
            .with("cls_first", opts.cls_first)
            .with("sequences", sum(|s| s.sequences))
            .with("packed_tokens", sum(|s| s.tokens))
            .with("padding", sum(|s| s.padding));
        let mut infos = infos.into_iter();
        let (train, val) = (
            infos.next().unwrap_or_default(),
            infos.next().unwrap_or_default(),
        );
        Ok(EncodeRecord {
            fingerprint,
            stages: vec![tokenize, compression, pack],
            splits: Splits { train, val },
            unigram_counts: self.unigrams.into_vec(),
            warnings,
            bytes: self.bytes,
            encode_seconds: self.encode_time.as_secs_f64(),
        })
    }
}

fn split_info(pack: PackStats, shards: Vec<crate::data::manifest::ShardInfo>) -> SplitInfo {
    SplitInfo {
        documents: pack.documents,
        sequences: pack.sequences,
        tokens: pack.tokens,
        padding: pack.padding,
        shards,
    }
}
