//! Stage "tokenize": documents to token ids, in parallel, with a cache so
//! that the tokenizer runs once per distinct piece of text.

use ahash::AHashMap as HashMap;
use compact_str::CompactString;
use rayon::prelude::*;
use tokenizers::{
    Model, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizerWrapper, Tokenizer,
};

use super::error::DataError;
use super::words::{bert_chunks, is_bert_style, pre_tokenize, BERT_BOUNDARIES};

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
/// Long documents (books) are cut into segments where the tokenizer's
/// words cannot cross, so that one book keeps every core busy.
pub struct DocumentEncoder<'a> {
    tokenizer: &'a Tokenizer,
    cut_at_boundaries: bool,
    segments: SegmentRule,
    known: HashMap<CompactString, PieceIds>,
}

/// Where a document may be cut into independently encoded segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SegmentRule {
    /// At any space, tab or line break (BERT-style tokenizers).
    AnyBoundary,
    /// After a line feed followed by a non-space character (GPT-2's
    /// byte-level pre-tokenizer without a prefix space: its regex never
    /// joins a line feed to the word after it).
    AfterLineFeed,
    /// Never: a pre-tokenizer of unknown rules sees the whole document.
    Never,
}

/// Documents are cut into segments of about this many bytes.
const SEGMENT_BYTES: usize = 64 << 10;

/// A segment's ids, and the new pieces it met with their ids.
type EncodedSegment = (Vec<u32>, HashMap<CompactString, PieceIds>);

/// The encoder stops remembering new pieces past this many (a key of up to
/// 24 bytes and up to 3 ids are stored inline, about 64 bytes an entry with
/// the table's slack, so some 130 MB at most); later ones are still encoded,
/// only not cached. Two million pieces cover all but the rarest words.
const MAX_KNOWN_PIECES: usize = 1 << 21;

/// A piece's ids, inline when there are at most `INLINE` of them, as for
/// most words, so that a cache hit reads one table slot and no heap.
#[derive(Clone, Debug)]
enum PieceIds {
    Inline(u8, [u32; INLINE]),
    Spilled(Box<[u32]>),
}

const INLINE: usize = 3;

impl PieceIds {
    fn new(ids: &[u32]) -> PieceIds {
        if ids.len() <= INLINE {
            let mut inline = [0; INLINE];
            inline[..ids.len()].copy_from_slice(ids);
            PieceIds::Inline(ids.len() as u8, inline)
        } else {
            PieceIds::Spilled(ids.into())
        }
    }

    fn as_slice(&self) -> &[u32] {
        match self {
            PieceIds::Inline(len, ids) => &ids[..*len as usize],
            PieceIds::Spilled(ids) => ids,
        }
    }
}

impl<'a> DocumentEncoder<'a> {
    pub fn new(tokenizer: &'a Tokenizer) -> Self {
        let bert = is_bert_style(tokenizer);
        DocumentEncoder {
            tokenizer,
            cut_at_boundaries: bert,
            segments: segment_rule(tokenizer, bert),
            known: HashMap::new(),
        }
    }

