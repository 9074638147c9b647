//! `TokenStore`: the memory-mapped shards of one prepared folder, read by
//! sequence index. Opening checks every shard's size and the tokenizer's
//! sha256 against the manifest (a folder whose files come from two runs
//! fails there, not in training); `verify` also checks the shards' sha256.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use rayon::prelude::*;

use super::error::DataError;
use super::manifest::{Manifest, ShardInfo};
use super::shard::sha256_hex;
use super::split::Split;
use super::tokenizer::{load_tokenizer, word_continuations, SpecialTokens};

pub struct TokenStore {
    dir: PathBuf,
    manifest: Manifest,
    train: SplitShards,
    val: SplitShards,
}

/// One split's shards and the index of each one's first sequence.
struct SplitShards {
    shards: Vec<MappedShard>,
    starts: Vec<usize>,
    sequences: usize,
}

struct MappedShard {
    path: PathBuf,
    sha256: String,
    map: Mmap,
}

impl TokenStore {
    /// Reads `dir/manifest.json` and maps every shard it lists.
    pub fn open(dir: &Path) -> Result<TokenStore, DataError> {
        let manifest = Manifest::read(dir)?;
        check_tokenizer(dir, &manifest)?;
        let sequence_bytes = (manifest.seq_len * manifest.dtype.bytes()) as u64;
        let open_split = |split: Split| {
            SplitShards::open(dir, &manifest.splits.get(split).shards, sequence_bytes)
        };
        let train = open_split(Split::Train)?;
        let val = open_split(Split::Val)?;
        Ok(TokenStore {
            dir: dir.to_path_buf(),
            manifest,
            train,
            val,
        })
    }

    /// Recomputes every shard's sha256 and compares it with the manifest.
    pub fn verify(&self) -> Result<(), DataError> {
        self.train
            .shards
            .par_iter()
            .chain(self.val.shards.par_iter())
            .try_for_each(|shard| {
                let actual = sha256_hex(&shard.map);
                if actual == shard.sha256 {
                    Ok(())
                } else {
                    Err(DataError::ShardChecksum {
                        path: shard.path.clone(),
                        expected: shard.sha256.clone(),
                        actual,
                    })
                }
            })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn seq_len(&self) -> usize {
        self.manifest.seq_len
    }

    pub fn vocab_size(&self) -> usize {
        self.manifest.tokenizer.vocab_size
    }

    pub fn special(&self) -> SpecialTokens {
        self.manifest.tokenizer.special
    }

    /// Number of sequences in the split.
    pub fn len(&self, split: Split) -> usize {
        self.shards(split).sequences
    }

    /// Copies sequence `index` of the split into `out`.
    ///
    /// # Panics
    /// When `index >= self.len(split)` or `out.len() != self.seq_len()`.
    pub fn read(&self, split: Split, index: usize, out: &mut [u32]) {
        let seq_len = self.seq_len();
        assert_eq!(out.len(), seq_len, "out must hold one sequence");
        let shards = self.shards(split);
        assert!(
            index < shards.sequences,
            "sequence {index} out of range: the {} split has {}",
            split.name(),
            shards.sequences
        );
        let shard = shards.starts.partition_point(|&start| start <= index) - 1;
        let width = seq_len * self.manifest.dtype.bytes();
        let offset = (index - shards.starts[shard]) * width;
        let bytes = &shards.shards[shard].map[offset..offset + width];
        self.manifest.dtype.decode(bytes, out);
    }

    /// Loads the folder's `tokenizer.json`.
    pub fn tokenizer(&self) -> Result<tokenizers::Tokenizer, DataError> {
        load_tokenizer(&self.dir.join(&self.manifest.tokenizer.file))
    }

    /// For each token id, whether it continues the word before it (for
    /// whole-word masking); `vocab_size` long.
    pub fn word_continuations(&self) -> Result<Vec<bool>, DataError> {
        let mut table = word_continuations(&self.tokenizer()?);
        table.resize(self.vocab_size(), false);
        Ok(table)
    }

    /// How often each token id occurs in the split, padding and special
    /// tokens included; indexed by id, `vocab_size` long. Ids outside the
    /// vocabulary (only a corrupt shard has them; `verify` finds it) are not
    /// counted.
    pub fn unigram_counts(&self, split: Split) -> Vec<u64> {
        let vocab = self.vocab_size();
        let dtype = self.manifest.dtype;
        let seq_len = self.seq_len();
        let width = seq_len * dtype.bytes();
        self.shards(split)
            .shards
            .par_iter()
            .flat_map_iter(|shard| shard.map.chunks_exact(width))
            .fold(
                || (vec![0u64; vocab], vec![0u32; seq_len]),
                |(mut counts, mut tokens), bytes| {
                    dtype.decode(bytes, &mut tokens);
                    for &t in &tokens {
                        if let Some(c) = counts.get_mut(t as usize) {
                            *c += 1;
                        }
                    }
                    (counts, tokens)
                },
            )
            .map(|(counts, _)| counts)
            .reduce(
                || vec![0u64; vocab],
                |mut a, b| {
                    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                    a
                },
            )
    }

    fn shards(&self, split: Split) -> &SplitShards {
        match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
        }
    }
}

/// The folder's tokenizer must be the one the manifest was written for.
fn check_tokenizer(dir: &Path, manifest: &Manifest) -> Result<(), DataError> {
    let path = dir.join(&manifest.tokenizer.file);
    let bytes = std::fs::read(&path).map_err(|cause| DataError::DatasetFile {
        path: path.clone(),
        cause,
    })?;
    let actual = sha256_hex(&bytes);
    if actual != manifest.tokenizer.sha256 {
        return Err(DataError::TokenizerMismatch {
            path,
            expected: manifest.tokenizer.sha256.clone(),
            actual,
        });
    }
    Ok(())
}

impl SplitShards {
    fn open(dir: &Path, infos: &[ShardInfo], sequence_bytes: u64) -> Result<Self, DataError> {
        let mut shards = Vec::with_capacity(infos.len());
        let mut starts = Vec::with_capacity(infos.len());
        let mut sequences = 0;
        for info in infos {
            let path = dir.join(&info.file);
            shards.push(MappedShard::open(
                &path,
                info,
                info.sequences * sequence_bytes,
            )?);
            starts.push(sequences);
            sequences += info.sequences as usize;
        }
        Ok(SplitShards {
            shards,
            starts,
            sequences,
        })
    }
}

impl MappedShard {
    fn open(path: &Path, info: &ShardInfo, expected: u64) -> Result<Self, DataError> {
        let open_error = |cause| DataError::ShardOpen {
            path: path.to_path_buf(),
            cause,
        };
        let file = File::open(path).map_err(open_error)?;
        let actual = file.metadata().map_err(open_error)?.len();
        if actual != expected {
            return Err(DataError::ShardSize {
                path: path.to_path_buf(),
                expected,
                actual,
            });
        }
        // SAFETY: shards are written once by `prepare` and never modified in
        // place; a file changed under the map by another process is outside
        // what we can guard against (the same caveat as every mmap reader).
        let map = unsafe { Mmap::map(&file) }.map_err(open_error)?;
        Ok(MappedShard {
            path: path.to_path_buf(),
            sha256: info.sha256.clone(),
            map,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_can_be_shared_by_loader_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<TokenStore>();
    }
}
