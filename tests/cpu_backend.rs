//! Rules of the CPU backend beyond single-op gradients: the accumulation rule
//! (parameter gradients `+=`, activation gradients `=`, the two residual
//! exceptions), AdamW against a hand-computed step, cross-entropy's value at
//! uniform logits, and bit-identical results from run to run.

mod common;

use cram::backend::cpu::Cpu;
use cram::backend::fp8::Fp8Switch;
use cram::backend::{
    Activation, ActivationOps, AdamW, AttentionOps, AttentionShape, Device, EmbeddingOps, Linear,
    LossOps, MatmulOps, MatmulShape, Norm, NormKind, NormOps, OptimOps, Span, IGNORE,
};

/// Asserts `twice == 2·once` up to the rounding of a second accumulation.
fn assert_doubled(name: &str, once: &[f32], twice: &[f32]) {
    assert!(once.iter().any(|&g| g != 0.0), "{name}: no gradient at all");
    for (i, (&a, &b)) in once.iter().zip(twice).enumerate() {
        assert!(
            (b - 2.0 * a).abs() <= 1e-5 * a.abs().max(1e-3),
            "{name}[{i}]: {b} after two backwards, {a} after one"
        );
    }
}

/// Runs `backward` on zeroed gradients once and twice, and checks the doubling.
fn check_param_grads_double(name: &str, len: usize, backward: impl Fn(&mut Vec<f32>)) {
    let mut once = vec![0.0; len];
    backward(&mut once);
    let mut twice = vec![0.0; len];
    backward(&mut twice);
    backward(&mut twice);
    assert_doubled(name, &once, &twice);
}

/// Runs `backward` twice on the same (garbage-filled) activation gradient and
/// checks the second run leaves it bit for bit as the first did.
fn check_overwrites(name: &str, len: usize, backward: impl Fn(&mut Vec<f32>)) {
    let mut dinp = vec![f32::NAN; len];
    backward(&mut dinp);
    assert!(
        dinp.iter().all(|g| g.is_finite()),
        "{name}: left stale values in dinp"
    );
    let first = dinp.clone();
    backward(&mut dinp);
    assert_eq!(first, dinp, "{name}: a second backward changed dinp");
}

#[test]
fn parameter_gradients_accumulate() {
    let cpu = Cpu::new();
    let mut rng = common::rng(21);
    let (batch, seq, cols, vocab) = (2, 5, 8, 7);
    let rows = batch * seq;
    let params = common::uniform(&mut rng, 200, 1.0);
    let span = |offset, len| Span { offset, len };
    let dout = common::uniform(&mut rng, rows * cols, 1.0);
    let inp = common::uniform(&mut rng, rows * cols, 1.0);
    let ids = common::ids(&mut rng, rows, vocab);

    check_param_grads_double("embedding", 200, |g| {
        cpu.embedding_backward(g, span(3, vocab as usize * cols), &dout, &ids, cols)
    });
    check_param_grads_double("learned positions", 200, |g| {
        cpu.learned_positions_backward(g, span(10, seq * cols), &dout, seq, cols)
    });
    check_param_grads_double("sinusoidal positions", 200, |g| {
        cpu.sinusoidal_positions_backward(g, span(7, 1), &dout, seq, cols)
    });

    let norm = Norm {
        kind: NormKind::Layernorm,
        weight: span(20, cols),
        bias: Some(span(40, cols)),
        eps: 1e-5,
    };
    let (mut out, mut mean, mut rstd) = (vec![0.0; rows * cols], vec![0.0; rows], vec![0.0; rows]);
    cpu.norm_forward(&mut out, &mut mean, &mut rstd, &inp, &params, norm, cols);
    check_param_grads_double("norm", 200, |g| {
        let mut dinp = vec![0.0; rows * cols];
        cpu.norm_backward(&mut dinp, g, &dout, &inp, &params, &mean, &rstd, norm, cols);
    });

    let layer = Linear {
        weight: span(50, 6 * cols),
        bias: Some(span(120, 6)),
    };
    let shape = MatmulShape {
        m: rows,
        k: cols,
        n: 6,
    };
    let dout = common::uniform(&mut rng, rows * 6, 1.0);
    check_param_grads_double("matmul", 200, |g| {
        cpu.matmul_backward(None, false, g, &dout, &inp, &params, layer, shape)
    });
    check_overwrites("matmul dinp", rows * cols, |dinp| {
        let mut grads = vec![0.0; 200];
        cpu.matmul_backward(
            Some(dinp),
            false,
            &mut grads,
            &dout,
            &inp,
            &params,
            layer,
            shape,
        )
    });
}

