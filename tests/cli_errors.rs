//! Bad input gives one clear error, exit status 1, no panic, and no partial output; a closed
//! stdout ends cram quietly.

mod common;

use common::{assert_one_error, cram};
use std::path::Path;

fn prepare(input: &Path, out: &Path) -> (i32, String) {
    let (code, _, err) = cram(&[
        "data",
        "prepare",
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--vocab-size",
        "300",
    ]);
    (code, err)
}

#[test]
fn missing_input_file() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let (code, err) = prepare(&tmp.path().join("nope.txt"), &out);
    assert_one_error(code, &err, &["nope.txt"]);
    assert!(!out.exists());
}

#[test]
fn empty_input_file() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("empty.txt");
    std::fs::write(&input, "").unwrap();
    let out = tmp.path().join("out");
    let (code, err) = prepare(&input, &out);
    assert_one_error(code, &err, &["empty.txt"]);
    assert!(!out.exists());
}

#[test]
fn non_utf8_input_file() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("latin1.txt");
    let mut bytes = b"A perfectly fine first paragraph of text that goes on.\n\nCaf".to_vec();
    bytes.extend([0xE9, 0xFF, b'\n']);
    std::fs::write(&input, bytes).unwrap();
    let out = tmp.path().join("out");
    let (code, err) = prepare(&input, &out);
    assert_one_error(code, &err, &["latin1.txt"]);
    assert!(err.contains("UTF-8"), "{err}");
    assert!(!out.exists());
}

#[test]
fn unknown_preset() {
    let (code, _, err) = cram(&["config", "show", "--preset", "giant-bert"]);
    assert_one_error(code, &err, &["giant-bert"]);
    assert!(
        err.contains("crammed-bert"),
        "the error lists the presets: {err}"
    );
}

#[test]
fn unknown_config_key() {
    let (code, _, err) = cram(&[
        "config",
        "show",
        "--preset",
        "tiny",
        "--set",
        "train.weight_decy=0",
    ]);
    assert_one_error(code, &err, &["train.weight_decy"]);
    assert!(err.contains("did you mean 'train.weight_decay'"), "{err}");
    let (code, _, err) = cram(&[
        "config",
        "show",
        "--preset",
        "tiny",
        "--set",
        "data.vocab=5",
    ]);
    assert_one_error(code, &err, &["did you mean 'data.vocab_size'"]);
    let (code, _, err) = cram(&[
        "config",
        "show",
        "--preset",
        "tiny",
        "--set",
        "train.learning_rate=1e-3",
    ]);
    assert_one_error(code, &err, &["train.learning_rate"]);
    assert!(
        err.contains(" lr, "),
        "the error lists the section's keys: {err}"
    );
}

/// `config show` with `sets` on tiny: its exit code and stderr.
fn show_with(sets: &[&str]) -> (i32, String) {
    let mut args = vec!["config", "show", "--preset", "tiny"];
    for set in sets {
        args.extend(["--set", set]);
    }
    let (code, _, err) = cram(&args);
    (code, err)
}

/// A batch that is not a whole number of micro-batches was rounded down
/// without a word while config.toml recorded the asked size; it is refused
/// with the two sizes that would do.
#[test]
fn batch_size_not_a_multiple_of_micro_batch() {
    let (code, err) = show_with(&["train.micro_batch=16", "train.batch_size=40"]);
    assert_one_error(
        code,
        &err,
        &[
            "train.batch_size (40)",
            "train.micro_batch (16)",
            "use 32 or 48",
        ],
    );
}

/// NaN and infinity passed the bounds checks (NaN compares false); each is
/// now an error naming its key.
#[test]
fn non_finite_optimizer_settings() {
    for (set, key) in [
        ("train.lr=nan", "train.lr"),
        ("train.lr=inf", "train.lr"),
        ("train.grad_clip=nan", "train.grad_clip"),
        ("train.weight_decay=inf", "train.weight_decay"),
    ] {
        let (code, err) = show_with(&[set]);
        assert_one_error(code, &err, &[key, "finite"]);
    }
}

/// A zero budget, and a negative one (`--budget -5s` was taken for a flag:
/// "unexpected argument"), get the budget's own error and create nothing.
#[test]
fn zero_or_negative_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    for (budget, needle) in [("0s", "budget"), ("-5s", "budget '-5s' must be positive")] {
        let (code, _, err) = cram(&[
            "pretrain",
            "--preset",
            "tiny",
            "--data",
            tmp.path().to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--budget",
            budget,
        ]);
        assert_one_error(code, &err, &[needle]);
        assert!(!out.exists());
    }
}

#[test]
fn missing_data_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let (code, _, err) = cram(&[
        "pretrain",
        "--preset",
        "tiny",
        "--data",
        tmp.path().join("nothing").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--budget",
        "10s",
    ]);
    assert_one_error(code, &err, &["nothing"]);
    assert!(!out.exists());
}

#[test]
fn bench_without_a_gpu_says_so() {
    if cram::backend::cuda::libraries_present().is_ok() {
        eprintln!("skipping: this machine has the CUDA driver");
        return;
    }
    let (code, _, err) = cram(&["bench", "--steps", "1"]);
    assert_one_error(code, &err, &["cram bench", "no CUDA driver"]);
}

