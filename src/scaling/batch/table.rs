//! The measurement as `cram scale batch` prints it.

use super::CriticalBatchReport;
use std::fmt::Write as _;

impl CriticalBatchReport {
    pub fn table(&self) -> String {
        let mut out = String::new();
        for m in &self.models {
            let reached = m.runs.iter().filter(|r| r.steps.is_some()).count();
            let _ = writeln!(
                out,
                "model N = {:.3e}: target loss {:.4} (smoothed over {} logs), reached by {reached} of {} runs",
                m.n_params,
                m.target_loss,
                self.window,
                m.runs.len()
            );
            let _ = writeln!(
                out,
                "  {:<34} {:>8} {:>14} {:>14}",
                "run", "batch", "steps", "tokens"
            );
            for r in &m.runs {
                let _ = writeln!(
                    out,
                    "  {:<34} {:>8} {:>14} {:>14}",
                    r.run,
                    r.batch,
                    r.steps.map_or("-".into(), |s| format!("{s:.0}")),
                    r.tokens.map_or("-".into(), |t| format!("{t:.4e}"))
                );
            }
            if let (Some(s), Some(e), Some(b)) = (m.s_min, m.e_min, m.b_crit) {
                let _ = writeln!(
                    out,
                    "  S = S_min + E_min/B: S_min {s:.0} steps, E_min {e:.0} sequences -> B_crit {b:.1} sequences{}",
                    m.b_crit_tokens
                        .map_or(String::new(), |t| format!(" ({t:.3e} tokens)"))
                );
            }
            if let Some(b) = m.b_simple {
                let _ = writeln!(
                    out,
                    "  gradient noise scale B_simple near the target: {b:.1} sequences (mean of {} logs)",
                    m.b_simple_logs
                );
            }
            if !m.ladder.is_empty() {
                let _ = writeln!(
                    out,
                    "  by target loss (runs that reach each; B in sequences):\n  {:>10} {:>8} {:>10} {:>12} {:>10}",
                    "target", "reached", "B_crit", "tokens", "B_simple"
                );
                for r in &m.ladder {
                    let or_dash =
                        |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or("-".into(), f);
                    let _ = writeln!(
                        out,
                        "  {:>10.4} {:>8} {:>10} {:>12} {:>10}",
                        r.target_loss,
                        r.reached,
                        or_dash(r.b_crit, &|b| format!(
                            "{b:.1}{}",
                            if r.bracketed { "" } else { "*" }
                        )),
                        or_dash(r.b_crit_tokens, &|t| format!("{t:.3e}")),
                        or_dash(r.b_simple, &|b| format!("{b:.1}")),
                    );
                }
                if m.ladder.iter().any(|r| r.b_crit.is_some() && !r.bracketed) {
                    let _ = writeln!(
                        out,
                        "  (* beyond a factor 2 of the batches that reached it: extrapolated)"
                    );
                }
            }
            for n in &m.notes {
                let _ = writeln!(out, "  note: {n}");
            }
            out.push('\n');
        }
        out
    }
}