#[test]
fn activation_gradients_are_overwritten() {
    let cpu = Cpu::new();
    let mut rng = common::rng(22);
    let shape = AttentionShape {
        batch: 2,
        seq: 6,
        heads: 2,
        head_dim: 4,
        causal: true,
    };
    let (rows, hidden) = (shape.rows(), shape.hidden());
    let qkv = common::uniform(&mut rng, rows * 3 * hidden, 1.0);
    let dout = common::uniform(&mut rng, rows * hidden, 1.0);
    let (mut out, mut saved) = (
        vec![0.0; rows * hidden],
        vec![0.0; cpu.attention_saved_len(shape)],
    );
    cpu.attention_forward(&mut out, &mut saved, &qkv, shape);
    check_overwrites("attention", qkv.len(), |d| {
        cpu.attention_backward(d, &dout, &out, &qkv, &saved, shape)
    });

    let inp = common::uniform(&mut rng, rows * hidden, 2.0);
    for act in [Activation::Gelu, Activation::Silu] {
        check_overwrites("activation", inp.len(), |d| {
            cpu.activation_backward(d, &dout, &inp, act)
        });
        let half = hidden / 2;
        let gated_dout = common::uniform(&mut rng, rows * half, 1.0);
        check_overwrites("glu", inp.len(), |d| {
            cpu.glu_backward(d, &gated_dout, &inp, act, half)
        });
    }
    check_overwrites("dropout", dout.len(), |d| {
        cpu.dropout_backward(d, &dout, 0.5, 3)
    });
    let idx = vec![3, 1, 7];
    let picked = common::uniform(&mut rng, idx.len() * hidden, 1.0);
    check_overwrites("gather rows", rows * hidden, |d| {
        cpu.gather_rows_backward(d, &picked, &idx, hidden)
    });
}

#[test]
fn norm_backward_adds_into_dinp() {
    let cpu = Cpu::new();
    let mut rng = common::rng(23);
    let (rows, cols) = (4, 12);
    let params = common::uniform(&mut rng, 2 * cols, 1.0);
    let inp = common::uniform(&mut rng, rows * cols, 1.0);
    let dout = common::uniform(&mut rng, rows * cols, 1.0);
    for kind in [NormKind::Layernorm, NormKind::Rmsnorm] {
        let norm = Norm {
            kind,
            weight: Span {
                offset: 0,
                len: cols,
            },
            bias: Some(Span {
                offset: cols,
                len: cols,
            }),
            eps: 1e-5,
        };
        let (mut out, mut mean, mut rstd) =
            (vec![0.0; rows * cols], vec![0.0; rows], vec![0.0; rows]);
        cpu.norm_forward(&mut out, &mut mean, &mut rstd, &inp, &params, norm, cols);
        let backward = |dinp: &mut Vec<f32>| {
            let mut grads = vec![0.0; 2 * cols];
            cpu.norm_backward(
                dinp, &mut grads, &dout, &inp, &params, &mean, &rstd, norm, cols,
            );
        };
        let mut alone = vec![0.0; rows * cols];
        backward(&mut alone);
        let residual = common::uniform(&mut rng, rows * cols, 1.0);
        let mut summed = residual.clone();
        backward(&mut summed);
        for i in 0..rows * cols {
            assert_eq!(summed[i], residual[i] + alone[i], "{kind:?} dinp[{i}]");
        }
    }
}

