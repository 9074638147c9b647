//! The whole model's parameter gradient against central finite differences,
//! for every architecture the presets use: the crammed encoder (pre-LN, GLU,
//! scaled sinusoidal, sparse MLM), the BERT encoder (post-LN, biases, learned
//! positions, head transform, dense MLM, dropout) and the Llama-style decoder
//! (RMSNorm, SwiGLU, rotary, causal).
//!
//! For each parameter tensor, the analytic gradient projected on a random
//! direction u is compared with (L(θ + εu) − L(θ − εu)) / 2ε, the loss summed
//! in f64 on the host. The logits are made in chunks of rows in training
//! (`LogitChunks`): each architecture is checked with small chunks too, and
//! chunked gradients must equal unchunked ones.

use cram::backend::cpu::Cpu;
use cram::backend::Device;
use cram::config::Config;
use cram::data::batches::{HostBatch, MaskKey, Objective};
use cram::data::SpecialTokens;
use cram::model::upload_batch;
use cram::model::{Activations, LossPass, Model};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SPECIAL: SpecialTokens = SpecialTokens::TRAINED;

fn small(preset: &str, extra: &[&str]) -> Config {
    let mut sets: Vec<String> = [
        "model.vocab_size=40",
        "model.hidden=16",
        "model.heads=2",
        "model.layers=2",
        "model.ffn=24",
        "model.max_positions=16",
        "data.seq_len=8",
        "model.init_std=0.3",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    sets.extend(extra.iter().map(|s| s.to_string()));
    Config::resolve(preset, &sets).unwrap()
}

fn batch(cfg: &Config, seed: u64) -> HostBatch {
    let (b, t) = (3, cfg.data.seq_len);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let tokens: Vec<u32> = (0..b * t)
        .map(|i| {
            if i % t == 0 {
                SPECIAL.cls
            } else {
                rng.random_range(5..cfg.model.vocab_size as u32)
            }
        })
        .collect();
    let objective = Objective::new(&cfg.objective, SPECIAL, cfg.model.vocab_size);
    objective.make_batch(tokens, t, MaskKey::train(seed), 0)
}

struct Case {
    be: Cpu,
    model: Model,
    hb: HostBatch,
    train: bool,
    /// Most rows whose logits exist at once; `None`: the default.
    chunk_rows: Option<usize>,
}

impl Case {
    fn acts(&self) -> Activations<Cpu> {
        let mut acts = Activations::new(&self.be, &self.model.cfg, self.hb.batch, self.hb.seq);
        if let Some(rows) = self.chunk_rows {
            acts.set_logit_chunk_rows(rows);
        }
        acts
    }

    fn loss(&self, params: &[f32]) -> f64 {
        let batch = upload_batch(&self.be, &self.hb);
        let mut acts = self.acts();
        let p = self.be.upload(params);
        let pass = LossPass::Losses;
        self.model
            .forward_loss(&self.be, &p, &mut acts, &batch, self.train, 99, pass);
        let losses = self.be.download(&acts.head.losses);
        losses.iter().map(|&l| l as f64).sum::<f64>() / self.hb.counted as f64
    }

    fn grads(&self, params: &[f32]) -> Vec<f32> {
        let batch = upload_batch(&self.be, &self.hb);
        let mut acts = self.acts();
        let p = self.be.upload(params);
        let mut g = self.be.alloc(params.len());
        let pass = LossPass::Gradients {
            grads: &mut g,
            dscale: 1.0 / self.hb.counted as f32,
        };
        self.model
            .forward_loss(&self.be, &p, &mut acts, &batch, self.train, 99, pass);
        self.model
            .backward(&self.be, &p, &mut g, &mut acts, &batch, self.train);
        self.be.download(&g)
    }
}

fn check(cfg: Config, train: bool) {
    check_chunked(cfg, train, None);
}

fn check_chunked(cfg: Config, train: bool, chunk_rows: Option<usize>) {
    let model = Model::new(&cfg.model);
    let case = Case {
        be: Cpu::new(),
        hb: batch(&cfg, 1),
        model,
        train,
        chunk_rows,
    };
    let mut params = case.model.init_params(3);
    // Norm scales start at exactly 1 and the position scale at 1/√C; move them
    // off their initial values so that every term of their gradient shows.
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for p in &case.model.layout.params {
        if !p.decay {
            for x in &mut params[p.span.range()] {
                *x += rng.random_range(-0.2..0.2);
            }
        }
    }
    let grads = case.grads(&params);
    // Central differences: ε = 1e-2 leaves an ε² truncation error of ~2% on the
    // tied embedding; 1e-3 stays above the f32 noise floor.
    let eps = 1e-3f64;
    let mut worst = 0f64;
    for p in &case.model.layout.params {
        let g = &grads[p.span.range()];
        let g_norm = g.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
        // Along the analytic gradient (the FD slope must equal ‖g‖, which any
        // wrong component spoils) and along a random direction, both unit length.
        let random: Vec<f64> = (0..p.span.len)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        for (what, dir) in [
            ("gradient", g.iter().map(|&x| x as f64).collect::<Vec<_>>()),
            ("random", random),
        ] {
            let norm = dir.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-30);
            let u: Vec<f64> = dir.iter().map(|x| x / norm).collect();
            let analytic: f64 = g.iter().zip(&u).map(|(&g, &u)| g as f64 * u).sum();
            let shifted = |sign: f64| {
                let mut q = params.clone();
                for (x, &d) in q[p.span.range()].iter_mut().zip(&u) {
                    *x += (sign * eps * d) as f32;
                }
                case.loss(&q)
            };
            let numeric = (shifted(1.0) - shifted(-1.0)) / (2.0 * eps);
            // The f32 forward leaves ~1e-7 of noise in each loss, ~1e-4 in the quotient.
            let err = (analytic - numeric).abs() / (g_norm + 1e-2);
            worst = worst.max(err);
            assert!(
                err < 5e-3,
                "{} ({what} direction): analytic {analytic:.6} vs numeric {numeric:.6}, error {err:.2e} of ‖g‖ = {g_norm:.4}",
                p.name
            );
        }
    }
    eprintln!(
        "{} tensors checked, worst error {worst:.2e} of the gradient norm",
        case.model.layout.params.len()
    );
}

