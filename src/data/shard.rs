//! Token shard files: raw little-endian u16 (or u32) tokens, `seq_len` per
//! sequence, no header, so that `numpy.memmap` or any reader can map them.
//! Their size, count and sha256 live in the manifest, which `TokenStore`
//! checks before reading.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::DataError;
use super::manifest::ShardInfo;
use super::split::Split;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    U16,
    U32,
}

impl Dtype {
    /// The narrowest type that holds every id of the vocabulary.
    pub fn for_vocab(vocab_size: usize) -> Dtype {
        if vocab_size as u64 <= Dtype::U16.max_vocab() {
            Dtype::U16
        } else {
            Dtype::U32
        }
    }

    /// The largest vocabulary whose ids the type holds.
    pub fn max_vocab(self) -> u64 {
        match self {
            Dtype::U16 => 1 << 16,
            Dtype::U32 => 1 << 32,
        }
    }

    pub fn bytes(self) -> usize {
        match self {
            Dtype::U16 => 2,
            Dtype::U32 => 4,
        }
    }

    /// Appends the tokens' little-endian bytes. Ids must fit the type, which
    /// `for_vocab` guarantees for ids below the vocabulary size.
    pub fn encode(self, tokens: &[u32], out: &mut Vec<u8>) {
        match self {
            Dtype::U16 => {
                for &t in tokens {
                    debug_assert!(t < 1 << 16, "token {t} does not fit u16");
                    out.extend_from_slice(&(t as u16).to_le_bytes());
                }
            }
            Dtype::U32 => {
                for &t in tokens {
                    out.extend_from_slice(&t.to_le_bytes());
                }
            }
        }
    }

    /// Reads `out.len()` tokens from little-endian bytes.
    pub fn decode(self, bytes: &[u8], out: &mut [u32]) {
        debug_assert_eq!(bytes.len(), out.len() * self.bytes());
        match self {
            Dtype::U16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = u32::from(u16::from_le_bytes([b[0], b[1]]));
                }
            }
            Dtype::U32 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Dtype::U16 => "u16",
            Dtype::U32 => "u32",
        })
    }
}

pub fn shard_file_name(split: Split, index: usize) -> String {
    format!("{}-{index:05}.bin", split.name())
}

/// Writes one split's sequences into shards of up to `shard_sequences`
/// sequences each, hashing as it goes; every finished shard is fsynced.
pub struct ShardWriter {
    dir: PathBuf,
    split: Split,
    dtype: Dtype,
    seq_len: usize,
    shard_sequences: usize,
    open: Option<OpenShard>,
    done: Vec<ShardInfo>,
    bytes: Vec<u8>,
}

struct OpenShard {
    path: PathBuf,
    file: BufWriter<File>,
    hasher: Sha256,
    sequences: u64,
}

impl ShardWriter {
    pub fn new(
        dir: &Path,
        split: Split,
        dtype: Dtype,
        seq_len: usize,
        shard_sequences: usize,
    ) -> ShardWriter {
        ShardWriter {
            dir: dir.to_path_buf(),
            split,
            dtype,
            seq_len,
            shard_sequences,
            open: None,
            done: Vec::new(),
            bytes: Vec::new(),
        }
    }

    /// Writes whole sequences, laid out one after another in `tokens`.
    pub fn write_sequences(&mut self, tokens: &[u32]) -> Result<(), DataError> {
        debug_assert_eq!(tokens.len() % self.seq_len, 0);
        for sequence in tokens.chunks_exact(self.seq_len) {
            self.write_sequence(sequence)?;
        }
        Ok(())
    }

    /// Closes the last shard and returns the list of all of them.
    pub fn finish(mut self) -> Result<Vec<ShardInfo>, DataError> {
        self.close_shard()?;
        Ok(self.done)
    }

    fn write_sequence(&mut self, sequence: &[u32]) -> Result<(), DataError> {
        if self.open.is_none() {
            self.open_shard()?;
        }
        self.bytes.clear();
        self.dtype.encode(sequence, &mut self.bytes);
        if let Some(shard) = self.open.as_mut() {
            shard
                .file
                .write_all(&self.bytes)
                .map_err(DataError::write(&shard.path))?;
            shard.hasher.update(&self.bytes);
            shard.sequences += 1;
            if shard.sequences as usize == self.shard_sequences {
                self.close_shard()?;
            }
        }
        Ok(())
    }

    fn open_shard(&mut self) -> Result<(), DataError> {
        let name = shard_file_name(self.split, self.done.len());
        let path = self.dir.join(name);
        let file = File::create(&path).map_err(DataError::write(&path))?;
        self.open = Some(OpenShard {
            path,
            file: BufWriter::with_capacity(1 << 20, file),
            hasher: Sha256::new(),
            sequences: 0,
        });
        Ok(())
    }

    fn close_shard(&mut self) -> Result<(), DataError> {
        let Some(shard) = self.open.take() else {
            return Ok(());
        };
        let file = shard.file.into_inner().map_err(|e| DataError::Write {
            path: shard.path.clone(),
            cause: e.into_error(),
        })?;
        file.sync_all().map_err(DataError::write(&shard.path))?;
        let name = shard_file_name(self.split, self.done.len());
        self.done.push(ShardInfo {
            file: name,
            sequences: shard.sequences,
            sha256: hex(&shard.hasher.finalize()),
        });
        Ok(())
    }
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_follows_the_vocabulary() {
        assert_eq!(Dtype::for_vocab(32768), Dtype::U16);
        assert_eq!(Dtype::for_vocab(65536), Dtype::U16);
        assert_eq!(Dtype::for_vocab(65537), Dtype::U32);
    }

    #[test]
    fn tokens_round_trip_through_bytes() {
        for (dtype, tokens) in [
            (Dtype::U16, vec![0u32, 1, 255, 256, 65535]),
            (Dtype::U32, vec![0u32, 65536, u32::MAX]),
        ] {
            let mut bytes = Vec::new();
            dtype.encode(&tokens, &mut bytes);
            assert_eq!(bytes.len(), tokens.len() * dtype.bytes());
            let mut back = vec![0; tokens.len()];
            dtype.decode(&bytes, &mut back);
            assert_eq!(back, tokens);
        }
        let mut bytes = Vec::new();
        Dtype::U16.encode(&[0x0102], &mut bytes);
        assert_eq!(bytes, [0x02, 0x01], "little-endian");
    }

    #[test]
    fn writer_rolls_over_to_new_shards_and_hashes_each() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = ShardWriter::new(dir.path(), Split::Val, Dtype::U16, 3, 2);
        let tokens: Vec<u32> = (0..15).collect();
        writer.write_sequences(&tokens[..6]).unwrap();
        writer.write_sequences(&tokens[6..]).unwrap();
        let shards = writer.finish().unwrap();
        let names: Vec<_> = shards.iter().map(|s| s.file.as_str()).collect();
        assert_eq!(names, ["val-00000.bin", "val-00001.bin", "val-00002.bin"]);
        let counts: Vec<_> = shards.iter().map(|s| s.sequences).collect();
        assert_eq!(counts, [2, 2, 1]);
        for (shard, first) in shards.iter().zip([0u32, 6, 12]) {
            let bytes = std::fs::read(dir.path().join(&shard.file)).unwrap();
            assert_eq!(sha256_hex(&bytes), shard.sha256);
            let mut back = vec![0; bytes.len() / 2];
            Dtype::U16.decode(&bytes, &mut back);
            assert_eq!(back[0], first);
        }
    }
}
