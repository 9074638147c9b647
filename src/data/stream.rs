//! The masked sequence stream of a run, written out: the first N sequences
//! that training reads (data order and masks exactly as the trainer applies
//! them) or the validation sequences with the evaluation's masks. A trainer
//! outside cram (the PyTorch reference of `bench/quality_ab.py`) reads these
//! files to see the same tokens in the same order with the same masks, so
//! that two loss curves can be compared step by step.
//!
//! Files: `inputs.bin` and `targets.bin`, `sequences × seq_len` tokens each
//! in the shards' dtype (little-endian u16 or u32). A target is the original
//! token at a masked position and 0 ([PAD], never masked) elsewhere.
//! `stream.json` says what the files hold.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use rayon::prelude::*;
use serde::Serialize;

use super::batches::{read_sequences, MaskKey, Objective, Order};
use super::{DataError, Split, TokenStore};
use crate::config::ObjectiveKind;

/// Sequences masked per parallel chunk: large enough to amortise a chunk's
/// permutation of the epoch, small enough to keep memory flat.
const CHUNK: usize = 8192;

/// Which stream to write.
#[derive(Debug, Clone, Copy)]
pub struct StreamSpec {
    pub split: Split,
    pub sequences: usize,
    pub seed: u64,
    /// Training only: read in stored order instead of a permutation per epoch.
    pub keep_order: bool,
}

/// `stream.json`.
#[derive(Debug, Clone, Serialize)]
pub struct StreamInfo {
    pub split: &'static str,
    pub sequences: usize,
    pub seq_len: usize,
    pub dtype: String,
    pub vocab_size: usize,
    pub seed: u64,
    pub keep_order: bool,
    /// Evaluation masks: every selected position is [MASK].
    pub mask_all: bool,
    pub masks_per_sequence: usize,
    pub pad: u32,
    pub cls: u32,
    pub sep: u32,
    pub mask: u32,
}

/// Writes `spec.sequences` masked sequences of `spec.split` into `dir`
/// (created if missing). Training positions wrap into further epochs,
/// validation positions wrap around the split, as the trainer and the
/// evaluation do.
pub fn write_stream(
    store: &TokenStore,
    objective: &Objective,
    spec: StreamSpec,
    dir: &Path,
) -> Result<StreamInfo, DataError> {
    if objective.kind != ObjectiveKind::Mlm {
        return Err(DataError::InvalidOption {
            name: "objective.kind",
            value: "causal".into(),
            reason: "a stream holds masked-LM masks; causal targets are the shards' next tokens",
        });
    }
    let available = store.len(spec.split);
    if available == 0 {
        return Err(DataError::InvalidOption {
            name: "--split",
            value: spec.split.name().into(),
            reason: "the prepared data holds no sequences in this split",
        });
    }
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |cause| DataError::Write { path, cause }
    };
    std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    let (objective, key) = match spec.split {
        Split::Train => (objective.clone(), MaskKey::train(spec.seed)),
        Split::Val => (objective.for_eval(), MaskKey::eval(spec.seed)),
    };
    let seq = store.seq_len();
    let dtype = store.manifest().dtype;
    let inputs_path = dir.join("inputs.bin");
    let targets_path = dir.join("targets.bin");
    let mut inputs = BufWriter::new(File::create(&inputs_path).map_err(write_err(&inputs_path))?);
    let mut targets =
        BufWriter::new(File::create(&targets_path).map_err(write_err(&targets_path))?);
    let starts: Vec<usize> = (0..spec.sequences).step_by(CHUNK).collect();
    for group in starts.chunks(rayon::current_num_threads().max(1) * 2) {
        let chunks: Vec<(Vec<u8>, Vec<u8>)> = group
            .par_iter()
            .map(|&first| {
                let count = CHUNK.min(spec.sequences - first);
                let positions = first as u64..(first + count) as u64;
                let indices: Vec<usize> = match spec.split {
                    Split::Train => {
                        let mut order = Order::for_training(spec.seed, available, spec.keep_order);
                        positions.map(|p| order.at(p)).collect()
                    }
                    Split::Val => positions.map(|p| p as usize % available).collect(),
                };
                let tokens = read_sequences(store, spec.split, indices.into_iter());
                let hb = objective.make_batch(tokens, seq, key, first as u64);
                let mut dense = vec![0u32; hb.ids.len()];
                let rows = hb
                    .predict
                    .as_deref()
                    .expect("MLM batches list predicted rows");
                for (&row, &target) in rows.iter().zip(&hb.targets) {
                    dense[row as usize] = target;
                }
                let (mut ids, mut tgt) = (Vec::new(), Vec::new());
                dtype.encode(&hb.ids, &mut ids);
                dtype.encode(&dense, &mut tgt);
                (ids, tgt)
            })
            .collect();
        for (ids, tgt) in chunks {
            inputs.write_all(&ids).map_err(write_err(&inputs_path))?;
            targets.write_all(&tgt).map_err(write_err(&targets_path))?;
        }
    }
    inputs.flush().map_err(write_err(&inputs_path))?;
    targets.flush().map_err(write_err(&targets_path))?;
    let special = store.special();
    let info = StreamInfo {
        split: spec.split.name(),
        sequences: spec.sequences,
        seq_len: seq,
        dtype: dtype.to_string(),
        vocab_size: store.vocab_size(),
        seed: spec.seed,
        keep_order: spec.keep_order && spec.split == Split::Train,
        mask_all: objective.mask_all,
        masks_per_sequence: objective.masks_per_sequence(seq),
        pad: special.pad,
        cls: special.cls,
        sep: special.sep,
        mask: special.mask,
    };
    let json_path = dir.join("stream.json");
    let text = serde_json::to_string_pretty(&info).expect("stream info serialises");
    std::fs::write(&json_path, text + "\n").map_err(write_err(&json_path))?;
    Ok(info)
}
