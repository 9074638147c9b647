//! The layout of the flat parameter buffer: one `(name, shape)` table derived
//! from the model config, from which offsets, safetensors names, weight-decay
//! grouping and test labels all follow.
//!
//! Tensors that get weight decay (matmul weights, embeddings) come first and
//! the rest (norm scales, biases, the position scale) last, so the optimizer
//! splits the buffer at one index instead of carrying a mask.

use crate::backend::{Linear, Norm, Span};
use crate::config::{FfnKind, ModelConfig, NormPosition, Positions};

#[derive(Debug, Clone, PartialEq)]
pub struct ParamInfo {
    pub name: String,
    pub shape: Vec<usize>,
    pub span: Span,
    pub decay: bool,
    pub init: Init,
}

/// How a tensor starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    Normal(f32),
    Ones,
    Zeros,
    Constant(f32),
}

/// Where each tensor of one transformer block lives.
#[derive(Debug, Clone, Copy)]
pub struct BlockParams {
    pub attn_norm: Norm,
    pub qkv: Linear,
    pub attn_out: Linear,
    pub ffn_norm: Norm,
    pub ffn_in: Linear,
    pub ffn_out: Linear,
}

/// Where each tensor of the model lives.
#[derive(Debug, Clone)]
pub struct Layout {
    pub params: Vec<ParamInfo>,
    pub len: usize,
    pub decay_len: usize,
    pub word_embeddings: Span,
    pub learned_positions: Option<Span>,
    pub position_scale: Option<Span>,
    pub embedding_norm: Option<Norm>,
    pub blocks: Vec<BlockParams>,
    pub final_norm: Option<Norm>,
    pub head_transform: Option<(Linear, Norm)>,
    pub decoder: Linear,
}

/// Collects `(name, shape)` entries, then assigns offsets decay-first.
struct Builder {
    entries: Vec<(String, Vec<usize>, bool, Init)>,
}

impl Builder {
    fn add(&mut self, name: String, shape: Vec<usize>, decay: bool, init: Init) -> usize {
        self.entries.push((name, shape, decay, init));
        self.entries.len() - 1
    }

    fn linear(
        &mut self,
        prefix: &str,
        out: usize,
        inp: usize,
        bias: bool,
        std: f32,
    ) -> (usize, Option<usize>) {
        let w = self.add(
            format!("{prefix}.weight"),
            vec![out, inp],
            true,
            Init::Normal(std),
        );
        let b = bias.then(|| self.add(format!("{prefix}.bias"), vec![out], false, Init::Zeros));
        (w, b)
    }

    fn norm(&mut self, prefix: &str, cols: usize, bias: bool) -> (usize, Option<usize>) {
        let w = self.add(format!("{prefix}.weight"), vec![cols], false, Init::Ones);
        let b = bias.then(|| self.add(format!("{prefix}.bias"), vec![cols], false, Init::Zeros));
        (w, b)
    }

    /// Offsets: decayed tensors in order of addition, then the others.
    fn finish(self) -> (Vec<ParamInfo>, usize, usize) {
        let mut params = vec![None; self.entries.len()];
        let mut offset = 0;
        let mut decay_len = 0;
        for pass_decay in [true, false] {
            for (i, (name, shape, decay, init)) in self.entries.iter().enumerate() {
                if *decay != pass_decay {
                    continue;
                }
                let len = shape.iter().product();
                params[i] = Some(ParamInfo {
                    name: name.clone(),
                    shape: shape.clone(),
                    span: Span { offset, len },
                    decay: *decay,
                    init: *init,
                });
                offset += len;
            }
            if pass_decay {
                decay_len = offset;
            }
        }
        (
            params
                .into_iter()
                .map(|p| p.expect("every entry placed"))
                .collect(),
            offset,
            decay_len,
        )
    }
}

