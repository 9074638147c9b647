//! The whole model's parameter gradient against central finite differences,
//! for every architecture the presets use: the crammed encoder (pre-LN, GLU,
//! scaled sinusoidal, sparse MLM), the BERT encoder (post-LN, biases, learned
//! positions, head transform, dense MLM, dropout) and the Llama-style decoder
//! (RMSNorm, SwiGLU, rotary, causal).
//!
//! For each parameter tensor, the analytic gradient projected on a random
//! direction u is compared with (L(θ + εu) − L(θ − εu)) / 2ε, the loss summed
//! in f64 on the host.

use cram::backend::cpu::Cpu;
use cram::backend::Device;
use cram::config::Config;
use cram::data::batches::{HostBatch, MaskKey, Objective};
use cram::data::SpecialTokens;
use cram::model::upload_batch;
use cram::model::{Activations, Model};
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
}

impl Case {
    fn loss(&self, params: &[f32]) -> f64 {
        let batch = upload_batch(&self.be, &self.hb);
        let mut acts = Activations::new(&self.be, &self.model.cfg, self.hb.batch, self.hb.seq);
        let p = self.be.upload(params);
        self.model
            .forward_loss(&self.be, &p, &mut acts, &batch, self.train, 99, None);
        let losses = self.be.download(&acts.head.losses);
        losses.iter().map(|&l| l as f64).sum::<f64>() / self.hb.counted as f64
    }

    fn grads(&self, params: &[f32]) -> Vec<f32> {
        let batch = upload_batch(&self.be, &self.hb);
        let mut acts = Activations::new(&self.be, &self.model.cfg, self.hb.batch, self.hb.seq);
        let p = self.be.upload(params);
        let mut g = self.be.alloc(params.len());
        let scale = 1.0 / self.hb.counted as f32;
        self.model
            .forward_loss(&self.be, &p, &mut acts, &batch, self.train, 99, Some(scale));
        self.model
            .backward(&self.be, &p, &mut g, &mut acts, &batch, self.train);
        self.be.download(&g)
    }
}

fn check(cfg: Config, train: bool) {
    let model = Model::new(&cfg.model);
    let case = Case {
        be: Cpu::new(),
        hb: batch(&cfg, 1),
        model,
        train,
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
