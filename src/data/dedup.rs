//! Stages "dedup-exact" and "near-dup": the first copy of a document is
//! kept, later copies are dropped.
//!
//! Exact duplicates are found by a 128-bit prefix of the sha256 of the
//! normalized text (16 bytes of memory per kept document). Near duplicates
//! are found by MinHash LSH (see `minhash`): a document whose band keys meet
//! a kept document's is compared with it on the whole signature, and
//! dropped when the estimated Jaccard similarity reaches the threshold.
//!
//! Memory grows with the number of kept documents, not their size: the band
//! tables hold one (key, document) pair per band and document, and the
//! signatures themselves (512 bytes each) live in a file on disk, read back
//! only for candidates.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::error::DataError;
use super::minhash::{similarity, Banding, Signature, SIGNATURE_LEN};

/// Keeps the first copy of each exact text.
#[derive(Default)]
pub struct ExactDedup {
    seen: HashSet<u128, BuildHasherDefault<PreHashed>>,
}

impl ExactDedup {
    /// True the first time a digest is seen.
    pub fn insert(&mut self, digest: u128) -> bool {
        self.seen.insert(digest)
    }
}

/// Keeps documents that are not near duplicates of an earlier kept one.
pub struct NearDedup {
    threshold: f64,
    banding: Banding,
    bands: Vec<HashMap<u64, u32, BuildHasherDefault<PreHashed>>>,
    signatures: SignatureFile,
    /// Documents compared on the whole signature.
    pub candidates_checked: u64,
}

impl NearDedup {
    /// `spill` is the file that holds the kept documents' signatures.
    pub fn new(threshold: f64, spill: &Path) -> Result<NearDedup, DataError> {
        let banding = Banding::for_threshold(threshold);
        Ok(NearDedup {
            threshold,
            banding,
            bands: vec![HashMap::default(); banding.bands],
            signatures: SignatureFile::create(spill)?,
            candidates_checked: 0,
        })
    }

    pub fn banding(&self) -> Banding {
        self.banding
    }

    /// True (and the document remembered) unless it is a near duplicate of
    /// a document kept before.
    pub fn insert(&mut self, signature: &Signature) -> Result<bool, DataError> {
        let keys: Vec<u64> = self.banding.keys(signature).collect();
        let mut checked = Vec::new();
        let mut earlier = [0u32; SIGNATURE_LEN];
        for (band, key) in keys.iter().enumerate() {
            let Some(&doc) = self.bands[band].get(key) else {
                continue;
            };
            if checked.contains(&doc) {
                continue;
            }
            checked.push(doc);
            self.candidates_checked += 1;
            self.signatures.read(doc, &mut earlier)?;
            if similarity(signature, &earlier) >= self.threshold {
                return Ok(false);
            }
        }
        let doc = self.signatures.push(signature)?;
        for (band, key) in keys.into_iter().enumerate() {
            self.bands[band].entry(key).or_insert(doc);
        }
        Ok(true)
    }
}

/// Signatures appended to a file and read back by index.
struct SignatureFile {
    path: PathBuf,
    file: File,
    count: u32,
    bytes: Vec<u8>,
}

const SIGNATURE_BYTES: u64 = (SIGNATURE_LEN * 4) as u64;

impl SignatureFile {
    fn create(path: &Path) -> Result<SignatureFile, DataError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(DataError::write(path))?;
        Ok(SignatureFile {
            path: path.to_path_buf(),
            file,
            count: 0,
            bytes: Vec::with_capacity(SIGNATURE_BYTES as usize),
        })
    }

    fn push(&mut self, signature: &Signature) -> Result<u32, DataError> {
        self.bytes.clear();
        for v in signature {
            self.bytes.extend_from_slice(&v.to_le_bytes());
        }
        let at = u64::from(self.count) * SIGNATURE_BYTES;
        self.file
            .seek(SeekFrom::Start(at))
            .and_then(|_| self.file.write_all(&self.bytes))
            .map_err(DataError::write(&self.path))?;
        self.count += 1;
        Ok(self.count - 1)
    }

    fn read(&mut self, index: u32, out: &mut Signature) -> Result<(), DataError> {
        self.bytes.resize(SIGNATURE_BYTES as usize, 0);
        self.file
            .seek(SeekFrom::Start(u64::from(index) * SIGNATURE_BYTES))
            .and_then(|_| self.file.read_exact(&mut self.bytes))
            .map_err(DataError::write(&self.path))?;
        for (v, b) in out.iter_mut().zip(self.bytes.chunks_exact(4)) {
            *v = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        Ok(())
    }
}

/// A hasher for keys that are already uniform hashes: it passes them
/// through instead of hashing them again.
#[derive(Default)]
pub struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(word);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }

    fn write_u128(&mut self, n: u128) {
        self.0 ^= n as u64 ^ (n >> 64) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::minhash::{mix64, signature};

    /// `words` pseudo-random words from a vocabulary of 5000.
    fn text(seed: u64, words: u64) -> String {
        (0..words)
            .map(|i| format!("w{}", mix64(seed << 32 | i) % 5000))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn exact_keeps_the_first_copy() {
        let mut dedup = ExactDedup::default();
        assert!(dedup.insert(7));
        assert!(dedup.insert(8));
        assert!(!dedup.insert(7));
    }

    #[test]
    fn near_duplicates_go_and_different_documents_stay() {
        let dir = tempfile::tempdir().unwrap();
        let mut dedup = NearDedup::new(0.8, &dir.path().join("sigs.bin")).unwrap();
        let original = text(1, 1000);
        // A few words changed at the end: Jaccard of 5-word shingles ~0.97.
        let mut words: Vec<&str> = original.split(' ').collect();
        words[990] = "changed";
        words[995] = "edited";
        let near = words.join(" ");
        // Half the words replaced: far below 0.8.
        let half: String = original
            .split(' ')
            .enumerate()
            .map(|(i, w)| {
                if i % 2 == 0 {
                    format!("z{i}")
                } else {
                    w.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        assert!(dedup.insert(&signature(&original)).unwrap());
        assert!(!dedup.insert(&signature(&near)).unwrap());
        assert!(dedup.insert(&signature(&half)).unwrap());
        for seed in 2..50 {
            assert!(
                dedup.insert(&signature(&text(seed, 300))).unwrap(),
                "{seed}"
            );
        }
        assert!(!dedup.insert(&signature(&text(7, 300))).unwrap());
        assert!(dedup.candidates_checked >= 2);
    }
}
