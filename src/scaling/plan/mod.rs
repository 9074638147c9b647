//! `cram scale plan`: how to spend a budget. The budget becomes compute
//! C = peak FLOP/s × MFU × seconds (or is given in FLOPs), and each fit of
//! `fit.json` gives N_opt(C) and D_opt(C), with the 95% interval of the same
//! quantity over the fit's bootstrap replicates. Each N_opt is turned into a
//! shape of the sweep's base preset (same head width and feed-forward ratio,
//! the depth whose width/depth ratio is nearest the preset's), and the batch
//! size comes from the gradient noise scale measured in the sweep. Each
//! law's expected loss carries an interval ([`loss`]): the bootstrap's,
//! widened to the law's error on the held-out compute level.

mod batch;
mod loss;
mod table;

pub use batch::{BatchAdvice, MeasuredCritical};

use super::counts::Counts;
use super::fit::stats::quantile;
use super::fit::{FitReport, FrontierReport, Joint, Parametric};
use super::points::{ParamCount, PointSet};
use super::ScalingError;
use crate::config::{Budget, Config};
use serde::Serialize;

/// Peak dense throughput of an accelerator, in FLOP/s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DevicePeak {
    pub name: &'static str,
    pub flops: f64,
    pub what: &'static str,
}

/// Spec-sheet dense peaks (no sparsity) of the precision training uses.
pub const DEVICES: &[DevicePeak] = &[
    DevicePeak {
        name: "h100",
        flops: 989e12,
        what: "H100 SXM, dense BF16",
    },
    DevicePeak {
        name: "h200",
        flops: 989e12,
        what: "H200 SXM, dense BF16",
    },
    DevicePeak {
        name: "a100",
        flops: 312e12,
        what: "A100, dense BF16",
    },
    DevicePeak {
        name: "a6000",
        flops: 154.8e12,
        what: "RTX A6000, dense BF16 tensor cores",
    },
    DevicePeak {
        name: "l4",
        flops: 121e12,
        what: "L4, dense BF16",
    },
    DevicePeak {
        name: "rtx4090",
        flops: 165.2e12,
        what: "RTX 4090, dense BF16 (FP32 accumulate)",
    },
    DevicePeak {
        name: "v100",
        flops: 125e12,
        what: "V100, dense FP16 tensor cores",
    },
    DevicePeak {
        name: "cpu",
        flops: 1e11,
        what: "a few CPU cores, FP32 SIMD (rough)",
    },
];

/// The model FLOP utilisation assumed when none is given.
pub const DEFAULT_MFU: f64 = 0.4;

