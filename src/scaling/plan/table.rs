//! The plan as the table `cram scale plan` prints.

use super::{loss, Plan, Ranged};
use std::fmt::Write as _;

fn fmt_ranged(r: &Ranged) -> String {
    match r.interval {
        Some([lo, hi]) => format!("{:.3e} [{lo:.2e}, {hi:.2e}]", r.value),
        None => format!("{:.3e}", r.value),
    }
}

impl Plan {
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "compute C = {:.3e} FLOPs ({})\n",
            self.compute, self.assumption
        );
        let _ = writeln!(
            out,
            "{:<36} {:<14} {:<34} {:<34} loss [interval]",
            "fit", "N counts", "N_opt [95% interval]", "D_opt tokens [95% interval]"
        );
        for a in &self.allocations {
            let _ = writeln!(
                out,
                "{:<36} {:<14} {:<34} {:<34} {}",
                a.fit,
                a.counts,
                fmt_ranged(&a.n),
                fmt_ranged(&a.tokens),
                loss::text(a)
            );
        }
        let _ = writeln!(
            out,
            "\nshapes of preset {} (width/depth as near the preset's as 10% of N allows):",
            self.preset
        );
        for a in &self.allocations {
            if let Some(s) = &a.shape {
                let losses: Vec<String> = (s.losses.iter())
                    .map(|l| format!("{} {:.3}", l.law, l.loss))
                    .collect();
                let _ = writeln!(
                    out,
                    "  {:<36} --set model.hidden={} --set model.layers={} --set model.heads={} --set model.ffn={}  \
                     (N {:.3e}, total {:.3e}; {:.3e} tokens at its C per token; expected loss: {})",
                    a.fit,
                    s.hidden,
                    s.layers,
                    s.heads,
                    s.ffn,
                    s.n_params,
                    s.n_total,
                    s.tokens,
                    losses.join(", ")
                );
            }
        }
        if let Some(b) = &self.batch {
            let _ = writeln!(
                out,
                "\nbatch size: {:.0} sequences ({:.3e} tokens) per step, from {}",
                b.sequences, b.tokens, b.source
            );
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        out
    }
}