    /// The ids of each document, in order.
    pub fn encode(&mut self, documents: &[String]) -> Result<Vec<Vec<u32>>, DataError> {
        let segments: Vec<(usize, &str)> = documents
            .iter()
            .enumerate()
            .flat_map(|(i, doc)| segments(doc, self.segments).map(move |s| (i, s)))
            .collect();
        let encoded: Vec<EncodedSegment> = segments
            .par_iter()
            .map(|&(_, segment)| {
                self.encode_one(segment).map_err(|e| DataError::Encode {
                    what: format!("a document starting {:?}", head(segment)),
                    message: e.to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
        let mut out = vec![Vec::new(); documents.len()];
        for ((doc, _), (ids, new_pieces)) in segments.iter().zip(encoded) {
            for (piece, piece_ids) in new_pieces {
                if self.known.len() < MAX_KNOWN_PIECES {
                    self.known.entry(piece).or_insert(piece_ids);
                }
            }
            if out[*doc].is_empty() {
                out[*doc] = ids;
            } else {
                out[*doc].extend_from_slice(&ids);
            }
        }
        Ok(out)
    }

    fn encode_one(&self, text: &str) -> tokenizers::Result<EncodedSegment> {
        let mut ids = Vec::with_capacity(text.len() / 4);
        let mut new_pieces = HashMap::new();
        if self.cut_at_boundaries {
            for chunk in bert_chunks(text) {
                self.extend_with(chunk, &mut ids, &mut new_pieces, |c| self.encode_text(c))?;
            }
        } else {
            let words = self.pre_tokenize(text)?;
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
        new_pieces: &mut HashMap<CompactString, PieceIds>,
        compute: impl FnOnce(&str) -> tokenizers::Result<Vec<u32>>,
    ) -> tokenizers::Result<()> {
        if let Some(known) = self.known.get(piece).or_else(|| new_pieces.get(piece)) {
            ids.extend_from_slice(known.as_slice());
        } else {
            let piece_ids = compute(piece)?;
            ids.extend_from_slice(&piece_ids);
            new_pieces.insert(CompactString::from(piece), PieceIds::new(&piece_ids));
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

fn segment_rule(tokenizer: &Tokenizer, bert: bool) -> SegmentRule {
    if bert {
        return SegmentRule::AnyBoundary;
    }
    match (tokenizer.get_normalizer(), tokenizer.get_pre_tokenizer()) {
        (None, Some(PreTokenizerWrapper::ByteLevel(b))) if !b.add_prefix_space => {
            SegmentRule::AfterLineFeed
        }
        _ => SegmentRule::Never,
    }
}

/// The document cut into segments of at least `SEGMENT_BYTES` (the last may
/// be shorter) at places the rule allows.
fn segments(doc: &str, rule: SegmentRule) -> impl Iterator<Item = &str> {
    let mut rest = doc;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        // The cut characters are ASCII, so a byte search finds char
        // boundaries only.
        let tail = rest.as_bytes().get(SEGMENT_BYTES..).unwrap_or_default();
        let cut = match rule {
            SegmentRule::Never => None,
            SegmentRule::AnyBoundary => tail
                .iter()
                .position(|b| BERT_BOUNDARIES.contains(&char::from(*b)))
                .map(|i| SEGMENT_BYTES + i),
            SegmentRule::AfterLineFeed => tail
                .iter()
                .enumerate()
                .filter(|(_, &b)| b == b'\n')
                .map(|(i, _)| SEGMENT_BYTES + i + 1)
                .find(|&at| {
                    rest[at..]
                        .chars()
                        .next()
                        .is_some_and(|c| !c.is_whitespace())
                }),
        };
        let (segment, tail) = rest.split_at(cut.unwrap_or(rest.len()));
        rest = tail;
        Some(segment)
    })
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

    /// A document several segments long, with multi-byte characters,
    /// runs of spaces and line feeds everywhere.
    fn long_document() -> String {
        let pieces = [
            "The cat sat",
            " on the mat;",
            "  Dögs\n",
            "ran far\n\n",
            " \u{4e2d}x ",
            "away,\tsitting",
            "\n  cats\r\n",
            "é\u{301} ",
            "mats.",
        ];
        let mut doc = String::new();
        let mut i = 0;
        while doc.len() < 5 * SEGMENT_BYTES {
            doc.push_str(pieces[(i * 7 + i / 3) % pieces.len()]);
            i += 1;
        }
        doc
    }

    #[test]
    fn long_documents_are_cut_where_words_cannot_cross() {
        let doc = long_document();
        for rule in [SegmentRule::AnyBoundary, SegmentRule::AfterLineFeed] {
            let parts: Vec<&str> = segments(&doc, rule).collect();
            assert!(parts.len() >= 4, "{rule:?}: {} segments", parts.len());
            assert_eq!(parts.concat(), doc);
        }
        assert_eq!(segments(&doc, SegmentRule::Never).count(), 1);
        let bert = train_wordpiece(&corpus(), 45).unwrap();
        let bpe = crate::data::tokenizer::train_on(
            crate::data::tokenizer::TokenizerKind::Bpe,
            &corpus(),
            300,
        )
        .unwrap();
        for (tokenizer, rule) in [
            (&bert, SegmentRule::AnyBoundary),
            (&bpe, SegmentRule::AfterLineFeed),
        ] {
            let mut encoder = DocumentEncoder::new(tokenizer);
            assert_eq!(encoder.segments, rule);
            let ids = encoder.encode(std::slice::from_ref(&doc)).unwrap();
            let reference = tokenizer.encode(doc.as_str(), false).unwrap();
            assert_eq!(ids[0], reference.get_ids(), "{rule:?}");
        }
    }
}
