//! GLUE's metrics, as the benchmark defines them, and its average.
//!
//! Degenerate inputs give 0, not NaN: a constant predictor has no
//! correlation with the labels (Matthews, Pearson, Spearman), and an F1 with
//! no positive predictions nor labels is 0 (scikit-learn's convention).

use super::tasks::{Metric, Task};

/// Fraction of predictions equal to the label.
pub fn accuracy(pred: &[u32], gold: &[u32]) -> f64 {
    assert_eq!(pred.len(), gold.len());
    if gold.is_empty() {
        return 0.0;
    }
    let right = pred.iter().zip(gold).filter(|(p, g)| p == g).count();
    right as f64 / gold.len() as f64
}

/// Binary confusion counts with class 1 positive: (tp, tn, fp, fn).
fn confusion(pred: &[u32], gold: &[u32]) -> (f64, f64, f64, f64) {
    assert_eq!(pred.len(), gold.len());
    let mut c = (0.0, 0.0, 0.0, 0.0);
    for (&p, &g) in pred.iter().zip(gold) {
        match (p == 1, g == 1) {
            (true, true) => c.0 += 1.0,
            (false, false) => c.1 += 1.0,
            (true, false) => c.2 += 1.0,
            (false, true) => c.3 += 1.0,
        }
    }
    c
}

/// F1 of the positive class (label 1), as GLUE scores MRPC and QQP.
pub fn f1(pred: &[u32], gold: &[u32]) -> f64 {
    let (tp, _, fp, fn_) = confusion(pred, gold);
    let denominator = 2.0 * tp + fp + fn_;
    if denominator == 0.0 {
        0.0
    } else {
        2.0 * tp / denominator
    }
}

/// Matthews correlation of binary predictions (CoLA).
pub fn matthews(pred: &[u32], gold: &[u32]) -> f64 {
    let (tp, tn, fp, fn_) = confusion(pred, gold);
    let denominator = ((tp + fp) * (tp + fn_) * (tn + fp) * (tn + fn_)).sqrt();
    if denominator == 0.0 {
        0.0
    } else {
        (tp * tn - fp * fn_) / denominator
    }
}

/// Pearson correlation.
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    assert_eq!(x.len(), y.len());
    let n = x.len() as f64;
    if x.is_empty() {
        return 0.0;
    }
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        let (dx, dy) = (a - mx, b - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    let denominator = (sxx * syy).sqrt();
    if denominator == 0.0 {
        0.0
    } else {
        sxy / denominator
    }
}

/// Ranks starting at 1, ties sharing the mean of the ranks they span.
pub fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut out = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        // Positions start..end hold ranks start+1..=end; their mean:
        let rank = (start + 1 + end) as f64 / 2.0;
        order[start..end].iter().for_each(|&i| out[i] = rank);
        start = end;
    }
    out
}

/// Spearman correlation: Pearson's of the ranks, ties averaged.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&ranks(x), &ranks(y))
}

/// A split's predictions: class ids or scores, with the gold answers.
#[derive(Debug, Clone)]
pub enum Predictions {
    Classes { pred: Vec<u32>, gold: Vec<u32> },
    Scores { pred: Vec<f64>, gold: Vec<f64> },
}

impl Predictions {
    pub fn score(&self, metric: Metric) -> f64 {
        match (self, metric) {
            (Predictions::Classes { pred, gold }, Metric::Accuracy) => accuracy(pred, gold),
            (Predictions::Classes { pred, gold }, Metric::F1) => f1(pred, gold),
            (Predictions::Classes { pred, gold }, Metric::Matthews) => matthews(pred, gold),
            (Predictions::Scores { pred, gold }, Metric::Pearson) => pearson(pred, gold),
            (Predictions::Scores { pred, gold }, Metric::Spearman) => spearman(pred, gold),
            (p, m) => unreachable!("metric {m:?} does not apply to {p:?}"),
        }
    }
}