/// A value of the wrong kind names its key and the kind it takes (main said
/// "invalid type: string \"abc\", expected f64").
#[test]
fn a_value_of_the_wrong_kind_names_its_key() {
    for (set, needles) in [
        ("train.lr=abc", ["train.lr takes a number", "'abc'"]),
        (
            "train.micro_batch=1.5",
            ["train.micro_batch takes a whole number", "'1.5'"],
        ),
        (
            "data.keep_order=yes",
            ["data.keep_order takes true or false", "'yes'"],
        ),
    ] {
        let (code, err) = show_with(&[set]);
        assert_one_error(code, &err, &needles);
    }
}

/// The user's own corpus that does not exist is not a missing install.
#[test]
fn demo_with_a_missing_corpus_names_the_flag() {
    let (code, _, err) = cram(&["demo", "--corpus", "/nonexistent/cram-corpus"]);
    assert_one_error(
        code,
        &err,
        &["--corpus /nonexistent/cram-corpus does not exist"],
    );
    assert!(!err.contains("scripts/setup"), "{err}");
}

/// A demo that fails leaves no empty folders behind (issue 18 item 6: a
/// corpus too small to prepare left `runs/demo/`).
#[test]
fn a_failed_demo_leaves_no_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("small.txt");
    std::fs::write(&corpus, "too short.").unwrap();
    let runs = tmp.path().join("runs");
    let out = runs.join("demo");
    let (code, _, err) = cram(&[
        "demo",
        "--corpus",
        corpus.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_one_error(code, &err, &["small.txt"]);
    assert!(!runs.exists(), "{} was left behind", runs.display());
}

/// `cram eval` on a folder that is not a run, at a step that has no
/// checkpoint, with --batches 0: one sentence each that names the fix.
#[test]
fn eval_errors_name_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let text = common::english_slice(tmp.path(), 300_000);
    let data = tmp.path().join("data");
    common::cram_prepare_tiny(&text, &data, &[]);
    let run = tmp.path().join("run");
    let d = data.to_str().unwrap();
    let r = run.to_str().unwrap();
    let (code, _, err) = cram(&[
        "pretrain", "--preset", "tiny", "--data", d, "--out", r, "--budget", "2 steps", "--quiet",
    ]);
    assert_eq!(code, 0, "{err}");

    let (code, _, err) = cram(&["eval", "--run", d, "--data", d]);
    assert_one_error(code, &err, &["is not a run folder (it has no config.toml)"]);
    assert!(!err.contains("corrupt"), "{err}");
    let (code, _, err) = cram(&["eval", "--run", r, "--data", d, "--step", "123"]);
    assert_one_error(
        code,
        &err,
        &["has no checkpoint at step 123; its checkpoints are at steps 2"],
    );
    let (code, _, err) = cram(&["eval", "--run", r, "--data", d, "--batches", "0"]);
    assert_one_error(code, &err, &["--batches 0 evaluates nothing"]);
}

/// Every flag of every command says what it does in `--help` (issue 18: glue's
/// --batch-size, --decay and --weight-decay had none).
#[test]
fn every_flag_has_help_text() {
    let commands: &[&[&str]] = &[
        &["data", "prepare"],
        &["data", "stats"],
        &["data", "stream"],
        &["pretrain"],
        &["eval"],
        &["glue"],
        &["infer"],
        &["export", "hf"],
        &["bench"],
        &["demo"],
        &["scale", "sweep"],
        &["scale", "fit"],
        &["scale", "plan"],
        &["report"],
    ];
    let mut missing = Vec::new();
    for cmd in commands {
        let mut args = cmd.to_vec();
        args.push("--help");
        let (code, out, err) = cram(&args);
        assert_eq!(code, 0, "{cmd:?}: {err}");
        let lines: Vec<&str> = out.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let flag = line.trim_start();
            if !flag.starts_with("--") && !flag.starts_with("-h, --help") {
                continue;
            }
            // Short help puts the text on the flag's line after two spaces;
            // long help (when any flag has more) on the next line.
            let inline = flag
                .split_once("  ")
                .is_some_and(|(_, t)| !t.trim().is_empty());
            let next = lines.get(i + 1).map_or("", |l| l.trim());
            if !inline && next.is_empty() {
                missing.push(format!("{} {}", cmd.join(" "), flag));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "flags without help:\n{}",
        missing.join("\n")
    );
}

/// An OS error is printed once, not once in the message and again as its
/// cause (issue 18 item 5: `scale sweep --spec` printed "No such file or
/// directory (os error 2)" twice).
#[test]
fn an_os_error_is_printed_once() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("nope.toml");
    let out = tmp.path().join("sweep");
    let (code, _, err) = cram(&[
        "scale",
        "sweep",
        "--spec",
        spec.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_one_error(code, &err, &["nope.toml"]);
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
}

/// Output into a pipe whose reader is gone (`cram config list | head -1` once
/// `head` has its line) ends cram quietly, by SIGPIPE as any Unix tool, not
/// with a panic and a backtrace from `println!`. The reader is closed before
/// cram starts, so its first write finds no reader.
#[cfg(unix)]
#[test]
fn a_closed_stdout_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(common::cram_bin())
        .args(["config", "list"])
        .stdout(writer)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "cram panicked: {stderr}");
    assert!(stderr.is_empty(), "cram wrote to stderr: {stderr}");
    assert_eq!(out.status.signal(), Some(13), "{:?}", out.status);
}
