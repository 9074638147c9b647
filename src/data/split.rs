//! Stage "split": which documents train and which validate.
//!
//! A document's split is a function of the seed and the document's key (a
//! hash of its text), not of its position: adding, removing or
//! deduplicating other documents never moves it, and identical documents
//! always land in the same split, so no text is in both. Whole documents
//! are held out, never parts of one.
//!
//! The rule is planned in one pass over the documents (`SplitPlanner`), so
//! that small inputs still get a validation document and never lose every
//! training document, without holding the documents in memory.

use super::error::DataError;
use super::minhash::mix64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Val,
}

impl Split {
    pub const ALL: [Split; 2] = [Split::Train, Split::Val];

    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
        }
    }
}

/// The split of any document, by its key.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SplitRule {
    pub seed: u64,
    pub val_fraction: f64,
    /// A document sent to val although its score is above the fraction:
    /// the lowest-scoring one, when no document would validate otherwise.
    pub forced_val: Option<u64>,
    /// A document sent to train although its score is below the fraction.
    pub forced_train: Option<u64>,
}

impl SplitRule {
    pub fn split(&self, key: u64) -> Split {
        if self.forced_val == Some(key) {
            Split::Val
        } else if self.forced_train == Some(key) || unit_score(self.seed, key) >= self.val_fraction
        {
            Split::Train
        } else {
            Split::Val
        }
    }
}

/// Sees every document's key once and settles the rule. A single document
/// always trains. With two or more, at least one validates when
/// `val_fraction > 0` and at least one trains; `val_fraction >= 1` leaves
/// nothing to train on, an error.
pub struct SplitPlanner {
    seed: u64,
    val_fraction: f64,
    all: SplitCounts,
    /// (score, key, bytes) of the lowest- and highest-scoring documents.
    lowest: Option<(f64, u64, u64)>,
    highest: Option<(f64, u64, u64)>,
}

/// Documents and bytes of text on each side of the split.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SplitCounts {
    pub train_documents: u64,
    pub val_documents: u64,
    pub train_bytes: u64,
    pub val_bytes: u64,
}

impl SplitCounts {
    fn add(&mut self, split: Split, documents: i64, bytes: i64) {
        let (d, b) = match split {
            Split::Train => (&mut self.train_documents, &mut self.train_bytes),
            Split::Val => (&mut self.val_documents, &mut self.val_bytes),
        };
        *d = d.wrapping_add_signed(documents);
        *b = b.wrapping_add_signed(bytes);
    }

    fn documents(&self) -> u64 {
        self.train_documents + self.val_documents
    }
}

impl SplitPlanner {
    pub fn new(seed: u64, val_fraction: f64) -> SplitPlanner {
        SplitPlanner {
            seed,
            val_fraction,
            all: SplitCounts::default(),
            lowest: None,
            highest: None,
        }
    }

    /// Counts a document of `bytes` bytes of text.
    pub fn observe(&mut self, key: u64, bytes: u64) {
        let score = unit_score(self.seed, key);
        let split = if score < self.val_fraction {
            Split::Val
        } else {
            Split::Train
        };
        self.all.add(split, 1, bytes as i64);
        // Ties go to the first key seen, as they would in a sorted list.
        if self.lowest.is_none_or(|(s, _, _)| score < s) {
            self.lowest = Some((score, key, bytes));
        }
        if self.highest.is_none_or(|(s, _, _)| score > s) {
            self.highest = Some((score, key, bytes));
        }
    }

    /// The rule, and how many documents and bytes it puts on each side.
    pub fn finish(self) -> Result<(SplitRule, SplitCounts), DataError> {
        let documents = self.all.documents();
        if self.val_fraction >= 1.0 {
            return Err(DataError::EmptyTrainSplit {
                documents: documents as usize,
                val_fraction: self.val_fraction,
            });
        }
        let mut rule = SplitRule {
            seed: self.seed,
            val_fraction: self.val_fraction,
            forced_val: None,
            forced_train: None,
        };
        let mut counts = self.all;
        let val = counts.val_documents;
        let mut force = |extreme: Option<(f64, u64, u64)>, to: Split| {
            let (_, key, bytes) = extreme?;
            let from = if to == Split::Val {
                Split::Train
            } else {
                Split::Val
            };
            counts.add(from, -1, -(bytes as i64));
            counts.add(to, 1, bytes as i64);
            Some(key)
        };
        if documents == 1 && val == 1 {
            rule.forced_train = force(self.lowest, Split::Train);
        } else if documents > 1 && val == 0 && self.val_fraction > 0.0 {
            rule.forced_val = force(self.lowest, Split::Val);
        } else if documents > 1 && val == documents {
            rule.forced_train = force(self.highest, Split::Train);
        }
        Ok((rule, counts))
    }
}

/// A number in [0, 1) from the seed and the key.
fn unit_score(seed: u64, key: u64) -> f64 {
    let h = mix64(seed ^ mix64(key ^ 0x5F3C_8E1A_B4D2_9C07));
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(keys: &[u64], seed: u64, fraction: f64) -> Result<Vec<Split>, DataError> {
        let mut planner = SplitPlanner::new(seed, fraction);
        keys.iter().for_each(|&k| planner.observe(k, 10));
        let (rule, counts) = planner.finish()?;
        let splits: Vec<Split> = keys.iter().map(|&k| rule.split(k)).collect();
        let val = splits.iter().filter(|&&s| s == Split::Val).count() as u64;
        assert_eq!(
            counts,
            SplitCounts {
                train_documents: keys.len() as u64 - val,
                val_documents: val,
                train_bytes: 10 * (keys.len() as u64 - val),
                val_bytes: 10 * val,
            }
        );
        Ok(splits)
    }

    fn keys(n: u64) -> Vec<u64> {
        (0..n).map(|i| mix64(i + 1)).collect()
    }

    #[test]
    fn fraction_is_roughly_kept_and_seeded() {
        let k = keys(2000);
        let a = plan(&k, 1, 0.1).unwrap();
        let val = a.iter().filter(|&&s| s == Split::Val).count();
        assert!((150..250).contains(&val), "{val} of 2000 in val");
        assert_eq!(a, plan(&k, 1, 0.1).unwrap());
        assert_ne!(a, plan(&k, 2, 0.1).unwrap());
    }

    #[test]
    fn a_document_keeps_its_split_when_others_come_and_go() {
        let k = keys(300);
        let all = plan(&k, 3, 0.2).unwrap();
        let some = plan(&k[100..], 3, 0.2).unwrap();
        assert_eq!(&all[100..], &some[..]);
    }

    #[test]
    fn small_inputs_get_one_val_document_and_never_an_empty_train_split() {
        let two = plan(&keys(2), 0, 1e-9).unwrap();
        assert_eq!(two.iter().filter(|&&s| s == Split::Val).count(), 1);
        let nearly_all = plan(&keys(2), 0, 1.0 - 1e-9).unwrap();
        assert_eq!(nearly_all.iter().filter(|&&s| s == Split::Train).count(), 1);
        for seed in 0..20 {
            assert_eq!(plan(&keys(1), seed, 0.9).unwrap(), vec![Split::Train]);
        }
        assert_eq!(plan(&keys(5), 0, 0.0).unwrap(), vec![Split::Train; 5]);
        let err = plan(&keys(3), 0, 1.0).unwrap_err();
        assert!(matches!(
            err,
            DataError::EmptyTrainSplit { documents: 3, .. }
        ));
    }
}
