//! Which settings a resumed run may change. A run's meaning is its model,
//! objective, data and seed; the budget, the learning rate, clipping and the
//! cadence of logs, evaluations and checkpoints are how a user steers or
//! rescues it (extend a finished run, recover from a divergence with a lower
//! rate), so `--resume` accepts changes to those and names any other.

use super::Config;

/// The keys `--resume` may change.
pub const RESUMABLE: &[&str] = &[
    "train.budget",
    "train.lr",
    "train.final_lr",
    "train.grad_clip",
    "train.log_every",
    "train.eval_every",
    "train.eval_batches",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "guard.skip_limit",
    "guard.max_rollbacks",
    "guard.lr_factor",
    "guard.spike_factor",
    "guard.spike_window",
];

/// One setting that differs between a run's saved config and the one asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub key: String,
    pub saved: String,
    pub asked: String,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} -> {}", self.key, self.saved, self.asked)
    }
}

/// The settings that differ, in key order; an error naming every change that
/// `--resume` may not make.
pub fn resume_changes(saved: &Config, asked: &Config) -> Result<Vec<Change>, String> {
    let changes = differences(saved, asked);
    let refused: Vec<String> = changes
        .iter()
        .filter(|c| !RESUMABLE.contains(&c.key.as_str()))
        .map(Change::to_string)
        .collect();
    if !refused.is_empty() {
        return Err(format!(
            "{} would change what the run is; a resumed run may change only {}",
            refused.join(", "),
            RESUMABLE.join(", ")
        ));
    }
    Ok(changes)
}

fn differences(saved: &Config, asked: &Config) -> Vec<Change> {
    let (a, b) = (leaves(saved), leaves(asked));
    let mut out = Vec::new();
    for (key, va) in &a {
        let vb = b.get(key);
        if vb != Some(va) {
            out.push(Change {
                key: key.clone(),
                saved: va.to_string(),
                asked: vb.map_or("(none)".into(), |v| v.to_string()),
            });
        }
    }
    for (key, vb) in &b {
        if !a.contains_key(key) {
            out.push(Change {
                key: key.clone(),
                saved: "(none)".into(),
                asked: vb.to_string(),
            });
        }
    }
    out.sort_by(|x, y| x.key.cmp(&y.key));
    out
}

/// `section.key` → value for every leaf of the config's TOML form.
fn leaves(cfg: &Config) -> std::collections::BTreeMap<String, toml::Value> {
    let tree = toml::Value::try_from(cfg).expect("a Config always serializes");
    let mut out = std::collections::BTreeMap::new();
    collect(&tree, "", &mut out);
    out
}

fn collect(
    v: &toml::Value,
    prefix: &str,
    out: &mut std::collections::BTreeMap<String, toml::Value>,
) {
    match v {
        toml::Value::Table(t) => {
            for (k, child) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                collect(child, &key, out);
            }
        }
        leaf => {
            out.insert(prefix.to_string(), leaf.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(sets: &[&str]) -> Config {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        Config::resolve("tiny", &sets).unwrap()
    }

    #[test]
    fn budget_and_lr_may_change_and_are_listed() {
        let changes =
            resume_changes(&tiny(&[]), &tiny(&["train.budget=2h", "train.lr=1e-4"])).unwrap();
        let keys: Vec<&str> = changes.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["train.budget", "train.lr"]);
        assert_eq!(changes[0].asked, "\"2h\"");
        assert!(resume_changes(&tiny(&[]), &tiny(&[])).unwrap().is_empty());
    }

    #[test]
    fn a_change_of_shape_or_data_is_refused_by_name() {
        let err = resume_changes(
            &tiny(&[]),
            &tiny(&["model.hidden=64", "train.lr=1e-4", "train.seed=3"]),
        )
        .unwrap_err();
        assert!(
            err.starts_with("model.hidden 128 -> 64, train.seed 0 -> 3 would change"),
            "{err}"
        );
        assert!(err.contains("train.budget, train.lr"), "{err}");
    }
}
