//! Stage "normalize": one canonical spelling of each document's text before
//! anything compares or counts it, so that deduplication sees through
//! composed/decomposed accents, stray control characters and ragged
//! spacing.
//!
//! In order: Unicode normalization (NFC, or NFKC which also folds
//! compatibility forms such as ligatures, full-width letters and no-break
//! spaces), then control and invisible format characters removed (tab and
//! line feed become whitespace), then whitespace collapsed: runs of spaces
//! within a line become one space, lines are trimmed, and runs of blank lines
//! become one blank line. Lowercasing and accent stripping are the BERT
//! tokenizer's job, not this stage's: a BPE tokenizer wants the cased text.

pub use crate::config::Normalization;
use unicode_normalization::{is_nfc_quick, is_nfkc_quick, IsNormalized, UnicodeNormalization};

/// What normalizing one document did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NormalizeStats {
    /// Documents whose text changed.
    pub changed: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl NormalizeStats {
    pub fn add(&mut self, other: NormalizeStats) {
        self.changed += other.changed;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
    }
}

/// The cleaned text of `text`, and what changed.
pub fn normalize(mut text: String, form: Normalization) -> (String, NormalizeStats) {
    let bytes_in = text.len() as u64;
    let mut changed = false;
    if let Some(new) = unicode_normalized(&text, form) {
        changed |= new != text;
        text = new;
    }
    if let Some(new) = clean_characters(&text) {
        changed |= new != text;
        text = new;
    }
    let stats = NormalizeStats {
        changed: u64::from(changed),
        bytes_in,
        bytes_out: text.len() as u64,
    };
    (text, stats)
}

/// The text in the normal form; `None` when it already is (checked quickly,
/// which settles nearly all English text without building a copy).
///
/// Only the words that need it are normalized: normalization never reaches
/// across a space or a line feed (starters that neither decompose nor
/// compose with anything), so text cut after them normalizes piece by
/// piece to the same result, and the quick check skips the clean pieces.
fn unicode_normalized(text: &str, form: Normalization) -> Option<String> {
    let quick = |t: &str| match form {
        Normalization::Nfc => is_nfc_quick(t.chars()),
        Normalization::Nfkc => is_nfkc_quick(t.chars()),
        Normalization::None => IsNormalized::Yes,
    };
    if text.is_ascii() || quick(text) == IsNormalized::Yes {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    for word in text.split_inclusive([' ', '\n']) {
        if word.is_ascii() || quick(word) == IsNormalized::Yes {
            out.push_str(word);
        } else if form == Normalization::Nfc {
            out.extend(word.nfc());
        } else {
            out.extend(word.nfkc());
        }
    }
    Some(out)
}

/// Format characters that are invisible and carry nothing for a language
/// model: zero-width space, word joiner, byte-order mark, soft hyphen,
/// directional marks. (Zero-width joiners stay: emoji sequences use them.)
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200B}' | '\u{2060}' | '\u{FEFF}' | '\u{00AD}' | '\u{200E}' | '\u{200F}'
    )
}

/// Removes control and invisible characters and collapses whitespace;
/// `None` when the text is already clean (the common case, kept cheap).
fn clean_characters(text: &str) -> Option<String> {
    if is_clean(text) {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    let mut pending_newlines = 0usize;
    for c in text.chars() {
        if c == '\n' || c == '\u{2028}' || c == '\u{2029}' {
            pending_space = false;
            pending_newlines += 1;
        } else if c.is_whitespace() {
            pending_space = true;
        } else if c.is_control() || is_invisible(c) {
            continue;
        } else {
            if !out.is_empty() {
                if pending_newlines > 0 {
                    out.push_str(if pending_newlines > 1 { "\n\n" } else { "\n" });
                } else if pending_space {
                    out.push(' ');
                }
            }
            pending_space = false;
            pending_newlines = 0;
            out.push(c);
        }
    }
    Some(out)
}

/// Whether `clean_characters` would leave the text as it is: no control or
/// invisible characters, no whitespace but single spaces between words and
/// single or double line feeds between lines, nothing at either end.
fn is_clean(text: &str) -> bool {
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return true;
    }
    let edge = |b: u8| b == b' ' || b == b'\n';
    if edge(bytes[0]) || edge(bytes[bytes.len() - 1]) {
        return false;
    }
    if !text.is_ascii() {
        return is_clean_unicode(text);
    }
    let mut previous = b'x';
    let mut newlines = 0;
    for &b in bytes {
        match b {
            b' ' if previous == b' ' || previous == b'\n' => return false,
            b'\n' if previous == b' ' => return false,
            b'\n' => {
                newlines += 1;
                if newlines > 2 {
                    return false;
                }
            }
            b' ' => {}
            b if b < 0x20 || b == 0x7f => return false,
            _ => newlines = 0,
        }
        previous = b;
    }
    true
}

