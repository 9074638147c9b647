//! MinHash signatures of documents' word shingles, and the banding that
//! turns them into locality-sensitive hash keys.
//!
//! A shingle is `SHINGLE_WORDS` consecutive whitespace-separated words.
//! Signatures use one-permutation hashing: each shingle is hashed once, the
//! hash's top bits pick one of `SIGNATURE_LEN` bins and the bin keeps the
//! smallest value, which costs O(1) per shingle instead of one hash per
//! permutation. Empty bins (short documents) are filled by optimal
//! densification (Shrivastava, ICML 2017): bin i copies the first non-empty
//! bin on a probe sequence seeded by i, the same for every document, so the
//! fraction of equal bins still estimates the Jaccard similarity.
//!
//! All hashes here are fixed functions of the text (no per-run or per-CPU
//! keys), so the same corpus deduplicates the same way on every machine.

/// Words per shingle.
pub const SHINGLE_WORDS: usize = 5;
/// Bins per signature.
pub const SIGNATURE_LEN: usize = 128;
const BIN_BITS: u32 = SIGNATURE_LEN.trailing_zeros();

pub type Signature = [u32; SIGNATURE_LEN];

/// The MinHash signature of `text`'s word shingles. A text of fewer words
/// than a shingle is one shingle; an empty text has the all-zero signature.
pub fn signature(text: &str) -> Signature {
    let words: Vec<u64> = text.split_whitespace().map(hash_bytes).collect();
    let mut bins = [u32::MAX; SIGNATURE_LEN];
    let mut filled = 0u128;
    if words.is_empty() {
        return [0; SIGNATURE_LEN];
    }
    let width = SHINGLE_WORDS.min(words.len());
    for shingle in words.windows(width) {
        let h = shingle_hash(shingle);
        let bin = (h >> (64 - BIN_BITS)) as usize;
        let value = h as u32;
        filled |= 1 << bin;
        bins[bin] = bins[bin].min(value);
    }
    densify(&bins, filled)
}

/// Fills every empty bin from the first non-empty bin on its probe sequence.
fn densify(bins: &Signature, filled: u128) -> Signature {
    let mut out = *bins;
    for (i, slot) in out.iter_mut().enumerate() {
        if filled & (1 << i) != 0 {
            continue;
        }
        for attempt in 1u64.. {
            let probe = mix64(((i as u64) << 32) ^ attempt ^ 0xD1B5_4A32_D192_ED03);
            let j = (probe >> (64 - BIN_BITS)) as usize;
            if filled & (1 << j) != 0 {
                *slot = bins[j];
                break;
            }
        }
    }
    out
}

/// The fraction of bins two signatures agree on: an estimate of the Jaccard
/// similarity of their shingle sets.
pub fn similarity(a: &Signature, b: &Signature) -> f64 {
    let equal = a.iter().zip(b).filter(|(x, y)| x == y).count();
    equal as f64 / SIGNATURE_LEN as f64
}

/// LSH banding: `bands` keys per signature, each over `rows` bins. Two
/// documents of Jaccard similarity s share at least one key with
/// probability 1 - (1 - s^rows)^bands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Banding {
    pub bands: usize,
    pub rows: usize,
}

impl Banding {
    /// The banding for a similarity threshold: the one that minimises the
    /// weighted areas of false positives below the threshold and of false
    /// negatives above it (as datasketch does). Candidates are checked on
    /// the whole signature afterwards, so a false positive costs only time
    /// and misses are weighted nine times as heavily.
    pub fn for_threshold(threshold: f64) -> Banding {
        let mut best = (f64::INFINITY, Banding { bands: 1, rows: 1 });
        for bands in 1..=SIGNATURE_LEN {
            for rows in 1..=SIGNATURE_LEN / bands {
                let banding = Banding { bands, rows };
                let fp = integrate(0.0, threshold, |s| banding.candidate_probability(s));
                let fn_ = integrate(threshold, 1.0, |s| 1.0 - banding.candidate_probability(s));
                let cost = 0.1 * fp + 0.9 * fn_;
                if cost < best.0 {
                    best = (cost, banding);
                }
            }
        }
        best.1
    }

