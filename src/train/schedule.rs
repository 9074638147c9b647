//! Schedules as pure functions of budget progress p ∈ [0, 1]: the fraction of
//! the budget (time, tokens, FLOPs or steps) spent. A run therefore ends
//! annealed exactly when its budget does, whatever the budget's unit.

use crate::config::{ScheduleKind, TrainConfig};

/// Learning rate at progress `p`.
pub fn learning_rate(cfg: &TrainConfig, p: f64) -> f64 {
    let p = p.clamp(0.0, 1.0);
    let (peak, floor, w) = (cfg.lr, cfg.final_lr, cfg.warmup);
    if p < w {
        // Linear warm-up from 0; one-cycle's rising half is the same line.
        return peak * p / w;
    }
    let rest = if w < 1.0 { (p - w) / (1.0 - w) } else { 1.0 };
    match cfg.schedule {
        ScheduleKind::OneCycle | ScheduleKind::Linear => peak + (floor - peak) * rest,
        ScheduleKind::Cosine => {
            floor + (peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * rest).cos())
        }
        ScheduleKind::Constant => peak,
    }
}

/// Sequences per optimizer step at progress `p`: `batch_size · p / batch_ramp`
/// in whole micro-batches (at least one), then `batch_size` (Cramming's
/// batch-size ramp). The line starts at zero rather than at one micro-batch,
/// as in the PyTorch recipe (`bench/quality_ab.py`): a 300 s crammed-bert run
/// then makes 663 optimizer steps at cram's speed instead of 547, and the early
/// steps are the ones that take the model off the unigram plateau.
pub fn batch_size(cfg: &TrainConfig, p: f64) -> usize {
    let micro = cfg.micro_batch;
    let full = (cfg.batch_size / micro).max(1);
    if cfg.batch_ramp <= 0.0 {
        return full * micro;
    }
    let frac = (p / cfg.batch_ramp).clamp(0.0, 1.0);
    let micros = ((full as f64 * frac).round() as usize).clamp(1, full);
    micros * micro
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn train(preset: &str, sets: &[&str]) -> TrainConfig {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        Config::resolve(preset, &sets).unwrap().train
    }

    #[test]
    fn one_cycle_is_a_triangle_ending_at_zero() {
        let t = train("crammed-bert", &[]);
        assert_eq!(learning_rate(&t, 0.0), 0.0);
        assert!((learning_rate(&t, 0.25) - 5e-4).abs() < 1e-12);
        assert!((learning_rate(&t, 0.5) - 1e-3).abs() < 1e-12);
        assert!((learning_rate(&t, 0.75) - 5e-4).abs() < 1e-12);
        assert_eq!(learning_rate(&t, 1.0), 0.0);
    }

    #[test]
    fn cosine_warms_up_then_decays_to_floor() {
        let t = train("gpt-small", &[]);
        assert!((learning_rate(&t, 0.01) - 3e-4).abs() < 1e-12);
        assert!((learning_rate(&t, 0.02) - 6e-4).abs() < 1e-12);
        let mid = learning_rate(&t, 0.51);
        assert!((mid - (6e-5 + 0.5 * (6e-4 - 6e-5))).abs() < 1e-9, "{mid}");
        assert!((learning_rate(&t, 1.0) - 6e-5).abs() < 1e-12);
    }

    #[test]
    fn constant_and_linear() {
        let t = train("tiny", &["train.schedule=constant", "train.warmup=0.1"]);
        assert_eq!(learning_rate(&t, 0.9), t.lr);
        let t = train(
            "tiny",
            &[
                "train.schedule=linear",
                "train.warmup=0",
                "train.final_lr=0",
            ],
        );
        assert!((learning_rate(&t, 0.5) - t.lr / 2.0).abs() < 1e-12);
    }

    #[test]
    fn batch_ramps_in_whole_micro_batches() {
        let t = train("crammed-bert", &[]);
        assert_eq!(batch_size(&t, 0.0), 192);
        assert_eq!(batch_size(&t, 0.75), 4032);
        assert_eq!(batch_size(&t, 1.0), 4032);
        let mid = batch_size(&t, 0.375);
        assert_eq!(mid % 192, 0);
        assert!(mid > 1900 && mid < 2200, "{mid}");
        // One micro-batch until the line reaches one and a half.
        assert_eq!(batch_size(&t, 0.75 * 1.4 / 21.0), 192);
        assert_eq!(batch_size(&t, 0.75 * 1.6 / 21.0), 384);
        let t = train("bert-base", &[]);
        assert_eq!(batch_size(&t, 0.0), 256);
    }
}
