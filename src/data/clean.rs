//! Document filters and their records: each filter keeps or drops one
//! document at a time, and records its own stage in the manifest with its
//! settings and what it dropped. The minimum-length filter lives here; the
//! others (deduplication, compression ratio) need state or tokens and live
//! in their own files, but report through the same `FilterCount`.

use serde_json::{Map, Value};

use super::manifest::Stage;

pub trait DocumentFilter: Sync {
    /// The stage name in the manifest.
    fn name(&self) -> &'static str;
    /// The filter's settings, recorded next to its counts.
    fn params(&self) -> Map<String, Value>;
    fn keep(&self, document: &str) -> bool;
}

/// Drops documents shorter than `min_chars` characters.
pub struct MinLength {
    pub min_chars: usize,
}

impl DocumentFilter for MinLength {
    fn name(&self) -> &'static str {
        "min-length"
    }

    fn params(&self) -> Map<String, Value> {
        Map::from_iter([("min_chars".to_string(), self.min_chars.into())])
    }

    fn keep(&self, document: &str) -> bool {
        document.chars().take(self.min_chars).count() == self.min_chars
    }
}

/// What a filter saw and dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilterCount {
    pub seen: u64,
    pub dropped: u64,
}

impl FilterCount {
    /// Counts one document; returns `kept` for chaining.
    pub fn count(&mut self, kept: bool) -> bool {
        self.seen += 1;
        self.dropped += u64::from(!kept);
        kept
    }

    /// The stage record: documents in and out, `dropped`, then the settings.
    pub fn stage(&self, name: &str, params: Map<String, Value>) -> Stage {
        let mut stage = Stage::new(
            name,
            self.seen as usize,
            (self.seen - self.dropped) as usize,
        )
        .with("dropped", self.dropped);
        stage.stats.extend(params);
        stage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_length_counts_characters_not_bytes() {
        let filter = MinLength { min_chars: 4 };
        assert!(filter.keep("abcd"));
        assert!(filter.keep("äöüß"));
        assert!(!filter.keep("abc"));
        assert!(!filter.keep(""));
    }

    #[test]
    fn counts_become_a_stage_record() {
        let filter = MinLength { min_chars: 5 };
        let mut count = FilterCount::default();
        let kept: Vec<&str> = ["long enough", "no", "also long enough"]
            .into_iter()
            .filter(|d| count.count(filter.keep(d)))
            .collect();
        assert_eq!(kept, ["long enough", "also long enough"]);
        let stage = count.stage(filter.name(), filter.params());
        assert_eq!(
            (stage.name.as_str(), stage.docs_in, stage.docs_out),
            ("min-length", 3, 2)
        );
        assert_eq!(stage.stats["dropped"], 1);
        assert_eq!(stage.stats["min_chars"], 5);
    }
}
