//! Masked-word guesses: a word of a sentence (or of held-out text) replaced
//! by `[MASK]` and the model's most likely word starts for it, what
//! `cram demo` shows. Generic over the backend, like [`super::infer`], whose
//! sparse head it runs at the masked position.

use super::infer::logits_at;
use crate::backend::{Backend, IGNORE};
use crate::data::batches::read_sequences;
use crate::data::{SpecialTokens, Split, TokenStore};
use crate::model::Model;
use thiserror::Error;
use tokenizers::Tokenizer;

#[derive(Debug, Error)]
pub enum GuessError {
    #[error(
        "the probe {0:?} marks no word to mask; write it in brackets, as in \"the [word] here\""
    )]
    NoMaskedWord(String),
    #[error("cannot encode {text:?}: {cause}")]
    Encode { text: String, cause: String },
    #[error("cannot decode held-out tokens: {0}")]
    Decode(String),
}

/// A sequence with one position masked.
#[derive(Debug, Clone, PartialEq)]
pub struct Masked {
    /// Token ids, `[MASK]` at `at`.
    pub ids: Vec<u32>,
    pub at: usize,
    /// The masked token; [`IGNORE`] when the masked word is several tokens.
    pub answer: u32,
    /// The text around the mask, `[MASK]` in its place, for display.
    pub context: String,
}

/// What the model needs to guess masked words, and which of its guesses
/// are whole words.
pub struct Guesser<'a, B: Backend> {
    be: &'a B,
    model: &'a Model,
    params: &'a B::Buf,
    tokenizer: &'a Tokenizer,
    special: SpecialTokens,
    seq_len: usize,
    whole: Vec<bool>,
}

impl<'a, B: Backend> Guesser<'a, B> {
    /// The guesser for a model trained on `store` (its special tokens, its
    /// sequence length, and which word starts its training data continues).
    pub fn new(
        (be, model, params): (&'a B, &'a Model, &'a B::Buf),
        tokenizer: &'a Tokenizer,
        store: &TokenStore,
    ) -> Self {
        Guesser {
            be,
            model,
            params,
            tokenizer,
            special: store.special(),
            seq_len: store.seq_len(),
            whole: whole_words(store, tokenizer),
        }
    }

    /// The model's five most likely word starts at the masked position.
    pub fn top(&self, masked: &Masked) -> Vec<u32> {
        let at = [masked.at as u32];
        let logits = logits_at(self.be, self.model, self.params, &masked.ids, &at);
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        order
            .into_iter()
            .filter(|&t| t > self.special.mask && starts_a_word(self.tokenizer, t))
            .take(5)
            .collect()
    }

    /// Guesses in order, the right one marked `*so*`, fragments `circum-`.
    pub fn describe(&self, guesses: &[u32], answer: u32) -> String {
        let words: Vec<String> = guesses
            .iter()
            .map(|&t| {
                let mut w = self.tokenizer.id_to_token(t).unwrap_or_default();
                if !self.whole.get(t as usize).copied().unwrap_or(true) {
                    w.push('-');
                }
                if t == answer {
                    format!("*{w}*")
                } else {
                    w
                }
            })
            .collect();
        words.join(", ")
    }

    /// `probe` with its bracketed word masked: `[CLS] before [MASK] after
    /// [SEP]`, cut to the sequence length.
    pub fn mask_probe(&self, probe: &str) -> Result<Masked, GuessError> {
        let no_word = || GuessError::NoMaskedWord(probe.to_string());
        let (before, rest) = probe.split_once('[').ok_or_else(no_word)?;
        let (word, after) = rest.split_once(']').ok_or_else(no_word)?;
        let special = self.special;
        let answer = self.encode(word)?;
        let mut ids = vec![special.cls];
        ids.extend(self.encode(before)?);
        let at = ids.len();
        ids.push(special.mask);
        ids.extend(self.encode(after)?);
        ids.push(special.sep);
        ids.truncate(self.seq_len);
        Ok(Masked {
            ids,
            at,
            answer: if answer.len() == 1 { answer[0] } else { IGNORE },
            context: format!("{before}[MASK]{after}"),
        })
    }

    /// One whole word (four letters or more, in the second half) masked in
    /// each of `count` held-out sequences spread over the split; a sequence
    /// without such a word is left out.
    pub fn mask_held_out(
        &self,
        store: &TokenStore,
        count: usize,
    ) -> Result<Vec<Masked>, GuessError> {
        let n = store.len(Split::Val);
        let mut ids = vec![0u32; store.seq_len()];
        let mut out = Vec::new();
        for i in 0..count.min(n) {
            store.read(Split::Val, i * n / count, &mut ids);
            let word = |t: u32| {
                let w = self.tokenizer.id_to_token(t).unwrap_or_default();
                w.len() >= 4 && w.chars().all(|c| c.is_ascii_alphabetic())
            };
            // A whole word: the next token does not continue it.
            let whole_at = |p: usize| {
                word(ids[p])
                    && ids
                        .get(p + 1)
                        .is_none_or(|&t| starts_a_word(self.tokenizer, t))
            };
            let Some(at) = (ids.len() / 2..ids.len()).find(|&p| whole_at(p)) else {
                continue;
            };
            let answer = ids[at];
            let mut masked = ids.clone();
            masked[at] = self.special.mask;
            let lo = at.saturating_sub(10);
            let hi = (at + 6).min(masked.len());
            let context = self
                .tokenizer
                .decode(&masked[lo..hi], false)
                .map_err(|e| GuessError::Decode(e.to_string()))?
                .replace(" ##", "");
            out.push(Masked {
                ids: masked,
                at,
                answer,
                context,
            });
        }
        Ok(out)
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>, GuessError> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| GuessError::Encode {
                text: text.to_string(),
                cause: e.to_string(),
            })?;
        Ok(enc.get_ids().to_vec())
    }
}

