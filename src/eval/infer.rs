//! Logits at every position of given token ids: what `cram infer` prints and
//! what `scripts/check_hf_parity.py` compares with transformers. Masked-LM
//! encoders, which train on the masked positions only, get logits at every
//! position here too.

use crate::backend::{Backend, IGNORE};
use crate::config::ModelConfig;
use crate::model::{Activations, DeviceBatch, Model};
use std::path::{Path, PathBuf};
use thiserror::Error;
use tokenizers::Tokenizer;

#[derive(Debug, Error)]
pub enum InferError {
    #[error("cannot read {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path} is not a JSON list of token-id lists such as [[2, 17, 3]]: {cause}")]
    Format { path: PathBuf, cause: String },
    #[error("{path} holds no sequences")]
    NoSequences { path: PathBuf },
    #[error("sequence {index} of {path} is empty")]
    Empty { path: PathBuf, index: usize },
    #[error("sequence {index} of {path} has {len} tokens, more than the model's {max} positions (model.max_positions)")]
    TooLong {
        path: PathBuf,
        index: usize,
        len: usize,
        max: usize,
    },
    #[error(
        "sequence {index} of {path} holds id {id}, outside the model's vocabulary of {vocab} ids"
    )]
    BadId {
        path: PathBuf,
        index: usize,
        id: u64,
        vocab: usize,
    },
    #[error("cannot encode line {line} of {path}: {cause}")]
    Encode {
        path: PathBuf,
        line: usize,
        cause: String,
    },
}

/// Reads a JSON list of token-id lists and checks it against the model.
pub fn read_ids_file(path: &Path, cfg: &ModelConfig) -> Result<Vec<Vec<u32>>, InferError> {
    let text = std::fs::read_to_string(path).map_err(|cause| InferError::Read {
        path: path.to_path_buf(),
        cause,
    })?;
    let raw: Vec<Vec<u64>> = serde_json::from_str(&text).map_err(|e| InferError::Format {
        path: path.to_path_buf(),
        cause: e.to_string(),
    })?;
    let mut sequences = Vec::with_capacity(raw.len());
    for (index, seq) in raw.into_iter().enumerate() {
        let ids = seq
            .into_iter()
            .map(|id| {
                u32::try_from(id)
                    .ok()
                    .filter(|&i| (i as usize) < cfg.vocab_size)
                    .ok_or(InferError::BadId {
                        path: path.to_path_buf(),
                        index,
                        id,
                        vocab: cfg.vocab_size,
                    })
            })
            .collect::<Result<Vec<u32>, _>>()?;
        sequences.push(ids);
    }
    check_lengths(&sequences, cfg, path)?;
    Ok(sequences)
}

