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
//!
//! The loss cut misses a run that drifts below it without ever using context:
//! the 2.6M-parameter model of bench/sweeps/crammed-gpu-2 went from 6.65 to
//! 6.35 over 74k steps while its held-out accuracy stayed at 0.069, the
//! accuracy of always predicting the most frequent token, when every run that
//! had left the plateau was at 0.26 or more. So the sweep also records that
//! accuracy, and a fit names the kept runs whose accuracy is within
//! [`MODE_ACCURACY_FACTOR`] of it (a note with the `--max-loss` that would
//! leave them out; the cut itself stays the loss rule, which a table of points
//! without accuracies can use too).

use super::points::{write_atomically, Point, PointSet};
use super::ScalingError;
use crate::train::Record;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Facts about the sweep's data that the fits need, written by the sweep.
pub const DATA_FILE: &str = "data.json";

/// A run counts as off the plateau when its loss is below this fraction of
/// the unigram cross-entropy. 0.9 leaves out the runs that have barely
/// started to use context: on pretrain-en (unigram ≈ 7.3 nats) anything above
/// about 6.6.
pub const PLATEAU_FRACTION: f64 = 0.9;

/// A run whose held-out accuracy is below this multiple of the most frequent
/// token's frequency still predicts mostly that token. On crammed-gpu-2
/// (most frequent token 5.8% of the held-out tokens) the runs that stayed on
/// the plateau had 1.15–1.5×, those that left it 4.4× and more.
pub const MODE_ACCURACY_FACTOR: f64 = 2.0;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SweepData {
    /// Cross-entropy of the validation tokens under the training split's
    /// unigram distribution (nats per token; special tokens left out).
    pub unigram_loss: f64,
    /// Accuracy on the validation tokens of always predicting the training
    /// split's most frequent token (absent in sweeps made before it was kept).
    #[serde(default)]
    pub unigram_accuracy: Option<f64>,
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

    /// Whether a held-out accuracy is still that of predicting mostly the
    /// most frequent token (false when the sweep did not record it).
    pub fn predicts_the_mode(&self, accuracy: f64) -> bool {
        self.unigram_accuracy
            .is_some_and(|mode| accuracy < MODE_ACCURACY_FACTOR * mode)
    }
}

/// The kept runs of a sweep folder whose final held-out accuracy says they
/// still predict mostly the most frequent token, as a note for the fit; None
/// when there are none, or the sweep has no accuracy to compare with.
pub fn mode_predictors_note(
    dir: &Path,
    data: &SweepData,
    kept: &[Point],
) -> Result<Option<String>, ScalingError> {
    let Some(mode) = data.unigram_accuracy else {
        return Ok(None);
    };
    let mut named = Vec::new();
    let mut lowest = f64::INFINITY;
    for p in kept {
        let records = super::sweep::read_metrics(&super::sweep::run_dir(dir, &p.run))?;
        let accuracy = records
            .iter()
            .rev()
            .filter_map(Record::as_eval)
            .map(|e| e.val_accuracy)
            .find(|a| a.is_finite());
        if let Some(a) = accuracy.filter(|&a| data.predicts_the_mode(a)) {
            named.push(format!("{} (loss {:.3}, accuracy {a:.3})", p.run, p.loss));
            lowest = lowest.min(p.loss);
        }
    }
    Ok((!named.is_empty()).then(|| {
        format!(
            "{} kept run(s) still predict mostly the most frequent token (held-out accuracy below \
             {MODE_ACCURACY_FACTOR} × its {mode:.3}), so they are probably still on the plateau: {}; \
             --max-loss {:.3} leaves them out",
            named.len(),
            named.join(", "),
            // Rounded down, so that the printed cut does leave the lowest out.
            (lowest * 1000.0 + 1e-9).floor() / 1000.0
        )
    }))
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
    fn runs_that_predict_the_mode_are_named_with_the_cut_that_drops_them() {
        let dir = tempfile::tempdir().unwrap();
        for (run, accuracy) in [("a", 0.069), ("b", 0.31), ("c", 0.08)] {
            let run_dir = super::super::sweep::run_dir(dir.path(), run);
            std::fs::create_dir_all(&run_dir).unwrap();
            let line = format!(
                r#"{{"elapsed":9.0,"event":"eval","step":100,"tokens":51200,"val_accuracy":{accuracy},"val_loss":6.0}}"#
            );
            std::fs::write(run_dir.join("metrics.jsonl"), line + "\n").unwrap();
        }
        let kept = [point("a", 6.3519), point("b", 3.5), point("c", 6.47)];
        let mut data = SweepData {
            unigram_loss: 7.3,
            unigram_accuracy: Some(0.058),
        };
        let note = mode_predictors_note(dir.path(), &data, &kept)
            .unwrap()
            .unwrap();
        assert!(note.starts_with("2 kept run(s)"), "{note}");
        assert!(note.contains("a (loss 6.352, accuracy 0.069)"), "{note}");
        assert!(!note.contains("b (loss"), "{note}");
        assert!(note.ends_with("--max-loss 6.351 leaves them out"), "{note}");
        assert_eq!(
            mode_predictors_note(dir.path(), &data, &kept[1..2]).unwrap(),
            None
        );
        data.unigram_accuracy = None;
        assert_eq!(
            mode_predictors_note(dir.path(), &data, &kept).unwrap(),
            None
        );
    }

    #[test]
    fn data_json_round_trips_and_is_optional() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(SweepData::read(dir.path()).unwrap(), None);
        let d = SweepData {
            unigram_loss: 7.3,
            unigram_accuracy: Some(0.07),
        };
        d.write(dir.path()).unwrap();
        assert_eq!(SweepData::read(dir.path()).unwrap(), Some(d));
        assert!((d.plateau_cut() - 6.57).abs() < 1e-12);
        assert!(d.predicts_the_mode(0.13) && !d.predicts_the_mode(0.15));
        // data.json of a sweep made before the accuracy was kept.
        std::fs::write(dir.path().join(DATA_FILE), r#"{"unigram_loss": 7.3}"#).unwrap();
        let old = SweepData::read(dir.path()).unwrap().unwrap();
        assert_eq!(old.unigram_accuracy, None);
        assert!(!old.predicts_the_mode(0.0));
        std::fs::write(dir.path().join(DATA_FILE), "{}").unwrap();
        let e = SweepData::read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("data.json"), "{e}");
    }
}
