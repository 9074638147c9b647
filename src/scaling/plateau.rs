//! The masked-LM plateau. A masked-LM encoder first learns the unigram
//! distribution and sits at its cross-entropy until attention starts to use
//! the context; how long it sits there depends on the optimizer steps and the
//! learning rate, not on N or D. A run that ends on the plateau is not on any
//! power law, and a handful of them pull every fit (the parametric fit's E
//! runs to zero). So a fit leaves out the runs whose final held-out loss is
//! not clearly below the unigram cross-entropy of the sweep's data, and says
//! which.
//!
//! The sweep records that cross-entropy in `data.json`; a fit of a table
//! without it takes the cut only from `--max-loss`.

use super::points::{write_atomically, Point, PointSet};
use super::ScalingError;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Facts about the sweep's data that the fits need, written by the sweep.
pub const DATA_FILE: &str = "data.json";

/// A run counts as off the plateau when its loss is below this fraction of
/// the unigram cross-entropy. 0.9 leaves out the runs that have barely
/// started to use context: on pretrain-en (unigram ≈ 7.3 nats) anything above
/// about 6.6.
pub const PLATEAU_FRACTION: f64 = 0.9;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SweepData {
    /// Cross-entropy of the validation tokens under the training split's
    /// unigram distribution (nats per token; special tokens left out).
    pub unigram_loss: f64,
}

impl SweepData {
    pub fn write(&self, dir: &Path) -> Result<(), ScalingError> {
        let json = serde_json::to_string_pretty(self).expect("plain numbers serialize");
        write_atomically(&dir.join(DATA_FILE), &json)
    }

    /// The sweep folder's `data.json`, if it has one.
    pub fn read(dir: &Path) -> Result<Option<SweepData>, ScalingError> {
        let path = dir.join(DATA_FILE);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(None);
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| ScalingError::Run {
                run: path,
                reason: format!("not a data.json of `cram scale sweep`: {e}"),
            })
    }

    /// The loss at or above which a run counts as still on the plateau.
    pub fn plateau_cut(&self) -> f64 {
        PLATEAU_FRACTION * self.unigram_loss
    }
}

/// `set` split into the runs below `max_loss` (with their curves) and those
/// left out.
pub fn split_at(set: &PointSet, max_loss: f64) -> (PointSet, Vec<Point>) {
    let (kept, left): (Vec<Point>, Vec<Point>) =
        set.points.iter().cloned().partition(|p| p.loss < max_loss);
    let curves = set
        .curves
        .iter()
        .filter(|c| !left.iter().any(|p| !p.run.is_empty() && p.run == c.run))
        .cloned()
        .collect();
    (
        PointSet {
            points: kept,
            curves,
        },
        left,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scaling::Curve;

    fn point(run: &str, loss: f64) -> Point {
        Point::simple(run, 1e6, 1e8, loss)
    }

    #[test]
    fn runs_at_or_above_the_cut_leave_with_their_curves() {
        let set = PointSet {
            points: vec![point("a", 4.0), point("b", 6.6), point("c", 7.2)],
            curves: ["a", "b", "c"]
                .iter()
                .map(|r| Curve {
                    run: r.to_string(),
                    n_params: 1e6,
                    n_total: 2e6,
                    flops_per_token: 6e6,
                    samples: vec![(1e8, 5.0)],
                })
                .collect(),
        };
        let (kept, left) = split_at(&set, 6.6);
        assert_eq!(kept.points.len(), 1);
        assert_eq!(kept.curves.len(), 1);
        assert_eq!(kept.curves[0].run, "a");
        let names: Vec<&str> = left.iter().map(|p| p.run.as_str()).collect();
        assert_eq!(names, ["b", "c"]);
    }

    #[test]
    fn data_json_round_trips_and_is_optional() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(SweepData::read(dir.path()).unwrap(), None);
        let d = SweepData { unigram_loss: 7.3 };
        d.write(dir.path()).unwrap();
        assert_eq!(SweepData::read(dir.path()).unwrap(), Some(d));
        assert!((d.plateau_cut() - 6.57).abs() < 1e-12);
        std::fs::write(dir.path().join(DATA_FILE), "{}").unwrap();
        let e = SweepData::read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("data.json"), "{e}");
    }
}
