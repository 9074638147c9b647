//! The relations between config fields that serde cannot express: positive
//! sizes, shapes that divide, fractions in range, finite optimizer settings.
//! One place, so that resolving a preset, importing a checkpoint, fitting a
//! config to its data and planning a sweep all check the same rules.

use super::{Arch, Config, ConfigError, FfnKind, ObjectiveKind, Positions};

impl Config {
    /// Checks the relations between fields that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let m = &self.model;
        let bad = |msg: String| Err(ConfigError::Invalid(msg));
        if m.hidden == 0 || m.layers == 0 || m.heads == 0 || m.vocab_size == 0 || m.ffn == 0 {
            return bad("model.hidden, layers, heads, ffn and vocab_size must be positive".into());
        }
        if !m.hidden.is_multiple_of(m.heads) {
            return bad(format!(
                "model.hidden ({}) must be divisible by model.heads ({})",
                m.hidden, m.heads
            ));
        }
        if m.positions == Positions::Rotary && !m.head_dim().is_multiple_of(2) {
            return bad("rotary positions need an even head dimension".into());
        }
        if matches!(m.ffn_kind, FfnKind::GluGelu | FfnKind::Swiglu) && !m.ffn.is_multiple_of(2) {
            return bad(format!(
                "model.ffn ({}) must be even for a gated feed-forward",
                m.ffn
            ));
        }
        if !(0.0..1.0).contains(&m.dropout) {
            return bad(format!("model.dropout ({}) must be in [0, 1)", m.dropout));
        }
        if self.data.seq_len > m.max_positions {
            return bad(format!(
                "data.seq_len ({}) exceeds model.max_positions ({})",
                self.data.seq_len, m.max_positions
            ));
        }
        let d = &self.data;
        if !(d.near_dup_threshold > 0.0 && d.near_dup_threshold <= 1.0) {
            return bad(format!(
                "data.near_dup_threshold ({}) must be in (0, 1]",
                d.near_dup_threshold
            ));
        }
        if !(d.max_tokens_per_char.is_finite() && d.max_tokens_per_char > 0.0) {
            return bad(format!(
                "data.max_tokens_per_char ({}) must be positive",
                d.max_tokens_per_char
            ));
        }
        if d.tokenizer_sample_mb == 0 {
            return bad("data.tokenizer_sample_mb must be positive".into());
        }
        let o = &self.objective;
        if o.kind == ObjectiveKind::Mlm && !(o.mask_rate > 0.0 && o.mask_rate < 1.0) {
            return bad(format!(
                "objective.mask_rate ({}) must be in (0, 1) for masked LM",
                o.mask_rate
            ));
        }
        if (o.kind == ObjectiveKind::Causal) != (m.arch == Arch::Decoder) {
            return bad(
                "objective.kind 'causal' goes with model.arch 'decoder', 'mlm' with 'encoder'"
                    .into(),
            );
        }
        let t = &self.train;
        if t.micro_batch == 0 || t.batch_size < t.micro_batch {
            return bad(format!(
                "train.batch_size ({}) must be at least train.micro_batch ({}), which must be positive",
                t.batch_size, t.micro_batch
            ));
        }
        if !(0.0..=1.0).contains(&t.warmup) || !(0.0..=1.0).contains(&t.batch_ramp) {
            return bad("train.warmup and train.batch_ramp are budget fractions in [0, 1]".into());
        }
        if !t.batch_size.is_multiple_of(t.micro_batch) {
            let below = t.batch_size / t.micro_batch * t.micro_batch;
            return bad(format!(
                "train.batch_size ({}) must be a whole number of train.micro_batch ({}): use {} or {}",
                t.batch_size,
                t.micro_batch,
                below,
                below + t.micro_batch
            ));
        }
        // NaN compares false with everything: each bound is written so that it fails.
        let finite = [
            ("train.lr", t.lr),
            ("train.final_lr", t.final_lr),
            ("train.weight_decay", t.weight_decay as f64),
            ("train.grad_clip", t.grad_clip as f64),
            ("train.beta1", t.beta1 as f64),
            ("train.beta2", t.beta2 as f64),
            ("train.eps", t.eps as f64),
        ];
        if let Some((key, value)) = finite.iter().find(|(_, v)| !v.is_finite()) {
            return bad(format!("{key} ({value}) must be a finite number"));
        }
        if !(t.lr > 0.0 && t.final_lr >= 0.0) {
            return bad("train.lr must be positive and train.final_lr non-negative".into());
        }
        if t.log_every == 0 || t.eval_every == 0 || t.checkpoint_every == 0 {
            return bad("train.log_every, eval_every and checkpoint_every must be positive".into());
        }
        let g = &self.guard;
        if !(g.lr_factor > 0.0 && g.lr_factor <= 1.0) {
            return bad(format!(
                "guard.lr_factor ({}) must be in (0, 1]: the learning rate is multiplied by it at each rollback",
                g.lr_factor
            ));
        }
        if g.skip_limit == 0 {
            return bad(
                "guard.skip_limit must be at least 1 (skipped steps before a rollback)".into(),
            );
        }
        if !(g.spike_factor == 0.0 || g.spike_factor > 1.0) || !g.spike_factor.is_finite() {
            return bad(format!(
                "guard.spike_factor ({}) must be above 1 (a logged loss above that multiple of the recent mean \
                 is a spike), or 0 to turn the check off",
                g.spike_factor
            ));
        }
        if g.spike_window < 2 {
            return bad(
                "guard.spike_window must be at least 2 (logged losses in the running mean)".into(),
            );
        }
        Ok(())
    }
}
