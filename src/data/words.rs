//! How text becomes the words a tokenizer's model sees (normalizer, then
//! pre-tokenizer), and where BERT-style text may be cut beforehand so that
//! each distinct piece is normalized only once.

use tokenizers::{
    NormalizedString, Normalizer, NormalizerWrapper, PreTokenizedString, PreTokenizer,
    PreTokenizerWrapper, Tokenizer,
};

/// The words of `text` as the tokenizer's model sees them.
pub(super) fn pre_tokenize(
    normalizer: Option<&impl Normalizer>,
    pre_tokenizer: Option<&impl PreTokenizer>,
    text: &str,
) -> tokenizers::Result<PreTokenizedString> {
    let mut normalized = NormalizedString::from(text);
    if let Some(n) = normalizer {
        n.normalize(&mut normalized)?;
    }
    let mut words = PreTokenizedString::from(normalized);
    if let Some(p) = pre_tokenizer {
        p.pre_tokenize(&mut words)?;
    }
    Ok(words)
}

/// Characters at which text can be cut before a BERT normalizer and
/// pre-tokenizer without changing the words: the normalizer turns each into
/// a space, the pre-tokenizer splits there, and everything else they do is
/// character by character. (Not all ASCII whitespace: the normalizer deletes
/// form feed and vertical tab as control characters.)
pub(super) const BERT_BOUNDARIES: [char; 4] = [' ', '\t', '\n', '\r'];

pub(super) fn bert_chunks(text: &str) -> impl Iterator<Item = &str> {
    text.split(BERT_BOUNDARIES).filter(|c| !c.is_empty())
}

/// Whether the tokenizer normalizes and pre-tokenizes as BERT does, so that
/// `bert_chunks` may cut text before it.
pub(super) fn is_bert_style(tokenizer: &Tokenizer) -> bool {
    matches!(
        tokenizer.get_normalizer(),
        None | Some(NormalizerWrapper::BertNormalizer(_))
    ) && matches!(
        tokenizer.get_pre_tokenizer(),
        Some(PreTokenizerWrapper::BertPreTokenizer(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_the_runs_between_spaces_tabs_and_line_breaks() {
        let chunks: Vec<&str> = bert_chunks("  one\ttwo\r\nthree\u{c}four  ").collect();
        assert_eq!(chunks, ["one", "two", "three\u{c}four"]);
    }
}