/// Two elements, the first decayed (`decay_len = 1`), at step 2 with non-zero
/// moments. With grads (3, -4) the norm is 5; `max_norm = 2.5` halves them to
/// g' = (1.5, -2). Then, with β = (0.9, 0.99), lr = 0.1, wd = 0.1:
///   m = 0.9·(0.2, -0.1) + 0.1·g'    = (0.33, -0.29)
///   v = 0.99·(0.5, 0.3) + 0.01·g'²  = (0.5175, 0.337)
///   m̂ = m / (1 - 0.9²) = m / 0.19,  v̂ = v / (1 - 0.99²) = v / 0.0199
///   p₀ = 1 - 0.1·(m̂₀/√v̂₀ + 0.1·1) = 1 - 0.1·(1.736842/5.099512 + 0.1) = 0.9559410
///   p₁ = -2 - 0.1·(m̂₁/√v̂₁)       = -2 - 0.1·(-1.526316/4.115176)    = -1.9629101
/// Without clipping (max_norm = 0) the same arithmetic on g = (3, -4) gives
///   m = (0.48, -0.49), v = (0.585, 0.457), p = (0.9434053, -1.9461841).
#[test]
fn adamw_step_matches_hand_computation() {
    let cpu = Cpu::new();
    let hp = |max_norm| AdamW {
        lr: 0.1,
        beta1: 0.9,
        beta2: 0.99,
        eps: 1e-8,
        weight_decay: 0.1,
        step: 2,
        decay_len: 1,
        max_norm,
        skipped_slot: None,
    };
    let grads = vec![3.0, -4.0];
    let mut norm_sq = vec![-1.0, 25.0];
    let cases = [
        (2.5, [0.33, -0.29], [0.5175, 0.337], [0.955_941, -1.962_91]),
        (
            0.0,
            [0.48, -0.49],
            [0.585, 0.457],
            [0.943_405_3, -1.946_184_1],
        ),
    ];
    for (max_norm, m_expected, v_expected, p_expected) in cases {
        let (mut params, mut m, mut v) = (vec![1.0, -2.0], vec![0.2, -0.1], vec![0.5, 0.3]);
        cpu.adamw_step(
            &mut params,
            &grads,
            &mut m,
            &mut v,
            &mut norm_sq,
            1,
            hp(max_norm),
        );
        for i in 0..2 {
            let close = |a: f32, b: f32| (a - b).abs() <= 1e-6 * b.abs().max(1.0);
            assert!(
                close(m[i], m_expected[i]),
                "max_norm {max_norm}: m[{i}] = {}",
                m[i]
            );
            assert!(
                close(v[i], v_expected[i]),
                "max_norm {max_norm}: v[{i}] = {}",
                v[i]
            );
            assert!(
                close(params[i], p_expected[i]),
                "max_norm {max_norm}: p[{i}] = {}",
                params[i]
            );
        }
    }
}

#[test]
fn grad_norm_squared_sums_squares() {
    let cpu = Cpu::new();
    let grads: Vec<f32> = (0..100_000).map(|i| (i % 7) as f32 - 3.0).collect();
    let expected: f64 = grads.iter().map(|&g| (g * g) as f64).sum();
    let mut out = vec![0.0; 3];
    cpu.grad_norm_squared(&mut out, 2, &grads);
    assert_eq!(out, vec![0.0, 0.0, expected as f32]);
}

#[test]
fn cross_entropy_of_uniform_logits_is_ln_vocab() {
    let cpu = Cpu::new();
    let vocab = 8192;
    let targets = vec![17, IGNORE, 8191];
    let mut logits = vec![0.37; targets.len() * vocab];
    let mut losses = vec![f32::NAN; targets.len()];
    cpu.cross_entropy(&mut losses, &mut logits, &targets, vocab, Some(2.0));
    let ln_vocab = (vocab as f32).ln();
    assert!(
        (losses[0] - ln_vocab).abs() < 1e-5 * ln_vocab,
        "{} vs ln {vocab}",
        losses[0]
    );
    assert!((losses[2] - ln_vocab).abs() < 1e-5 * ln_vocab);
    assert_eq!(losses[1], 0.0);
    // The gradient is 2·(1/vocab - onehot).
    assert!((logits[0] - 2.0 / vocab as f32).abs() < 1e-9);
    assert!((logits[17] - (2.0 / vocab as f32 - 2.0)).abs() < 1e-6);
}

