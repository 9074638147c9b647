//! Every CPU op's backward against central finite differences of its forward.
//!
//! Method: random inputs and a random projection `r`; the loss is
//! `L = Σ r · forward(x)`, summed in f64 from the op's f32 outputs. The
//! backward, fed `dout = r`, must give `dL/dx` for every input and every
//! parameter, compared with `(L(x + h) - L(x - h)) / 2h` at a sample of
//! coordinates (all of them for small tensors).
//!
//! Tolerance: `|analytic - numeric| <= ATOL + RTOL · max(|analytic|, |numeric|)`.
//! With h = 1e-2 on inputs of order 1, the truncation error of the central
//! difference is O(h²·f''') ≈ 1e-5 relative. The forward is deterministic, so
//! outputs that x does not touch cancel exactly in L(x+h) - L(x-h); what is
//! left is the f32 rounding of the touched outputs, about 1e-7·|out|/h ≈ 1e-5
//! absolute. RTOL = 1e-3 and ATOL = 1e-4 leave a margin of 10× over both
//! while still catching a wrong formula: the tanh approximation of GELU's
//! derivative is off by ~1e-3 absolute near |x| = 2, and a dropped term in a
//! norm or softmax backward is off by far more.

mod common;

use cram::backend::cpu::Cpu;
use cram::backend::{
    Activation, ActivationOps, AttentionOps, AttentionShape, EmbeddingOps, Linear, LossOps,
    MatmulOps, MatmulShape, Norm, NormKind, NormOps, Span, IGNORE,
};
use rand::Rng;

const H: f32 = 1e-2;
const RTOL: f64 = 1e-3;
const ATOL: f64 = 1e-4;
/// Coordinates checked per tensor when it has more than this many.
const SAMPLES: usize = 48;

/// `Σ r·out` in f64.
fn project(out: &[f32], r: &[f32]) -> f64 {
    assert_eq!(out.len(), r.len());
    out.iter().zip(r).map(|(&o, &r)| o as f64 * r as f64).sum()
}

/// Checks that `analytic` is the gradient of `loss` at `x`.
fn check(name: &str, x: &[f32], analytic: &[f32], loss: impl Fn(&Vec<f32>) -> f64) {
    assert_eq!(x.len(), analytic.len(), "{name}: gradient length");
    let mut rng = common::rng(x.len() as u64);
    let coords: Vec<usize> = if x.len() <= SAMPLES {
        (0..x.len()).collect()
    } else {
        (0..SAMPLES).map(|_| rng.random_range(0..x.len())).collect()
    };
    let mut probe = x.to_vec();
    let (mut worst, mut largest) = (0f64, 0f64);
    for &i in &coords {
        let (plus, minus) = (x[i] + H, x[i] - H);
        probe[i] = plus;
        let up = loss(&probe);
        probe[i] = minus;
        let down = loss(&probe);
        probe[i] = x[i];
        // Divide by the step actually taken after f32 rounding.
        let numeric = (up - down) / (plus as f64 - minus as f64);
        let analytic = analytic[i] as f64;
        let tolerance = ATOL + RTOL * analytic.abs().max(numeric.abs());
        let error = (analytic - numeric).abs();
        assert!(
            error <= tolerance,
            "{name}[{i}]: analytic {analytic:.6e}, numeric {numeric:.6e}, error {error:.2e} > tolerance {tolerance:.2e}"
        );
        worst = worst.max(error / tolerance);
        largest = largest.max(numeric.abs());
    }
    assert!(
        largest > 1e-3,
        "{name}: the gradient vanishes on every sampled coordinate, so the check proves nothing"
    );
    eprintln!(
        "{name}: {} coordinates, worst error {:.1}% of tolerance",
        coords.len(),
        worst * 100.0
    );
}

/// Spans for tensors of the given sizes, each after a 3-element gap, so that
/// an op reading or writing outside its spans shows up; and the total length.
fn layout(sizes: &[usize]) -> (Vec<Span>, usize) {
    let mut offset = 0;
    let spans = sizes
        .iter()
        .map(|&len| {
            offset += 3;
            let span = Span { offset, len };
            offset += len;
            span
        })
        .collect();
    (spans, offset + 3)
}

