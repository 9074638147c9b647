//! Stage "mix": how much of each input goes into the dataset, and in what
//! order the inputs' documents meet.
//!
//! Weights are shares of the cleaned text, in bytes. The dataset holds as
//! much text as the weights allow without repeating any: the input with the
//! least text per unit of weight is used whole, and every other input is
//! subsampled, each document kept or not by a hash of the seed and its key.
//! Without weights every input is used whole.
//!
//! The inputs are interleaved evenly: the next document always comes from
//! the input that has been read through least (as a fraction of its text),
//! so every part of the dataset mixes the inputs in about the same ratio,
//! even when they are packed in document order.

use super::minhash::mix64;

/// The probability with which each input's documents are kept, given each
/// input's weight and bytes of cleaned text. Inputs without text keep
/// probability 1 (there is nothing to keep) and do not limit the others.
pub fn keep_probabilities(weights: &[Option<f64>], bytes: &[u64]) -> Vec<f64> {
    if weights.iter().all(Option::is_none) {
        return vec![1.0; bytes.len()];
    }
    let total_weight: f64 = weights
        .iter()
        .zip(bytes)
        .filter(|(_, &b)| b > 0)
        .map(|(w, _)| w.unwrap_or(0.0))
        .sum();
    // The largest total the weights allow: input i can supply bytes_i, which
    // is share_i of a total of bytes_i / share_i.
    let total = weights
        .iter()
        .zip(bytes)
        .filter(|(w, &b)| b > 0 && w.is_some_and(|w| w > 0.0))
        .map(|(w, &b)| b as f64 * total_weight / w.unwrap_or(1.0))
        .fold(f64::INFINITY, f64::min);
    weights
        .iter()
        .zip(bytes)
        .map(|(w, &b)| {
            if b == 0 {
                1.0
            } else {
                (total * w.unwrap_or(0.0) / total_weight / b as f64).min(1.0)
            }
        })
        .collect()
}

/// Whether a document with this key is kept under probability `p`.
pub fn keeps(seed: u64, key: u64, p: f64) -> bool {
    if p >= 1.0 {
        return true;
    }
    let h = mix64(seed ^ mix64(key ^ 0xA24B_AED4_963E_E407));
    ((h >> 11) as f64 / (1u64 << 53) as f64) < p
}

/// Picks which input the next document comes from.
pub struct Interleave {
    totals: Vec<u64>,
    consumed: Vec<u64>,
    finished: Vec<bool>,
}

impl Interleave {
    /// `totals`: each input's bytes of text.
    pub fn new(totals: Vec<u64>) -> Interleave {
        let finished = totals.iter().map(|&t| t == 0).collect();
        Interleave {
            consumed: vec![0; totals.len()],
            totals,
            finished,
        }
    }

    /// The input read through least, by fraction of its bytes; the first on
    /// ties; `None` when all are finished.
    pub fn next_input(&self) -> Option<usize> {
        (0..self.totals.len())
            .filter(|&i| !self.finished[i])
            .min_by(|&a, &b| {
                let fa = self.consumed[a] as f64 / self.totals[a] as f64;
                let fb = self.consumed[b] as f64 / self.totals[b] as f64;
                fa.total_cmp(&fb)
            })
    }

    pub fn consumed(&mut self, input: usize, bytes: u64) {
        self.consumed[input] += bytes;
    }

    pub fn finish(&mut self, input: usize) {
        self.finished[input] = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scarcest_input_is_used_whole_and_the_others_subsampled() {
        let p = keep_probabilities(&[Some(0.7), Some(0.3)], &[600, 400]);
        // 600 bytes can be 70% of 857; the other then gives 257 of its 400.
        assert!((p[0] - 1.0).abs() < 1e-12, "{p:?}");
        assert!((p[1] - 600.0 / 0.7 * 0.3 / 400.0).abs() < 1e-12, "{p:?}");
        let p = keep_probabilities(&[Some(1.0), Some(1.0)], &[100, 300]);
        assert_eq!(p, [1.0, 100.0 / 300.0]);
        assert_eq!(keep_probabilities(&[None, None], &[5, 7]), [1.0, 1.0]);
        let p = keep_probabilities(&[Some(0.5), Some(0.5)], &[0, 300]);
        assert_eq!(p, [1.0, 1.0], "an empty input does not starve the rest");
    }

    #[test]
    fn keeping_follows_the_probability() {
        let kept = (0..20_000u64).filter(|&k| keeps(3, mix64(k), 0.25)).count();
        assert!((4700..5300).contains(&kept), "{kept}");
        assert!((0..100).all(|k| keeps(3, k, 1.0)));
    }

    #[test]
    fn interleaving_spreads_each_input_evenly() {
        let mut mix = Interleave::new(vec![300, 100, 0]);
        let mut order = Vec::new();
        let mut left = [30, 10];
        while let Some(i) = mix.next_input() {
            order.push(i);
            mix.consumed(i, 10);
            left[i] -= 1;
            if left[i] == 0 {
                mix.finish(i);
            }
        }
        assert_eq!(order.len(), 40);
        // Every window of 8 holds both inputs about 3:1.
        for window in order.windows(8) {
            let ones = window.iter().filter(|&&i| i == 1).count();
            assert!((1..=3).contains(&ones), "{order:?}");
        }
    }
}