#[test]
fn top1_hits_follow_the_first_argmax() {
    let cpu = Cpu::new();
    let (logits, targets, vocab, expected) = common::top1_case();
    let mut hits = vec![f32::NAN; targets.len()];
    cpu.top1_hits(&mut hits, &logits, &targets, vocab);
    assert_eq!(hits, expected);
}

#[test]
fn sum_into_accumulates_scaled_sums() {
    let cpu = Cpu::new();
    let mut stats = cpu.upload(&[1.0, 2.0]);
    cpu.sum_into(&mut stats, 1, &vec![1.0, 2.0, 3.0], 0.5);
    assert_eq!(cpu.download(&stats), vec![1.0, 5.0]);
    assert!(cpu.name().starts_with("cpu ("));
}

/// A small transformer-like stack, large enough that gemm and every op split
/// their work across threads: embedding → LayerNorm → qkv → rotary →
/// attention → projection + residual → RMSNorm → GLU feed-forward → logits →
/// cross-entropy, and the backward of all of it. Returns the losses and the
/// gradients of every parameter.
fn stack_step(cpu: &Cpu) -> (Vec<f32>, Vec<f32>) {
    let (batch, seq, hidden, heads, ffn, vocab) = (4, 64, 128, 4, 256, 2048);
    let rows = batch * seq;
    let shape = AttentionShape {
        batch,
        seq,
        heads,
        head_dim: hidden / heads,
        causal: true,
    };
    let mut offset = 0;
    let mut span = |len| {
        let s = Span { offset, len };
        offset += len;
        s
    };
    let embed = span(vocab * hidden);
    let ln1 = Norm {
        kind: NormKind::Layernorm,
        weight: span(hidden),
        bias: Some(span(hidden)),
        eps: 1e-5,
    };
    let qkv_layer = Linear {
        weight: span(3 * hidden * hidden),
        bias: Some(span(3 * hidden)),
    };
    let proj = Linear {
        weight: span(hidden * hidden),
        bias: None,
    };
    let ln2 = Norm {
        kind: NormKind::Rmsnorm,
        weight: span(hidden),
        bias: None,
        eps: 1e-5,
    };
    let up = Linear {
        weight: span(2 * ffn * hidden),
        bias: Some(span(2 * ffn)),
    };
    let down = Linear {
        weight: span(hidden * ffn),
        bias: None,
    };
    let head = Linear {
        weight: span(vocab * hidden),
        bias: None,
    };
    let len = offset;

    let mut rng = common::rng(24);
    let params = common::uniform(&mut rng, len, 0.1);
    let mut ids = common::ids(&mut rng, rows, vocab as u32);
    // The ids double as targets; one target is ignored (its input reads token 0).
    ids[5] = IGNORE;
    let inputs: Vec<u32> = ids
        .iter()
        .map(|&i| if i == IGNORE { 0 } else { i })
        .collect();
    let mm = |n, k| MatmulShape { m: rows, k, n };

    // Forward.
    let mut x = vec![0.0; rows * hidden];
    cpu.embedding_forward(&mut x, &inputs, &params, embed, hidden);
    let (mut h1, mut mean1, mut rstd1) =
        (vec![0.0; rows * hidden], vec![0.0; rows], vec![0.0; rows]);
    cpu.norm_forward(&mut h1, &mut mean1, &mut rstd1, &x, &params, ln1, hidden);
    let mut qkv = vec![0.0; rows * 3 * hidden];
    cpu.matmul_forward(&mut qkv, &h1, &params, qkv_layer, mm(3 * hidden, hidden));
    cpu.rotary_forward(&mut qkv, shape, 10000.0);
    let (mut att, mut saved) = (
        vec![0.0; rows * hidden],
        vec![0.0; cpu.attention_saved_len(shape)],
    );
    cpu.attention_forward(&mut att, &mut saved, &qkv, shape);
    let mut projected = vec![0.0; rows * hidden];
    cpu.matmul_forward(&mut projected, &att, &params, proj, mm(hidden, hidden));
    let mut x2 = vec![0.0; rows * hidden];
    cpu.add(&mut x2, &x, &projected);
    let (mut h2, mut mean2, mut rstd2) =
        (vec![0.0; rows * hidden], vec![0.0; rows], vec![0.0; rows]);
    cpu.norm_forward(&mut h2, &mut mean2, &mut rstd2, &x2, &params, ln2, hidden);
    let mut gated = vec![0.0; rows * 2 * ffn];
    cpu.matmul_forward(&mut gated, &h2, &params, up, mm(2 * ffn, hidden));
    let mut act = vec![0.0; rows * ffn];
    cpu.glu_forward(&mut act, &gated, Activation::Silu, ffn);
    let mut dropped = vec![0.0; rows * ffn];
    cpu.dropout_forward(&mut dropped, &act, 0.1, 5);
    let mut ff = vec![0.0; rows * hidden];
    cpu.matmul_forward(&mut ff, &dropped, &params, down, mm(hidden, ffn));
    let mut x3 = vec![0.0; rows * hidden];
    cpu.add(&mut x3, &x2, &ff);
    let mut logits = vec![0.0; rows * vocab];
    cpu.matmul_forward(&mut logits, &x3, &params, head, mm(vocab, hidden));
    let mut losses = vec![0.0; rows];
    cpu.cross_entropy(
        &mut losses,
        &mut logits,
        &ids,
        vocab,
        Some(1.0 / rows as f32),
    );

    // Backward; `logits` now holds its gradient.
    let mut grads = vec![0.0; len];
    let mut dx3 = vec![0.0; rows * hidden];
    cpu.matmul_backward(
        Some(&mut dx3),
        false,
        &mut grads,
        &logits,
        &x3,
        &params,
        head,
        mm(vocab, hidden),
    );
    let mut ddropped = vec![0.0; rows * ffn];
    cpu.matmul_backward(
        Some(&mut ddropped),
        false,
        &mut grads,
        &dx3,
        &dropped,
        &params,
        down,
        mm(hidden, ffn),
    );
    let mut dact = vec![0.0; rows * ffn];
    cpu.dropout_backward(&mut dact, &ddropped, 0.1, 5);
    let mut dgated = vec![0.0; rows * 2 * ffn];
    cpu.glu_backward(&mut dgated, &dact, &gated, Activation::Silu, ffn);
    let mut dh2 = vec![0.0; rows * hidden];
    cpu.matmul_backward(
        Some(&mut dh2),
        false,
        &mut grads,
        &dgated,
        &h2,
        &params,
        up,
        mm(2 * ffn, hidden),
    );
    let mut dx2 = dx3; // the residual path, then the norm adds into it
    cpu.norm_backward(
        &mut dx2, &mut grads, &dh2, &x2, &params, &mean2, &rstd2, ln2, hidden,
    );
    let mut datt = vec![0.0; rows * hidden];
    cpu.matmul_backward(
        Some(&mut datt),
        false,
        &mut grads,
        &dx2,
        &att,
        &params,
        proj,
        mm(hidden, hidden),
    );
    let mut dqkv = vec![0.0; rows * 3 * hidden];
    cpu.attention_backward(&mut dqkv, &datt, &att, &qkv, &saved, shape);
    cpu.rotary_backward(&mut dqkv, shape, 10000.0);
    let mut dh1 = vec![0.0; rows * hidden];
    cpu.matmul_backward(
        Some(&mut dh1),
        false,
        &mut grads,
        &dqkv,
        &h1,
        &params,
        qkv_layer,
        mm(3 * hidden, hidden),
    );
    let mut dx = dx2;
    cpu.norm_backward(
        &mut dx, &mut grads, &dh1, &x, &params, &mean1, &rstd1, ln1, hidden,
    );
    cpu.embedding_backward(&mut grads, embed, &dx, &inputs, hidden);
    let mut norm_sq = vec![0.0];
    cpu.grad_norm_squared(&mut norm_sq, 0, &grads);
    let (mut p, mut m, mut v) = (params, vec![0.0; len], vec![0.0; len]);
    let hp = AdamW {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.98,
        eps: 1e-6,
        weight_decay: 0.01,
        step: 1,
        decay_len: len / 2,
        max_norm: 0.5,
        skipped_slot: None,
    };
    cpu.adamw_step(&mut p, &grads, &mut m, &mut v, &mut norm_sq, 0, hp);
    grads.extend(p);
    (losses, grads)
}