    pub fn candidate_probability(&self, similarity: f64) -> f64 {
        1.0 - (1.0 - similarity.powi(self.rows as i32)).powi(self.bands as i32)
    }

    /// The key of each band of the signature.
    pub fn keys<'a>(&self, signature: &'a Signature) -> impl Iterator<Item = u64> + 'a {
        signature
            .chunks_exact(self.rows)
            .take(self.bands)
            .enumerate()
            .map(|(band, rows)| {
                let mut h = band as u64 ^ 0x9E37_79B9_7F4A_7C15;
                for &r in rows {
                    h = mix64(h ^ u64::from(r));
                }
                h
            })
    }
}

/// Midpoint rule; the integrands are smooth, 100 steps are plenty.
fn integrate(a: f64, b: f64, f: impl Fn(f64) -> f64) -> f64 {
    const STEPS: usize = 100;
    let h = (b - a) / STEPS as f64;
    (0..STEPS).map(|i| f(a + (i as f64 + 0.5) * h)).sum::<f64>() * h
}

/// FNV-1a over the bytes, then a finalizer: fast for short words and fixed
/// across machines.
fn hash_bytes(bytes: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in bytes.as_bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h)
}

/// An order-dependent combination of the words' hashes.
fn shingle_hash(words: &[u64]) -> u64 {
    let mut h = 0x2545_F491_4F6C_DD1Du64;
    for &w in words {
        h = (h.rotate_left(23) ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    mix64(h)
}

/// The splitmix64 finalizer: every input bit affects every output bit.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` distinct words.
    fn words(seed: u64, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("w{}", mix64(seed * 1_000_003 + i as u64) % 100_000))
            .collect()
    }

    fn exact_jaccard(a: &[String], b: &[String]) -> f64 {
        use std::collections::HashSet;
        let shingles = |w: &[String]| -> HashSet<String> {
            w.windows(SHINGLE_WORDS.min(w.len()))
                .map(|s| s.join(" "))
                .collect()
        };
        let (a, b) = (shingles(a), shingles(b));
        a.intersection(&b).count() as f64 / a.union(&b).count() as f64
    }

    #[test]
    fn similarity_estimates_jaccard_of_shingles() {
        let base = words(1, 2000);
        for changed in [0, 50, 150, 400, 1000] {
            let mut other = base.clone();
            for i in 0..changed {
                other[(i * 7919) % base.len()] = format!("x{i}");
            }
            let estimate = similarity(&signature(&base.join(" ")), &signature(&other.join(" ")));
            let exact = exact_jaccard(&base, &other);
            assert!(
                (estimate - exact).abs() < 0.12,
                "{changed} words changed: exact {exact:.3}, estimate {estimate:.3}"
            );
        }
        let unrelated = similarity(
            &signature(&words(2, 500).join(" ")),
            &signature(&words(3, 500).join(" ")),
        );
        assert!(unrelated < 0.05, "{unrelated}");
    }

    #[test]
    fn short_texts_are_densified_consistently() {
        let a = signature("only three words");
        assert_eq!(
            a,
            signature("only   three\nwords"),
            "whitespace does not matter"
        );
        assert!(a.iter().all(|&v| v != u32::MAX), "every bin filled");
        assert_eq!(similarity(&a, &signature("only three words")), 1.0);
        assert!(similarity(&a, &signature("only three birds")) < 0.2);
        assert_eq!(signature(""), [0; SIGNATURE_LEN]);
    }

    #[test]
    fn banding_for_0_8_separates_similar_from_dissimilar() {
        let b = Banding::for_threshold(0.8);
        assert!(b.bands * b.rows <= SIGNATURE_LEN, "{b:?}");
        assert!(b.candidate_probability(0.9) > 0.99, "{b:?}");
        assert!(b.candidate_probability(0.8) > 0.8, "{b:?}");
        assert!(b.candidate_probability(0.4) < 0.05, "{b:?}");
        let sig = signature(&words(4, 300).join(" "));
        let keys: Vec<u64> = b.keys(&sig).collect();
        assert_eq!(keys.len(), b.bands);
        let again: Vec<u64> = b.keys(&sig).collect();
        assert_eq!(keys, again);
    }
}