pub fn device(name: &str) -> Result<DevicePeak, ScalingError> {
    DEVICES
        .iter()
        .find(|d| d.name.eq_ignore_ascii_case(name))
        .copied()
        .ok_or_else(|| {
            ScalingError::Plan(format!(
                "unknown device '{name}'; the devices are: {}",
                DEVICES
                    .iter()
                    .map(|d| d.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// A budget in FLOPs: a time on `device` at `mfu`, or a FLOP count as is.
pub fn budget_compute(budget: &Budget, device: &DevicePeak, mfu: f64) -> Result<f64, ScalingError> {
    match *budget {
        Budget::Seconds(s) => Ok(s * device.flops * mfu),
        Budget::Flops(f) => Ok(f),
        _ => Err(ScalingError::Plan(format!(
            "a plan needs a time (24h) or a FLOP count (1e21 flops), not {budget}"
        ))),
    }
}

/// A value with its 95% bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Ranged {
    pub value: f64,
    pub interval: Option<[f64; 2]>,
}

/// One fit's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Allocation {
    pub fit: String,
    /// "non-embedding" or "total".
    pub counts: String,
    pub n: Ranged,
    pub tokens: Ranged,
    pub loss: Option<f64>,
    /// The loss's 95% bootstrap interval widened to the law's held-out error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_interval: Option<[f64; 2]>,
    pub shape: Option<ShapeChoice>,
}

/// A shape of the base preset near N_opt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShapeChoice {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub ffn: usize,
    pub n_params: f64,
    pub n_total: f64,
    /// Tokens for the whole compute with this shape's C per token.
    pub tokens: f64,
    /// What the laws that predict one run's loss from (N, D) expect of this
    /// shape trained on these tokens.
    pub losses: Vec<ShapeLoss>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShapeLoss {
    pub law: String,
    pub loss: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub compute: f64,
    pub assumption: String,
    pub preset: String,
    pub allocations: Vec<Allocation>,
    pub batch: Option<BatchAdvice>,
    pub notes: Vec<String>,
}

fn ranged(value: f64, mut reps: Vec<f64>) -> Ranged {
    reps.retain(|v| v.is_finite());
    reps.sort_by(f64::total_cmp);
    Ranged {
        value,
        interval: (reps.len() >= 10).then(|| [quantile(&reps, 0.025), quantile(&reps, 0.975)]),
    }
}

/// N_opt = e^(ln k + a·ln C) from [a, ln k, b, ln k_D, ...] replicates;
/// with `loss_term` (a frontier's [.., −α_C, α_C·ln C_c]) also the loss
/// (C_c/C)^α_C and its interval.
fn line_allocation(
    name: &str,
    counts: ParamCount,
    compute: f64,
    params: [f64; 4],
    reps: &[Vec<f64>],
    loss_term: Option<[f64; 2]>,
) -> Allocation {
    let at = |a: f64, k: f64| (k + a * compute.ln()).exp();
    let loss = loss_term.map(|[slope, k]| {
        ranged(
            at(slope, k),
            reps.iter()
                .filter(|r| r.len() >= 6)
                .map(|r| at(r[4], r[5]))
                .collect(),
        )
    });
    Allocation {
        fit: name.into(),
        counts: count_name(counts),
        n: ranged(
            at(params[0], params[1]),
            reps.iter().map(|r| at(r[0], r[1])).collect(),
        ),
        tokens: ranged(
            at(params[2], params[3]),
            reps.iter().map(|r| at(r[2], r[3])).collect(),
        ),
        loss: loss.map(|l| l.value),
        loss_interval: loss.and_then(|l| l.interval),
        shape: None,
    }
}

fn count_name(c: ParamCount) -> String {
    match c {
        ParamCount::NonEmbedding => "non-embedding".into(),
        ParamCount::Total => "total".into(),
    }
}

/// The joint Kaplan law's optimum at C = 6ND:
/// N^(1+α_N/α_D) = (α_N/α_D)·N_c^(α_N/α_D)·C/(6·D_c).
fn joint_optimum(j: &Joint, compute: f64) -> (f64, f64) {
    let r = j.alpha_n / j.alpha_d;
    let ln_n = (r.ln() + r * j.n_c.ln() + (compute / (6.0 * j.d_c)).ln()) / (1.0 + r);
    let n = ln_n.exp();
    (n, compute / (6.0 * n))
}

/// Every fit's allocation of `compute`.
pub fn allocations(fit: &FitReport, compute: f64) -> Vec<Allocation> {
    let reps = &fit.replicates;
    let mut out = Vec::new();
    let k = &fit.kaplan;
    let joint = k.joint();
    // The laws with a closed-form optimum: (N, D, loss) there, for the fit
    // and for each bootstrap replicate.
    let joint_at = |j: Joint| {
        let (n, d) = joint_optimum(&j, compute);
        (n, d, j.loss(n, d))
    };
    let joint_reps = (reps.kaplan_joint.iter())
        .map(|r| joint_at(Joint::from_params(r)))
        .collect();
    out.push(optimum_allocation(
        JOINT,
        ParamCount::NonEmbedding,
        joint_at(joint),
        joint_reps,
    ));
    // The two compute frontiers: N_opt and D_opt lines in C, and the loss (C_c/C)^α_C.
    let frontier = |name, counts, f: &FrontierReport, reps| {
        let loss = frontier_loss_term(f.alpha_c.value, f.c_c.value);
        line_allocation(name, counts, compute, f.optimum_lines(), reps, Some(loss))
    };
    if let Some(f) = &k.frontier {
        out.push(frontier(
            FRONTIER,
            ParamCount::NonEmbedding,
            f,
            &reps.kaplan_frontier,
        ));
    }
    let c = &fit.chinchilla;
    if let Some(f) = &c.approach1 {
        out.push(frontier(APPROACH1, ParamCount::Total, f, &reps.approach1));
    }
    if let Some(f) = &c.approach2 {
        let (lines, reps) = (f.optimum_lines(), &reps.approach2);
        out.push(line_allocation(
            APPROACH2,
            ParamCount::Total,
            compute,
            lines,
            reps,
            None,
        ));
    }
    let Some(law) = c.parametric() else {
        return out;
    };
    let parametric_at = |p: Parametric| {
        let (n, d) = p.optimum(compute);
        (n, d, p.loss(n, d))
    };
    let p3_reps = (reps.approach3.iter())
        .map(|r| parametric_at(Parametric::from_params(r)))
        .collect();
    out.push(optimum_allocation(
        APPROACH3,
        ParamCount::Total,
        parametric_at(law),
        p3_reps,
    ));
    out
}

/// The row of a law with a closed-form optimum: its (N, D, loss) there, and
/// the same of each bootstrap replicate for the intervals.
fn optimum_allocation(
    name: &str,
    counts: ParamCount,
    (n, d, loss): (f64, f64, f64),
    reps: Vec<(f64, f64, f64)>,
) -> Allocation {
    Allocation {
        fit: name.into(),
        counts: count_name(counts),
        n: ranged(n, reps.iter().map(|r| r.0).collect()),
        tokens: ranged(d, reps.iter().map(|r| r.1).collect()),
        loss: Some(loss),
        loss_interval: ranged(loss, reps.iter().map(|r| r.2).collect()).interval,
        shape: None,
    }
}

/// A frontier's (C_c/C)^α_C as [slope, intercept] of its log against ln C,
/// the layout of its bootstrap replicates' last two values.
fn frontier_loss_term(alpha_c: f64, c_c: f64) -> [f64; 2] {
    [-alpha_c, alpha_c * c_c.ln()]
}

/// The rows of the plan, one per law.
const JOINT: &str = "Kaplan joint L(N,D)";
const FRONTIER: &str = "Kaplan compute frontier";
const APPROACH1: &str = "Chinchilla approach 1 (envelope)";
const APPROACH2: &str = "Chinchilla approach 2 (IsoFLOP)";
/// The row of approach 3, the law the batch size is taken from.
const APPROACH3: &str = "Chinchilla approach 3 (parametric)";
/// The shape of `base` whose parameter count (of kind `counts`) is nearest
/// `target` within 10%, preferring the base's width/depth ratio.
pub fn choose_shape(base: &Config, target: f64, counts: &str, compute: f64) -> Option<ShapeChoice> {
    let head_dim = base.model.hidden / base.model.heads;
    let ffn_ratio = base.model.ffn as f64 / base.model.hidden as f64;
    let aspect = (base.model.hidden as f64 / base.model.layers as f64).ln();
    let count_of = |c: &Counts| {
        if counts == "total" {
            c.n_total
        } else {
            c.n_params
        }
    };
    let shape_of = |hidden: usize, layers: usize| {
        let mut cfg = base.clone();
        cfg.model.hidden = hidden;
        cfg.model.layers = layers;
        cfg.model.heads = hidden / head_dim;
        cfg.model.ffn = ((ffn_ratio * hidden as f64 / 2.0).round() as usize).max(1) * 2;
        let c = Counts::of(&cfg);
        (cfg, c)
    };
    let mut candidates = Vec::new();
    for layers in 1..=128usize {
        let mut hidden = head_dim;
        // Widths in steps of one head, up to the first one over the target.
        while hidden <= 65536 {
            let (cfg, c) = shape_of(hidden, layers);
            let err = (count_of(&c) / target).ln();
            candidates.push((err.abs(), (hidden as f64 / layers as f64).ln(), cfg, c));
            if err > 0.0 {
                break;
            }
            hidden += head_dim;
        }
    }
    let close: Vec<_> = candidates.iter().filter(|c| c.0 < 1.1f64.ln()).collect();
    let pick = if close.is_empty() {
        candidates.iter().min_by(|a, b| a.0.total_cmp(&b.0))?
    } else {
        *close
            .iter()
            .min_by(|a, b| (a.1 - aspect).abs().total_cmp(&(b.1 - aspect).abs()))?
    };
    let (_, _, cfg, c) = pick;
    Some(ShapeChoice {
        hidden: cfg.model.hidden,
        layers: cfg.model.layers,
        heads: cfg.model.heads,
        ffn: cfg.model.ffn,
        n_params: c.n_params,
        n_total: c.n_total,
        tokens: compute / c.flops_per_token,
        losses: Vec::new(),
    })
}

/// The plan for `compute` FLOPs.
/// An approach-3 E below this (nats) means the fit found no irreducible loss.
const DEGENERATE_E: f64 = 1e-3;

/// How far the laws that predict a single run's loss missed the sweep's
/// best run of its largest compute level when that level was held out: the accuracy a plan can claim at best.
fn holdout_note(h: &crate::scaling::fit::HoldoutReport) -> Option<String> {
    let misses: Vec<String> = h
        .predictions
        .iter()
        .filter(|p| p.note.is_none())
        .map(|p| format!("{} {:+.1}%", p.law, 100.0 * p.relative_error))
        .collect();
    if misses.is_empty() {
        return None;
    }
    Some(format!(
        "checked on a run the laws had not seen: fitted without the largest compute level, at its best run ({}, C = {:.3e}), \
         they missed its loss of {:.3} by {}; expect at least that much error here",
        if h.run.is_empty() { "unnamed" } else { &h.run },
        h.compute,
        h.loss,
        misses.join(", ")
    ))
}

pub fn plan(
    fit: &FitReport,
    points: Option<&PointSet>,
    critical: &[MeasuredCritical],
    base: &Config,
    preset: &str,
    compute: f64,
    assumption: String,
) -> Plan {
    let mut allocations = allocations(fit, compute);
    for a in &mut allocations {
        a.shape = choose_shape(base, a.n.value, &a.counts, compute);
        if let Some(s) = &mut a.shape {
            s.losses = loss::at_shape(fit, s);
        }
    }
    let mut notes = Vec::new();
    let largest = fit.compute_range[1];
    if compute > 10.0 * largest {
        notes.push(format!(
            "the budget is {:.1} orders of magnitude beyond the largest run of the sweep (C = {largest:.3e}); \
             the laws are extrapolated",
            (compute / largest).log10()
        ));
    }
    if let Some(h) = &fit.holdout {
        notes.extend(holdout_note(h));
        for a in &mut allocations {
            loss::widen_to_holdout(a, h);
        }
    }
    let disagreement = (allocations.iter_mut())
        .filter_map(loss::widen_to_laws)
        .fold(0.0, f64::max);
    if disagreement > 0.0 {
        notes.push(format!(
            "at the shapes named, the laws that predict a run's loss (Kaplan L(N, D), approach 3) disagree \
             by up to {:.1}%; each interval covers both, since beyond the sweep the choice of law is \
             itself an error the bootstrap does not see",
            100.0 * disagreement
        ));
    }
    if let Some(e) = fit.chinchilla.e.as_ref().filter(|e| e.value < DEGENERATE_E) {
        notes.push(format!(
            "approach 3's irreducible loss E fitted to {:.1e}, i.e. none: the runs do not \
             show where the loss levels off, so its losses (and the batch size taken \
             from them) far beyond the runs are too optimistic",
            e.value
        ));
    }
    // The batch follows approach 3's predicted loss: the one law with an
    // irreducible term, whose loss far beyond the runs stays finite. The
    // others fall towards zero there, and B_crit(L) ∝ L^(−4.8) with them.
    let loss = allocations
        .iter()
        .find(|a| a.fit == APPROACH3)
        .and_then(|a| a.loss);
    if loss.is_none() {
        notes.push(
            "no batch size: approach 3 was not fitted, and the laws without an irreducible \
             loss predict one too low for the critical batch size to mean anything"
                .into(),
        );
    }
    let batch = loss.map(|l| batch::advice(critical, points, l, base.data.seq_len));
    Plan {
        compute,
        assumption,
        preset: preset.to_string(),
        allocations,
        batch,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_become_compute() {
        let h100 = device("H100").unwrap();
        let c = budget_compute(&Budget::parse("24h").unwrap(), &h100, 0.4).unwrap();
        assert!((c - 86400.0 * 989e12 * 0.4).abs() < 1e6);
        let c = budget_compute(&Budget::parse("1e21 flops").unwrap(), &h100, 0.4).unwrap();
        assert_eq!(c, 1e21);
        assert!(budget_compute(&Budget::parse("5M tokens").unwrap(), &h100, 0.4).is_err());
        let e = device("tpu").unwrap_err().to_string();
        assert!(e.contains("h100") && e.contains("cpu"), "{e}");
    }

    /// At the joint law's closed-form optimum no nearby N at the same C does better.
    #[test]
    fn joint_optimum_is_a_minimum() {
        let j = Joint {
            alpha_n: 0.076,
            alpha_d: 0.095,
            n_c: 8.8e13,
            d_c: 5.4e13,
        };
        let c = 1e21;
        let (n, d) = joint_optimum(&j, c);
        assert!((6.0 * n * d / c - 1.0).abs() < 1e-9);
        let l = j.loss(n, d);
        for f in [0.9, 1.1] {
            assert!(j.loss(n * f, d / f) > l);
        }
    }

    #[test]
    fn shapes_match_the_target_and_the_preset() {
        let base = Config::resolve("crammed-bert", &[]).unwrap();
        let n = Counts::of(&base).n_params;
        let s = choose_shape(&base, n, "non-embedding", 1e20).unwrap();
        assert!((s.n_params / n - 1.0).abs() < 0.1, "{s:?}");
        assert_eq!(s.heads * 64, s.hidden);
        let ratio = s.hidden as f64 / s.layers as f64;
        assert!(ratio > 30.0 && ratio < 80.0, "{s:?}");
    }
}