#[test]
fn same_inputs_give_identical_bits() {
    let cpu = Cpu::new();
    let first = stack_step(&cpu);
    let second = stack_step(&cpu);
    assert!(first.0.iter().all(|l| l.is_finite()) && first.1.iter().all(|g| g.is_finite()));
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert!(
        bits(&first.0) == bits(&second.0),
        "losses differ between runs"
    );
    assert!(
        bits(&first.1) == bits(&second.1),
        "gradients or updated parameters differ between runs"
    );
}

#[test]
fn thread_count_does_not_change_bits() {
    let run_with = |threads| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| stack_step(&Cpu::new()))
    };
    let (one, three) = (run_with(1), run_with(3));
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert!(
        bits(&one.0) == bits(&three.0),
        "losses depend on the thread count"
    );
    assert!(
        bits(&one.1) == bits(&three.1),
        "gradients depend on the thread count"
    );
}

#[test]
fn empty_shapes_are_no_ops() {
    let cpu = Cpu::new();
    let params = vec![1.0; 12];
    let layer = Linear {
        weight: Span { offset: 0, len: 8 },
        bias: Some(Span { offset: 8, len: 4 }),
    };
    let shape = MatmulShape { m: 0, k: 2, n: 4 };
    let (mut out, mut dinp, mut grads) = (vec![], vec![], vec![0.0; 12]);
    cpu.matmul_forward(&mut out, &vec![], &params, layer, shape);
    cpu.matmul_backward(
        Some(&mut dinp),
        true,
        &mut grads,
        &vec![],
        &vec![],
        &params,
        layer,
        shape,
    );
    assert!(grads.iter().all(|&g| g == 0.0));

    let shape = AttentionShape {
        batch: 0,
        seq: 4,
        heads: 2,
        head_dim: 2,
        causal: true,
    };
    let (mut out, mut saved, mut dqkv) = (vec![], vec![], vec![]);
    cpu.attention_forward(&mut out, &mut saved, &vec![], shape);
    cpu.attention_backward(&mut dqkv, &vec![], &out, &vec![], &saved, shape);

    let (mut losses, mut logits) = (vec![], vec![]);
    cpu.cross_entropy(&mut losses, &mut logits, &vec![], 5, Some(1.0));
    let mut norm_sq = vec![0.0];
    cpu.grad_norm_squared(&mut norm_sq, 0, &vec![]);
    assert_eq!(norm_sq, vec![0.0]);
}