/// The median, the mean of the middle two for an even count.
pub fn median(values: &[f64]) -> f64 {
    assert!(!values.is_empty(), "median of nothing");
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// The tasks of the GLUE average: every task but WNLI, as is usual.
pub const AVERAGED: [Task; 8] = [
    Task::Cola,
    Task::Sst2,
    Task::Mrpc,
    Task::Qqp,
    Task::Stsb,
    Task::Mnli,
    Task::Qnli,
    Task::Rte,
];

/// The GLUE average of the tasks that have a score, and which tasks it covers.
#[derive(Debug, Clone, PartialEq)]
pub struct Average {
    /// `None` when no averaged task has a score.
    pub value: Option<f64>,
    pub covered: Vec<Task>,
    pub missing: Vec<Task>,
}

/// GLUE's rule: a task's score is the mean of its metrics (MRPC and QQP: F1
/// and accuracy; STS-B: Pearson and Spearman; MNLI: matched and mismatched
/// accuracy), and the average is the mean of the task scores over the eight
/// tasks other than WNLI. `task_scores` holds each scored task's metric values.
pub fn glue_average(task_scores: &[(Task, Vec<f64>)]) -> Average {
    let mut sum = 0.0;
    let (mut covered, mut missing) = (Vec::new(), Vec::new());
    for task in AVERAGED {
        match task_scores
            .iter()
            .find(|(t, v)| *t == task && !v.is_empty())
        {
            Some((_, values)) => {
                sum += values.iter().sum::<f64>() / values.len() as f64;
                covered.push(task);
            }
            None => missing.push(task),
        }
    }
    Average {
        value: (!covered.is_empty()).then(|| sum / covered.len() as f64),
        covered,
        missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn accuracy_and_f1_by_hand() {
        // tp = 2 (rows 0, 1), tn = 1 (row 4), fp = 1 (row 2), fn = 1 (row 3).
        let pred = [1, 1, 1, 0, 0];
        let gold = [1, 1, 0, 1, 0];
        assert!(close(accuracy(&pred, &gold), 3.0 / 5.0));
        // F1 = 2·2 / (2·2 + 1 + 1)
        assert!(close(f1(&pred, &gold), 4.0 / 6.0));
    }

    #[test]
    fn matthews_by_hand() {
        let pred = [1, 1, 1, 0, 0];
        let gold = [1, 1, 0, 1, 0];
        // (2·1 − 1·1) / √(3·3·2·2) = 1/6
        assert!(close(matthews(&pred, &gold), 1.0 / 6.0));
        assert!(close(matthews(&gold, &gold), 1.0));
        let flipped: Vec<u32> = gold.iter().map(|g| 1 - g).collect();
        assert!(close(matthews(&flipped, &gold), -1.0));
    }

    #[test]
    fn degenerate_cases_are_zero_not_nan() {
        let gold = [1, 0, 1, 1];
        assert_eq!(matthews(&[1, 1, 1, 1], &gold), 0.0);
        assert_eq!(matthews(&[0, 0, 0, 0], &gold), 0.0);
        assert_eq!(f1(&[0, 0], &[0, 0]), 0.0);
        assert_eq!(pearson(&[2.0, 2.0, 2.0], &[1.0, 2.0, 3.0]), 0.0);
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[5.0, 5.0, 5.0]), 0.0);
        assert_eq!(accuracy(&[], &[]), 0.0);
    }

    #[test]
    fn pearson_by_hand() {
        // x = 1,2,3; y = 2,4,7: means 2 and 13/3; deviations −1,0,1 and
        // −7/3,−1/3,8/3; Σdxdy = 5, Σdx² = 2, Σdy² = 114/9.
        let r = pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 7.0]);
        assert!(close(r, 5.0 / (2.0f64 * 114.0 / 9.0).sqrt()), "{r}");
        assert!(close(pearson(&[1.0, 2.0], &[-3.0, -5.0]), -1.0));
    }

    #[test]
    fn ranks_average_ties() {
        assert_eq!(ranks(&[10.0, 20.0, 20.0, 5.0]), [2.0, 3.5, 3.5, 1.0]);
        assert_eq!(ranks(&[1.0, 1.0, 1.0]), [2.0, 2.0, 2.0]);
    }

    #[test]
    fn spearman_by_hand_with_ties() {
        // Monotone but not linear: Spearman is exactly 1.
        assert!(close(
            spearman(&[1.0, 2.0, 3.0, 4.0], &[1.0, 8.0, 27.0, 64.0]),
            1.0
        ));
        // x ranks 1,2.5,2.5,4; y ranks 1,2,3,4: Σdxdy = 4.5, Σdx² = 4.5, Σdy² = 5.
        let r = spearman(&[1.0, 2.0, 2.0, 3.0], &[1.0, 2.0, 3.0, 4.0]);
        assert!(close(r, 4.5 / (4.5f64 * 5.0).sqrt()), "{r}");
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[7.0]), 7.0);
    }

    #[test]
    fn glue_average_covers_what_was_scored_and_skips_wnli() {
        let scores = vec![
            (Task::Mrpc, vec![0.9, 0.8]),
            (Task::Mnli, vec![0.6, 0.7]),
            (Task::Wnli, vec![0.1]),
        ];
        let avg = glue_average(&scores);
        // (0.85 + 0.65) / 2
        assert!(close(avg.value.unwrap(), 0.75));
        assert_eq!(avg.covered, [Task::Mrpc, Task::Mnli]);
        assert_eq!(avg.missing.len(), 6);
        assert!(!avg.missing.contains(&Task::Wnli));
        assert_eq!(glue_average(&[(Task::Wnli, vec![0.5])]).value, None);
    }
}
