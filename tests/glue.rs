//! `cram glue` end to end on the CPU: a `tiny` model fine-tuned on small
//! synthetic tasks it can learn (a sentence classification and a sentence-pair
//! regression) reaches high dev scores, the report lists
//! the absent tasks as missing, and a named task with absent or malformed
//! files is one clear error with nothing written.

mod common;

use common::cram;

use rand::seq::IndexedRandom;
use rand::Rng;
use std::path::{Path, PathBuf};

const FILLER: &[&str] = &[
    "the", "movie", "was", "a", "story", "with", "actors", "and", "plot", "scenes", "about",
    "people", "in", "city", "music", "this", "film", "had", "some", "long", "moments", "of",
];
const POSITIVE: &[&str] = &["good", "great", "wonderful", "fine", "lovely", "superb"];
const NEGATIVE: &[&str] = &["bad", "awful", "terrible", "poor", "boring", "dull"];

/// `n` sentences of filler words with one sentiment word somewhere; the
/// label is 1 for a positive word. Returns TSV rows `sentence\tlabel`.
fn sentiment_rows(n: usize, seed: u64) -> Vec<String> {
    let mut rng = common::rng(seed);
    (0..n)
        .map(|_| {
            let len = rng.random_range(3..9);
            let mut words: Vec<&str> = (0..len)
                .map(|_| *FILLER.choose(&mut rng).unwrap())
                .collect();
            let positive = rng.random_bool(0.5);
            let pool = if positive { POSITIVE } else { NEGATIVE };
            let at = rng.random_range(0..=words.len());
            words.insert(at, pool.choose(&mut rng).unwrap());
            format!("{} \t{}", words.join(" "), positive as u8)
        })
        .collect()
}

/// Pairs of such sentences scored 2.5 per positive one (0, 2.5 or 5), as
/// STS-B rows `sentence1\tsentence2\tscore`.
fn similarity_rows(n: usize, seed: u64) -> Vec<String> {
    let sentences = sentiment_rows(2 * n, seed);
    sentences
        .chunks(2)
        .map(|pair| {
            let (a, la) = pair[0].split_once('\t').unwrap();
            let (b, lb) = pair[1].split_once('\t').unwrap();
            let positives = la.parse::<f32>().unwrap() + lb.parse::<f32>().unwrap();
            format!("{a}\t{b}\t{:.3}", 2.5 * positives)
        })
        .collect()
}

fn write_tsv(path: &Path, header: &str, rows: &[String]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("{header}\n{}\n", rows.join("\n"))).unwrap();
}

/// A GLUE folder holding only a synthetic SST-2 and STS-B, and a run whose
/// tokenizer knows their words.
fn setup(dir: &Path) -> (PathBuf, PathBuf) {
    let train = sentiment_rows(640, 1);
    let dev = sentiment_rows(200, 2);
    let glue = dir.join("glue");
    write_tsv(&glue.join("SST-2/train.tsv"), "sentence\tlabel", &train);
    write_tsv(&glue.join("SST-2/dev.tsv"), "sentence\tlabel", &dev);
    let header = "index\tsentence1\tsentence2\tscore";
    for (file, rows) in [
        ("STS-B/train.tsv", similarity_rows(640, 3)),
        ("STS-B/dev.tsv", similarity_rows(200, 4)),
    ] {
        let numbered: Vec<String> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| format!("{i}\t{r}"))
            .collect();
        write_tsv(&glue.join(file), header, &numbered);
    }
    let texts: Vec<String> = train
        .iter()
        .chain(&dev)
        .map(|r| r.split('\t').next().unwrap().to_string())
        .collect();
    let run = common::untrained_tiny_run(dir, &texts, &[]);
    (run, glue)
}

/// `cram glue --quiet` with `extra` flags, which must succeed: its glue.json and stdout.
fn glue_report(run: &Path, glue: &Path, extra: &[&str]) -> (serde_json::Value, String) {
    let mut args = vec![
        "glue",
        "--run",
        run.to_str().unwrap(),
        "--glue-dir",
        glue.to_str().unwrap(),
        "--quiet",
    ];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = cram(&args);
    assert_eq!(code, 0, "{stderr}");
    let json = std::fs::read_to_string(run.join("glue.json")).unwrap();
    (serde_json::from_str(&json).unwrap(), stdout)
}

#[test]
fn tiny_model_learns_synthetic_classification_and_regression_tasks() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, glue) = setup(tmp.path());
    // Untrained weights need a larger step than the 4e-5 of the recipe.
    let (report, stdout) = glue_report(&run, &glue, &["--lr", "1e-3", "--epochs", "3"]);
    let task = &report["tasks"][0];
    assert_eq!(task["task"], "sst2");
    let accuracy = task["scores"][0]["median"].as_f64().unwrap();
    eprintln!(
        "dev accuracy {accuracy:.3}, last-epoch loss {}",
        task["train_loss"]
    );
    assert!(accuracy >= 0.9, "dev accuracy {accuracy}");
    assert_eq!(task["train_examples"], 640);
    let task = &report["tasks"][1];
    assert_eq!(task["task"], "stsb");
    let pearson = task["scores"][0]["median"].as_f64().unwrap();
    let spearman = task["scores"][1]["median"].as_f64().unwrap();
    eprintln!("STS-B dev Pearson {pearson:.3}, Spearman {spearman:.3}");
    assert!(pearson >= 0.8 && spearman >= 0.8, "{pearson} {spearman}");
    let missing: Vec<&str> = report["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["task"].as_str().unwrap())
        .collect();
    assert_eq!(
        missing,
        ["cola", "mrpc", "qqp", "mnli", "qnli", "rte", "wnli"]
    );
    assert_eq!(
        report["average"]["covers"],
        serde_json::json!(["SST-2", "STS-B"])
    );
    let md = std::fs::read_to_string(run.join("glue.md")).unwrap();
    assert!(md.contains("| MNLI-m/mm | SST-2 |"), "{md}");
    assert_eq!(
        report["protocol"],
        "cramming-paper with --epochs 3, --lr 1e-3"
    );
    assert!(
        md.contains("# GLUE dev scores, protocol cramming-paper with --epochs 3, --lr 1e-3:"),
        "{md}"
    );
    assert!(md.contains("covers 2 of 8 tasks (SST-2, STS-B)"), "{md}");
    assert!(md.contains("missing: no"), "{md}");
    assert!(stdout.contains("GLUE avg"), "{stdout}");
}

