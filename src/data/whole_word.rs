//! Whole-word masking: the positions of a sequence chosen for masked-LM
//! prediction are whole words (a word-starting token and the continuation
//! pieces after it), so the model cannot fill in "##ing" from "runn".
//!
//! The number of positions stays exactly the fixed count per sequence (see
//! DESIGN.md, "A fixed number of masks per sequence"): words are taken in
//! random order, skipping any that would overshoot the count; if the count
//! is still not reached (only words longer than the remaining room are
//! left), the last slots take the leading pieces of the next word. A
//! continuation piece with no word start before it in the sequence (the
//! sequence was cut inside a word) counts as a word of its own.

use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// Appends to `picked` (sorted) exactly `min(k, candidates)` positions of
/// `row`, whole words first. `candidate(t)` says whether a token may be
/// masked at all (special tokens may not); `continues[id]` whether a token
/// continues the word before it.
pub fn pick_whole_words(
    row: &[u32],
    k: usize,
    candidate: impl Fn(u32) -> bool,
    continues: &[bool],
    rng: &mut ChaCha8Rng,
    picked: &mut Vec<usize>,
) {
    let mut words: Vec<(usize, usize)> = Vec::new();
    let mut open = false;
    for (t, &token) in row.iter().enumerate() {
        if !candidate(token) {
            open = false;
            continue;
        }
        let continuation = continues.get(token as usize).copied().unwrap_or(false);
        match words.last_mut() {
            Some((_, len)) if open && continuation => *len += 1,
            _ => words.push((t, 1)),
        }
        open = true;
    }
    words.shuffle(rng);
    let start = picked.len();
    let mut room = k;
    let mut skipped = Vec::new();
    for &(first, len) in &words {
        if room == 0 {
            break;
        }
        if len <= room {
            picked.extend(first..first + len);
            room -= len;
        } else {
            skipped.push((first, len));
        }
    }
    for (first, len) in skipped {
        if room == 0 {
            break;
        }
        let take = len.min(room);
        picked.extend(first..first + take);
        room -= take;
    }
    picked[start..].sort_unstable();
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// Ids 10.. start words, 50.. continue them; 2 and 3 are special.
    fn continues() -> Vec<bool> {
        (0..100).map(|id| id >= 50).collect()
    }

    fn candidate(t: u32) -> bool {
        t >= 10
    }

    #[test]
    fn words_are_taken_whole_and_the_count_is_exact() {
        // [CLS] w ## ## w w ## [SEP] ## w ## ## ##: words (start, len) are
        // (1, 3), (4, 1), (5, 2), (8, 1) (a piece after [SEP] stands alone)
        // and (9, 4).
        let row = [2, 10, 50, 51, 11, 12, 52, 3, 53, 13, 54, 55, 56];
        let words = [(1, 3), (4, 1), (5, 2), (8, 1), (9, 4)];
        let table = continues();
        for seed in 0..50 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut picked = Vec::new();
            pick_whole_words(&row, 4, candidate, &table, &mut rng, &mut picked);
            assert_eq!(picked.len(), 4, "{picked:?}");
            assert!(picked.windows(2).all(|w| w[0] < w[1]), "{picked:?}");
            let mut cut = 0;
            for (first, len) in words {
                let taken: Vec<usize> = (first..first + len)
                    .filter(|t| picked.contains(t))
                    .collect();
                if !taken.is_empty() && taken.len() < len {
                    cut += 1;
                    assert_eq!(taken, (first..first + taken.len()).collect::<Vec<_>>());
                }
            }
            assert!(cut <= 1, "seed {seed}: {picked:?}");
        }
    }

    #[test]
    fn a_long_word_is_cut_only_when_nothing_else_fits() {
        let row = [2, 10, 50, 51, 52, 53, 3];
        let mut picked = Vec::new();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        pick_whole_words(&row, 2, candidate, &continues(), &mut rng, &mut picked);
        assert_eq!(picked, [1, 2], "the word's leading pieces");
        let mut picked = Vec::new();
        pick_whole_words(&row, 9, candidate, &continues(), &mut rng, &mut picked);
        assert_eq!(picked, [1, 2, 3, 4, 5], "never more than the candidates");
    }
}
