//! `manifest.json`: what a prepared folder holds and how it was made.
//!
//! The manifest is the only index of the shards: their names, sizes (derived
//! from `sequences`, `seq_len` and `dtype`) and checksums. It holds no
//! timestamps, so the same inputs and seed give the same manifest. Every
//! pipeline stage (reading, normalizing, each filter, mixing, splitting,
//! tokenizing, packing, sorting) adds its entry to `stages`: documents in
//! and out plus its own numbers and settings.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::DataError;
use super::shard::Dtype;
use super::split::Split;
use super::tokenizer::SpecialTokens;

pub const FORMAT_VERSION: u32 = 1;
pub const MANIFEST_FILE: &str = "manifest.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    /// "cram <version>".
    pub created_by: String,
    pub seed: u64,
    /// Tokens per sequence, [CLS] and padding included.
    pub seq_len: usize,
    pub dtype: Dtype,
    /// Every sequence starts with [CLS] (encoders).
    pub cls_first: bool,
    /// The order of the train split's sequences when it is not document
    /// order ("unigram": most common language first); validation sequences
    /// always stay in document order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sorted_by: Option<String>,
    /// The most sequences one shard file holds.
    pub shard_sequences: usize,
    pub tokenizer: TokenizerInfo,
    pub splits: Splits,
    /// What each pipeline stage did, in order.
    pub stages: Vec<Stage>,
    pub inputs: Vec<InputFile>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenizerInfo {
    /// File name inside the prepared folder.
    pub file: String,
    pub sha256: String,
    /// The model type: "wordpiece" or "bpe" for tokenizers cram trains.
    pub kind: String,
    /// One more than the largest token id; the model's embedding size.
    pub vocab_size: usize,
    pub lowercase: bool,
    pub special: SpecialTokens,
    /// The tokenizer file that was reused instead of training one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Splits {
    pub train: SplitInfo,
    pub val: SplitInfo,
}

