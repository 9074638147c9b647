//! The layers of `src/` point down only (issue 16): a module may name
//! (`crate::x`) only modules of a lower layer. The rule is read from the
//! source's code lines (comments and doc links aside), so a new upward
//! import fails here, where a reviewer would otherwise have to notice it.
//!
//! No pair crosses: `KNOWN` is empty and must stay so.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Layers, lowest first. `optim` (the optimizer and its state) and
/// `parallel` (collectives and data-parallel reducers) sit below `train`,
/// which runs one rank of a group through them; `launch` starts the ranks
/// (threads, worker processes, a launched NCCL rank) and calls the trainer,
/// so it sits above it. `eval::glue` fine-tunes a pretrained run through the
/// trainer's step, schedules and run loading, so it sits above `train`; the
/// rest of `eval` (held-out loss) sits below it, since training evaluates.
const LAYERS: &[&[&str]] = &[
    &["fsio", "random"],
    &["config"],
    &["backend"],
    &["data"],
    &["model"],
    &["optim", "eval"],
    &["parallel"],
    &["train"],
    &["eval::glue", "launch"],
    &["scaling", "export"],
    &["report"],
    &["cli"],
];

/// Upward imports that exist today, each with its way out. Empty: the last
/// one (train ↔ dist) went with the split of `dist` into `parallel` (below
/// the trainer) and `launch` (above it). New entries are not allowed.
const KNOWN: &[(&str, &str, &str)] = &[];

/// Items exported at the crate root (`#[macro_export]` macros), with the
/// module that defines them.
const ROOT_ITEMS: &[(&str, &str)] = &[("on_device", "backend")];

fn layer_of(unit: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&unit))
        .unwrap_or_else(|| panic!("module {unit} has no layer in tests/layers.rs: add it"))
}

/// The unit a source file belongs to: its top-level module, or `eval::glue`.
fn unit_of(rel: &Path) -> Option<String> {
    let parts: Vec<&str> = rel.iter().filter_map(|p| p.to_str()).collect();
    let top = parts.first()?.trim_end_matches(".rs");
    if matches!(top, "lib" | "main") {
        return None;
    }
    if top == "eval"
        && parts
            .get(1)
            .is_some_and(|p| p.trim_end_matches(".rs") == "glue")
    {
        return Some("eval::glue".into());
    }
    Some(top.to_string())
}

/// The units a line of code names: `crate::x` (and `crate::eval::glue`).
fn named_units(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name == "eval" && rest["eval".len()..].starts_with("::glue") {
            out.push("eval::glue".into());
        } else if let Some((_, module)) = ROOT_ITEMS.iter().find(|(item, _)| *item == name) {
            out.push(module.to_string());
        } else if !name.is_empty() {
            out.push(name);
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every (from, to) pair of units with the files that make it.
fn imports() -> BTreeMap<(String, String), BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(
        files.len() > 50,
        "found only {} files under {}",
        files.len(),
        src.display()
    );
    let mut pairs: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let Some(from) = unit_of(rel) else { continue };
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for to in named_units(line) {
                if to != from {
                    pairs
                        .entry((from.clone(), to))
                        .or_default()
                        .insert(rel.display().to_string());
                }
            }
        }
    }
    pairs
}

#[test]
fn modules_import_only_lower_layers() {
    let mut upward = Vec::new();
    let mut known_seen = BTreeSet::new();
    for ((from, to), files) in imports() {
        // `eval::glue` may use the rest of `eval`, its own module.
        if from == "eval::glue" && to == "eval" {
            continue;
        }
        if layer_of(&to) < layer_of(&from) {
            continue;
        }
        if KNOWN.iter().any(|(f, t, _)| *f == from && *t == to) {
            known_seen.insert((from, to));
            continue;
        }
        upward.push(format!(
            "{from} -> {to} (layer {} -> {}): {files:?}",
            layer_of(&from),
            layer_of(&to)
        ));
    }
    assert!(
        upward.is_empty(),
        "imports that point up a layer (fix them, or change the layers in tests/layers.rs and DESIGN.md \
         with a reason):\n{}",
        upward.join("\n")
    );
    // A known exception that no longer exists must leave the list.
    for (from, to, _) in KNOWN {
        assert!(
            known_seen.contains(&(from.to_string(), to.to_string())),
            "{from} -> {to} no longer crosses: remove it from KNOWN"
        );
    }
}

#[test]
fn the_rule_reads_imports_as_written() {
    assert_eq!(named_units("use crate::train::{a, b};"), ["train"]);
    assert_eq!(
        named_units("let x = crate::eval::glue::run(crate::model::M);"),
        ["eval::glue", "model"]
    );
    assert_eq!(
        unit_of(Path::new("eval/glue/finetune.rs")).as_deref(),
        Some("eval::glue")
    );
    assert_eq!(unit_of(Path::new("eval/mod.rs")).as_deref(), Some("eval"));
    assert_eq!(unit_of(Path::new("fsio.rs")).as_deref(), Some("fsio"));
    assert_eq!(unit_of(Path::new("lib.rs")), None);
}