/// Encodes each non-empty line of a text file as the tokenizer does with
/// special tokens (`[CLS] … [SEP]` for cram's WordPiece), the ids that
/// `AutoTokenizer` gives for the same line.
pub fn encode_lines(
    path: &Path,
    tokenizer: &Tokenizer,
    cfg: &ModelConfig,
) -> Result<Vec<Vec<u32>>, InferError> {
    let text = std::fs::read_to_string(path).map_err(|cause| InferError::Read {
        path: path.to_path_buf(),
        cause,
    })?;
    let sequences = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            tokenizer
                .encode(line, true)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| InferError::Encode {
                    path: path.to_path_buf(),
                    line: i + 1,
                    cause: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    check_lengths(&sequences, cfg, path)?;
    Ok(sequences)
}

fn check_lengths(sequences: &[Vec<u32>], cfg: &ModelConfig, path: &Path) -> Result<(), InferError> {
    if sequences.is_empty() {
        return Err(InferError::NoSequences {
            path: path.to_path_buf(),
        });
    }
    for (index, s) in sequences.iter().enumerate() {
        if s.is_empty() {
            return Err(InferError::Empty {
                path: path.to_path_buf(),
                index,
            });
        }
        if s.len() > cfg.max_positions {
            return Err(InferError::TooLong {
                path: path.to_path_buf(),
                index,
                len: s.len(),
                max: cfg.max_positions,
            });
        }
    }
    Ok(())
}

/// The logits `[len, vocab]` of one sequence, every position, without dropout.
/// Ids must be inside the vocabulary (as [`read_ids_file`] checks).
pub fn logits_at_every_position<B: Backend>(
    be: &B,
    model: &Model,
    params: &B::Buf,
    ids: &[u32],
) -> Vec<f32> {
    forward_one(be, model, params, ids, None)
}

/// The logits of each sequence, one row of `vocab` values per position:
/// what `cram infer` prints.
pub fn logits_by_position<B: Backend>(
    be: &B,
    model: &Model,
    params: &B::Buf,
    sequences: &[Vec<u32>],
) -> Vec<Vec<Vec<f32>>> {
    let vocab = model.cfg.vocab_size;
    sequences
        .iter()
        .map(|ids| {
            logits_at_every_position(be, model, params, ids)
                .chunks_exact(vocab)
                .map(<[f32]>::to_vec)
                .collect()
        })
        .collect()
}

/// The logits `[positions.len(), vocab]` of one sequence at the given
/// positions only (the sparse head a masked-LM trains with), without dropout.
pub fn logits_at<B: Backend>(
    be: &B,
    model: &Model,
    params: &B::Buf,
    ids: &[u32],
    positions: &[u32],
) -> Vec<f32> {
    forward_one(be, model, params, ids, Some(positions))
}

fn forward_one<B: Backend>(
    be: &B,
    model: &Model,
    params: &B::Buf,
    ids: &[u32],
    predict: Option<&[u32]>,
) -> Vec<f32> {
    let rows = predict.map_or(ids.len(), <[u32]>::len);
    let batch = DeviceBatch {
        batch: 1,
        seq: ids.len(),
        ids: be.upload_ids(ids),
        targets: be.upload_ids(&vec![IGNORE; rows]),
        predict: predict.map(|p| be.upload_ids(p)),
        predicted: rows,
        counted: 0,
    };
    let mut acts = Activations::new(be, &model.cfg, 1, ids.len());
    acts.set_logit_chunk_rows(usize::MAX);
    model.forward_logits(be, params, &mut acts, &batch, false, 0);
    be.download(&acts.head.logits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::Cpu;
    use crate::backend::Device;
    use crate::config::Config;

    fn tiny() -> ModelConfig {
        let mut cfg = Config::resolve("tiny", &[]).unwrap().model;
        cfg.vocab_size = 50;
        cfg.hidden = 16;
        cfg.heads = 2;
        cfg.ffn = 32;
        cfg.max_positions = 8;
        cfg
    }

    #[test]
    fn ids_files_are_checked_against_the_model() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ids.json");
        let cfg = tiny();
        let read = |text: &str| {
            std::fs::write(&path, text).unwrap();
            read_ids_file(&path, &cfg)
        };
        assert_eq!(
            read("[[2, 7, 3], [1]]").unwrap(),
            vec![vec![2, 7, 3], vec![1]]
        );
        assert!(matches!(
            read("[[2, 50]]"),
            Err(InferError::BadId { id: 50, .. })
        ));
        assert!(matches!(
            read("[[2], []]"),
            Err(InferError::Empty { index: 1, .. })
        ));
        assert!(matches!(read("[]"), Err(InferError::NoSequences { .. })));
        assert!(matches!(
            read("[[0,0,0,0,0,0,0,0,0]]"),
            Err(InferError::TooLong { len: 9, .. })
        ));
        let err = read("{\"ids\": 1}").unwrap_err();
        assert!(err.to_string().contains("ids.json"), "{err}");
    }

    /// The logits of every position equal those of the sparse head asked for
    /// one position at a time.
    #[test]
    fn every_position_matches_the_sparse_head() {
        let cfg = tiny();
        let model = Model::new(&cfg);
        let be = Cpu::new();
        let params = be.upload(&model.init_params(3));
        let ids = [2u32, 9, 4, 17, 3];
        let all = logits_at_every_position(&be, &model, &params, &ids);
        assert_eq!(all.len(), ids.len() * cfg.vocab_size);
        for at in 0..ids.len() {
            let one = logits_at(&be, &model, &params, &ids, &[at as u32]);
            let row = &all[at * cfg.vocab_size..(at + 1) * cfg.vocab_size];
            let diff = one
                .iter()
                .zip(row)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(diff < 1e-5, "position {at}: {diff}");
        }
    }
}
