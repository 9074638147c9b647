//! The GLUE fine-tuning gradient against central finite differences: the
//! head (gather [CLS] → dense → GELU → dropout → classifier, cross-entropy or
//! squared error) and the backbone through `Model::forward_hidden` /
//! `backward_hidden`, with dropout on in both (its masks are a fixed function
//! of the seed, so the loss stays a smooth function of the parameters).
//!
//! Method as in model_gradients.rs: for each tensor, the analytic gradient
//! projected on a unit direction u (the gradient itself, then a random one)
//! against (L(θ + εu) − L(θ − εu)) / 2ε, the loss summed in f64 on the host.

use cram::backend::cpu::Cpu;
use cram::backend::{Device, Span};
use cram::config::Config;
use cram::eval::glue::head::{Head, HeadActs, Targets};
use cram::model::{Activations, Model};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const BATCH: usize = 3;
const SEQ: usize = 8;
const SEED: u64 = 99;

struct Case {
    be: Cpu,
    model: Model,
    head: Head,
    ids: Vec<u32>,
    cls: Vec<u32>,
    classes: Option<Vec<u32>>,
    scores: Vec<f32>,
}

impl Case {
    fn new(outputs: usize) -> Case {
        let sets: Vec<String> = [
            "model.vocab_size=40",
            "model.hidden=16",
            "model.heads=2",
            "model.layers=2",
            "model.ffn=24",
            "model.max_positions=16",
            "data.seq_len=8",
            "model.dropout=0.1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let cfg = Config::resolve("tiny", &sets).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let ids = (0..BATCH * SEQ)
            .map(|i| {
                if i % SEQ == 0 {
                    2
                } else {
                    rng.random_range(5..40)
                }
            })
            .collect();
        Case {
            be: Cpu::new(),
            model: Model::new(&cfg.model),
            head: Head::new(16, outputs, 0.1),
            ids,
            cls: (0..BATCH).map(|b| (b * SEQ) as u32).collect(),
            classes: (outputs > 1).then(|| vec![0, 2, 1]),
            scores: vec![0.5, -1.0, 2.0],
        }
    }

    fn targets(&self) -> Targets<Cpu> {
        match &self.classes {
            Some(c) => Targets::Classes(self.be.upload_ids(c)),
            None => Targets::Scores(self.be.upload(&self.scores)),
        }
    }

    /// Runs the forward (and the backward when `grads` is given); returns the
    /// mean loss, as fine-tuning scales it.
    fn run(
        &self,
        params: &[f32],
        head_params: &[f32],
        grads: Option<(&mut Vec<f32>, &mut Vec<f32>)>,
    ) -> f64 {
        let be = &self.be;
        let mut acts = Activations::new(be, &self.model.cfg, BATCH, SEQ);
        let mut hacts = HeadActs::new(be, &self.head, BATCH);
        let (p, hp) = (be.upload(params), be.upload(head_params));
        let (ids, cls) = (be.upload_ids(&self.ids), be.upload_ids(&self.cls));
        let hidden = self
            .model
            .forward_hidden(be, &p, &mut acts, &ids, true, SEED);
        self.head
            .forward(be, &hp, &mut hacts, hidden, &cls, true, SEED);
        let scale = 1.0 / BATCH as f32;
        let dscale = grads.as_ref().map(|_| scale);
        self.head.loss(be, &mut hacts, &self.targets(), dscale);
        let sum: f64 = be.download(&hacts.losses).iter().map(|&l| l as f64).sum();
        if let Some((g, hg)) = grads {
            self.head.backward(
                be,
                &hp,
                hg,
                &mut hacts,
                &cls,
                &mut acts.d_hidden,
                true,
                SEED,
            );
            self.model.backward_hidden(be, &p, g, &mut acts, &ids, true);
        }
        sum * scale as f64
    }
}

/// Checks the slope of `loss` along `span` of `theta` against `grad`.
fn check_tensor(
    name: &str,
    theta: &[f32],
    grad: &[f32],
    span: Span,
    rng: &mut ChaCha8Rng,
    loss: impl Fn(&[f32]) -> f64,
) -> f64 {
    let eps = 1e-3f64;
    let g = &grad[span.range()];
    let g_norm = g.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    assert!(
        g_norm > 1e-6,
        "{name}: the gradient vanishes, so the check proves nothing"
    );
    let random: Vec<f64> = (0..span.len).map(|_| rng.random_range(-1.0..1.0)).collect();
    let mut worst = 0f64;
    for (what, dir) in [
        ("gradient", g.iter().map(|&x| x as f64).collect::<Vec<_>>()),
        ("random", random),
    ] {
        let norm = dir.iter().map(|x| x * x).sum::<f64>().sqrt();
        let u: Vec<f64> = dir.iter().map(|x| x / norm).collect();
        let analytic: f64 = g.iter().zip(&u).map(|(&g, &u)| g as f64 * u).sum();
        let shifted = |sign: f64| {
            let mut q = theta.to_vec();
            for (x, &d) in q[span.range()].iter_mut().zip(&u) {
                *x += (sign * eps * d) as f32;
            }
            loss(&q)
        };
        let numeric = (shifted(1.0) - shifted(-1.0)) / (2.0 * eps);
        let err = (analytic - numeric).abs() / (g_norm + 1e-2);
        worst = worst.max(err);
        assert!(
            err < 5e-3,
            "{name} ({what} direction): analytic {analytic:.6} vs numeric {numeric:.6}, error {err:.2e} of ‖g‖ = {g_norm:.4}"
        );
    }
    worst
}

fn check(outputs: usize) {
    let case = Case::new(outputs);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut params = case.model.init_params(3);
    for p in &case.model.layout.params {
        if !p.decay {
            params[p.span.range()]
                .iter_mut()
                .for_each(|x| *x += rng.random_range(-0.2..0.2));
        }
    }
    let mut head_params = case.head.init_params(0.3, 4);
    head_params[case.head.decay_len..]
        .iter_mut()
        .for_each(|x| *x = rng.random_range(-0.2..0.2));
    let (mut g, mut hg) = (vec![0.0; params.len()], vec![0.0; head_params.len()]);
    case.run(&params, &head_params, Some((&mut g, &mut hg)));
    let mut worst = 0f64;
    for p in &case.model.layout.params {
        let loss = |q: &[f32]| case.run(q, &head_params, None);
        worst = worst.max(check_tensor(&p.name, &params, &g, p.span, &mut rng, loss));
    }
    let h = &case.head;
    for (name, span) in [
        ("head.dense.weight", h.dense.weight),
        ("head.dense.bias", h.dense.bias.unwrap()),
        ("head.classifier.weight", h.classifier.weight),
        ("head.classifier.bias", h.classifier.bias.unwrap()),
    ] {
        let loss = |q: &[f32]| case.run(&params, q, None);
        worst = worst.max(check_tensor(name, &head_params, &hg, span, &mut rng, loss));
    }
    eprintln!("worst error {worst:.2e} of the gradient norm");
}

#[test]
fn classification_gradient_matches_finite_differences() {
    check(3);
}

#[test]
fn regression_gradient_matches_finite_differences() {
    check(1);
}