#[test]
fn embedding() {
    let cpu = Cpu::new();
    let mut rng = common::rng(1);
    let (vocab, cols, rows) = (11, 6, 9);
    let (spans, len) = layout(&[vocab * cols]);
    let params = common::uniform(&mut rng, len, 1.0);
    let mut ids = common::ids(&mut rng, rows, vocab as u32);
    ids[rows - 1] = ids[0]; // a repeated id must receive both rows' gradients
    let r = common::uniform(&mut rng, rows * cols, 1.0);
    let mut grads = vec![0.0; len];
    cpu.embedding_backward(&mut grads, spans[0], &r, &ids, cols);
    check("embedding table", &params, &grads, |params| {
        let mut out = vec![0.0; rows * cols];
        cpu.embedding_forward(&mut out, &ids, params, spans[0], cols);
        project(&out, &r)
    });
}

#[test]
fn learned_positions() {
    let cpu = Cpu::new();
    let mut rng = common::rng(2);
    let (batch, seq, max_positions, cols) = (3, 5, 7, 4);
    let (spans, len) = layout(&[max_positions * cols]);
    let params = common::uniform(&mut rng, len, 1.0);
    let x = common::uniform(&mut rng, batch * seq * cols, 1.0);
    let r = common::uniform(&mut rng, x.len(), 1.0);
    let mut grads = vec![0.0; len];
    cpu.learned_positions_backward(&mut grads, spans[0], &r, seq, cols);
    check("learned positions table", &params, &grads, |params| {
        let mut out = x.clone();
        cpu.learned_positions_forward(&mut out, params, spans[0], seq, cols);
        project(&out, &r)
    });
}

#[test]
fn sinusoidal_positions() {
    let cpu = Cpu::new();
    let mut rng = common::rng(3);
    let (batch, seq, cols) = (2, 6, 8);
    let (spans, len) = layout(&[1]);
    let params = common::uniform(&mut rng, len, 1.0);
    let x = common::uniform(&mut rng, batch * seq * cols, 1.0);
    let r = common::uniform(&mut rng, x.len(), 1.0);
    let mut grads = vec![0.0; len];
    cpu.sinusoidal_positions_backward(&mut grads, spans[0], &r, seq, cols);
    check("sinusoidal positions scale", &params, &grads, |params| {
        let mut out = x.clone();
        cpu.sinusoidal_positions_forward(&mut out, params, spans[0], seq, cols);
        project(&out, &r)
    });
}

fn attention_shape(causal: bool) -> AttentionShape {
    AttentionShape {
        batch: 2,
        seq: 5,
        heads: 2,
        head_dim: 4,
        causal,
    }
}

#[test]
fn rotary() {
    let cpu = Cpu::new();
    let mut rng = common::rng(4);
    let shape = attention_shape(false);
    let theta = 100.0;
    let qkv = common::uniform(&mut rng, shape.rows() * 3 * shape.hidden(), 1.0);
    let r = common::uniform(&mut rng, qkv.len(), 1.0);
    let mut dqkv = r.clone();
    cpu.rotary_backward(&mut dqkv, shape, theta);
    check("rotary qkv", &qkv, &dqkv, |qkv| {
        let mut out = qkv.clone();
        cpu.rotary_forward(&mut out, shape, theta);
        project(&out, &r)
    });
}

fn check_norm(name: &str, kind: NormKind, bias: bool) {
    let cpu = Cpu::new();
    let mut rng = common::rng(5);
    let (rows, cols) = (6, 10);
    let (spans, len) = layout(&[cols, cols]);
    let mut params = common::uniform(&mut rng, len, 0.5);
    params[spans[0].range()].iter_mut().for_each(|w| *w += 1.0);
    let norm = Norm {
        kind,
        weight: spans[0],
        bias: bias.then_some(spans[1]),
        eps: 1e-5,
    };
    // An offset, so that LayerNorm's centring matters.
    let inp: Vec<f32> = common::uniform(&mut rng, rows * cols, 1.0)
        .into_iter()
        .map(|x| x + 0.5)
        .collect();
    let r = common::uniform(&mut rng, rows * cols, 1.0);
    let forward = |inp: &Vec<f32>, params: &Vec<f32>| {
        let (mut out, mut mean, mut rstd) =
            (vec![0.0; rows * cols], vec![0.0; rows], vec![0.0; rows]);
        cpu.norm_forward(&mut out, &mut mean, &mut rstd, inp, params, norm, cols);
        (out, mean, rstd)
    };
    let (_, mean, rstd) = forward(&inp, &params);
    if kind == NormKind::Rmsnorm {
        assert!(mean.iter().all(|&m| m == 0.0), "RMSNorm writes a zero mean");
    }
    let (mut dinp, mut grads) = (vec![0.0; rows * cols], vec![0.0; len]);
    cpu.norm_backward(
        &mut dinp, &mut grads, &r, &inp, &params, &mean, &rstd, norm, cols,
    );
    check(&format!("{name} input"), &inp, &dinp, |inp| {
        project(&forward(inp, &params).0, &r)
    });
    check(&format!("{name} params"), &params, &grads, |params| {
        project(&forward(&inp, params).0, &r)
    });
}

