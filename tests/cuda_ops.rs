//! Every CUDA op against the CPU reference on random inputs, and full
//! training steps of `tiny` and `crammed-bert` against the CPU step.
//!
//! GPU only: `#[ignore]`d here, run on the GPU machine with `--ignored`.
//! Each test builds the same inputs for both backends inside one generic
//! function. Inputs are rounded to bf16 first, so that both backends see the
//! same values and only the arithmetic differs.
//!
//! Tolerances (max |gpu − cpu| over max |cpu| of each output):
//! - bf16 outputs: 1.5e-2 — one bf16 rounding is 2⁻⁹ ≈ 2e-3 relative, and an
//!   op that reads a rounded input and rounds its result again stays within
//!   a few of those;
//! - f32 outputs from bf16 matmuls or reductions: 2e-2 (products of bf16
//!   operands summed in f32, compared with exact f32 products);
//! - exact ops (gathers, dropout masks, f32 AdamW): 1e-5.

mod common;

use cram::backend::cpu::Cpu;
use cram::backend::cuda::{Cuda, CudaSwitches, FlashBackward, FlashForward};
use cram::backend::fp8::Fp8Switch;
use cram::backend::{
    Activation, AdamW, AttentionShape, Backend, Device, Linear, MatmulShape, Norm, NormKind, Span,
    IGNORE,
};
use cram::config::Config;
use cram::model::upload_batch;
use cram::model::{Activations, Model};
use cram::optim::{STATS, STAT_LOSS, STAT_NORM_SQ};
use cram::train::bench::synthetic_batch;
use cram::train::{micro_step, Step, TrainState};

fn gpu() -> Cuda {
    Cuda::new(0).expect("these tests need a CUDA GPU")
}

/// The switches the caller's environment sets (`CRAM_FP8=blocks cuda_ops
/// ... full_step` runs the full steps in FP8), for a test to change one.
fn switches() -> CudaSwitches {
    CudaSwitches::from_env().expect("the CRAM_* switches")
}

/// The GPU with `switches`, whatever the environment says.
fn gpu_with(switches: CudaSwitches) -> Cuda {
    Cuda::with_switches(0, switches).expect("these tests need a CUDA GPU")
}

fn bf16_round(v: Vec<f32>) -> Vec<f32> {
    v.into_iter()
        .map(|x| half::bf16::from_f32(x).to_f32())
        .collect()
}

/// Random values in [-scale, scale), rounded to bf16.
fn rand_vals(seed: u64, len: usize, scale: f32) -> Vec<f32> {
    bf16_round(common::uniform(&mut common::rng(seed), len, scale))
}

fn act<B: Device>(be: &B, data: &[f32]) -> B::Buf {
    let mut b = be.alloc_activation(data.len());
    be.write(&mut b, 0, data);
    b
}