fn is_clean_unicode(text: &str) -> bool {
    let mut previous = 'x';
    let mut newlines = 0;
    for c in text.chars() {
        match c {
            ' ' if previous == ' ' || previous == '\n' => return false,
            '\n' if previous == ' ' => return false,
            '\n' => {
                newlines += 1;
                if newlines > 2 {
                    return false;
                }
            }
            ' ' => {}
            c if c.is_whitespace() || c.is_control() || is_invisible(c) => return false,
            _ => newlines = 0,
        }
        previous = c;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(text: &str, form: Normalization) -> String {
        normalize(text.to_string(), form).0
    }

    #[test]
    fn nfc_composes_and_nfkc_also_folds_compatibility_forms() {
        let decomposed = "cafe\u{301} \u{FB01}ne \u{FF21}";
        assert_eq!(
            clean(decomposed, Normalization::Nfc),
            "café \u{FB01}ne \u{FF21}"
        );
        assert_eq!(clean(decomposed, Normalization::Nfkc), "café fine A");
        assert_eq!(
            clean(decomposed, Normalization::None),
            decomposed,
            "no Unicode normalization"
        );
    }

    #[test]
    fn control_and_invisible_characters_go_and_whitespace_collapses() {
        let messy = "  a\u{0}b\u{200B}c \t d\u{7}  \r\n\n\n\n e\u{a0}\u{a0}f \n g\u{FEFF}  ";
        assert_eq!(clean(messy, Normalization::None), "abc d\n\ne f\ng");
        assert_eq!(
            clean("one\ntwo\n\nthree", Normalization::Nfkc),
            "one\ntwo\n\nthree"
        );
        assert_eq!(clean("\u{0}\u{200B} \n", Normalization::Nfkc), "");
    }

    #[test]
    fn word_by_word_normalization_equals_whole_text_normalization() {
        let text = "a\u{301} \u{301}b \u{FB01}x\n\u{327}\u{301}c e\u{301}\u{327} \u{2126} \u{1100}\u{1161} plain \u{A8} end";
        for form in [Normalization::Nfc, Normalization::Nfkc] {
            let whole: String = match form {
                Normalization::Nfc => text.nfc().collect(),
                _ => text.nfkc().collect(),
            };
            assert_eq!(unicode_normalized(text, form).unwrap(), whole, "{form:?}");
        }
    }

    #[test]
    fn stats_count_changed_documents_and_bytes() {
        let (text, stats) = normalize("already clean".into(), Normalization::Nfkc);
        assert_eq!(text, "already clean");
        assert_eq!(
            stats,
            NormalizeStats {
                changed: 0,
                bytes_in: 13,
                bytes_out: 13
            }
        );
        let (_, stats) = normalize("two  spaces".into(), Normalization::Nfkc);
        assert_eq!(
            stats,
            NormalizeStats {
                changed: 1,
                bytes_in: 11,
                bytes_out: 10
            }
        );
        let (_, stats) = normalize("e\u{301}".into(), Normalization::Nfc);
        assert_eq!(stats.changed, 1);
    }

    #[test]
    fn the_fast_check_agrees_with_the_slow_path() {
        let samples = [
            "plain words here",
            "two  spaces",
            "tab\there",
            " lead",
            "trail ",
            "a\n\nb",
            "a\n\n\nb",
            "a \nb",
            "a\n b",
            "uni\u{e9}code ok",
            "nbsp\u{a0}here",
            "zw\u{200B}sp",
            "bell\u{7}",
            "",
        ];
        for s in samples {
            let slow = {
                let mut out = String::new();
                let rebuilt = clean_characters_slow(s, &mut out);
                rebuilt == s
            };
            assert_eq!(is_clean(s), slow, "{s:?}");
        }
    }

    /// The cleaning loop without the fast check.
    fn clean_characters_slow<'a>(s: &str, out: &'a mut String) -> &'a str {
        *out = if s.is_empty() {
            String::new()
        } else {
            let forced = format!("\u{0}{s}");
            clean_characters(&forced).unwrap()
        };
        out.as_str()
    }
}