#[test]
fn layernorm_with_bias() {
    check_norm("layernorm+bias", NormKind::Layernorm, true);
}

#[test]
fn layernorm_without_bias() {
    check_norm("layernorm", NormKind::Layernorm, false);
}

#[test]
fn rmsnorm() {
    check_norm("rmsnorm", NormKind::Rmsnorm, false);
}

#[test]
fn rmsnorm_with_bias() {
    check_norm("rmsnorm+bias", NormKind::Rmsnorm, true);
}

fn check_matmul(name: &str, bias: bool, accumulate: bool) {
    let cpu = Cpu::new();
    let mut rng = common::rng(6);
    let shape = MatmulShape { m: 5, k: 7, n: 6 };
    let (spans, len) = layout(&[shape.n * shape.k, shape.n]);
    let layer = Linear {
        weight: spans[0],
        bias: bias.then_some(spans[1]),
    };
    let params = common::uniform(&mut rng, len, 1.0);
    let inp = common::uniform(&mut rng, shape.m * shape.k, 1.0);
    let r = common::uniform(&mut rng, shape.m * shape.n, 1.0);
    let forward = |inp: &Vec<f32>, params: &Vec<f32>| {
        let mut out = vec![0.0; shape.m * shape.n];
        cpu.matmul_forward(&mut out, inp, params, layer, shape);
        project(&out, &r)
    };
    // With `accumulate`, the gradient is what the backward adds to a non-zero dinp.
    let before = if accumulate {
        common::uniform(&mut rng, inp.len(), 1.0)
    } else {
        vec![f32::NAN; inp.len()]
    };
    let (mut dinp, mut grads) = (before.clone(), vec![0.0; len]);
    cpu.matmul_backward(
        Some(&mut dinp),
        accumulate,
        &mut grads,
        &r,
        &inp,
        &params,
        layer,
        shape,
    );
    if accumulate {
        dinp.iter_mut().zip(&before).for_each(|(d, b)| *d -= b);
    }
    check(&format!("{name} input"), &inp, &dinp, |inp| {
        forward(inp, &params)
    });
    check(&format!("{name} params"), &params, &grads, |params| {
        forward(&inp, params)
    });
}

#[test]
fn matmul_with_bias() {
    check_matmul("matmul+bias", true, false);
}

#[test]
fn matmul_without_bias() {
    check_matmul("matmul", false, false);
}

#[test]
fn matmul_accumulating_into_dinp() {
    check_matmul("matmul+bias accumulate", true, true);
    check_matmul("matmul accumulate", false, true);
}

fn check_attention(name: &str, causal: bool) {
    let cpu = Cpu::new();
    let mut rng = common::rng(7);
    let shape = attention_shape(causal);
    let (rows, hidden, seq) = (shape.rows(), shape.hidden(), shape.seq);
    let qkv = common::uniform(&mut rng, rows * 3 * hidden, 1.5);
    let r = common::uniform(&mut rng, rows * hidden, 1.0);
    let forward = |qkv: &Vec<f32>| {
        let (mut out, mut saved) = (
            vec![0.0; rows * hidden],
            vec![0.0; cpu.attention_saved_len(shape)],
        );
        cpu.attention_forward(&mut out, &mut saved, qkv, shape);
        (out, saved)
    };
    let (out, saved) = forward(&qkv);
    for (i, p) in saved.chunks(seq).enumerate() {
        let t = i % seq;
        let total: f32 = p.iter().sum();
        assert!(
            (total - 1.0).abs() < 1e-5,
            "{name}: probabilities of query {t} sum to {total}"
        );
        if causal {
            assert!(
                p[t + 1..].iter().all(|&x| x == 0.0),
                "{name}: query {t} sees the future"
            );
        }
    }
    let mut dqkv = vec![f32::NAN; qkv.len()];
    cpu.attention_backward(&mut dqkv, &r, &out, &qkv, &saved, shape);
    check(name, &qkv, &dqkv, |qkv| project(&forward(qkv).0, &r));
}

