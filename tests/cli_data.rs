//! `cram data prepare`, `cram data stats` and `cram data stream` through the
//! binary: weighted inputs of different formats, the table of every stage's
//! effect, the per-pass throughput, and the masked stream a run reads.

mod common;

use common::cram;

use std::io::Write;
use std::path::Path;

/// `count` documents of words built from `letters`, each word from a
/// simple counter so that every document differs.
fn documents(letters: &[u8], count: usize, seed: usize) -> Vec<String> {
    (0..count)
        .map(|d| {
            (0..80)
                .map(|w| {
                    let mut n = (d + seed) * 7919 + w * 31;
                    let mut word = String::new();
                    for _ in 0..2 + n % 3 {
                        word.push(letters[n % letters.len()] as char);
                        n /= letters.len();
                    }
                    word
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn write_gzip_jsonl(path: &Path, docs: &[String]) {
    let mut encoder = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    for doc in docs {
        writeln!(encoder, "{}", serde_json::json!({ "content": doc })).unwrap();
    }
    encoder.finish().unwrap();
}

#[test]
fn prepare_with_weighted_inputs_then_stats_shows_every_stage() {
    let tmp = tempfile::tempdir().unwrap();
    let books = tmp.path().join("books.jsonl.gz");
    write_gzip_jsonl(&books, &documents(b"abcdefg", 150, 0));
    let web = tmp.path().join("web.txt");
    let mut web_docs = documents(b"hijklmn", 150, 1);
    web_docs.push(web_docs[0].clone());
    std::fs::write(&web, web_docs.join("\n\n")).unwrap();
    let out = tmp.path().join("data");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("old.txt"), "something").unwrap();
    let books_arg = format!("{}:0.5", books.display());
    let web_arg = format!("{}:0.5", web.display());
    let args = [
        "data",
        "prepare",
        "--input",
        &books_arg,
        "--input",
        &web_arg,
        "--out",
        out.to_str().unwrap(),
        "--text-field",
        "content",
        "--vocab-size",
        "200",
        "--preset",
        "tiny",
        "--set",
        "data.compression_filter=false",
        "--quiet",
    ];
    let (code, _, stderr) = cram(&args);
    assert_eq!(code, 1, "an existing output needs --overwrite: {stderr}");
    assert!(stderr.contains("--overwrite"), "{stderr}");

    let mut forced = args.to_vec();
    forced.push("--force");
    let (code, stdout, stderr) = cram(&forced);
    assert_eq!(code, 0, "{stderr}");
    for pass in ["clean", "mix", "tokenizer train", "encode", "sort", "MB/s"] {
        assert!(stdout.contains(pass), "no {pass} in:\n{stdout}");
    }

    let (code, stats, stderr) = cram(&["data", "stats", out.to_str().unwrap(), "--verify"]);
    assert_eq!(code, 0, "{stderr}");
    for stage in [
        "read",
        "normalize",
        "min-length",
        "dedup-exact",
        "near-dup",
        "mix",
        "split",
        "tokenizer",
        "tokenize",
        "compression-filter",
        "pack",
        "sort",
        "dropped %",
        "books.jsonl.gz",
        "web.txt",
        "train order: unigram",
        "every shard matches",
    ] {
        assert!(stats.contains(stage), "no {stage} in:\n{stats}");
    }
    let exact = stats
        .lines()
        .find(|l| l.starts_with("dedup-exact"))
        .unwrap();
    let cells: Vec<&str> = exact.split_whitespace().collect();
    assert_eq!(cells[1..4], ["301", "300", "1"], "{exact}");
}

fn read_u16(path: &Path) -> Vec<u16> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// 120 generated documents prepared for `tiny` (vocabulary 300) in `dir/data`.
fn prepared_tiny(dir: &Path) -> std::path::PathBuf {
    let text = dir.join("text.txt");
    std::fs::write(&text, documents(b"abcdefghij", 120, 3).join("\n\n")).unwrap();
    let data = dir.join("data");
    common::cram_prepare_tiny(&text, &data, SMALL_VOCAB);
    data
}

/// `cram pretrain --preset P --data DATA --out RUN --budget B --quiet` plus
/// `extra`: (exit code, stdout, stderr).
fn pretrain(
    preset: &str,
    data: &Path,
    run: &Path,
    budget: &str,
    extra: &[&str],
) -> (i32, String, String) {
    let mut args = vec![
        "pretrain",
        "--preset",
        preset,
        "--data",
        data.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--budget",
        budget,
        "--quiet",
    ];
    args.extend_from_slice(extra);
    cram(&args)
}

/// `cram pretrain --resume --data DATA --out RUN` plus `extra` (the saved
/// config decides the rest): (exit code, stdout, stderr).
fn resume(data: &Path, run: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec![
        "pretrain",
        "--resume",
        "--data",
        data.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    cram(&args)
}

/// The flags of generated text's preparation: a small vocabulary, and no
/// compression filter (invented words compress badly).
const SMALL_VOCAB: &[&str] = &[
    "--vocab-size",
    "300",
    "--set",
    "data.compression_filter=false",
];

/// Piped output (as under nohup, tee or SLURM) gets plain progress lines on
/// stdout: the first logged step, the evaluations and the last step; --quiet
/// silences them.
#[test]
fn pretrain_prints_progress_lines_when_piped() {
    let tmp = tempfile::tempdir().unwrap();
    let data = prepared_tiny(tmp.path());
    let run = |name: &str, quiet: bool| {
        let out = tmp.path().join(name);
        let mut args = vec![
            "pretrain",
            "--preset",
            "tiny",
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--budget",
            "30 steps",
            "--set",
            "train.eval_every=20",
        ];
        if quiet {
            args.push("--quiet");
        }
        let (code, stdout, stderr) = cram(&args);
        assert_eq!(code, 0, "{stderr}");
        stdout
    };
    let stdout = run("piped", false);
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("tok/s left"))
        .collect();
    assert_eq!(
        lines.len(),
        2,
        "the first logged step and the last:\n{stdout}"
    );
    assert!(
        lines[0].trim_start().starts_with("33.3% step 10 loss "),
        "{stdout}"
    );
    assert!(
        lines[1].trim_start().starts_with("100.0% step 30 loss "),
        "{stdout}"
    );
    for needle in [
        "at this rate the budget (30 steps) takes about ",
        " lr ",
        " bs 16 ",
        "step     20  held-out loss",
        "step     30  held-out loss",
    ] {
        assert!(stdout.contains(needle), "no '{needle}' in:\n{stdout}");
    }
    let quiet = run("quiet", true);
    assert!(
        !quiet.contains("tok/s left") && !quiet.contains("  held-out loss"),
        "{quiet}"
    );
}

/// The most common resume: more budget for a run that finished. The budget
/// (and the learning rate, clipping, cadences) may change on --resume; the
/// change is shown, written to metrics.jsonl and to config.toml; a finished
/// run resumed without more budget, or a change of shape, is one error that
/// names the fix or the setting.
#[test]
fn resume_with_a_larger_budget_trains_on() {
    let tmp = tempfile::tempdir().unwrap();
    let data = prepared_tiny(tmp.path());
    let out = tmp.path().join("run");
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
    let pretrain = |extra: &[&str]| {
        let mut args = vec!["pretrain", "--data", d, "--out", o];
        args.extend_from_slice(extra);
        cram(&args)
    };
    let (code, _, stderr) = pretrain(&["--preset", "tiny", "--budget", "20 steps"]);
    assert_eq!(code, 0, "{stderr}");

    let (code, stdout, stderr) = pretrain(&["--resume", "--budget", "40 steps"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("resumed at step 20 with train.budget \"20 steps\" -> \"40 steps\"; the schedules are tied to the budget, so they continue from 50.0% of the new one"),
        "{stdout}"
    );
    assert!(stdout.contains("budget spent after 40 steps"), "{stdout}");
    assert!(!stdout.contains("NaN"), "{stdout}");
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let resume: Vec<&str> = metrics
        .lines()
        .filter(|l| l.contains("\"resume\""))
        .collect();
    assert_eq!(resume.len(), 1, "{metrics}");
    assert!(resume[0].contains("\"train.budget\""), "{}", resume[0]);
    let config = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(config.contains("budget = \"40 steps\""), "{config}");

    // These errors come after the device line, so not `assert_one_error`.
    let one_error = |code: i32, stderr: &str, needles: &[&str]| {
        assert_eq!(code, 1, "{stderr}");
        assert_eq!(stderr.matches("error: ").count(), 1, "{stderr}");
        for n in needles {
            assert!(stderr.contains(n), "no '{n}' in: {stderr}");
        }
    };
    let (code, _, stderr) = pretrain(&["--resume"]);
    one_error(
        code,
        &stderr,
        &[
            "has spent its budget (40 steps) at step 40",
            "--budget \"80 steps\"",
        ],
    );
    let (code, _, stderr) = pretrain(&[
        "--resume",
        "--set",
        "model.hidden=64",
        "--set",
        "train.lr=1e-4",
        "--seed",
        "3",
    ]);
    one_error(
        code,
        &stderr,
        &[
            "model.hidden 128 -> 64, train.seed 0 -> 3 would change what the run is",
            "may change only train.budget, train.lr",
        ],
    );
}

/// The stream holds every train sequence once per epoch in a fresh order,
/// exactly k masked non-special positions per row with the original token as
/// target, fresh masks every epoch; the validation stream masks every target.
#[test]
fn stream_writes_the_masked_sequences_of_each_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let data = prepared_tiny(tmp.path());
    let d = data.to_str().unwrap();
    let shard = read_u16(&data.join("train-00000.bin"));
    let seq = 32;
    let train: Vec<&[u16]> = shard.chunks_exact(seq).collect();
    let n = train.len();
    assert!(n > 50, "{n} train sequences");

    let stream = tmp.path().join("stream");
    let count = (2 * n + 7).to_string();
    let (code, stdout, stderr) = cram(&[
        "data",
        "stream",
        "--data",
        d,
        "--out",
        stream.to_str().unwrap(),
        "--preset",
        "tiny",
        "--set",
        "data.keep_order=false",
        "--sequences",
        &count,
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!(
            "{count} train sequences of 32 tokens (8 masked each)"
        )),
        "{stdout}"
    );
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(stream.join("stream.json")).unwrap())
            .unwrap();
    assert_eq!(info["mask_all"], false);
    let inputs = read_u16(&stream.join("inputs.bin"));
    let targets = read_u16(&stream.join("targets.bin"));
    assert_eq!(inputs.len(), (2 * n + 7) * seq);
    let mut originals = Vec::new();
    for (row_in, row_tg) in inputs.chunks_exact(seq).zip(targets.chunks_exact(seq)) {
        let masked = row_tg.iter().filter(|&&t| t != 0).count();
        assert_eq!(masked, 8, "exactly k positions per sequence");
        let original: Vec<u16> = row_in
            .iter()
            .zip(row_tg)
            .map(|(&i, &t)| if t != 0 { t } else { i })
            .collect();
        assert!(
            row_tg.iter().all(|&t| t == 0 || t > 4),
            "special tokens are never targets"
        );
        originals.push(original);
    }
    let sorted = |epoch: usize| {
        let mut rows: Vec<Vec<u16>> = originals[epoch * n..(epoch + 1) * n].to_vec();
        rows.sort();
        rows
    };
    let mut all: Vec<Vec<u16>> = train.iter().map(|r| r.to_vec()).collect();
    all.sort();
    assert_eq!(sorted(0), all, "epoch 0 visits every train sequence once");
    assert_eq!(sorted(1), all, "epoch 1 visits every train sequence once");
    assert_ne!(
        originals[..n],
        originals[n..2 * n],
        "each epoch in a fresh order"
    );
    let same = originals[n..2 * n]
        .iter()
        .position(|r| *r == originals[0])
        .unwrap()
        + n;
    assert_ne!(
        targets[same * seq..(same + 1) * seq],
        targets[..seq],
        "a sequence read again gets fresh masks"
    );

    let val = tmp.path().join("val");
    let (code, _, stderr) = cram(&[
        "data",
        "stream",
        "--data",
        d,
        "--out",
        val.to_str().unwrap(),
        "--preset",
        "tiny",
        "--split",
        "val",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let (inputs, targets) = (
        read_u16(&val.join("inputs.bin")),
        read_u16(&val.join("targets.bin")),
    );
    // `cram eval` scores exactly these predictions, each held-out sequence
    // once, whatever its micro-batch (a last batch that wraps is not counted twice).
    let run = tmp.path().join("run");
    let (code, _, stderr) = cram(&[
        "pretrain",
        "--preset",
        "tiny",
        "--data",
        d,
        "--out",
        run.to_str().unwrap(),
        "--budget",
        "2 steps",
        "--quiet",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let predictions = targets.iter().filter(|&&t| t != 0).count();
    let sequences = inputs.len() / 32;
    assert!(
        sequences % 16 != 0,
        "the split must not fill whole micro-batches of 16"
    );
    // By default the whole (small) split; --batches 1000 asks for more than there is.
    for extra in [&[][..], &["--batches", "1000"][..]] {
        let mut args = vec!["eval", "--run", run.to_str().unwrap(), "--data", d];
        args.extend_from_slice(extra);
        let (code, stdout, stderr) = cram(&args);
        assert_eq!(code, 0, "{stderr}");
        let expected =
            format!("({predictions} predictions on {sequences} of {sequences} held-out sequences)");
        assert!(stdout.contains(&expected), "{expected}:\n{stdout}");
    }
    assert_eq!(inputs.len(), read_u16(&data.join("val-00000.bin")).len());
    for (&i, &t) in inputs.iter().zip(&targets) {
        if t != 0 {
            assert_eq!(i, 4, "evaluation masks every selected position with [MASK]");
        }
    }
}

/// `cram data prepare` of one document leaves no held-out split: prepare
/// warns and says why, pretrain refuses in one sentence (main panicked at
/// the first evaluation, losing the training since the last checkpoint).
#[test]
fn data_without_a_held_out_split_is_flagged_and_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("one.txt");
    // One document: no blank line anywhere.
    std::fs::write(&text, documents(b"abcdefghij", 60, 5).join("\n")).unwrap();
    let data = tmp.path().join("data");
    let stderr = common::cram_prepare_tiny(&text, &data, SMALL_VOCAB);
    assert!(
        stderr.contains("warning: the validation split is empty (the input holds 1 document(s)"),
        "{stderr}"
    );
    let run = tmp.path().join("run");
    let (code, _, stderr) = pretrain("tiny", &data, &run, "5 steps", &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("error: the data holds no held-out sequences"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `cram eval --data` on data whose tokenizer is larger than the run's model
/// is one error naming both sizes and the fix (main panicked in the
/// embedding lookup).
#[test]
fn eval_on_data_with_a_larger_vocabulary_is_one_error() {
    let tmp = tempfile::tempdir().unwrap();
    let data = prepared_tiny(tmp.path());
    let run = tmp.path().join("run");
    let (code, _, stderr) = pretrain("tiny", &data, &run, "2 steps", &[]);
    assert_eq!(code, 0, "{stderr}");
    let text = tmp.path().join("other.txt");
    std::fs::write(&text, documents(b"klmnopqrstuvwxyz", 300, 9).join("\n\n")).unwrap();
    let big = tmp.path().join("big");
    common::cram_prepare_tiny(
        &text,
        &big,
        &[
            "--vocab-size",
            "2000",
            "--set",
            "data.compression_filter=false",
        ],
    );
    let (code, _, stderr) = cram(&[
        "eval",
        "--run",
        run.to_str().unwrap(),
        "--data",
        big.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("tokens and the model in") && stderr.contains("--tokenizer"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("error: ").count(), 1, "{stderr}");
}

/// Two runs on one `--out`: the second stops at once with one sentence that
/// names the first one's PID (on main both could start and write each
/// other's checkpoints).
#[test]
fn a_second_run_on_the_same_folder_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = prepared_tiny(tmp.path());
    let run = tmp.path().join("run");
    let args = [
        "pretrain",
        "--preset",
        "tiny",
        "--data",
        data.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--budget",
        "1000000 steps",
        "--quiet",
    ];
    let mut first = std::process::Command::new(common::cram_bin())
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lock = run.join(".lock");
    let pid = first.id().to_string();
    let start = std::time::Instant::now();
    while std::fs::read_to_string(&lock).unwrap_or_default() != pid {
        assert!(
            start.elapsed().as_secs() < 60,
            "the first run never took the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (code, _, stderr) = cram(&args);
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("is in use: process {pid} is training in it")),
        "{stderr}"
    );
    // The lock goes with its process: the folder can be resumed afterwards
    // (the killed run may not have written a checkpoint yet, so a fresh start
    // or a resume is what the folder's state allows; neither says "in use").
    let (_, _, stderr) = resume(&data, &run, &["--budget", "1 steps"]);
    assert!(!stderr.contains("is in use"), "{stderr}");
}

/// Issue 17 item 4: 4 KiB zeroed in the newest checkpoint's weights used to
/// load and train (exit 0, wrong weights). The sha256 in state.json catches
/// it: eval names the damaged file, and --resume falls back to the previous
/// checkpoint with a warning and trains on from there.
#[test]
fn a_damaged_checkpoint_is_detected_and_skipped_on_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let data = prepared_tiny(tmp.path());
    let run = tmp.path().join("run");
    let (d, r) = (data.to_str().unwrap(), run.to_str().unwrap());
    let (code, _, stderr) = cram(&[
        "pretrain",
        "--preset",
        "tiny",
        "--data",
        d,
        "--out",
        r,
        "--budget",
        "20 steps",
        "--set",
        "train.checkpoint_every=10",
        "--quiet",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let weights = run.join("checkpoints/step-20/model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let at = bytes.len() / 2;
    bytes[at..at + 4096].fill(0);
    std::fs::write(&weights, bytes).unwrap();

    let (code, _, stderr) = cram(&["eval", "--run", r, "--data", d]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("step-20/model.safetensors is corrupt: its sha256 is"),
        "{stderr}"
    );
    let (code, stdout, stderr) = resume(&data, &run, &["--budget", "30 steps"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("warning: checkpoint step-20 is damaged and was skipped"),
        "{stderr}"
    );
    assert!(stdout.contains("resumed at step 10"), "{stdout}");
    assert!(stdout.contains("budget spent after 30 steps"), "{stdout}");
}

/// `train.keep_checkpoints` (3 in every preset): old checkpoints are deleted
/// after each save (main kept all: a 200-step tiny run with a checkpoint every
/// 5 steps kept 392 MB).
#[test]
fn only_the_newest_checkpoints_are_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let data = prepared_tiny(tmp.path());
    let run = tmp.path().join("run");
    let (code, _, stderr) = pretrain(
        "tiny",
        &data,
        &run,
        "20 steps",
        &["--set", "train.checkpoint_every=2"],
    );
    assert_eq!(code, 0, "{stderr}");
    let mut kept: Vec<String> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    assert_eq!(kept, ["step-16", "step-18", "step-20"]);
}

/// A decoder preset on WordPiece data trains, with a note that names the
/// tokenizer decoders use (issue 18 item 7).
#[test]
fn a_decoder_on_wordpiece_data_gets_a_note() {
    let tmp = tempfile::tempdir().unwrap();
    let data = prepared_tiny(tmp.path());
    let run = tmp.path().join("run");
    let (code, _, stderr) = pretrain(
        "gpt-small",
        &data,
        &run,
        "1 steps",
        &[
            "--set",
            "model.hidden=32",
            "--set",
            "model.layers=1",
            "--set",
            "model.heads=2",
            "--set",
            "model.ffn=64",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("note: a causal decoder on WordPiece data")
            && stderr.contains("--tokenizer-kind bpe"),
        "{stderr}"
    );
}

/// A damaged shard is caught before training (main trained on it, or
/// panicked on an out-of-vocabulary id): pretrain checks every shard against
/// the manifest's sha256 first.
#[test]
fn pretrain_refuses_a_damaged_shard() {
    let tmp = tempfile::tempdir().unwrap();
    let data = prepared_tiny(tmp.path());
    let shard = data.join("train-00000.bin");
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&shard, bytes).unwrap();
    let (code, _, stderr) = pretrain("tiny", &data, &tmp.path().join("run"), "2 steps", &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("train-00000.bin is corrupt: its sha256 is"),
        "{stderr}"
    );
}

/// Issue 17 item 2: a run that stopped before its first checkpoint (here its
/// checkpoints are deleted, the state a kill during the first write leaves)
/// can be resumed, from step 0, and restarted in place; both say so.
#[test]
fn a_run_without_a_checkpoint_can_be_resumed_and_restarted() {
    let tmp = tempfile::tempdir().unwrap();
    let data = prepared_tiny(tmp.path());
    let run = tmp.path().join("run");
    let (code, _, stderr) = pretrain("tiny", &data, &run, "4 steps", &[]);
    assert_eq!(code, 0, "{stderr}");
    std::fs::remove_dir_all(run.join("checkpoints")).unwrap();
    let (code, _, stderr) = resume(&data, &run, &["--quiet"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("resuming it from step 0"), "{stderr}");
    assert!(run.join("checkpoints/step-4").is_dir());
    std::fs::remove_dir_all(run.join("checkpoints")).unwrap();
    let (code, _, stderr) = pretrain("tiny", &data, &run, "4 steps", &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("starts again here from step 0"), "{stderr}");
    assert!(run.join("checkpoints/step-4").is_dir());
}

/// Issue 17: 20 `kill -9` at random moments (start-up, mid-step, mid-write of
/// a checkpoint or of metrics.jsonl), each followed by a resume of the same
/// folder, end bit-exact with an uninterrupted run: the same final weights
/// and optimizer state byte for byte, and the same metrics.jsonl lines
/// (timing fields aside).
#[test]
fn twenty_kills_and_resumes_end_bit_exact_with_an_uninterrupted_run() {
    const KILLS: usize = 20;
    let tmp = tempfile::tempdir().unwrap();
    let data = prepared_tiny(tmp.path());
    let args = |run: &Path, resume: bool| -> Vec<String> {
        let mut a: Vec<String> = [
            "pretrain",
            "--data",
            data.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
            "--quiet",
        ]
        .map(String::from)
        .to_vec();
        if resume {
            a.push("--resume".into());
        } else {
            for s in [
                "--preset",
                "tiny",
                "--budget",
                "600 steps",
                "--seed",
                "7",
                "--set",
                "train.checkpoint_every=4",
                "--set",
                "train.log_every=2",
                "--set",
                "train.eval_every=50",
                "--set",
                "train.keep_checkpoints=2",
            ] {
                a.push(s.into());
            }
        }
        a
    };
    let reference = tmp.path().join("reference");
    let a = args(&reference, false);
    let (code, _, stderr) = cram(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{stderr}");

    let run = tmp.path().join("run");
    // A fixed linear congruential sequence: the kill moments are random but the same every time.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut kills = 0;
    while kills < KILLS {
        let a = args(&run, run.join("config.toml").exists());
        let mut child = std::process::Command::new(common::cram_bin())
            .args(&a)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let delay = 30 + (state >> 33) % 400;
        std::thread::sleep(std::time::Duration::from_millis(delay));
        let finished = child.try_wait().unwrap();
        assert!(
            finished.is_none(),
            "the run ended ({finished:?}) after {kills} kills: the soak needs a larger budget on this machine"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
    }
    let a = args(&run, true);
    let (code, _, stderr) = cram(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{stderr}");

    for file in ["model.safetensors", "optimizer.safetensors"] {
        let ours = std::fs::read(run.join("checkpoints/step-600").join(file)).unwrap();
        let theirs = std::fs::read(reference.join("checkpoints/step-600").join(file)).unwrap();
        assert!(ours == theirs, "{file} differs after {KILLS} kills");
    }
    let strip = |run: &Path| -> Vec<cram::train::Record> {
        cram::train::read_without_timing(&run.join("metrics.jsonl"))
            .unwrap()
            .into_iter()
            .filter(|r| !matches!(r, cram::train::Record::Resume { .. }))
            .collect()
    };
    assert_eq!(strip(&run), strip(&reference));
}

/// A time budget is checked between steps: when the first step alone takes
/// longer than the whole budget (a large preset on the CPU), the run says so
/// and what to lower, instead of silently running many times past it.
#[test]
fn a_step_longer_than_the_time_budget_is_explained() {
    let tmp = tempfile::tempdir().unwrap();
    let data = prepared_tiny(tmp.path());
    let out = tmp.path().join("run");
    let args = [
        "pretrain",
        "--preset",
        "tiny",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--budget",
        "0.0001s",
    ];
    let (code, stdout, stderr) = cram(&args);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("the first optimizer step alone took")
            && stdout.contains("more than the whole budget (0.0001s)")
            && stdout.contains("lower train.batch_size"),
        "{stdout}"
    );
}
