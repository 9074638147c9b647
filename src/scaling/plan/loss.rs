//! The expected loss of each row of a plan, with an interval. The bootstrap
//! interval alone says how much a law moves when the sweep's runs are
//! resampled, not how far it misses beyond them; the held-out check of the
//! fit (laws fitted below the largest compute level, predicting that level's
//! best run) measures the second. So the interval is the bootstrap's,
//! widened to at least ±|held-out relative error| of the same law around the
//! expected loss. A budget far past the sweep can miss by more: the plan's
//! notes say how far it extrapolates.

use super::{Allocation, ShapeChoice, ShapeLoss, APPROACH1, APPROACH3, FRONTIER, JOINT};
use crate::scaling::fit::stats::extent;
use crate::scaling::fit::{
    FitReport, HoldoutReport, APPROACH1_LAW, APPROACH3_LAW, FRONTIER_LAW, JOINT_LAW,
};

/// The name, among the held-out predictions, of the law behind a plan row.
fn held_out_law(row: &str) -> Option<&'static str> {
    Some(match row {
        JOINT => JOINT_LAW,
        FRONTIER => FRONTIER_LAW,
        APPROACH1 => APPROACH1_LAW,
        APPROACH3 => APPROACH3_LAW,
        _ => return None,
    })
}

/// Widens `a`'s loss interval to its law's held-out error.
pub(super) fn widen_to_holdout(a: &mut Allocation, holdout: &HoldoutReport) {
    let (Some(loss), Some(law)) = (a.loss, held_out_law(&a.fit)) else {
        return;
    };
    let Some(error) = holdout
        .predictions
        .iter()
        .find(|p| p.law == law)
        .map(|p| p.relative_error.abs())
    else {
        return;
    };
    let seen = [loss * (1.0 - error), loss * (1.0 + error)];
    a.loss_interval = Some(match a.loss_interval {
        Some([lo, hi]) => [lo.min(seen[0]), hi.max(seen[1])],
        None => seen,
    });
}

/// What the two laws that take (N, D) expect of `shape` on its tokens:
/// Kaplan's joint law with the non-embedding count, approach 3 with the total.
pub(super) fn at_shape(fit: &FitReport, shape: &ShapeChoice) -> Vec<ShapeLoss> {
    let mut out = vec![ShapeLoss {
        law: JOINT_LAW.into(),
        loss: fit.kaplan.joint().loss(shape.n_params, shape.tokens),
    }];
    if let Some(p) = fit.chinchilla.parametric() {
        out.push(ShapeLoss {
            law: APPROACH3_LAW.into(),
            loss: p.loss(shape.n_total, shape.tokens),
        });
    }
    out.retain(|l| l.loss.is_finite());
    out
}

/// Widens the loss interval of a row with an expected loss and a shape to
/// cover every law's loss at that shape; returns how far the laws there
/// are apart (relative to the lowest), `None` where there is nothing to
/// compare.
pub(super) fn widen_to_laws(a: &mut Allocation) -> Option<f64> {
    let loss = a.loss?;
    let shape = a.shape.as_ref()?;
    if shape.losses.len() < 2 {
        return None;
    }
    let (lo, hi) = extent(shape.losses.iter().map(|l| l.loss));
    let [ilo, ihi] = a.loss_interval.unwrap_or([loss, loss]);
    a.loss_interval = Some([ilo.min(lo), ihi.max(hi)]);
    Some(hi / lo - 1.0)
}

/// The table's loss cell: "3.842 [3.79, 3.89]", the value alone, or "-".
pub(super) fn text(a: &Allocation) -> String {
    match (a.loss, a.loss_interval) {
        (Some(l), Some([lo, hi])) => format!("{l:.3} [{lo:.2}, {hi:.2}]"),
        (Some(l), None) => format!("{l:.3}"),
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scaling::fit::HoldoutPrediction;
    use crate::scaling::plan::Ranged;

    fn row(fit: &str, loss: f64, interval: Option<[f64; 2]>) -> Allocation {
        let one = Ranged {
            value: 1.0,
            interval: None,
        };
        Allocation {
            fit: fit.into(),
            counts: "total".into(),
            n: one,
            tokens: one,
            loss: Some(loss),
            loss_interval: interval,
            shape: None,
        }
    }

    fn holdout(law: &str, relative_error: f64) -> HoldoutReport {
        HoldoutReport {
            run: "r".into(),
            n_params: 1e6,
            n_total: 2e6,
            tokens: 1e8,
            compute: 6e14,
            loss: 4.0,
            fitted_points: 10,
            predictions: vec![HoldoutPrediction {
                law: law.into(),
                predicted: 4.0 * (1.0 + relative_error),
                relative_error,
                note: None,
            }],
        }
    }

    #[test]
    fn the_interval_is_at_least_the_held_out_error() {
        let h = holdout("Kaplan L(N, D)", -0.05);
        let mut narrow = row(JOINT, 4.0, Some([3.9, 4.1]));
        widen_to_holdout(&mut narrow, &h);
        let [lo, hi] = narrow.loss_interval.unwrap();
        assert!(
            (lo - 3.8).abs() < 1e-12 && (hi - 4.2).abs() < 1e-12,
            "{lo} {hi}"
        );
        assert_eq!(text(&narrow), "4.000 [3.80, 4.20]");
        // A bootstrap interval wider than the held-out error on one side stays.
        let mut wide = row(JOINT, 4.0, Some([3.5, 4.1]));
        widen_to_holdout(&mut wide, &h);
        assert_eq!(wide.loss_interval, Some([3.5, 4.0 * 1.05]));
        // Without a bootstrap interval the held-out error is the interval.
        let mut bare = row(JOINT, 4.0, None);
        widen_to_holdout(&mut bare, &h);
        assert!(bare.loss_interval.is_some());
    }

    #[test]
    fn the_interval_covers_every_law_at_the_shape() {
        let shape = |losses: &[(&str, f64)]| ShapeChoice {
            hidden: 64,
            layers: 2,
            heads: 1,
            ffn: 128,
            n_params: 1e6,
            n_total: 2e6,
            tokens: 1e8,
            losses: (losses.iter())
                .map(|&(law, loss)| ShapeLoss {
                    law: law.into(),
                    loss,
                })
                .collect(),
        };
        let mut a = row(JOINT, 4.0, Some([3.9, 4.1]));
        a.shape = Some(shape(&[(JOINT_LAW, 4.0), (APPROACH3_LAW, 4.4)]));
        let apart = widen_to_laws(&mut a).unwrap();
        assert!((apart - 0.1).abs() < 1e-12, "{apart}");
        assert_eq!(a.loss_interval, Some([3.9, 4.4]));
        // One law, or no shape: nothing to compare, nothing changed.
        let mut one = row(JOINT, 4.0, None);
        one.shape = Some(shape(&[(JOINT_LAW, 4.2)]));
        assert_eq!(widen_to_laws(&mut one), None);
        assert_eq!(one.loss_interval, None);
        assert_eq!(widen_to_laws(&mut row(JOINT, 4.0, None)), None);
    }

    #[test]
    fn a_law_the_holdout_did_not_check_keeps_its_interval() {
        let h = holdout("Chinchilla approach 3", 0.03);
        let mut a = row(JOINT, 4.0, Some([3.9, 4.1]));
        widen_to_holdout(&mut a, &h);
        assert_eq!(a.loss_interval, Some([3.9, 4.1]));
        let mut p3 = row(APPROACH3, 4.0, None);
        widen_to_holdout(&mut p3, &h);
        assert_eq!(text(&p3), "4.000 [3.88, 4.12]");
    }
}