#[test]
fn attention_bidirectional() {
    check_attention("attention", false);
}

#[test]
fn attention_causal() {
    check_attention("causal attention", true);
}

fn check_activation(name: &str, act: Activation) {
    let cpu = Cpu::new();
    let mut rng = common::rng(8);
    let inp = common::uniform(&mut rng, 60, 4.0);
    let r = common::uniform(&mut rng, inp.len(), 1.0);
    let mut dinp = vec![f32::NAN; inp.len()];
    cpu.activation_backward(&mut dinp, &r, &inp, act);
    check(name, &inp, &dinp, |inp| {
        let mut out = vec![0.0; inp.len()];
        cpu.activation_forward(&mut out, inp, act);
        project(&out, &r)
    });
}

#[test]
fn gelu() {
    check_activation("gelu", Activation::Gelu);
}

#[test]
fn silu() {
    check_activation("silu", Activation::Silu);
}

fn check_glu(name: &str, act: Activation) {
    let cpu = Cpu::new();
    let mut rng = common::rng(9);
    let (rows, half) = (4, 5);
    let inp = common::uniform(&mut rng, rows * 2 * half, 3.0);
    let r = common::uniform(&mut rng, rows * half, 1.0);
    let mut dinp = vec![f32::NAN; inp.len()];
    cpu.glu_backward(&mut dinp, &r, &inp, act, half);
    check(name, &inp, &dinp, |inp| {
        let mut out = vec![0.0; rows * half];
        cpu.glu_forward(&mut out, inp, act, half);
        project(&out, &r)
    });
}

#[test]
fn glu_gelu() {
    check_glu("glu (gelu)", Activation::Gelu);
}

#[test]
fn glu_silu() {
    check_glu("glu (silu)", Activation::Silu);
}

#[test]
fn add() {
    let cpu = Cpu::new();
    let mut rng = common::rng(10);
    let (a, b) = (
        common::uniform(&mut rng, 30, 1.0),
        common::uniform(&mut rng, 30, 1.0),
    );
    let mut out = vec![0.0; 30];
    cpu.add(&mut out, &a, &b);
    for i in 0..30 {
        assert_eq!(out[i], a[i] + b[i]);
    }
}

#[test]
fn dropout() {
    let cpu = Cpu::new();
    let mut rng = common::rng(11);
    let (p, seed) = (0.3, 17);
    let inp = common::uniform(&mut rng, 64, 1.0);
    let r = common::uniform(&mut rng, inp.len(), 1.0);
    let mut dinp = vec![f32::NAN; inp.len()];
    cpu.dropout_backward(&mut dinp, &r, p, seed);
    check("dropout", &inp, &dinp, |inp| {
        let mut out = vec![0.0; inp.len()];
        cpu.dropout_forward(&mut out, inp, p, seed);
        project(&out, &r)
    });
}

#[test]
fn dropout_keeps_one_minus_p_and_rescales() {
    let cpu = Cpu::new();
    let (n, p) = (200_000, 0.25f32);
    let inp = vec![1.0; n];
    let mut out = vec![0.0; n];
    cpu.dropout_forward(&mut out, &inp, p, 99);
    let kept = out.iter().filter(|&&x| x != 0.0).count();
    assert!(out.iter().all(|&x| x == 0.0 || x == 1.0 / (1.0 - p)));
    // Binomial standard deviation: sqrt(n·p·(1-p)) ≈ 194; allow 5 of them.
    let expected = n as f64 * (1.0 - p as f64);
    assert!(
        (kept as f64 - expected).abs() < 1000.0,
        "kept {kept} of {n}, expected {expected}"
    );
    // Another seed draws another mask.
    let mut other = vec![0.0; n];
    cpu.dropout_forward(&mut other, &inp, p, 100);
    assert_ne!(out, other);
}