impl Splits {
    pub fn get(&self, split: Split) -> &SplitInfo {
        match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SplitInfo {
    /// Documents packed into this split.
    pub documents: u64,
    pub sequences: u64,
    /// Positions holding a real token ([CLS] and [SEP] included, [PAD] not).
    pub tokens: u64,
    /// Positions holding [PAD]; only the split's last sequence has any.
    pub padding: u64,
    pub shards: Vec<ShardInfo>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// File name inside the prepared folder.
    pub file: String,
    pub sequences: u64,
    pub sha256: String,
}

/// One pipeline stage's record: documents in and out, plus its own numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    pub name: String,
    pub docs_in: u64,
    pub docs_out: u64,
    #[serde(flatten)]
    pub stats: Map<String, Value>,
}

impl Stage {
    pub fn new(name: &str, docs_in: usize, docs_out: usize) -> Stage {
        Stage {
            name: name.to_string(),
            docs_in: docs_in as u64,
            docs_out: docs_out as u64,
            stats: Map::new(),
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Stage {
        self.stats.insert(key.to_string(), value.into());
        self
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputFile {
    pub path: String,
    /// Size as stored (compressed or not).
    pub bytes: u64,
    /// The mixing weight of the input this file belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
}

impl Manifest {
    /// Writes `dir/manifest.json` as pretty JSON and fsyncs it.
    pub fn write(&self, dir: &Path) -> Result<(), DataError> {
        let path = dir.join(MANIFEST_FILE);
        let mut text = serde_json::to_string_pretty(self).map_err(|e| DataError::Write {
            path: path.clone(),
            cause: e.into(),
        })?;
        text.push('\n');
        let mut file = std::fs::File::create(&path).map_err(DataError::write(&path))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(DataError::write(&path))
    }

    /// Reads and checks `dir/manifest.json`.
    pub fn read(dir: &Path) -> Result<Manifest, DataError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|cause| DataError::ManifestRead {
            path: path.clone(),
            cause,
        })?;
        let version: VersionOnly =
            serde_json::from_str(&text).map_err(|cause| DataError::ManifestParse {
                path: path.clone(),
                cause,
            })?;
        if version.format_version != FORMAT_VERSION {
            return Err(DataError::ManifestVersion {
                path,
                found: version.format_version,
                expected: FORMAT_VERSION,
            });
        }
        let manifest: Manifest =
            serde_json::from_str(&text).map_err(|cause| DataError::ManifestParse {
                path: path.clone(),
                cause,
            })?;
        manifest
            .check()
            .map_err(|reason| DataError::ManifestInvalid { path, reason })?;
        Ok(manifest)
    }

    /// Relations between fields that serde cannot check.
    fn check(&self) -> Result<(), String> {
        if self.seq_len == 0 {
            return Err("seq_len is 0".into());
        }
        if self.dtype.max_vocab() < self.tokenizer.vocab_size as u64 {
            return Err(format!(
                "dtype {:?} cannot hold vocab_size {}",
                self.dtype, self.tokenizer.vocab_size
            ));
        }
        let s = self.tokenizer.special;
        if [s.pad, s.unk, s.cls, s.sep, s.mask]
            .iter()
            .any(|&id| id as usize >= self.tokenizer.vocab_size)
        {
            return Err("a special token id is outside the vocabulary".into());
        }
        check_plain_file_name(&self.tokenizer.file)?;
        for split in Split::ALL {
            let info = self.splits.get(split);
            let in_shards: u64 = info.shards.iter().map(|s| s.sequences).sum();
            if in_shards != info.sequences {
                return Err(format!(
                    "split {} lists {} sequences but its shards hold {in_shards}",
                    split.name(),
                    info.sequences
                ));
            }
            for shard in &info.shards {
                check_plain_file_name(&shard.file)?;
                if shard.sequences == 0 {
                    return Err(format!("shard {} holds no sequences", shard.file));
                }
            }
        }
        Ok(())
    }
}

/// Read first, so that a manifest of another version gets a version error
/// rather than a confusing missing-field error.
#[derive(Deserialize)]
struct VersionOnly {
    format_version: u32,
}

/// File names come from the manifest; keep them inside the folder.
fn check_plain_file_name(name: &str) -> Result<(), String> {
    let plain = !name.is_empty()
        && !name.contains(['/', '\\'])
        && name != "."
        && name != ".."
        && !name.starts_with('.');
    if plain {
        Ok(())
    } else {
        Err(format!("'{name}' is not a plain file name"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn example() -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            created_by: "cram test".into(),
            seed: 7,
            seq_len: 4,
            dtype: Dtype::U16,
            cls_first: true,
            sorted_by: None,
            shard_sequences: 2,
            tokenizer: TokenizerInfo {
                file: TOKENIZER_FILE.into(),
                sha256: "ab".repeat(32),
                kind: "wordpiece".into(),
                vocab_size: 100,
                lowercase: true,
                special: SpecialTokens::TRAINED,
                reused_from: None,
            },
            splits: Splits {
                train: SplitInfo {
                    documents: 2,
                    sequences: 3,
                    tokens: 10,
                    padding: 2,
                    shards: vec![
                        ShardInfo {
                            file: "train-00000.bin".into(),
                            sequences: 2,
                            sha256: "00".repeat(32),
                        },
                        ShardInfo {
                            file: "train-00001.bin".into(),
                            sequences: 1,
                            sha256: "11".repeat(32),
                        },
                    ],
                },
                val: SplitInfo::default(),
            },
            stages: vec![Stage::new("read", 3, 3).with("files", 1).with("bytes", 123)],
            inputs: vec![InputFile {
                path: "corpus.txt".into(),
                bytes: 123,
                weight: None,
            }],
        }
    }

    #[test]
    fn manifest_round_trips_through_json() {
        let dir = tempfile::tempdir().unwrap();
        let mut manifest = example();
        manifest.write(dir.path()).unwrap();
        assert_eq!(Manifest::read(dir.path()).unwrap(), manifest);

        manifest.sorted_by = Some("unigram".into());
        manifest.write(dir.path()).unwrap();
        assert_eq!(Manifest::read(dir.path()).unwrap(), manifest);
    }

    #[test]
    fn stage_stats_sit_next_to_the_counts() {
        let json = serde_json::to_value(example().stages[0].clone()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"name": "read", "docs_in": 3, "docs_out": 3, "files": 1, "bytes": 123})
        );
    }

    #[test]
    fn other_versions_and_escaping_file_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut manifest = example();
        manifest.format_version = 2;
        manifest.write(dir.path()).unwrap();
        let err = Manifest::read(dir.path()).unwrap_err();
        assert!(
            matches!(err, DataError::ManifestVersion { found: 2, .. }),
            "{err}"
        );

        let mut manifest = example();
        manifest.splits.train.shards[0].file = "../elsewhere.bin".into();
        manifest.write(dir.path()).unwrap();
        let err = Manifest::read(dir.path()).unwrap_err();
        assert!(err.to_string().contains("not a plain file name"), "{err}");

        let mut manifest = example();
        manifest.splits.train.sequences = 5;
        manifest.write(dir.path()).unwrap();
        let err = Manifest::read(dir.path()).unwrap_err();
        assert!(err.to_string().contains("shards hold 3"), "{err}");
    }
}