#[test]
fn crammed_encoder_gradient_matches_finite_differences() {
    check(small("tiny", &[]), true);
}

#[test]
fn bert_encoder_gradient_matches_finite_differences() {
    // Dropout masks are a fixed function of the seed, so the loss stays a smooth function of θ.
    check(small("bert-base", &["objective.mask_rate=0.3"]), true);
}

#[test]
fn decoder_gradient_matches_finite_differences() {
    check(small("gpt-small", &[]), true);
}

#[test]
fn untied_gelu_rmsnorm_encoder_gradient_matches_finite_differences() {
    check(
        small(
            "tiny",
            &[
                "model.tie_embeddings=false",
                "model.ffn_kind=gelu",
                "model.norm=rmsnorm",
                "model.positions=learned",
                "model.embedding_norm=false",
                "model.final_norm=false",
            ],
        ),
        true,
    );
}

/// The logits in chunks of 5 rows (the last one shorter), for the three
/// heads: sparse prediction (tiny: gathered rows), the head transform over
/// every row (bert-base) and the decoder (every row, no gather).
#[test]
fn chunked_logits_gradients_match_finite_differences() {
    check_chunked(small("tiny", &["objective.mask_rate=0.5"]), true, Some(5));
    check_chunked(
        small("bert-base", &["objective.mask_rate=0.3"]),
        true,
        Some(5),
    );
    check_chunked(small("gpt-small", &[]), true, Some(5));
}

/// Chunking changes only how the products are blocked and the order of the
/// decoder's weight-gradient sums: losses and gradients equal to f32 rounding.
#[test]
fn chunked_logits_change_nothing() {
    for preset in ["tiny", "bert-base", "gpt-small"] {
        let cfg = small(preset, &["objective.mask_rate=0.5"]);
        let case = |chunk_rows| Case {
            be: Cpu::new(),
            hb: batch(&cfg, 2),
            model: Model::new(&cfg.model),
            train: false,
            chunk_rows,
        };
        let (whole, chunked) = (case(Some(usize::MAX)), case(Some(3)));
        let params = whole.model.init_params(4);
        // The CPU's products block by rows, so f32 rounding differs a little.
        let (l0, l1) = (whole.loss(&params), chunked.loss(&params));
        assert!(
            (l0 - l1).abs() <= 1e-6 * l0,
            "{preset}: loss {l0} chunked {l1}"
        );
        let (a, b) = (whole.grads(&params), chunked.grads(&params));
        let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
        let worst = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            worst <= 1e-5 * scale,
            "{preset}: chunked gradients differ by {worst:e} (largest {scale:e})"
        );
    }
}
