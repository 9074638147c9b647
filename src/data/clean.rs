//! Stage "min-length" and the shape of every document filter: a named rule
//! with parameters that keeps or drops one document at a time. Each filter
//! records its own stage in the manifest, with what it dropped.

use rayon::prelude::*;
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

/// The documents the filter keeps, in order, and the stage record.
pub fn apply_filter(documents: Vec<String>, filter: &dyn DocumentFilter) -> (Vec<String>, Stage) {
    let docs_in = documents.len();
    let keep: Vec<bool> = documents.par_iter().map(|d| filter.keep(d)).collect();
    let kept: Vec<String> = documents
        .into_iter()
        .zip(keep)
        .filter_map(|(doc, keep)| keep.then_some(doc))
        .collect();
    let mut stage =
        Stage::new(filter.name(), docs_in, kept.len()).with("dropped", docs_in - kept.len());
    stage.stats.extend(filter.params());
    (kept, stage)
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
    fn filtering_keeps_order_and_records_the_drop() {
        let docs = ["long enough", "no", "also long enough"]
            .map(String::from)
            .to_vec();
        let (kept, stage) = apply_filter(docs, &MinLength { min_chars: 5 });
        assert_eq!(kept, ["long enough", "also long enough"]);
        assert_eq!(
            (stage.name.as_str(), stage.docs_in, stage.docs_out),
            ("min-length", 3, 2)
        );
        assert_eq!(stage.stats["dropped"], 1);
        assert_eq!(stage.stats["min_chars"], 5);
    }
}
