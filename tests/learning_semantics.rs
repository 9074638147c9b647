//! The model learns what only attention to neighbouring positions can solve:
//! in counting sequences ("a, a+1, a+2, …" over the vocabulary), a masked
//! token is its left neighbour plus one. Gradient checks prove that the
//! backward matches the forward; this proves that the forward means what it
//! should (rows, positions and heads wired to the right tokens).

use cram::backend::argmax;
use cram::backend::cpu::Cpu;
use cram::backend::{AdamW, Device, OptimOps, IGNORE};
use cram::config::Config;
use cram::data::batches::{MaskKey, Objective};
use cram::data::SpecialTokens;
use cram::model::upload_batch;
use cram::model::{Activations, LossPass, Model};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const STEPS: u64 = 300;
/// Linear warm-up: post-LN BERT needs it at any useful learning rate.
const WARMUP: u64 = 50;
const SPECIAL: SpecialTokens = SpecialTokens::TRAINED;

fn counting(rng: &mut ChaCha8Rng, batch: usize, seq: usize, vocab: u32) -> Vec<u32> {
    let mut out = Vec::with_capacity(batch * seq);
    for _ in 0..batch {
        out.push(SPECIAL.cls);
        let mut t = rng.random_range(5..vocab);
        while out.len() % seq != 0 {
            out.push(t);
            t = if t + 1 == vocab { 5 } else { t + 1 };
        }
    }
    out
}

fn learns_to_count(preset: &str, lr: f32) {
    let sets: Vec<String> = [
        "model.vocab_size=64",
        "model.hidden=64",
        "model.heads=4",
        "model.ffn=128",
        "data.seq_len=33",
        "model.max_positions=64",
        "objective.mask_rate=0.15",
        "model.dropout=0.0",
        "model.init_std=0.1",
        "model.layers=2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let cfg = Config::resolve(preset, &sets).unwrap();
    let be = Cpu::new();
    let model = Model::new(&cfg.model);
    let objective = Objective::new(&cfg.objective, SPECIAL, 64);
    let (batch, seq) = (16, cfg.data.seq_len);
    let mut acts = Activations::new(&be, &model.cfg, batch, seq);
    let mut params = be.upload(&model.init_params(0));
    let (mut grads, mut m, mut v) = (
        be.alloc(model.num_params()),
        be.alloc(model.num_params()),
        be.alloc(model.num_params()),
    );
    let mut stats = be.alloc(1);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for step in 0..STEPS {
        let hb = objective.make_batch(
            counting(&mut rng, batch, seq, 64),
            seq,
            MaskKey::train(2),
            step * batch as u64,
        );
        let db = upload_batch(&be, &hb);
        be.zero(&mut grads);
        let pass = LossPass::Gradients {
            grads: &mut grads,
            dscale: 1.0 / hb.counted as f32,
        };
        model.forward_loss(&be, &params, &mut acts, &db, true, step, pass);
        model.backward(&be, &params, &mut grads, &mut acts, &db, true);
        be.grad_norm_squared(&mut stats, 0, &grads);
        let hp = AdamW {
            lr: lr * (step + 1).min(WARMUP) as f32 / WARMUP as f32,
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-12,
            weight_decay: 0.0,
            step: step + 1,
            decay_len: model.layout.decay_len,
            max_norm: 1.0,
            skipped_slot: None,
        };
        be.adamw_step(&mut params, &grads, &mut m, &mut v, &mut stats, 0, hp);
    }
    // Fresh sequences: how often is the masked token recovered?
    let (mut correct, mut total) = (0, 0);
    for i in 0..8 {
        let hb = objective.make_batch(
            counting(&mut rng, batch, seq, 64),
            seq,
            MaskKey::eval(3),
            i * batch as u64,
        );
        let db = upload_batch(&be, &hb);
        model.forward_logits(&be, &params, &mut acts, &db, false, 0);
        let logits = be.download(&acts.head.logits);
        for (j, &target) in hb.targets.iter().enumerate().filter(|(_, &t)| t != IGNORE) {
            correct += (argmax(&logits[j * 64..(j + 1) * 64]) == target as usize) as usize;
            total += 1;
        }
    }
    let accuracy = correct as f64 / total as f64;
    eprintln!("{preset}: counting accuracy {accuracy:.3} (chance 1/59)");
    assert!(
        accuracy > 0.5,
        "{preset} only recovers {accuracy:.3} of masked twins"
    );
}

#[test]
fn crammed_encoder_learns_to_count() {
    learns_to_count("tiny", 3e-3);
}

#[test]
fn bert_encoder_learns_to_count() {
    learns_to_count("bert-base", 3e-3);
}

#[test]
fn decoder_learns_to_count() {
    learns_to_count("gpt-small", 3e-3);
}
