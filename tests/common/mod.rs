//! Shared by the integration tests: seeded random inputs, English text from
//! the built-in corpus, and a small prepared dataset built once per binary.
//! Each test binary uses a different part, hence the allowance.
#![allow(dead_code)]

use cram::data::{prepare, PrepareOptions};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// `len` values uniform in `[-scale, scale)`.
pub fn uniform(rng: &mut ChaCha8Rng, len: usize, scale: f32) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-scale..scale)).collect()
}

/// `len` ids uniform in `[0, bound)`.
pub fn ids(rng: &mut ChaCha8Rng, len: usize, bound: u32) -> Vec<u32> {
    (0..len).map(|_| rng.random_range(0..bound)).collect()
}

/// The addresses of the built-in corpus, oldest first; a missing corpus
/// fails the test with the command that installs it.
pub fn builtin_corpus_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(".corpus/sotu");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run scripts/setup to install the built-in corpus",
                dir.display()
            )
        })
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    files
}

/// The built-in corpus that `scripts/setup` installs (a fresh clone has it
/// after the README's first command; CI runs it), as one text of paragraphs:
/// each address is cut after the first sentence end past 1,500 bytes, so
/// that a slice holds enough documents for a validation split.
pub fn builtin_english() -> String {
    let mut paragraphs = Vec::new();
    for file in builtin_corpus_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut rest = text.trim();
        while !rest.is_empty() {
            let cut = rest
                .get(1500..)
                .and_then(|tail| tail.find(". "))
                .map_or(rest.len(), |i| 1500 + i + 1);
            paragraphs.push(rest[..cut].trim().to_string());
            rest = &rest[cut..];
        }
    }
    paragraphs.join("\n\n")
}

/// The first `bytes` of the built-in English text, cut at a paragraph boundary.
pub fn english_slice(dir: &Path, bytes: usize) -> PathBuf {
    let text = builtin_english();
    let mut end = bytes.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = text[..end].rfind("\n\n").unwrap_or(end);
    let path = dir.join("english.txt");
    std::fs::write(&path, &text[..cut]).unwrap();
    path
}

/// A prepared 3 MB slice of the English text (vocabulary 2048, sequences of 64),
/// shared by the tests of one binary.
pub fn prepared_english() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| prepare_english_slice(3_000_000, 2048, 64))
        .1
}

/// The first `bytes` of the English text prepared into a temporary folder
/// with a `vocab_size` tokenizer and sequences of `seq_len`.
pub fn prepare_english_slice(
    bytes: usize,
    vocab_size: usize,
    seq_len: usize,
) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let input = english_slice(tmp.path(), bytes);
    let out = tmp.path().join("data");
    prepare(&PrepareOptions {
        vocab_size,
        seq_len,
        val_fraction: 0.03,
        shard_sequences: 4096,
        // Sorting and filtering are tested with the data pipeline; the
        // training tests want plain shuffled text of a small vocabulary.
        max_tokens_per_char: None,
        unigram_sort: false,
        ..PrepareOptions::new(vec![input.into()], out.clone())
    })
    .unwrap();
    (tmp, out)
}

/// A run folder as `cram glue` reads it: the `tiny` preset (with `sets`
/// applied) left untrained at seed 0, and a WordPiece tokenizer trained on
/// `texts`, whose vocabulary size the model takes.
pub fn untrained_tiny_run(dir: &Path, texts: &[String], sets: &[&str]) -> PathBuf {
    use cram::backend::cpu::Cpu;
    use cram::data::{train_on, vocab_size, TokenizerKind};
    use cram::model::Model;
    use cram::train::{checkpoint, TrainState, RUN_TOKENIZER};

    let tokenizer = train_on(TokenizerKind::Wordpiece, texts, 512).unwrap();
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    tokenizer.save(run.join(RUN_TOKENIZER), true).unwrap();
    let vocab = vocab_size(&tokenizer);
    let mut all: Vec<String> = vec![
        format!("model.vocab_size={vocab}"),
        format!("data.vocab_size={vocab}"),
    ];
    all.extend(sets.iter().map(|s| s.to_string()));
    let cfg = cram::config::Config::resolve("tiny", &all).unwrap();
    std::fs::write(run.join("config.toml"), cfg.to_toml()).unwrap();
    let be = Cpu::new();
    let model = Model::new(&cfg.model);
    checkpoint::save(&be, &run, &model, &TrainState::fresh(&be, &model, 0)).unwrap();
    run
}

