//! The data settings' enumerations: how plain text is split into documents,
//! the Unicode form, the tokenizer kind. They are values of `[data]` in a
//! config, so they live in config, the lower layer; `data` re-exports them
//! where it uses them.

use serde::{Deserialize, Serialize};

/// How plain-text files are cut into documents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TextSplit {
    /// Runs of blank lines separate documents.
    BlankLine,
    /// Every non-blank line is a document.
    Line,
    /// The whole file is one document.
    File,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Normalization {
    /// Canonical composition only.
    Nfc,
    /// Compatibility composition (Cramming's and BERT's choice of spirit).
    Nfkc,
    /// Leave the characters alone; control characters and whitespace are
    /// still cleaned.
    None,
}

impl Normalization {
    pub fn name(self) -> &'static str {
        match self {
            Normalization::Nfc => "nfc",
            Normalization::Nfkc => "nfkc",
            Normalization::None => "none",
        }
    }
}

/// Which tokenizer to train.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenizerKind {
    /// BERT's: lowercased, accents stripped, `##` continuations.
    Wordpiece,
    /// GPT-2's byte-level BPE: cased, every byte encodable.
    Bpe,
}

impl TokenizerKind {
    pub fn name(self) -> &'static str {
        match self {
            TokenizerKind::Wordpiece => "wordpiece",
            TokenizerKind::Bpe => "bpe",
        }
    }
}