/// Named outputs of one op run.
type Outputs = Vec<(&'static str, Vec<f32>)>;

/// Each output's largest difference, relative to the CPU's largest value,
/// against `tol`. Every output is measured and printed before the test
/// fails, so that a failure shows which of them are wrong and which are not.
fn compare(op: &str, cpu: Outputs, gpu: Outputs, tol: f64) {
    let mut failed = Vec::new();
    for ((name, c), (_, g)) in cpu.iter().zip(&gpu) {
        assert_eq!(c.len(), g.len(), "{op}/{name}: lengths differ");
        let scale = c.iter().fold(0f64, |m, &x| m.max(x.abs() as f64)).max(1e-6);
        let (worst, at) = c
            .iter()
            .zip(g)
            .enumerate()
            .map(|(i, (&a, &b))| ((a as f64 - b as f64).abs(), i))
            .fold((0.0, 0), |m, x| if x.0 > m.0 { x } else { m });
        let rel = worst / scale;
        println!("{op}/{name}: max |Δ| {worst:.3e} = {rel:.2e} of max |cpu| {scale:.3e}");
        if !(rel <= tol && g.iter().all(|x| x.is_finite())) {
            failed.push(format!(
                "{op}/{name}: gpu {} vs cpu {} at {at}: {rel:.2e} > {tol:.1e}",
                g[at], c[at]
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// Runs `$body` (a generic function body over backend `$be`) on both
/// backends and compares the outputs it returns.
macro_rules! check {
    ($op:expr, $tol:expr, |$be:ident| $body:block) => {
        check!($op, $tol, switches(), |$be| $body)
    };
    // The GPU backend made with `$switches`.
    ($op:expr, $tol:expr, $switches:expr, |$be:ident| $body:block) => {{
        fn run<B: Backend>($be: &B) -> Outputs $body
        let cpu = run(&Cpu::new());
        let gpu = run(&gpu_with($switches));
        compare($op, cpu, gpu, $tol);
    }};
}

const BF: f64 = 1.5e-2;
const MM: f64 = 2e-2;
const EXACT: f64 = 1e-5;

#[test]
#[ignore = "needs a CUDA GPU"]
fn embeddings_and_positions() {
    check!("embedding", BF, |be| {
        let (rows, cols, vocab) = (96, 48, 50);
        let table = Span {
            offset: 3,
            len: vocab * cols,
        };
        let mut params = be.upload(&rand_vals(1, 3 + vocab * cols + 1, 1.0));
        let ids = be.upload_ids(&common::ids(&mut common::rng(2), rows, vocab as u32));
        let mut out = be.alloc_activation(rows * cols);
        be.embedding_forward(&mut out, &ids, &params, table, cols);
        let scale = Span {
            offset: 3 + vocab * cols,
            len: 1,
        };
        be.sinusoidal_positions_forward(&mut out, &params, scale, 16, cols);
        let dout = act(be, &rand_vals(3, rows * cols, 1.0));
        let mut grads = be.alloc(be.len(&params));
        be.embedding_backward(&mut grads, table, &dout, &ids, cols);
        be.sinusoidal_positions_backward(&mut grads, scale, &dout, 16, cols);
        let pos = Span {
            offset: 0,
            len: 16 * cols,
        };
        params = be.upload(&rand_vals(4, 16 * cols, 1.0));
        let mut x = be.alloc(rows * cols);
        be.learned_positions_forward(&mut x, &params, pos, 16, cols);
        let mut pgrads = be.alloc(16 * cols);
        be.learned_positions_backward(&mut pgrads, pos, &dout, 16, cols);
        // A period of 5 · 6 values, not a multiple of four: the
        // sinusoid's one-value-a-thread path (the one above takes four).
        let (seq, cols) = (5, 6);
        let mut odd = act(be, &rand_vals(5, 6 * seq * cols, 1.0));
        let scale = be.upload(&[0.7]);
        let one = Span { offset: 0, len: 1 };
        be.sinusoidal_positions_forward(&mut odd, &scale, one, seq, cols);
        let mut odd_grad = be.alloc(1);
        be.sinusoidal_positions_backward(&mut odd_grad, one, &dout, seq, cols);
        vec![
            ("forward", be.download(&out)),
            ("grads", be.download(&grads)),
            ("learned", be.download(&x)),
            ("learned_grads", be.download(&pgrads)),
            ("sinusoid_odd", be.download(&odd)),
            ("sinusoid_odd_grad", be.download(&odd_grad)),
        ]
    });
}

/// Head width 8 runs the four-pair kernel, 6 the scalar one; `f32` the
/// buffer precision the backward's f32 gradients use.
fn rotary_case<B: Backend>(be: &B, head_dim: usize, f32_buffer: bool) -> Outputs {
    let shape = AttentionShape {
        batch: 2,
        seq: 16,
        heads: 3,
        head_dim,
        causal: true,
    };
    let data = rand_vals(5, shape.rows() * 3 * shape.hidden(), 1.0);
    let buffer = |values: &[f32]| {
        if f32_buffer {
            let mut b = be.alloc(values.len());
            be.write(&mut b, 0, values);
            b
        } else {
            act(be, values)
        }
    };
    let mut qkv = buffer(&data);
    be.rotary_forward(&mut qkv, shape, 10000.0);
    let mut back = buffer(&be.download(&qkv));
    be.rotary_backward(&mut back, shape, 10000.0);
    vec![
        ("forward", be.download(&qkv)),
        ("round_trip", be.download(&back)),
    ]
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn rotary_forward_and_backward() {
    check!("rotary_vec4_bf16", BF, |be| { rotary_case(be, 8, false) });
    check!("rotary_vec4_f32", EXACT, |be| { rotary_case(be, 64, true) });
    check!("rotary_scalar_bf16", BF, |be| { rotary_case(be, 6, false) });
}

/// `cols` a multiple of 4 runs the kernels' four-wide path, any other the scalar one.
fn norm_case<B: Backend>(be: &B, kind: NormKind, bias: bool, cols: usize) -> Outputs {
    norm_rows_case(be, kind, bias, (70, cols), false)
}

/// A norm's forward and backward over `rows` × `cols`, its input f32 (the
/// residual stream) or bf16 (`bf16_input`, the default residual).
fn norm_rows_case<B: Backend>(
    be: &B,
    kind: NormKind,
    bias: bool,
    (rows, cols): (usize, usize),
    bf16_input: bool,
) -> Outputs {
    let mut pv = rand_vals(6, 2 * cols, 0.5);
    pv[..cols].iter_mut().for_each(|w| *w += 1.0);
    let params = be.upload(&pv);
    let norm = Norm {
        kind,
        weight: Span {
            offset: 0,
            len: cols,
        },
        bias: bias.then_some(Span {
            offset: cols,
            len: cols,
        }),
        eps: 1e-5,
    };
    // bf16 output and output gradient; the input gradient f32.
    let x = rand_vals(7, rows * cols, 2.0);
    let inp = if bf16_input {
        act(be, &x)
    } else {
        be.upload(&x)
    };
    let mut out = be.alloc_activation(rows * cols);
    let (mut mean, mut rstd) = (be.alloc(rows), be.alloc(rows));
    be.norm_forward(&mut out, &mut mean, &mut rstd, &inp, &params, norm, cols);
    let dout = act(be, &rand_vals(8, rows * cols, 1.0));
    let mut dinp = be.upload(&rand_vals(9, rows * cols, 1.0));
    let mut grads = be.alloc(2 * cols);
    // The new dinp also in bf16, as a pre-LN block's backward asks for it.
    let mut copy = be.alloc_activation(rows * cols);
    be.norm_backward_copy(
        (&mut dinp, &mut copy),
        &mut grads,
        &dout,
        &inp,
        &params,
        (&mean, &rstd),
        norm,
        cols,
    );
    vec![
        ("out", be.download(&out)),
        ("rstd", be.download(&rstd)),
        ("dinp", be.download(&dinp)),
        ("dinp_copy", be.download(&copy)),
        ("grads", be.download(&grads)),
    ]
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn layernorm_and_rmsnorm() {
    check!("layernorm", BF, |be| {
        norm_case(be, NormKind::Layernorm, true, 96)
    });
    check!("rmsnorm", BF, |be| {
        norm_case(be, NormKind::Rmsnorm, false, 96)
    });
    check!("layernorm_scalar", BF, |be| {
        norm_case(be, NormKind::Layernorm, true, 30)
    });
    check!("rmsnorm_scalar", BF, |be| {
        norm_case(be, NormKind::Rmsnorm, false, 30)
    });
    // Widths of 256·N (N ≤ 4) run the backward that holds a row in
    // registers; 6,000 rows are two or three a warp on a 132-SM GPU.
    check!("layernorm_768_bf16", BF, |be| {
        norm_rows_case(be, NormKind::Layernorm, true, (6000, 768), true)
    });
    check!("rmsnorm_512", BF, |be| {
        norm_rows_case(be, NormKind::Rmsnorm, false, (6000, 512), false)
    });
    check!("layernorm_1024", BF, |be| {
        norm_rows_case(be, NormKind::Layernorm, false, (300, 1024), false)
    });
    check!("rmsnorm_256_bf16", BF, |be| {
        norm_rows_case(be, NormKind::Rmsnorm, true, (300, 256), true)
    });
}

fn matmul_case<B: Backend>(be: &B, bias: bool, f32_input: bool) -> Outputs {
    let shape = MatmulShape {
        m: 100,
        k: 72,
        n: 136,
    };
    let MatmulShape { m, k, n } = shape;
    let params = be.upload(&rand_vals(10, n * k + n, 0.2));
    let layer = Linear {
        weight: Span {
            offset: 0,
            len: n * k,
        },
        bias: bias.then_some(Span {
            offset: n * k,
            len: n,
        }),
    };
    let x = rand_vals(11, m * k, 1.0);
    let inp = if f32_input {
        be.upload(&x)
    } else {
        act(be, &x)
    };
    let mut out = be.alloc_activation(m * n);
    be.matmul_forward(&mut out, &inp, &params, layer, shape);
    let dout = act(be, &rand_vals(12, m * n, 1.0));
    let mut dinp = be.upload(&rand_vals(13, m * k, 1.0));
    let mut grads = be.upload(&rand_vals(14, n * k + n, 1.0));
    be.matmul_backward(
        Some(&mut dinp),
        true,
        &mut grads,
        &dout,
        &inp,
        &params,
        layer,
        shape,
    );
    // The residual sum: f32 (the residual stream) and bf16 run the product's
    // epilogue, a mixed pair the two-pass fallback.
    let resid_vals = rand_vals(15, m * n, 1.0);
    let mut sums = Vec::new();
    for (resid_f32, out_f32) in [(true, true), (false, false), (true, false)] {
        let buffer = |f32_buffer: bool, values: &[f32]| {
            if f32_buffer {
                be.upload(values)
            } else {
                act(be, values)
            }
        };
        let resid = buffer(resid_f32, &resid_vals);
        let mut sum = buffer(out_f32, &vec![0.0; m * n]);
        let mut tmp = be.alloc_activation(m * n);
        be.matmul_forward_add(&mut sum, &resid, &mut tmp, &inp, &params, layer, shape);
        sums.push(be.download(&sum));
    }
    vec![
        ("out", be.download(&out)),
        ("dinp", be.download(&dinp)),
        ("grads", be.download(&grads)),
        ("sum_f32", sums[0].clone()),
        ("sum_bf16", sums[1].clone()),
        ("sum_mixed", sums[2].clone()),
    ]
}

/// A product wide enough for the FP8 forward (`CRAM_FP8=forward`; outputs
/// of 2048 and more), alone and with a bf16 residual in its epilogue, then
/// again after the weights changed (the FP8 weight copy must be cast anew),
/// then as a pre-norm input projection (`norm_matmul_forward`, LayerNorm
/// with a bias and RMSNorm without: the norm writes the E4M3 input). `k`
/// of 256·N runs the norm's row kernel, any other width its general path.
fn fp8_forward_case<B: Backend>(be: &B, k: usize) -> Outputs {
    let shape = MatmulShape { m: 64, k, n: 2048 };
    let MatmulShape { m, k, n } = shape;
    let mut params = be.upload(&rand_vals(20, n * k + n + 2 * k, 0.2));
    let layer = Linear {
        weight: Span {
            offset: 0,
            len: n * k,
        },
        bias: Some(Span {
            offset: n * k,
            len: n,
        }),
    };
    let inp = act(be, &rand_vals(21, m * k, 1.0));
    let mut out = be.alloc_activation(m * n);
    be.matmul_forward(&mut out, &inp, &params, layer, shape);
    let resid = act(be, &rand_vals(22, m * n, 1.0));
    let mut sum = be.alloc_activation(m * n);
    let mut tmp = be.alloc_activation(m * n);
    be.matmul_forward_add(&mut sum, &resid, &mut tmp, &inp, &params, layer, shape);
    be.write(&mut params, 0, &rand_vals(23, n * k, 0.5));
    let mut again = be.alloc_activation(m * n);
    be.matmul_forward(&mut again, &inp, &params, layer, shape);
    let mut outputs = vec![
        ("out", be.download(&out)),
        ("sum", be.download(&sum)),
        ("after_write", be.download(&again)),
    ];
    let mut gains = rand_vals(24, 2 * k, 0.5);
    gains[..k].iter_mut().for_each(|w| *w += 1.0);
    be.write(&mut params, n * k + n, &gains);
    let x = be.upload(&rand_vals(25, m * k, 2.0));
    for (kind, bias, names) in [
        (NormKind::Layernorm, true, ["normed", "norm_proj"]),
        (NormKind::Rmsnorm, false, ["rms_normed", "rms_proj"]),
    ] {
        let norm = Norm {
            kind,
            weight: Span {
                offset: n * k + n,
                len: k,
            },
            bias: bias.then_some(Span {
                offset: n * k + n + k,
                len: k,
            }),
            eps: 1e-5,
        };
        let mut normed = be.alloc_activation(m * k);
        let (mut mean, mut rstd) = (be.alloc(m), be.alloc(m));
        let mut projected = be.alloc_activation(m * n);
        let stats = (&mut normed, &mut mean, &mut rstd);
        be.norm_matmul_forward(&mut projected, stats, &x, &params, norm, layer, shape);
        outputs.push((names[0], be.download(&normed)));
        outputs.push((names[1], be.download(&projected)));
    }
    outputs
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn fp8_forward_matmul() {
    for k in [96, 256] {
        fp8_forward_at(k);
    }
}

fn fp8_forward_at(k: usize) {
    // E4M3 keeps 3 mantissa bits: each operand is within 2⁻⁴ of its value,
    // and the sum over k ≥ 96 products averages most of that away.
    const FP8: f64 = 6e-2;
    let cpu = fp8_forward_case(&Cpu::new(), k);
    // Backends made with the switch off and on, whatever the caller's
    // environment says (the tests after this one see it as it was).
    let with_fp8 = |fp8| gpu_with(CudaSwitches { fp8, ..switches() });
    let bf16 = fp8_forward_case(&with_fp8(Fp8Switch::default()), k);
    let fp8 = fp8_forward_case(&with_fp8(Fp8Switch::from_value("forward")), k);
    // FP8 really ran: its rounding shows against the bf16 product.
    let products = bf16
        .iter()
        .zip(&fp8)
        .filter(|((n, _), _)| !n.ends_with("normed"));
    for ((name, a), (_, b)) in products {
        let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
        let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        println!(
            "fp8/{name}: max |bf16 - fp8| = {:.4} of max |bf16|",
            diff / scale
        );
        assert!(
            diff > 2e-3 * scale,
            "fp8/{name}: the FP8 product equals the bf16 one (FP8 did not run)"
        );
    }
    compare(&format!("fp8_forward_k{k}"), cpu, fp8.clone(), FP8);
    // And against the CPU's emulation of the same FP8 rounding: only the
    // bf16 outputs and the order of the f32 sums differ.
    let emulated = fp8_forward_case(
        &Cpu::new().with_fp8(Fp8Switch {
            normed: true,
            cast: true,
        }),
        k,
    );
    compare(&format!("fp8_forward_emulated_k{k}"), emulated, fp8, 2e-2);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn matmuls() {
    check!("matmul", MM, |be| { matmul_case(be, false, false) });
    check!("matmul_bias_f32_input", MM, |be| {
        matmul_case(be, true, true)
    });
}

fn attention_case<B: Backend>(be: &B, dims: (usize, usize), causal: bool) -> Outputs {
    attention_rotary_case(be, dims, causal, None)
}

/// With `rope`, the backward is `attention_backward_rotary` at that theta:
/// on the CPU the attention backward and then the inverse rotation, on the
/// GPU's flash path one pass.
fn attention_rotary_case<B: Backend>(
    be: &B,
    (seq, head_dim): (usize, usize),
    causal: bool,
    rope: Option<f32>,
) -> Outputs {
    let shape = AttentionShape {
        batch: 3,
        seq,
        heads: 4,
        head_dim,
        causal,
    };
    attention_shape_case(be, shape, rope)
}

/// Attention forward and backward (rotary with `rope`) at any shape.
fn attention_shape_case<B: Backend>(be: &B, shape: AttentionShape, rope: Option<f32>) -> Outputs {
    let n = shape.rows() * shape.hidden();
    let qkv = act(be, &rand_vals(15, 3 * n, 1.5));
    let mut out = be.alloc_activation(n);
    let mut saved = be.alloc_activation(be.attention_saved_len(shape));
    be.attention_forward(&mut out, &mut saved, &qkv, shape);
    let dout = act(be, &rand_vals(16, n, 1.0));
    let mut dqkv = be.alloc_activation(3 * n);
    match rope {
        Some(theta) => {
            be.attention_backward_rotary(&mut dqkv, &dout, &out, &qkv, &saved, shape, theta)
        }
        None => be.attention_backward(&mut dqkv, &dout, &out, &qkv, &saved, shape),
    }
    vec![("out", be.download(&out)), ("dqkv", be.download(&dqkv))]
}

/// (40, 16) runs the general path (cuBLASLt products around a softmax
/// kernel); the others run the fused tensor-core kernels.
#[test]
#[ignore = "needs a CUDA GPU"]
fn attention() {
    check!("attention", MM, |be| {
        attention_case(be, (40, 16), false)
    });
    check!("attention_causal", MM, |be| {
        attention_case(be, (40, 16), true)
    });
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn fused_attention() {
    check!("fused_128_64", MM, |be| {
        attention_case(be, (128, 64), false)
    });
    check!("fused_128_64_causal", MM, |be| {
        attention_case(be, (128, 64), true)
    });
    check!("fused_32_32", MM, |be| {
        attention_case(be, (32, 32), false)
    });
    check!("fused_64_32_causal", MM, |be| {
        attention_case(be, (64, 32), true)
    });
    // A head wider than the sequence: the backward's output tile is T×D.
    check!("fused_32_64_causal", MM, |be| {
        attention_case(be, (32, 64), true)
    });
    // More (batch, head) pairs, one a block, than a 132-SM GPU holds at
    // once (70 × 8 at crammed-bert's shape): later waves of blocks too.
    check!("fused_many_pairs", MM, |be| { many_pairs_case(be, false) });
    check!("fused_many_pairs_causal", MM, |be| {
        many_pairs_case(be, true)
    });
}

/// crammed-bert's attention shape (128 × head 64) with more (batch, head)
/// pairs than the fused kernels' blocks that are resident at once.
fn many_pairs_case<B: Backend>(be: &B, causal: bool) -> Outputs {
    let shape = AttentionShape {
        batch: 70,
        seq: 128,
        heads: 8,
        head_dim: 64,
        causal,
    };
    attention_shape_case(be, shape, None)
}

/// Sequences past the short kernels (whole 64-row tiles) run the flash
/// kernels: several key tiles per query tile, the causal diagonal tile, dQ
/// summed over key tiles by atomics, and each head width they are built for;
/// head 64 with the GPU's default kernels (wgmma on Hopper at 256, the
/// one-tile mma.sync forward at 192; `flash_attention_mma` and
/// `flash_attention_wgmma` test each family by name). With
/// `CRAM_FLASH_BACKWARD=k2` head 64 at 256 runs the backward with two key
/// tiles a block (192, three tiles, keeps one).
#[test]
#[ignore = "needs a CUDA GPU"]
fn flash_attention() {
    check!("flash_256_64", MM, |be| {
        attention_case(be, (256, 64), false)
    });
    check!("flash_256_64_causal", MM, |be| {
        attention_case(be, (256, 64), true)
    });
    // 192 rows are three tiles: head 64 runs its one-tile-a-warp forward.
    check!("flash_192_64_causal", MM, |be| {
        attention_case(be, (192, 64), true)
    });
    check!("flash_192_128_causal", MM, |be| {
        attention_case(be, (192, 128), true)
    });
    check!("flash_320_32", MM, |be| {
        attention_case(be, (320, 32), false)
    });
}

/// On Hopper the head-64 flash kernels run on wgmma by default (sequences
/// of whole 128-row blocks forward, any whole tiles backward): both halves
/// of the causal diagonal, several key and query tiles, rotary positions,
/// and a sequence of three blocks. It needs a Hopper GPU (sm_90), where the
/// program is built with wgmma.
#[test]
#[ignore = "needs a CUDA GPU"]
fn flash_attention_wgmma() {
    let be = gpu();
    assert!(
        be.flash_on_wgmma(),
        "the wgmma kernels need a Hopper GPU (sm_90) and no CRAM_FLASH_FORWARD/BACKWARD switch; this one is {}",
        be.name()
    );
    check!("wgmma_256_64", MM, |be| {
        split_dqkv(attention_case(be, (256, 64), false), 4 * 64)
    });
    check!("wgmma_256_64_causal", MM, |be| {
        split_dqkv(attention_case(be, (256, 64), true), 4 * 64)
    });
    check!("wgmma_384_64_causal", MM, |be| {
        split_dqkv(
            attention_rotary_case(be, (384, 64), true, Some(10000.0)),
            4 * 64,
        )
    });
    // 192 rows are three key tiles: the wgmma backward with the mma.sync
    // forward (whose wgmma kernel takes whole 128-row blocks).
    check!("wgmma_192_64_causal", MM, |be| {
        split_dqkv(
            attention_rotary_case(be, (192, 64), true, Some(10000.0)),
            4 * 64,
        )
    });
    check!("wgmma_192_64", MM, |be| {
        split_dqkv(attention_case(be, (192, 64), false), 4 * 64)
    });
    // The default adds dQ's parts by bulk reductions of staged rows; the
    // per-thread reductions stay a switch (CRAM_FLASH_DQ=red).
    let red = CudaSwitches {
        flash_dq_red: true,
        ..switches()
    };
    check!("wgmma_256_64_causal_red", MM, red, |be| {
        split_dqkv(attention_case(be, (256, 64), true), 4 * 64)
    });
}

/// The mma.sync flash kernels of head width 64, which every other GPU runs,
/// kept tested on Hopper too (`CRAM_FLASH_FORWARD=mma`, `CRAM_FLASH_BACKWARD=mma`):
/// the two-m-tile forward at 256, the one-tile forward at 192.
#[test]
#[ignore = "needs a CUDA GPU"]
fn flash_attention_mma() {
    let mma = CudaSwitches {
        flash_forward: FlashForward::Mma,
        flash_backward: FlashBackward::Mma,
        ..switches()
    };
    assert!(!gpu_with(mma).flash_on_wgmma());
    check!("mma_256_64", MM, mma, |be| {
        attention_case(be, (256, 64), false)
    });
    check!("mma_256_64_causal", MM, mma, |be| {
        attention_rotary_case(be, (256, 64), true, Some(10000.0))
    });
    check!("mma_192_64_causal", MM, mma, |be| {
        attention_case(be, (192, 64), true)
    });
}

/// An attention case's outputs with dqkv (rows of dQ, dK and dV side by
/// side, each `hidden` wide) as three outputs, so that a wrong product of a
/// new backward shows by name (each is measured against its own largest
/// value, a little stricter than the whole's).
fn split_dqkv(outputs: Outputs, hidden: usize) -> Outputs {
    let mut split = Vec::new();
    for (name, values) in outputs {
        if name != "dqkv" {
            split.push((name, values));
            continue;
        }
        for (i, part) in ["dq", "dk", "dv"].into_iter().enumerate() {
            let columns = values
                .chunks(3 * hidden)
                .flat_map(|row| &row[i * hidden..(i + 1) * hidden])
                .copied()
                .collect();
            split.push((part, columns));
        }
    }
    split
}

/// The attention backward with rotary positions' inverse rotation: fused
/// into the flash kernels' dK and dQ stores (every flash head width, causal
/// and not), and the separate pass after the short and the general kernels.
#[test]
#[ignore = "needs a CUDA GPU"]
fn attention_rotary_backward() {
    check!("rotary_flash_256_64_causal", MM, |be| {
        attention_rotary_case(be, (256, 64), true, Some(10000.0))
    });
    check!("rotary_flash_192_128", MM, |be| {
        attention_rotary_case(be, (192, 128), false, Some(10000.0))
    });
    check!("rotary_flash_320_32_causal", MM, |be| {
        attention_rotary_case(be, (320, 32), true, Some(500.0))
    });
    check!("rotary_fused_128_64_causal", MM, |be| {
        attention_rotary_case(be, (128, 64), true, Some(10000.0))
    });
    check!("rotary_general_40_16", MM, |be| {
        attention_rotary_case(be, (40, 16), true, Some(10000.0))
    });
}

/// `half` 40 runs the eight-wide GLU kernels, 20 the four-wide ones (and
/// both the four-wide add); 3 the scalar ones (3 is not a multiple of 4,
/// nor is 33·2·3).
fn elementwise_case<B: Backend>(be: &B, a: Activation, half: usize) -> Outputs {
    let rows = 33;
    let inp = act(be, &rand_vals(17, rows * 2 * half, 3.0));
    let mut glu = be.alloc_activation(rows * half);
    be.glu_forward(&mut glu, &inp, a, half);
    let dout = act(be, &rand_vals(18, rows * half, 1.0));
    let mut dglu = be.alloc_activation(rows * 2 * half);
    be.glu_backward(&mut dglu, &dout, &inp, a, half);
    let mut y = be.alloc_activation(rows * 2 * half);
    be.activation_forward(&mut y, &inp, a);
    let dy = act(be, &rand_vals(19, rows * 2 * half, 1.0));
    let mut dx = be.alloc_activation(rows * 2 * half);
    be.activation_backward(&mut dx, &dy, &inp, a);
    let mut sum = be.alloc(rows * 2 * half);
    be.add(&mut sum, &y, &dy);
    vec![
        ("glu", be.download(&glu)),
        ("dglu", be.download(&dglu)),
        ("act", be.download(&y)),
        ("dact", be.download(&dx)),
        ("add", be.download(&sum)),
    ]
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn activations_glu_add() {
    check!("gelu", BF, |be| {
        elementwise_case(be, Activation::Gelu, 40)
    });
    check!("silu", BF, |be| {
        elementwise_case(be, Activation::Silu, 40)
    });
    check!("gelu_4", BF, |be| {
        elementwise_case(be, Activation::Gelu, 20)
    });
    check!("silu_4", BF, |be| {
        elementwise_case(be, Activation::Silu, 20)
    });
    check!("gelu_scalar", BF, |be| {
        elementwise_case(be, Activation::Gelu, 3)
    });
    check!("silu_scalar", BF, |be| {
        elementwise_case(be, Activation::Silu, 3)
    });
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn dropout_masks_match() {
    check!("dropout", EXACT, |be| {
        let x = be.upload(&rand_vals(20, 5000, 1.0));
        let mut y = be.alloc(5000);
        be.dropout_forward(&mut y, &x, 0.1, 1234);
        let mut dx = be.alloc(5000);
        be.dropout_backward(&mut dx, &x, 0.1, 1234);
        vec![("forward", be.download(&y)), ("backward", be.download(&dx))]
    });
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gather_and_cross_entropy() {
    check!("gather", EXACT, |be| {
        let (rows, cols) = (50, 24);
        let inp = act(be, &rand_vals(21, rows * cols, 1.0));
        let idx = be.upload_ids(&[3, 7, 0, 49, 20]);
        let mut out = be.alloc_activation(5 * cols);
        be.gather_rows_forward(&mut out, &inp, &idx, cols);
        let mut dinp = be.alloc_activation(rows * cols);
        be.gather_rows_backward(&mut dinp, &out, &idx, cols);
        vec![
            ("forward", be.download(&out)),
            ("backward", be.download(&dinp)),
        ]
    });
    // Rows of a chunk in and out: bf16 to bf16, f32 to bf16 and back, ids.
    check!("copy_range", EXACT, |be| {
        let wide = be.upload(&rand_vals(30, 300, 1.0));
        let narrow = act(be, &rand_vals(31, 300, 1.0));
        let mut chunk = be.alloc_activation(70);
        be.copy_range(&mut chunk, 0, &narrow, 101, 70);
        let mut back = be.alloc(300);
        be.copy_range(&mut back, 7, &chunk, 0, 70);
        be.copy_range(&mut chunk, 10, &wide, 200, 60);
        let ids = be.upload_ids(&(0..50).map(|i| i * 3).collect::<Vec<u32>>());
        let mut part = be.alloc_ids(9);
        be.copy_ids_range(&mut part, &ids, 33);
        let mut gathered = be.alloc_activation(9 * 2);
        be.gather_rows_forward(&mut gathered, &wide, &part, 2);
        vec![
            ("chunk", be.download(&chunk)),
            ("back", be.download(&back)),
            ("ids", be.download(&gathered)),
        ]
    });
    // An odd vocabulary takes the kernel's scalar path, one of 4·odd its
    // four-wide path; bf16 rows of a multiple of 8 up to 32,768 the kernel
    // that holds the row in registers (3000 below, and its widest), wider
    // ones the eight-wide path.
    check!("cross_entropy_held_widest", BF, |be| {
        cross_entropy_case(be, 32768)
    });
    check!("cross_entropy_eight", BF, |be| {
        cross_entropy_case(be, 32776)
    });
    check!("cross_entropy_odd", BF, |be| {
        cross_entropy_case(be, 3001)
    });
    check!("cross_entropy_four", BF, |be| {
        cross_entropy_case(be, 3004)
    });
    check!("cross_entropy", BF, |be| {
        let mut out = cross_entropy_case(be, 3000);
        let mut preds = act(be, &rand_vals(28, 9, 2.0));
        let targets = be.upload(&rand_vals(29, 9, 2.0));
        let mut sq = be.alloc(9);
        be.mse_loss(&mut sq, &mut preds, &targets, Some(0.25));
        let (top_logits, top_targets, top_vocab, expected) = common::top1_case();
        let mut hits = be.alloc(top_targets.len());
        be.top1_hits(
            &mut hits,
            &act(be, &top_logits),
            &be.upload_ids(&top_targets),
            top_vocab,
        );
        assert_eq!(be.download(&hits), expected, "{}", be.name());
        out.extend([
            ("mse", be.download(&sq)),
            ("mse_grad", be.download(&preds)),
            ("top1_hits", be.download(&hits)),
        ]);
        out
    });
}

/// Cross-entropy over 9 rows (one ignored) of `vocab` logits: the losses
/// alone, then with the gradient written over the logits.
fn cross_entropy_case<B: Backend>(be: &B, vocab: usize) -> Outputs {
    let rows = 9;
    let data = rand_vals(22, rows * vocab, 4.0);
    let mut targets = common::ids(&mut common::rng(23), rows, vocab as u32);
    targets[4] = IGNORE;
    let targets = be.upload_ids(&targets);
    let mut logits = act(be, &data);
    let mut losses = be.alloc(rows);
    be.cross_entropy(&mut losses, &mut logits, &targets, vocab, None);
    let plain = be.download(&losses);
    be.cross_entropy(&mut losses, &mut logits, &targets, vocab, Some(0.5));
    vec![
        ("losses", plain),
        ("losses_with_grad", be.download(&losses)),
        ("grad", be.download(&logits)),
    ]
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn norm_sum_and_adamw() {
    check!("optim", EXACT * 10.0, |be| {
        let n = 100_003;
        let grads = be.upload(&rand_vals(24, n, 1.0));
        // Slots: 0 a non-finite norm, 1 the norm, 2 a sum, 3 the skip count.
        let mut stats = be.alloc(4);
        be.write(&mut stats, 0, &[f32::NAN]);
        be.grad_norm_squared(&mut stats, 1, &grads);
        be.sum_into(&mut stats, 2, &grads, 0.5);
        be.sum_into(&mut stats, 2, &grads, 0.5);
        let mut params = be.upload(&rand_vals(25, n, 1.0));
        let mut m = be.upload(&rand_vals(26, n, 0.1));
        let mut v = be.upload(
            &rand_vals(27, n, 0.1)
                .iter()
                .map(|x| x.abs())
                .collect::<Vec<_>>(),
        );
        let hp = AdamW {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-12,
            weight_decay: 0.01,
            step: 3,
            decay_len: n / 2,
            max_norm: 0.5,
            skipped_slot: Some(3),
        };
        be.adamw_step(&mut params, &grads, &mut m, &mut v, &mut stats, 1, hp);
        // Two steps with a NaN norm: skipped (nothing changes), counted twice.
        be.adamw_step(&mut params, &grads, &mut m, &mut v, &mut stats, 0, hp);
        be.adamw_step(&mut params, &grads, &mut m, &mut v, &mut stats, 0, hp);
        vec![
            ("skipped", be.read(&stats, 3, 1)),
            ("norm_sq", be.read(&stats, 1, 1)),
            ("params", be.download(&params)),
            ("m", be.download(&m)),
            ("v", be.download(&v)),
            ("sum", be.read(&stats, 2, 1)),
        ]
    });
}

/// Loss and gradient norm of one full training step (and the loss of the
/// next, after AdamW) of `preset` at `(batch, seq)`.
/// `chunk_rows`: the most rows whose logits exist at once (`None`: the
/// default, one chunk at these shapes).
fn step_case<B: Backend>(
    be: &B,
    preset: &str,
    (batch, seq): (usize, usize),
    chunk_rows: Option<usize>,
) -> Outputs {
    let cfg = Config::resolve(preset, &[]).expect("preset");
    let model = Model::new(&cfg.model);
    let mut state = TrainState::fresh(be, &model, 5);
    let mut acts = Activations::new(be, &model.cfg, batch, seq);
    if let Some(rows) = chunk_rows {
        acts.set_logit_chunk_rows(rows);
    }
    let mut stats = be.alloc(STATS);
    let hb = synthetic_batch(&cfg, batch, seq, 9);
    let db = upload_batch(be, &hb);
    let scale = 1.0 / hb.counted.max(1) as f32;
    let mut losses = Vec::new();
    let mut norms = Vec::new();
    let mut step_fn = Step::alone();
    for step in 0..2 {
        be.zero(&mut stats);
        let hp = common::test_adamw(step, model.layout.decay_len);
        let groups = std::slice::from_mut(&mut state.weights);
        step_fn
            .run(
                be,
                groups,
                &mut stats,
                0..1,
                hp,
                |(_, groups, stats, sync)| {
                    let w = &mut groups[0];
                    let step_state = (&w.params, &mut w.grads, &mut acts);
                    micro_step(be, &model, step_state, &db, stats, (scale, 1), sync);
                },
            )
            .unwrap();
        losses.push(be.read(&stats, STAT_LOSS, 1)[0]);
        norms.push(be.read(&stats, STAT_NORM_SQ, 1)[0].sqrt());
    }
    println!("{preset}: losses {losses:?}, grad norms {norms:?}");
    vec![("losses", losses), ("grad_norms", norms)]
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn full_step_tiny() {
    check!("step_tiny", 2e-2, |be| {
        step_case(be, "tiny", (16, 32), None)
    });
}

/// The logits in chunks: 512 rows in six chunks (the last shorter); about 77
/// predicted rows of crammed-bert in three.
#[test]
#[ignore = "needs a CUDA GPU"]
fn full_step_chunked_logits() {
    check!("step_tiny_chunked", 2e-2, |be| {
        step_case(be, "tiny", (16, 32), Some(90))
    });
    check!("step_crammed_bert_chunked", 2e-2, |be| {
        step_case(be, "crammed-bert", (4, 128), Some(30))
    });
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn full_step_crammed_bert() {
    check!("step_crammed_bert", 2e-2, |be| {
        step_case(be, "crammed-bert", (4, 128), None)
    });
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn kernel_cache_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var("CRAM_CACHE_DIR", dir.path());
    let t = std::time::Instant::now();
    drop(gpu());
    let cold = t.elapsed();
    let files: Vec<_> = std::fs::read_dir(dir.path().join("kernels"))
        .unwrap()
        .collect();
    assert_eq!(files.len(), 1, "one cached cubin");
    let t = std::time::Instant::now();
    drop(gpu());
    let warm = t.elapsed();
    println!("start with compile {cold:?}, from cache {warm:?}");
    assert!(warm < cold, "the second start must not compile");
}

/// Out of GPU memory is an error, not a panic (issue 17): an allocation
/// larger than the GPU is recorded, every later op skips its work, a read
/// gives NaN, and `check` names the bytes asked for; the step reports it.
#[test]
#[ignore = "needs a CUDA GPU"]
fn out_of_memory_is_an_error() {
    use cram::backend::DeviceError;
    let be = gpu();
    let mut small = be.upload(&[1.0, 2.0, 3.0]);
    assert_eq!(be.read(&small, 0, 3), vec![1.0, 2.0, 3.0]);
    assert!(be.check().is_ok());
    // 2^38 f32 values: 1 TiB, more than any GPU holds.
    let huge = be.alloc(1 << 38);
    let e = be.check().expect_err("a 1 TiB allocation fails");
    match &e {
        DeviceError::OutOfMemory { bytes, total, .. } => {
            assert_eq!(*bytes, 4 << 38);
            assert!(*total > 0 && *total < *bytes, "{e}");
        }
        other => panic!("expected out of memory, got {other}"),
    }
    println!("{e}");
    be.zero(&mut small);
    be.sum_into(&mut small, 0, &huge, 1.0);
    assert!(
        be.read(&small, 0, 3).iter().all(|x| x.is_nan()),
        "after a failure reads are NaN, not stale values"
    );
    assert_eq!(be.check(), Err(e), "the first failure stays");
    // The training step reports it rather than stepping.
    let cfg = Config::resolve("tiny", &[]).unwrap();
    let model = Model::new(&cfg.model);
    let mut state = TrainState::fresh(&be, &model, 1);
    let mut stats = be.alloc(STATS);
    let hp = common::test_adamw(0, model.layout.decay_len);
    let groups = std::slice::from_mut(&mut state.weights);
    let r = Step::alone().run(&be, groups, &mut stats, 0..1, hp, |_| {});
    assert!(
        matches!(
            r,
            Err(cram::train::StepError::Device(
                DeviceError::OutOfMemory { .. }
            ))
        ),
        "{r:?}"
    );
}

/// An input past the GLU kernels' 32-bit indexing is an error that names
/// its size (it was an assertion that panicked `cram bench --micro-batch
/// 65536`), and no kernel runs on it.
#[test]
#[ignore = "needs a CUDA GPU (12 GiB of memory)"]
fn glu_past_32_bits_is_an_error() {
    use cram::backend::{Activation, ActivationOps, DeviceError};
    let be = gpu();
    let len = (1usize << 32) + 8;
    let inp = be.alloc_activation(len);
    let mut out = be.alloc_activation(len / 2);
    assert!(be.check().is_ok(), "12 GiB fit");
    be.glu_forward(&mut out, &inp, Activation::Gelu, 4);
    match be.check() {
        Err(DeviceError::TooLarge {
            elements, limit, ..
        }) => {
            assert_eq!((elements, limit), (len, (1 << 32) - 1));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
}