/// The short protocol: its recipe in glue.json, its name in the table, one
/// epoch for the large SST-2 and three for STS-B.
#[test]
fn short_protocol_is_named_and_gives_large_tasks_one_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, glue) = setup(tmp.path());
    let (report, _) = glue_report(&run, &glue, &["--protocol", "cramming-short"]);
    assert_eq!(report["protocol"], "cramming-short");
    let recipe = &report["recipe"];
    assert_eq!(recipe["epochs"], 3);
    assert_eq!(recipe["large_task_epochs"], 1);
    assert_eq!(recipe["batch_size"], 32);
    assert_eq!(recipe["lr"], 1e-4);
    assert_eq!(recipe["schedule"], "linear");
    let md = std::fs::read_to_string(run.join("glue.md")).unwrap();
    assert!(md.contains("protocol cramming-short:"), "{md}");
    assert!(
        md.contains("3 epochs (1 for SST-2, QNLI, MNLI, QQP), batch 32"),
        "{md}"
    );
    let tasks = report["tasks"].as_array().unwrap();
    assert_eq!(
        (&tasks[0]["task"], &tasks[0]["epochs"]),
        (&"sst2".into(), &1.into())
    );
    assert_eq!(
        (&tasks[1]["task"], &tasks[1]["epochs"]),
        (&"stsb".into(), &3.into())
    );
    let sst2_steps = tasks[0]["steps"].as_u64().unwrap();
    assert_eq!(
        sst2_steps,
        640u64.div_ceil(32),
        "one epoch of 640 examples in batches of 32"
    );
}

fn assert_error_and_nothing_written(run: &Path, glue: &Path, tasks: &str, needles: &[&str]) {
    let (code, _, stderr) = cram(&[
        "glue",
        "--run",
        run.to_str().unwrap(),
        "--glue-dir",
        glue.to_str().unwrap(),
        "--tasks",
        tasks,
        "--quiet",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "expected '{needle}' in: {stderr}");
    }
    assert!(!run.join("glue.json").exists());
    assert!(!run.join("glue.md").exists());
}

#[test]
fn named_task_with_a_missing_folder_is_an_error_naming_task_and_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, glue) = setup(tmp.path());
    assert_error_and_nothing_written(&run, &glue, "sst2,rte", &["RTE", "RTE/train.tsv"]);
}

#[test]
fn named_task_with_a_malformed_file_is_an_error_naming_task_and_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, glue) = setup(tmp.path());
    let rows = vec!["0\tA man sleeps.\tentailment".to_string()];
    write_tsv(
        &glue.join("RTE/train.tsv"),
        "index\tsentence1\tlabel",
        &rows,
    );
    write_tsv(&glue.join("RTE/dev.tsv"), "index\tsentence1\tlabel", &rows);
    assert_error_and_nothing_written(&run, &glue, "rte", &["RTE", "train.tsv", "'sentence2'"]);
    assert_error_and_nothing_written(&run, &glue, "sst2,squad", &["'squad'", "cola"]);
}

/// The shared GLUE copy (see ../shared/data/README.md): row counts of its
/// README, MNLI's two dev files of reduced columns, and the absent training
/// sets listed as missing.
/// A fresh clone has no ../shared: ignored in `cargo test`, run with `--ignored`.
#[test]
#[ignore = "needs ../shared/data/glue (the development data)"]
fn shared_glue_folder_reads_with_the_readme_counts() {
    use cram::eval::glue::{plan, Task};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/glue");
    assert!(dir.is_dir(), "{} not found", dir.display());
    let plan = plan(&dir, None).unwrap();
    let counts: Vec<(Task, usize, Vec<usize>)> = plan
        .tasks
        .iter()
        .map(|t| {
            let dev = t.dev.iter().map(|d| d.examples.len()).collect();
            (t.task, t.train.len(), dev)
        })
        .collect();
    assert_eq!(
        counts,
        [
            (Task::Cola, 8551, vec![1043]),
            (Task::Sst2, 67349, vec![872]),
            (Task::Mrpc, 3668, vec![408]),
            (Task::Stsb, 5749, vec![1500]),
            (Task::Rte, 2490, vec![277]),
            (Task::Wnli, 635, vec![71]),
        ]
    );
    let missing: Vec<&str> = plan.missing.iter().map(|m| m.task).collect();
    assert_eq!(missing, ["qqp", "mnli", "qnli"]);
    // MNLI's dev files are there even though its training set is not.
    let mnli = Task::Mnli.load_split(&dir, "dev_matched.tsv").unwrap();
    assert_eq!(mnli.len(), 9815);
    assert_eq!(
        Task::Mnli
            .load_split(&dir, "dev_mismatched.tsv")
            .unwrap()
            .len(),
        9832
    );
    let named = cram::eval::glue::plan(&dir, Some(&[Task::Mnli])).unwrap_err();
    assert!(
        named.to_string().contains("MNLI") && named.to_string().contains("train.tsv"),
        "{named}"
    );
}