#[test]
fn gather_rows() {
    let cpu = Cpu::new();
    let mut rng = common::rng(12);
    let (rows, cols) = (7, 3);
    let idx = vec![5, 0, 3];
    let inp = common::uniform(&mut rng, rows * cols, 1.0);
    let r = common::uniform(&mut rng, idx.len() * cols, 1.0);
    let mut dinp = vec![f32::NAN; inp.len()];
    cpu.gather_rows_backward(&mut dinp, &r, &idx, cols);
    check("gather rows", &inp, &dinp, |inp| {
        let mut out = vec![0.0; idx.len() * cols];
        cpu.gather_rows_forward(&mut out, inp, &idx, cols);
        project(&out, &r)
    });
}

#[test]
fn cross_entropy() {
    let cpu = Cpu::new();
    let mut rng = common::rng(13);
    let (rows, vocab, dscale) = (6, 9, 0.7f32);
    let mut targets = common::ids(&mut rng, rows, vocab as u32);
    targets[2] = IGNORE;
    targets[4] = IGNORE;
    let logits = common::uniform(&mut rng, rows * vocab, 3.0);
    let forward = |logits: &Vec<f32>| {
        let mut losses = vec![f32::NAN; rows];
        cpu.cross_entropy(&mut losses, &mut logits.clone(), &targets, vocab, None);
        losses
    };
    // L = dscale · Σ losses, whose gradient the op writes over the logits.
    let mut dlogits = logits.clone();
    let mut losses = vec![f32::NAN; rows];
    cpu.cross_entropy(&mut losses, &mut dlogits, &targets, vocab, Some(dscale));
    assert_eq!(
        losses,
        forward(&logits),
        "the loss does not depend on dscale"
    );
    assert_eq!(
        (losses[2], losses[4]),
        (0.0, 0.0),
        "ignored rows have no loss"
    );
    assert!(dlogits[2 * vocab..3 * vocab].iter().all(|&g| g == 0.0));
    assert!(dlogits[4 * vocab..5 * vocab].iter().all(|&g| g == 0.0));
    check("cross entropy", &logits, &dlogits, |logits| {
        dscale as f64 * forward(logits).iter().map(|&l| l as f64).sum::<f64>()
    });
    // Against an f64 reference of -log softmax.
    for (r, &target) in targets.iter().enumerate() {
        if target == IGNORE {
            continue;
        }
        let row: Vec<f64> = logits[r * vocab..(r + 1) * vocab]
            .iter()
            .map(|&x| x as f64)
            .collect();
        let log_sum = row.iter().map(|x| x.exp()).sum::<f64>().ln();
        let expected = log_sum - row[target as usize];
        assert!(
            (losses[r] as f64 - expected).abs() < 1e-5,
            "row {r}: {} vs {expected}",
            losses[r]
        );
    }
}

#[test]
fn mse_loss() {
    let cpu = Cpu::new();
    let mut rng = common::rng(17);
    let (rows, dscale) = (7, 0.3f32);
    let preds = common::uniform(&mut rng, rows, 2.0);
    let targets = common::uniform(&mut rng, rows, 2.0);
    let forward = |preds: &Vec<f32>| {
        let mut losses = vec![f32::NAN; rows];
        cpu.mse_loss(&mut losses, &mut preds.clone(), &targets, None);
        losses
    };
    let mut dpreds = preds.clone();
    let mut losses = vec![f32::NAN; rows];
    cpu.mse_loss(&mut losses, &mut dpreds, &targets, Some(dscale));
    assert_eq!(
        losses,
        forward(&preds),
        "the loss does not depend on dscale"
    );
    for r in 0..rows {
        let expected = (preds[r] as f64 - targets[r] as f64).powi(2);
        assert!((losses[r] as f64 - expected).abs() < 1e-6, "row {r}");
    }
    check("mse loss", &preds, &dpreds, |preds| {
        dscale as f64 * forward(preds).iter().map(|&l| l as f64).sum::<f64>()
    });
}