impl Layout {
    pub fn new(cfg: &ModelConfig) -> Layout {
        let c = cfg.hidden;
        let std = cfg.init_std;
        let mut b = Builder {
            entries: Vec::new(),
        };
        let word = b.add(
            "embeddings.word.weight".into(),
            vec![cfg.vocab_size, c],
            true,
            Init::Normal(std),
        );
        let learned = (cfg.positions == Positions::Learned).then(|| {
            b.add(
                "embeddings.position.weight".into(),
                vec![cfg.max_positions, c],
                true,
                Init::Normal(std),
            )
        });
        let scale = (cfg.positions == Positions::ScaledSinusoidal).then(|| {
            b.add(
                "embeddings.position.scale".into(),
                vec![1],
                false,
                Init::Constant(1.0 / (c as f32).sqrt()),
            )
        });
        let emb_norm = cfg
            .embedding_norm
            .then(|| b.norm("embeddings.norm", c, cfg.bias));
        let ffn_out_in = match cfg.ffn_kind {
            FfnKind::Gelu => cfg.ffn,
            FfnKind::GluGelu | FfnKind::Swiglu => cfg.ffn / 2,
        };
        let blocks: Vec<_> = (0..cfg.layers)
            .map(|i| {
                let p = format!("layers.{i}");
                (
                    b.norm(&format!("{p}.attn_norm"), c, cfg.bias),
                    b.linear(&format!("{p}.attn.qkv"), 3 * c, c, cfg.bias, std),
                    b.linear(&format!("{p}.attn.out"), c, c, cfg.bias, std),
                    b.norm(&format!("{p}.ffn_norm"), c, cfg.bias),
                    b.linear(&format!("{p}.ffn.in"), cfg.ffn, c, cfg.bias, std),
                    b.linear(&format!("{p}.ffn.out"), c, ffn_out_in, cfg.bias, std),
                )
            })
            .collect();
        let final_norm = cfg.final_norm.then(|| b.norm("final_norm", c, cfg.bias));
        let transform = cfg.head_transform.then(|| {
            (
                b.linear("head.transform", c, c, cfg.bias, std),
                b.norm("head.norm", c, cfg.bias),
            )
        });
        let decoder_w = (!cfg.tie_embeddings).then(|| {
            b.add(
                "head.decoder.weight".into(),
                vec![cfg.vocab_size, c],
                true,
                Init::Normal(std),
            )
        });
        let decoder_b = cfg.bias.then(|| {
            b.add(
                "head.decoder.bias".into(),
                vec![cfg.vocab_size],
                false,
                Init::Zeros,
            )
        });

        let (params, len, decay_len) = b.finish();
        let span = |i: usize| params[i].span;
        let linear = |(w, bias): (usize, Option<usize>)| Linear {
            weight: span(w),
            bias: bias.map(span),
        };
        let norm = |(w, bias): (usize, Option<usize>)| Norm {
            kind: cfg.norm,
            weight: span(w),
            bias: bias.map(span),
            eps: cfg.norm_eps,
        };
        Layout {
            word_embeddings: span(word),
            learned_positions: learned.map(span),
            position_scale: scale.map(span),
            embedding_norm: emb_norm.map(norm),
            blocks: blocks
                .into_iter()
                .map(|(an, qkv, ao, fnorm, fi, fo)| BlockParams {
                    attn_norm: norm(an),
                    qkv: linear(qkv),
                    attn_out: linear(ao),
                    ffn_norm: norm(fnorm),
                    ffn_in: linear(fi),
                    ffn_out: linear(fo),
                })
                .collect(),
            final_norm: final_norm.map(norm),
            head_transform: transform.map(|(l, n)| (linear(l), norm(n))),
            decoder: Linear {
                weight: decoder_w.map(span).unwrap_or(span(word)),
                bias: decoder_b.map(span),
            },
            params,
            len,
            decay_len,
        }
    }

    pub fn find(&self, name: &str) -> Option<&ParamInfo> {
        self.params.iter().find(|p| p.name == name)
    }

    /// The parameter spans grouped by the point of the backward pass where
    /// their gradients become final: the head with the final norm, then each
    /// block from the last to the first, then the embeddings. Every parameter
    /// is in exactly one stage; a decoder tied to the word embeddings belongs
    /// to the embeddings, whose backward adds the last part of its gradient.
    pub fn grad_stages(&self) -> Vec<Vec<Span>> {
        let mut head = Vec::new();
        if let Some((linear, norm)) = self.head_transform {
            head.extend(linear_spans(linear).chain(norm_spans(norm)));
        }
        if self.decoder.weight != self.word_embeddings {
            head.push(self.decoder.weight);
        }
        head.extend(self.decoder.bias);
        head.extend(self.final_norm.into_iter().flat_map(norm_spans));
        let blocks = self.blocks.iter().rev().map(|b| {
            norm_spans(b.attn_norm)
                .chain(linear_spans(b.qkv))
                .chain(linear_spans(b.attn_out))
                .chain(norm_spans(b.ffn_norm))
                .chain(linear_spans(b.ffn_in))
                .chain(linear_spans(b.ffn_out))
                .collect()
        });
        let mut embeddings = vec![self.word_embeddings];
        embeddings.extend(self.learned_positions);
        embeddings.extend(self.position_scale);
        embeddings.extend(self.embedding_norm.into_iter().flat_map(norm_spans));
        std::iter::once(head)
            .chain(blocks)
            .chain(std::iter::once(embeddings))
            .collect()
    }

    /// Parameters outside the embeddings (Kaplan et al.'s N): everything but the
    /// word and position tables.
    pub fn non_embedding_count(&self) -> usize {
        self.params
            .iter()
            .filter(|p| {
                !p.name.starts_with("embeddings.word") && p.name != "embeddings.position.weight"
            })
            .map(|p| p.span.len)
            .sum()
    }
}

fn linear_spans(l: Linear) -> impl Iterator<Item = Span> {
    std::iter::once(l.weight).chain(l.bias)
}

fn norm_spans(n: Norm) -> impl Iterator<Item = Span> {
    std::iter::once(n.weight).chain(n.bias)
}

/// Whether the blocks normalise before (pre-LN) or after (post-LN) the residual add.
pub fn is_pre_norm(cfg: &ModelConfig) -> bool {
    cfg.norm_position == NormPosition::Pre
}
