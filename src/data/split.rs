//! Stage "split": which documents train and which validate.
//!
//! A document's split is a function of the seed and the document's text
//! (sha256 of both), not of its position: adding, removing or deduplicating
//! other documents never moves it, and identical documents always land in
//! the same split, so no text is in both.

use std::cmp::Ordering;

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::error::DataError;

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

/// The split of each document. A single document always trains. With two
/// or more, at least one validates when `val_fraction > 0` and at least one
/// trains when `val_fraction < 1`; `val_fraction >= 1` leaves nothing to
/// train on, an error.
pub fn assign_splits(
    documents: &[String],
    seed: u64,
    val_fraction: f64,
) -> Result<Vec<Split>, DataError> {
    if val_fraction >= 1.0 {
        return Err(DataError::EmptyTrainSplit {
            documents: documents.len(),
            val_fraction,
        });
    }
    let scores: Vec<f64> = documents
        .par_iter()
        .map(|doc| unit_score(seed, doc))
        .collect();
    let mut splits: Vec<Split> = scores
        .iter()
        .map(|&s| {
            if s < val_fraction {
                Split::Val
            } else {
                Split::Train
            }
        })
        .collect();
    if documents.len() == 1 {
        splits[0] = Split::Train;
    } else if !splits.contains(&Split::Val) && val_fraction > 0.0 {
        splits[extreme(&scores, Ordering::Less)] = Split::Val;
    } else if !splits.contains(&Split::Train) {
        splits[extreme(&scores, Ordering::Greater)] = Split::Train;
    }
    Ok(splits)
}

/// A number in [0, 1) from the seed and the text.
fn unit_score(seed: u64, text: &str) -> f64 {
    let mut hasher = Sha256::new();
    hasher.update(seed.to_le_bytes());
    hasher.update(text.as_bytes());
    let digest = hasher.finalize();
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    (u64::from_le_bytes(head) >> 11) as f64 / (1u64 << 53) as f64
}

/// The index of the lowest (`Less`) or highest (`Greater`) score; the first
/// one on ties.
fn extreme(scores: &[f64], want: Ordering) -> usize {
    let mut best = 0;
    for (i, s) in scores.iter().enumerate() {
        if s.total_cmp(&scores[best]) == want {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("document number {i}")).collect()
    }

    #[test]
    fn fraction_is_roughly_kept_and_seeded() {
        let d = docs(2000);
        let a = assign_splits(&d, 1, 0.1).unwrap();
        let val = a.iter().filter(|&&s| s == Split::Val).count();
        assert!((150..250).contains(&val), "{val} of 2000 in val");
        assert_eq!(a, assign_splits(&d, 1, 0.1).unwrap());
        assert_ne!(a, assign_splits(&d, 2, 0.1).unwrap());
    }

    #[test]
    fn a_document_keeps_its_split_when_others_come_and_go() {
        let d = docs(300);
        let all = assign_splits(&d, 3, 0.2).unwrap();
        let some = assign_splits(&d[100..], 3, 0.2).unwrap();
        assert_eq!(&all[100..], &some[..]);
    }

    #[test]
    fn small_inputs_get_one_val_document_and_never_an_empty_train_split() {
        let two = assign_splits(&docs(2), 0, 1e-9).unwrap();
        assert_eq!(two.iter().filter(|&&s| s == Split::Val).count(), 1);
        let nearly_all = assign_splits(&docs(2), 0, 1.0 - 1e-9).unwrap();
        assert_eq!(nearly_all.iter().filter(|&&s| s == Split::Train).count(), 1);
        for seed in 0..20 {
            assert_eq!(
                assign_splits(&docs(1), seed, 0.9).unwrap(),
                vec![Split::Train]
            );
        }
        assert_eq!(
            assign_splits(&docs(5), 0, 0.0).unwrap(),
            vec![Split::Train; 5]
        );
        let err = assign_splits(&docs(3), 0, 1.0).unwrap_err();
        assert!(matches!(
            err,
            DataError::EmptyTrainSplit { documents: 3, .. }
        ));
    }
}