/// A masked word's guesses are word starts: a WordPiece continuation
/// (`##ould`) cannot begin the word at the masked position.
fn starts_a_word(tokenizer: &Tokenizer, id: u32) -> bool {
    tokenizer
        .id_to_token(id)
        .is_some_and(|t| !t.starts_with("##"))
}

/// Which word-start tokens are whole words: those that stand alone (the
/// next token is no `##` continuation) in at least half of their uses in
/// the training data. `circum` is a word start the data always continues
/// (`circum ##stances`); guesses of such tokens are marked as fragments.
fn whole_words(store: &TokenStore, tokenizer: &Tokenizer) -> Vec<bool> {
    let vocab = tokenizer.get_vocab_size(true);
    let continues: Vec<bool> = (0..vocab as u32)
        .map(|t| !starts_a_word(tokenizer, t))
        .collect();
    let tokens = read_sequences(store, Split::Train, 0..store.len(Split::Train));
    stand_alone(tokens.chunks(store.seq_len()), &continues)
}

/// Per token id: does it stand alone (is not followed by a continuation) in
/// at least half of its uses in `sequences`? Tokens never seen count as whole.
fn stand_alone<'a>(sequences: impl Iterator<Item = &'a [u32]>, continues: &[bool]) -> Vec<bool> {
    let vocab = continues.len();
    let (mut alone, mut seen) = (vec![0u64; vocab], vec![0u64; vocab]);
    for seq in sequences {
        for pair in seq.windows(2) {
            let (t, next) = (pair[0] as usize, pair[1] as usize);
            if t < vocab {
                seen[t] += 1;
                alone[t] += u64::from(!continues.get(next).copied().unwrap_or(false));
            }
        }
    }
    (0..vocab).map(|t| 2 * alone[t] >= seen[t]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::Cpu;
    use crate::backend::Device;
    use crate::config::Config;
    use crate::data::SPECIAL_TOKENS;

    /// A WordPiece tokenizer over the special tokens and `words`, splitting
    /// on whitespace.
    fn tokenizer(words: &[&str]) -> Tokenizer {
        let vocab: ahash::AHashMap<String, u32> = SPECIAL_TOKENS
            .iter()
            .chain(words)
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        let wp = tokenizers::models::wordpiece::WordPiece::builder()
            .vocab(vocab)
            .build()
            .unwrap();
        let mut tokenizer = Tokenizer::new(wp);
        tokenizer.with_pre_tokenizer(Some(tokenizers::pre_tokenizers::whitespace::Whitespace {}));
        tokenizer
    }

    #[test]
    fn a_probe_masks_its_bracketed_word_and_guesses_are_word_starts() {
        let tok = tokenizer(&["the", "cat", "sat", "circum", "##stances", "on", "mat"]);
        let mut cfg = Config::resolve("tiny", &[]).unwrap().model;
        cfg.vocab_size = tok.get_vocab_size(true);
        let model = Model::new(&cfg);
        let be = Cpu::new();
        let params = be.upload(&model.init_params(1));
        let guesser = Guesser {
            be: &be,
            model: &model,
            params: &params,
            tokenizer: &tok,
            special: SpecialTokens::TRAINED,
            seq_len: 6,
            whole: vec![true; cfg.vocab_size],
        };
        // [CLS] the [MASK] sat on the | mat [SEP] cut at 6 tokens.
        let m = guesser.mask_probe("the [cat] sat on the mat").unwrap();
        assert_eq!(m.ids, [2, 5, 4, 7, 10, 5]);
        assert_eq!((m.at, m.answer), (2, 6));
        assert_eq!(m.context, "the [MASK] sat on the mat");
        // A word of two pieces has no single right answer.
        assert_eq!(
            guesser.mask_probe("[circumstances] on").unwrap().answer,
            IGNORE
        );
        assert!(matches!(
            guesser.mask_probe("no word here"),
            Err(GuessError::NoMaskedWord(_))
        ));
        let guesses = guesser.top(&m);
        assert_eq!(guesses.len(), 5);
        assert!(guesses.iter().all(|&t| t > 4 && t != 9), "{guesses:?}");
        let described = guesser.describe(&guesses, guesses[1]);
        assert_eq!(
            described.split(", ").filter(|w| w.starts_with('*')).count(),
            1
        );
    }

    /// Ids: 0 `the`, 1 `circum`, 2 `##stances`, 3 `under`. `circum` is always
    /// continued, `under` once in three: only `circum` is a fragment.
    #[test]
    fn word_starts_the_data_always_continues_are_fragments() {
        let continues = [false, false, true, false];
        let seqs = [0, 1, 2, 0, 3, 0, 3, 2, 1, 2, 3, 0];
        assert_eq!(
            stand_alone(seqs.chunks(6), &continues),
            [true, false, true, true]
        );
    }

    #[test]
    fn continuation_pieces_are_not_guesses() {
        let vocab: ahash::AHashMap<String, u32> =
            [("[UNK]", 0), ("would", 1), ("##ould", 2), ("circum", 3)]
                .into_iter()
                .map(|(t, i)| (t.to_string(), i))
                .collect();
        let wp = tokenizers::models::wordpiece::WordPiece::builder()
            .vocab(vocab)
            .build()
            .unwrap();
        let tokenizer = tokenizers::Tokenizer::new(wp);
        assert!(starts_a_word(&tokenizer, 1));
        assert!(!starts_a_word(&tokenizer, 2));
        assert!(starts_a_word(&tokenizer, 3));
    }
}
