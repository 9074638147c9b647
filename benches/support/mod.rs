//! The `tiny` preset's shapes (hidden 128, 4 heads, seq 64, micro-batch 32,
//! GLU feed-forward 512, vocab 8192, sparse MLM on a quarter of the
//! positions) and a hand-wired 2-layer model of that size on the CPU
//! backend, with every buffer allocated once as the real model does.

use std::hint::black_box;

use cram::backend::cpu::Cpu;
use cram::backend::{
    Activation, ActivationOps, AttentionOps, AttentionShape, EmbeddingOps, Linear, LossOps,
    MatmulOps, MatmulShape, Norm, NormKind, NormOps, Span,
};

pub const BATCH: usize = 32;
pub const SEQ: usize = 64;
pub const ROWS: usize = BATCH * SEQ;
pub const HIDDEN: usize = 128;
pub const HEADS: usize = 4;
pub const FFN: usize = 512;
pub const VOCAB: usize = 8192;
pub const LAYERS: usize = 2;
pub const MASKED: usize = ROWS / 4;

pub fn filled(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

pub fn attention_shape() -> AttentionShape {
    AttentionShape {
        batch: BATCH,
        seq: SEQ,
        heads: HEADS,
        head_dim: HIDDEN / HEADS,
        causal: false,
    }
}

/// The parameters of the tiny model, laid out in one buffer.
pub struct Tiny {
    embed: Span,
    scale: Span,
    layers: Vec<Block>,
    final_norm: Norm,
    pub len: usize,
}

struct Block {
    ln1: Norm,
    qkv: Linear,
    proj: Linear,
    ln2: Norm,
    up: Linear,
    down: Linear,
}

fn zeros(len: usize) -> Vec<f32> {
    vec![0.0; len]
}

/// What one block's forward keeps for its backward, and its output.
struct BlockActs {
    h1: Vec<f32>,
    mean1: Vec<f32>,
    rstd1: Vec<f32>,
    qkv: Vec<f32>,
    saved: Vec<f32>,
    att: Vec<f32>,
    x2: Vec<f32>,
    h2: Vec<f32>,
    mean2: Vec<f32>,
    rstd2: Vec<f32>,
    gated: Vec<f32>,
    act: Vec<f32>,
    out: Vec<f32>,
}

impl BlockActs {
    fn new(cpu: &Cpu) -> Self {
        BlockActs {
            h1: zeros(ROWS * HIDDEN),
            mean1: zeros(ROWS),
            rstd1: zeros(ROWS),
            qkv: zeros(ROWS * 3 * HIDDEN),
            saved: zeros(cpu.attention_saved_len(attention_shape())),
            att: zeros(ROWS * HIDDEN),
            x2: zeros(ROWS * HIDDEN),
            h2: zeros(ROWS * HIDDEN),
            mean2: zeros(ROWS),
            rstd2: zeros(ROWS),
            gated: zeros(ROWS * FFN),
            act: zeros(ROWS * FFN / 2),
            out: zeros(ROWS * HIDDEN),
        }
    }
}

/// Every activation and activation gradient of a step, allocated once.
pub struct Acts {
    embedded: Vec<f32>,
    blocks: Vec<BlockActs>,
    normed: Vec<f32>,
    mean: Vec<f32>,
    rstd: Vec<f32>,
    picked: Vec<f32>,
    logits: Vec<f32>,
    losses: Vec<f32>,
    hidden_tmp: Vec<f32>,
    dx: Vec<f32>,
    dhidden: Vec<f32>,
    dpicked: Vec<f32>,
    dact: Vec<f32>,
    dgated: Vec<f32>,
    dqkv: Vec<f32>,
}

impl Acts {
    pub fn new(cpu: &Cpu) -> Self {
        Acts {
            embedded: zeros(ROWS * HIDDEN),
            blocks: (0..LAYERS).map(|_| BlockActs::new(cpu)).collect(),
            normed: zeros(ROWS * HIDDEN),
            mean: zeros(ROWS),
            rstd: zeros(ROWS),
            picked: zeros(MASKED * HIDDEN),
            logits: zeros(MASKED * VOCAB),
            losses: zeros(MASKED),
            hidden_tmp: zeros(ROWS * HIDDEN),
            dx: zeros(ROWS * HIDDEN),
            dhidden: zeros(ROWS * HIDDEN),
            dpicked: zeros(MASKED * HIDDEN),
            dact: zeros(ROWS * FFN / 2),
            dgated: zeros(ROWS * FFN),
            dqkv: zeros(ROWS * 3 * HIDDEN),
        }
    }
}

fn mm(m: usize, n: usize, k: usize) -> MatmulShape {
    MatmulShape { m, k, n }
}

impl Tiny {
    pub fn new() -> Self {
        let mut len = 0;
        let mut span = |n| {
            let s = Span {
                offset: len,
                len: n,
            };
            len += n;
            s
        };
        let linear = |span: &mut dyn FnMut(usize) -> Span, out, inp| Linear {
            weight: span(out * inp),
            bias: None,
        };
        let norm = |span: &mut dyn FnMut(usize) -> Span| Norm {
            kind: NormKind::Layernorm,
            weight: span(HIDDEN),
            bias: None,
            eps: 1e-12,
        };
        let embed = span(VOCAB * HIDDEN);
        let scale = span(1);
        let layers = (0..LAYERS)
            .map(|_| Block {
                ln1: norm(&mut span),
                qkv: linear(&mut span, 3 * HIDDEN, HIDDEN),
                proj: linear(&mut span, HIDDEN, HIDDEN),
                ln2: norm(&mut span),
                up: linear(&mut span, FFN, HIDDEN),
                down: linear(&mut span, HIDDEN, FFN / 2),
            })
            .collect();
        let final_norm = norm(&mut span);
        Tiny {
            embed,
            scale,
            layers,
            final_norm,
            len,
        }
    }

    /// One micro-batch: forward, sparse MLM loss on the `masked` rows
    /// (predicting their own ids), backward into `grads`.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &self,
        cpu: &Cpu,
        acts: &mut Acts,
        params: &Vec<f32>,
        grads: &mut Vec<f32>,
        ids: &Vec<u32>,
        masked: &Vec<u32>,
        targets: &Vec<u32>,
    ) {
        let a = acts;
        cpu.embedding_forward(&mut a.embedded, ids, params, self.embed, HIDDEN);
        cpu.sinusoidal_positions_forward(&mut a.embedded, params, self.scale, SEQ, HIDDEN);
        for (i, block) in self.layers.iter().enumerate() {
            let (done, rest) = a.blocks.split_at_mut(i);
            let x = done.last().map_or(&a.embedded, |prev| &prev.out);
            let b = &mut rest[0];
            cpu.norm_forward(
                &mut b.h1,
                &mut b.mean1,
                &mut b.rstd1,
                x,
                params,
                block.ln1,
                HIDDEN,
            );
            cpu.matmul_forward(
                &mut b.qkv,
                &b.h1,
                params,
                block.qkv,
                mm(ROWS, 3 * HIDDEN, HIDDEN),
            );
            cpu.attention_forward(&mut b.att, &mut b.saved, &b.qkv, attention_shape());
            cpu.matmul_forward(
                &mut a.hidden_tmp,
                &b.att,
                params,
                block.proj,
                mm(ROWS, HIDDEN, HIDDEN),
            );
            cpu.add(&mut b.x2, x, &a.hidden_tmp);
            cpu.norm_forward(
                &mut b.h2,
                &mut b.mean2,
                &mut b.rstd2,
                &b.x2,
                params,
                block.ln2,
                HIDDEN,
            );
            cpu.matmul_forward(&mut b.gated, &b.h2, params, block.up, mm(ROWS, FFN, HIDDEN));
            cpu.glu_forward(&mut b.act, &b.gated, Activation::Gelu, FFN / 2);
            cpu.matmul_forward(
                &mut a.hidden_tmp,
                &b.act,
                params,
                block.down,
                mm(ROWS, HIDDEN, FFN / 2),
            );
            cpu.add(&mut b.out, &b.x2, &a.hidden_tmp);
        }
        let last = &a.blocks[LAYERS - 1].out;
        cpu.norm_forward(
            &mut a.normed,
            &mut a.mean,
            &mut a.rstd,
            last,
            params,
            self.final_norm,
            HIDDEN,
        );
        cpu.gather_rows_forward(&mut a.picked, &a.normed, masked, HIDDEN);
        let tied = Linear {
            weight: self.embed,
            bias: None,
        };
        cpu.matmul_forward(
            &mut a.logits,
            &a.picked,
            params,
            tied,
            mm(MASKED, VOCAB, HIDDEN),
        );
        cpu.cross_entropy(
            &mut a.losses,
            &mut a.logits,
            targets,
            VOCAB,
            Some(1.0 / MASKED as f32),
        );

        let head = mm(MASKED, VOCAB, HIDDEN);
        cpu.matmul_backward(
            Some(&mut a.dpicked),
            false,
            grads,
            &a.logits,
            &a.picked,
            params,
            tied,
            head,
        );
        cpu.gather_rows_backward(&mut a.dhidden, &a.dpicked, masked, HIDDEN);
        a.dx.fill(0.0);
        cpu.norm_backward(
            &mut a.dx,
            grads,
            &a.dhidden,
            last,
            params,
            &a.mean,
            &a.rstd,
            self.final_norm,
            HIDDEN,
        );
        for (i, block) in self.layers.iter().enumerate().rev() {
            let x = if i == 0 {
                &a.embedded
            } else {
                &a.blocks[i - 1].out
            };
            let b = &a.blocks[i];
            let down = mm(ROWS, HIDDEN, FFN / 2);
            cpu.matmul_backward(
                Some(&mut a.dact),
                false,
                grads,
                &a.dx,
                &b.act,
                params,
                block.down,
                down,
            );
            cpu.glu_backward(&mut a.dgated, &a.dact, &b.gated, Activation::Gelu, FFN / 2);
            let up = mm(ROWS, FFN, HIDDEN);
            cpu.matmul_backward(
                Some(&mut a.dhidden),
                false,
                grads,
                &a.dgated,
                &b.h2,
                params,
                block.up,
                up,
            );
            cpu.norm_backward(
                &mut a.dx, grads, &a.dhidden, &b.x2, params, &b.mean2, &b.rstd2, block.ln2, HIDDEN,
            );
            let proj = mm(ROWS, HIDDEN, HIDDEN);
            cpu.matmul_backward(
                Some(&mut a.hidden_tmp),
                false,
                grads,
                &a.dx,
                &b.att,
                params,
                block.proj,
                proj,
            );
            cpu.attention_backward(
                &mut a.dqkv,
                &a.hidden_tmp,
                &b.att,
                &b.qkv,
                &b.saved,
                attention_shape(),
            );
            let qkv = mm(ROWS, 3 * HIDDEN, HIDDEN);
            cpu.matmul_backward(
                Some(&mut a.dhidden),
                false,
                grads,
                &a.dqkv,
                &b.h1,
                params,
                block.qkv,
                qkv,
            );
            cpu.norm_backward(
                &mut a.dx, grads, &a.dhidden, x, params, &b.mean1, &b.rstd1, block.ln1, HIDDEN,
            );
        }
        cpu.sinusoidal_positions_backward(grads, self.scale, &a.dx, SEQ, HIDDEN);
        cpu.embedding_backward(grads, self.embed, &a.dx, ids, HIDDEN);
        black_box(&a.losses);
    }
}

