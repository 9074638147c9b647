//! The model card (`README.md`) of an export: the preset and what the run
//! changed, the data, the budget and what was spent, the held-out loss, and
//! how to load the folder. Every fact is read from the run folder; a fact
//! the run lacks (an imported run has no metrics) is left out, not guessed.

use super::mapping::HfMapping;
use crate::config::Config;
use crate::train::{read_records, Record, TrainProgress};
use serde_json::Value;
use std::fmt::Write;
use std::path::Path;

pub struct CardFacts {
    pub title: String,
    pub mapping: HfMapping,
    pub preset: &'static str,
    pub changes: Vec<String>,
    pub params: usize,
    pub config: Config,
    pub progress: Option<TrainProgress>,
    /// Step, held-out loss and accuracy of the last evaluation up to the checkpoint.
    pub eval: Option<(u64, f64, f64)>,
    pub data: Option<String>,
}

impl CardFacts {
    pub fn gather(
        run: &Path,
        checkpoint: &Path,
        config: &Config,
        mapping: HfMapping,
        params: usize,
        manifest: Option<&Path>,
    ) -> CardFacts {
        let (preset, changes) = mapping.changes_from_preset(&config.model);
        let progress: Option<TrainProgress> =
            read_json(&checkpoint.join("state.json")).and_then(|v| serde_json::from_value(v).ok());
        let step = progress.as_ref().map_or(u64::MAX, |p| p.step);
        CardFacts {
            title: run
                .file_name()
                .map_or("cram model".into(), |n| n.to_string_lossy().into_owned()),
            mapping,
            preset,
            changes,
            params,
            config: config.clone(),
            progress,
            eval: last_eval(&crate::train::metrics_file(run), step),
            data: manifest.and_then(read_json).map(|m| describe_data(&m)),
        }
    }
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// The last evaluation up to `through_step` with a known loss (an accuracy
/// written as null reads as NaN).
fn last_eval(metrics: &Path, through_step: u64) -> Option<(u64, f64, f64)> {
    let records = read_records(metrics).ok()?;
    records
        .iter()
        .rev()
        .filter_map(Record::as_eval)
        .find(|e| e.step <= through_step && e.val_loss.is_finite())
        .map(|e| (e.step, e.val_loss, e.val_accuracy))
}

/// One line about the prepared data, from its manifest (read loosely, so
/// that a newer manifest format still gives a card).
fn describe_data(m: &Value) -> String {
    let num = |path: &[&str]| {
        path.iter()
            .try_fold(m, |v, k| v.get(k))
            .and_then(Value::as_u64)
            .map_or("?".into(), |n| n.to_string())
    };
    let inputs: Vec<&str> = m
        .get("inputs")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|i| i.get("path")?.as_str()).collect())
        .unwrap_or_default();
    let shown = match inputs.len() {
        0 => "unnamed inputs".to_string(),
        1..=3 => inputs.join(", "),
        n => format!("{}, … ({n} files)", inputs[..2].join(", ")),
    };
    format!(
        "{} training documents, {} tokens (from {shown}); {} vocabulary of {} ids; sequences of {} tokens",
        num(&["splits", "train", "documents"]),
        num(&["splits", "train", "tokens"]),
        m.pointer("/tokenizer/kind").and_then(Value::as_str).unwrap_or("tokenizer"),
        num(&["tokenizer", "vocab_size"]),
        num(&["seq_len"]),
    )
}

pub fn model_card(f: &CardFacts) -> String {
    let causal = f.mapping == HfMapping::Llama;
    let (task, auto) = if causal {
        ("text-generation", "AutoModelForCausalLM")
    } else {
        ("fill-mask", "AutoModelForMaskedLM")
    };
    let remote = if f.mapping == HfMapping::Crammed {
        ", trust_remote_code=True"
    } else {
        ""
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "---\nlibrary_name: transformers\npipeline_tag: {task}\ntags:\n- cram\n---\n"
    );
    let _ = writeln!(s, "# {}\n", f.title);
    let origin = match &f.progress {
        Some(p) if p.step == 0 => {
            "an untrained (step 0) cram checkpoint, such as `cram import hf` writes"
        }
        _ => "a model trained with cram",
    };
    let _ = writeln!(
        s,
        "A `{}` exported by `cram export hf` from {origin}.\n",
        f.mapping.class()
    );
    let _ = writeln!(s, "| | |\n| --- | --- |");
    let preset = if f.changes.is_empty() {
        format!("`{}`", f.preset)
    } else {
        format!("`{}` with {}", f.preset, f.changes.join(", "))
    };
    let _ = writeln!(s, "| nearest preset | {preset} |");
    let m = &f.config.model;
    let _ = writeln!(
        s,
        "| size | {} parameters: {} layers, hidden {}, {} heads, feed-forward {} |",
        f.params, m.layers, m.hidden, m.heads, m.ffn
    );
    if let Some(data) = &f.data {
        let _ = writeln!(s, "| data | {data} |");
    }
    let budget = &f.config.train.budget;
    match &f.progress {
        Some(p) => {
            let _ = writeln!(
                s,
                "| budget | {budget}; this checkpoint: step {}, {} tokens, {:.3e} FLOPs, {:.0} s |",
                p.step, p.spent.tokens, p.spent.flops, p.spent.seconds
            );
        }
        None => {
            let _ = writeln!(s, "| budget | {budget} |");
        }
    }
    if let Some((step, loss, acc)) = f.eval {
        let _ = writeln!(
            s,
            "| held-out loss | {loss:.4} nats/token, accuracy {acc:.4} (step {step}) |"
        );
    }
    let _ = writeln!(
        s,
        "\n## Use\n\n```python\nfrom transformers import AutoTokenizer, {auto}\n"
    );
    // transformers 5 reads the model's config before the tokenizer's and asks
    // about custom code unless told.
    let _ = writeln!(
        s,
        "tokenizer = AutoTokenizer.from_pretrained(\"path/to/this/folder\"{remote})"
    );
    let _ = writeln!(
        s,
        "model = {auto}.from_pretrained(\"path/to/this/folder\"{remote})\n```\n"
    );
    let _ = writeln!(
        s,
        "`scripts/check_hf_parity.py` in the cram repository compares this folder's logits \
         in transformers with cram's own forward pass (`cram infer`)."
    );
    s
}