/// `CRAM_FP8=forward` on the CPU rounds the operands of the products the GPU
/// would run in FP8 (outputs of 2048 and wider, sizes multiples of 16) to
/// E4M3 with one scale per tensor, and leaves every other product exact.
#[test]
fn fp8_forward_rounds_only_wide_products() {
    let (m, k) = (32, 64);
    let mut rng = common::rng(30);
    let inp = common::uniform(&mut rng, m * k, 1.0);
    for (n, wide) in [(2048, true), (768, false), (2056, false)] {
        let params = common::uniform(&mut rng, n * k, 0.2);
        let layer = Linear {
            weight: Span {
                offset: 0,
                len: n * k,
            },
            bias: None,
        };
        let shape = MatmulShape { m, k, n };
        let product = |cpu: Cpu| {
            let mut out = vec![0f32; m * n];
            cpu.matmul_forward(&mut out, &inp, &params, layer, shape);
            out
        };
        let exact = product(Cpu::new().with_fp8(Fp8Switch::default()));
        let fp8 = product(Cpu::new().with_fp8(Fp8Switch {
            normed: true,
            cast: true,
        }));
        let scale = exact.iter().fold(0f32, |a, x| a.max(x.abs()));
        let diff = exact
            .iter()
            .zip(&fp8)
            .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
        if wide {
            // Each operand within 2⁻⁴ of itself, most of it averaging out over k.
            assert!(
                diff > 1e-4 * scale && diff < 6e-2 * scale,
                "n {n}: FP8 rounding moved the product by {diff} of {scale}"
            );
        } else {
            assert_eq!(diff, 0.0, "n {n}: not an FP8 shape, so exact");
        }
    }
}