/// Everything one micro-batch step needs, ready to run again and again.
pub struct TinyRun {
    cpu: Cpu,
    model: Tiny,
    acts: Acts,
    params: Vec<f32>,
    grads: Vec<f32>,
    ids: Vec<u32>,
    masked: Vec<u32>,
    targets: Vec<u32>,
}

impl TinyRun {
    pub fn new() -> Self {
        let cpu = Cpu::new();
        let model = Tiny::new();
        let params = filled(model.len, 7).iter().map(|x| x * 0.04).collect();
        let grads = zeros(model.len);
        let acts = Acts::new(&cpu);
        let ids: Vec<u32> = (0..ROWS as u32).map(|i| i * 31 % VOCAB as u32).collect();
        let masked: Vec<u32> = (0..MASKED as u32).map(|i| i * 4 + i % 4).collect();
        let targets = masked.iter().map(|&r| ids[r as usize]).collect();
        TinyRun {
            cpu,
            model,
            acts,
            params,
            grads,
            ids,
            masked,
            targets,
        }
    }

    /// Forward and backward of one micro-batch.
    pub fn step(&mut self) {
        self.model.step(
            &self.cpu,
            &mut self.acts,
            &self.params,
            &mut self.grads,
            &self.ids,
            &self.masked,
            &self.targets,
        );
    }
}