/// The cram binary: `CRAM_BIN`, else the one cargo built beside the tests.
/// On a GPU machine, which has no Rust, the test binaries are carried with a
/// stripped cram that `CRAM_BIN` names (the path compiled in is the build
/// machine's).
pub fn cram_bin() -> String {
    std::env::var("CRAM_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_cram").to_string())
}

/// Runs the `cram` binary with `args`: (exit code, stdout, stderr). A panic
/// fails the test: user mistakes must end in an error, never a panic.
pub fn cram(args: &[&str]) -> (i32, String, String) {
    cram_env(args, &[])
}

/// [`cram`] with `env` added to the environment.
pub fn cram_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(cram_bin())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!stderr.contains("panicked"), "cram panicked: {stderr}");
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

/// `cram data prepare` of `input` into `out` for the `tiny` preset (quiet,
/// with `extra` flags); asserts success and returns stderr (its warnings).
pub fn cram_prepare_tiny(input: &Path, out: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "data",
        "prepare",
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--preset",
        "tiny",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    let (code, _, stderr) = cram(&args);
    assert_eq!(code, 0, "{stderr}");
    stderr
}

/// Exit status 1 and one `error: ` message that mentions every needle.
pub fn assert_one_error(code: i32, stderr: &str, needles: &[&str]) {
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "expected '{needle}' in: {stderr}");
    }
}

/// The largest |a − b| over two equally long parameter vectors.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// AdamW as crammed-bert sets it (lr 1e-3, β 0.9/0.98, ε 1e-12, decay 0.01,
/// clip 0.5) for optimizer step `step` (0-based) of a test's short run.
pub fn test_adamw(step: u64, decay_len: usize) -> cram::backend::AdamW {
    cram::backend::AdamW {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.98,
        eps: 1e-12,
        weight_decay: 0.01,
        step: step + 1,
        decay_len,
        max_norm: 0.5,
        skipped_slot: None,
    }
}

/// Logits, targets and the expected [`cram::backend::LossOps::top1_hits`] of
/// six rows that cover the tie rule: a unique maximum, ties won by the first
/// column and lost by a later one, a miss and an ignored row. Every value is
/// a multiple of 1/8 up to 8, exact in bf16, so both backends see the same ties.
pub fn top1_case() -> (Vec<f32>, Vec<u32>, usize, Vec<f32>) {
    let (rows, vocab) = (6, 300);
    let mut logits: Vec<f32> = (0..rows * vocab)
        .map(|i| ((i * 7) % 61) as f32 / 8.0)
        .collect();
    let top = 60.0 / 8.0;
    let row = |r: usize| r * vocab;
    let first_max = |l: &[f32], r: usize| cram::backend::argmax(&l[row(r)..row(r) + vocab]) as u32;
    // Row 5: one column above every other.
    logits[row(5) + 123] = top + 0.5;
    let targets = vec![
        first_max(&logits, 0),                       // first of several maxima: hit
        (first_max(&logits, 1) + 61) % vocab as u32, // a later tied maximum: miss
        first_max(&logits, 2),                       // hit
        cram::backend::IGNORE,                       // ignored: 0
        (first_max(&logits, 4) + 1) % vocab as u32,  // not a maximum: miss
        123,                                         // the unique maximum: hit
    ];
    assert_eq!(
        logits[row(1) + targets[1] as usize],
        top,
        "row 1 holds a tie"
    );
    (logits, targets, vocab, vec![1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
}
