//! Stage "tokenize": documents to token ids, in parallel, with a cache so
//! that the tokenizer runs once per distinct piece of text.

use ahash::AHashMap as HashMap;
use rayon::prelude::*;
use tokenizers::{Model, OffsetReferential, OffsetType, PreTokenizedString, Tokenizer};

use super::error::DataError;
use super::words::{bert_chunks, is_bert_style, pre_tokenize};

/// Encodes documents to token ids without special tokens, in parallel,
/// remembering what it has encoded so that the tokenizer runs once per
/// distinct piece of text rather than once per occurrence.
///
/// The ids are those of `Tokenizer::encode(document, false)` (the same
/// normalizer, pre-tokenizer and model calls) with one difference: added
/// tokens are not matched in the text, so a literal "[SEP]" in a document is
/// text, not a separator.
///
/// For a BERT-style tokenizer the pieces are the document's runs between
/// spaces, tabs and line breaks (see `BERT_BOUNDARIES`), so a known piece
/// skips normalization too; for others they are the pre-tokenized words.
pub struct DocumentEncoder<'a> {
    tokenizer: &'a Tokenizer,
    cut_at_boundaries: bool,
    known: HashMap<String, Vec<u32>>,
}

/// A document's ids, and the new pieces it met with their ids.
type EncodedDocument = (Vec<u32>, HashMap<String, Vec<u32>>);

/// The encoder stops remembering new pieces past this many (about 100 bytes
/// each, so some 200 MB at most); later ones are still encoded, only not
/// cached. Two million pieces cover all but the rarest words of English.
const MAX_KNOWN_PIECES: usize = 1 << 21;

impl<'a> DocumentEncoder<'a> {
    pub fn new(tokenizer: &'a Tokenizer) -> Self {
        DocumentEncoder {
            tokenizer,
            cut_at_boundaries: is_bert_style(tokenizer),
            known: HashMap::new(),
        }
    }

    /// The ids of each document, in order.
    pub fn encode(&mut self, documents: &[String]) -> Result<Vec<Vec<u32>>, DataError> {
        let encoded: Vec<EncodedDocument> = documents
            .par_iter()
            .map(|doc| {
                self.encode_one(doc).map_err(|e| DataError::Encode {
                    what: format!("a document starting {:?}", head(doc)),
                    message: e.to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(encoded.len());
        for (ids, new_pieces) in encoded {
            for (piece, piece_ids) in new_pieces {
                if self.known.len() < MAX_KNOWN_PIECES {
                    self.known.entry(piece).or_insert(piece_ids);
                }
            }
            out.push(ids);
        }
        Ok(out)
    }

    fn encode_one(&self, doc: &str) -> tokenizers::Result<EncodedDocument> {
        let mut ids = Vec::with_capacity(doc.len() / 4);
        let mut new_pieces = HashMap::new();
        if self.cut_at_boundaries {
            for chunk in bert_chunks(doc) {
                self.extend_with(chunk, &mut ids, &mut new_pieces, |c| self.encode_text(c))?;
            }
        } else {
            let words = self.pre_tokenize(doc)?;
            for (word, _, _) in words.get_splits(OffsetReferential::Original, OffsetType::None) {
                self.extend_with(word, &mut ids, &mut new_pieces, |w| self.model_ids(w))?;
            }
        }
        Ok((ids, new_pieces))
    }

    /// Appends the ids of `piece`, known or computed (and then remembered).
    fn extend_with(
        &self,
        piece: &str,
        ids: &mut Vec<u32>,
        new_pieces: &mut HashMap<String, Vec<u32>>,
        compute: impl FnOnce(&str) -> tokenizers::Result<Vec<u32>>,
    ) -> tokenizers::Result<()> {
        if let Some(known) = self.known.get(piece).or_else(|| new_pieces.get(piece)) {
            ids.extend_from_slice(known);
        } else {
            let piece_ids = compute(piece)?;
            ids.extend_from_slice(&piece_ids);
            new_pieces.insert(piece.to_string(), piece_ids);
        }
        Ok(())
    }

    fn encode_text(&self, text: &str) -> tokenizers::Result<Vec<u32>> {
        let words = self.pre_tokenize(text)?;
        let mut ids = Vec::new();
        for (word, _, _) in words.get_splits(OffsetReferential::Original, OffsetType::None) {
            ids.extend(self.model_ids(word)?);
        }
        Ok(ids)
    }

    fn pre_tokenize(&self, text: &str) -> tokenizers::Result<PreTokenizedString> {
        pre_tokenize(
            self.tokenizer.get_normalizer(),
            self.tokenizer.get_pre_tokenizer(),
            text,
        )
    }

    fn model_ids(&self, word: &str) -> tokenizers::Result<Vec<u32>> {
        let tokens = self.tokenizer.get_model().tokenize(word)?;
        Ok(tokens.iter().map(|t| t.id).collect())
    }
}

fn head(doc: &str) -> String {
    doc.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::tokenizer::tests::{corpus, train_wordpiece};

    #[test]
    fn the_encoder_matches_the_tokenizer_and_its_cache_changes_nothing() {
        let tokenizer = train_wordpiece(&corpus(), 45).unwrap();
        // Accents, combining marks after a space, CJK, control characters,
        // form feed and vertical tab (deleted, not spaces), no-break space,
        // tabs and CRLF, Greek capital sigma.
        let docs = vec![
            "The cat sat; the CAT sat!".to_string(),
            "Dögs ran far AWAY, sitting on mats".to_string(),
            "cats cats cats \u{4e2d}\u{6587}zzz".to_string(),
            "ca\u{301}t \u{301}dog\tmat\r\nran\u{c}away\u{b}far \u{a0}sat\u{0}on".to_string(),
            "ΣΑΣ dogΣ (cat)--dog... \u{200b}tu".to_string(),
        ];
        let mut encoder = DocumentEncoder::new(&tokenizer);
        let first = encoder.encode(&docs).unwrap();
        let again = encoder.encode(&docs).unwrap();
        assert_eq!(first, again);
        for (doc, ids) in docs.iter().zip(&first) {
            let reference = tokenizer.encode(doc.as_str(), false).unwrap();
            assert_eq!(ids, reference.get_ids(), "{doc}");
        }
        assert!(first[1].len() > 8);
        assert!(is_bert_style(&tokenizer));
        let mut plain = tokenizer.clone();
        plain.with_pre_tokenizer(Some(tokenizers::pre_tokenizers::whitespace::Whitespace));
        assert!(!is_bert_style(&plain));
        let words = DocumentEncoder::new(&plain).encode(&docs).unwrap();
        for (doc, ids) in docs.iter().zip(&words) {
            assert_eq!(
                ids,
                plain.encode(doc.as_str(), false).unwrap().get_ids(),
                "{doc}"
            );
        }
    }
}
