//! CPU backend throughput at the `tiny` preset's shapes: the hot ops one by
//! one, and a whole 2-layer forward + backward of one micro-batch. Run with
//! `cargo bench --bench cpu_ops`.

mod support;

use cram::backend::cpu::Cpu;
use cram::backend::{
    Activation, ActivationOps, AttentionOps, Linear, LossOps, MatmulOps, MatmulShape, Norm,
    NormKind, NormOps, Span,
};
use criterion::{criterion_group, criterion_main, Criterion};
use support::*;

fn ops(c: &mut Criterion) {
    let cpu = Cpu::new();
    // The feed-forward's up projection, and the tied MLM head over the masked rows.
    for (m, k, n) in [(ROWS, HIDDEN, FFN), (MASKED, HIDDEN, VOCAB)] {
        let shape = MatmulShape { m, k, n };
        let layer = Linear {
            weight: Span {
                offset: 0,
                len: n * k,
            },
            bias: None,
        };
        let params = filled(n * k, 1);
        let inp = filled(m * k, 2);
        let mut out = vec![0.0; m * n];
        c.bench_function(&format!("matmul_forward {m}x{k} · {n}x{k}ᵀ"), |b| {
            b.iter(|| cpu.matmul_forward(&mut out, &inp, &params, layer, shape))
        });
        let dout = filled(m * n, 3);
        let (mut dinp, mut grads) = (vec![0.0; m * k], vec![0.0; params.len()]);
        c.bench_function(&format!("matmul_backward {m}x{k} · {n}x{k}ᵀ"), |b| {
            b.iter(|| {
                cpu.matmul_backward(
                    Some(&mut dinp),
                    false,
                    &mut grads,
                    &dout,
                    &inp,
                    &params,
                    layer,
                    shape,
                )
            })
        });
    }
    let params = filled(HIDDEN, 1);
    let inp = filled(ROWS * HIDDEN, 2);
    let mut grads = vec![0.0; HIDDEN];

    let att = attention_shape();
    let qkv = filled(ROWS * 3 * HIDDEN, 4);
    let (mut out, mut saved) = (
        vec![0.0; ROWS * HIDDEN],
        vec![0.0; cpu.attention_saved_len(att)],
    );
    c.bench_function("attention_forward 32x4 heads, seq 64", |b| {
        b.iter(|| cpu.attention_forward(&mut out, &mut saved, &qkv, att))
    });
    let dout = filled(ROWS * HIDDEN, 5);
    let mut dqkv = vec![0.0; qkv.len()];
    c.bench_function("attention_backward 32x4 heads, seq 64", |b| {
        b.iter(|| cpu.attention_backward(&mut dqkv, &dout, &out, &qkv, &saved, att))
    });

    let gated = filled(ROWS * FFN, 8);
    let mut act = vec![0.0; ROWS * FFN / 2];
    c.bench_function("glu_forward gelu 2048x256", |b| {
        b.iter(|| cpu.glu_forward(&mut act, &gated, Activation::Gelu, FFN / 2))
    });
    let dact = filled(ROWS * FFN / 2, 9);
    let mut dgated = vec![0.0; ROWS * FFN];
    c.bench_function("glu_backward gelu 2048x256", |b| {
        b.iter(|| cpu.glu_backward(&mut dgated, &dact, &gated, Activation::Gelu, FFN / 2))
    });

    let norm = Norm {
        kind: NormKind::Layernorm,
        weight: Span {
            offset: 0,
            len: HIDDEN,
        },
        bias: None,
        eps: 1e-12,
    };
    let (mut out, mut mean, mut rstd) =
        (vec![0.0; ROWS * HIDDEN], vec![0.0; ROWS], vec![0.0; ROWS]);
    c.bench_function("norm_forward layernorm 2048x128", |b| {
        b.iter(|| cpu.norm_forward(&mut out, &mut mean, &mut rstd, &inp, &params, norm, HIDDEN))
    });
    let dout = filled(ROWS * HIDDEN, 10);
    let mut dinp = vec![0.0; ROWS * HIDDEN];
    c.bench_function("norm_backward layernorm 2048x128", |b| {
        b.iter(|| {
            cpu.norm_backward(
                &mut dinp, &mut grads, &dout, &inp, &params, &mean, &rstd, norm, HIDDEN,
            )
        })
    });

    let mut logits = filled(MASKED * VOCAB, 6);
    let targets: Vec<u32> = (0..MASKED as u32).map(|i| i * 13 % VOCAB as u32).collect();
    let mut losses = vec![0.0; MASKED];
    c.bench_function("cross_entropy 512x8192 with gradient", |b| {
        b.iter(|| cpu.cross_entropy(&mut losses, &mut logits, &targets, VOCAB, Some(1.0)))
    });
}

fn tiny_step(c: &mut Criterion) {
    let mut run = TinyRun::new();
    let mut group = c.benchmark_group("tiny");
    group.sample_size(20);
    group.bench_function("forward+backward, micro-batch 32x64", |b| {
        b.iter(|| run.step())
    });
    group.finish();
}

criterion_group!(benches, ops, tiny_step);
criterion_main!(benches);
