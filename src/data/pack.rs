//! Stage "pack": documents' tokens into fixed-length sequences.
//!
//! The documents of a split form one stream, each followed by [SEP]. The
//! stream is cut into sequences of exactly `seq_len` tokens; with
//! `cls_first`, each sequence is [CLS] followed by the next `seq_len - 1`
//! tokens of the stream. Documents cross sequence boundaries freely, as in
//! Cramming. The last, partial sequence is padded with [PAD] when it holds at
//! least one token of the stream, and dropped otherwise.

use super::tokenizer::SpecialTokens;

pub struct Packer {
    seq_len: usize,
    cls: Option<u32>,
    sep: u32,
    pad: u32,
    current: Vec<u32>,
    stats: PackStats,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PackStats {
    pub documents: u64,
    pub sequences: u64,
    /// Real tokens written ([CLS] and [SEP] included).
    pub tokens: u64,
    pub padding: u64,
}

impl Packer {
    /// `seq_len` must be at least 2 when `cls_first` (checked by `prepare`).
    pub fn new(seq_len: usize, cls_first: bool, special: SpecialTokens) -> Packer {
        debug_assert!(seq_len > usize::from(cls_first));
        Packer {
            seq_len,
            cls: cls_first.then_some(special.cls),
            sep: special.sep,
            pad: special.pad,
            current: Vec::with_capacity(seq_len),
            stats: PackStats::default(),
        }
    }

    /// Appends a document (without special tokens) to the stream, and every
    /// sequence it completes to `out`.
    pub fn push_document(&mut self, tokens: &[u32], out: &mut Vec<u32>) {
        self.extend(tokens, out);
        self.extend(&[self.sep], out);
        self.stats.documents += 1;
    }

    /// Pads and emits the partial last sequence, if it holds stream tokens.
    pub fn finish(mut self, out: &mut Vec<u32>) -> PackStats {
        let header = usize::from(self.cls.is_some());
        if self.current.len() > header {
            let padding = self.seq_len - self.current.len();
            self.current.resize(self.seq_len, self.pad);
            self.emit(padding, out);
        }
        self.stats
    }

    fn extend(&mut self, mut tokens: &[u32], out: &mut Vec<u32>) {
        while !tokens.is_empty() {
            if self.current.is_empty() {
                if let Some(cls) = self.cls {
                    self.current.push(cls);
                }
            }
            let take = (self.seq_len - self.current.len()).min(tokens.len());
            self.current.extend_from_slice(&tokens[..take]);
            tokens = &tokens[take..];
            if self.current.len() == self.seq_len {
                self.emit(0, out);
            }
        }
    }

    fn emit(&mut self, padding: usize, out: &mut Vec<u32>) {
        self.stats.tokens += (self.seq_len - padding) as u64;
        self.stats.padding += padding as u64;
        self.stats.sequences += 1;
        out.extend_from_slice(&self.current);
        self.current.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECIAL: SpecialTokens = SpecialTokens::TRAINED;

    fn pack(seq_len: usize, cls_first: bool, docs: &[&[u32]]) -> (Vec<Vec<u32>>, PackStats) {
        let mut packer = Packer::new(seq_len, cls_first, SPECIAL);
        let mut out = Vec::new();
        for doc in docs {
            packer.push_document(doc, &mut out);
        }
        let stats = packer.finish(&mut out);
        assert_eq!(out.len() % seq_len, 0);
        (out.chunks(seq_len).map(<[u32]>::to_vec).collect(), stats)
    }

    #[test]
    fn cls_first_layout_with_sep_after_each_document_and_padding_at_the_end() {
        let (seqs, stats) = pack(5, true, &[&[10, 11, 12], &[20, 21, 22, 23, 24], &[30]]);
        assert_eq!(
            seqs,
            vec![
                vec![2, 10, 11, 12, 3],
                vec![2, 20, 21, 22, 23],
                vec![2, 24, 3, 30, 3],
            ]
        );
        assert_eq!(
            stats,
            PackStats {
                documents: 3,
                sequences: 3,
                tokens: 15,
                padding: 0
            }
        );

        let (seqs, stats) = pack(5, true, &[&[10, 11, 12, 13, 14]]);
        assert_eq!(seqs, vec![vec![2, 10, 11, 12, 13], vec![2, 14, 3, 0, 0]]);
        assert_eq!((stats.tokens, stats.padding), (8, 2));
    }

    #[test]
    fn without_cls_the_stream_is_cut_as_is() {
        let (seqs, _) = pack(4, false, &[&[10, 11], &[20, 21, 22]]);
        assert_eq!(seqs, vec![vec![10, 11, 3, 20], vec![21, 22, 3, 0]]);
    }

    #[test]
    fn no_sequence_of_only_cls_and_padding() {
        let (seqs, stats) = pack(4, true, &[&[10, 11]]);
        assert_eq!(seqs, vec![vec![2, 10, 11, 3]]);
        assert_eq!(stats.padding, 0);
        let (seqs, _) = pack(4, true, &[]);
        assert!(seqs.is_empty());
    }
}
