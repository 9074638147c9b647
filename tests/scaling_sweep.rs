//! A real sweep on the CPU, end to end: a corpus made here (sentences whose
//! words are fixed by a hidden topic, so that a masked word is predictable from
//! its sentence and larger models and more steps do better within seconds),
//! nine tiny runs (three widths × three step budgets) with the gradient noise
//! scale measured, one of them interrupted and resumed, then the fits, the
//! plan and the reports.

mod common;

use common::cram;

use cram::backend::cpu::Cpu;
use cram::data::{prepare, PrepareOptions};
use cram::report::{report, ReportOptions};
use cram::scaling::fit::{fit_all, FitOptions, FIT_FILE};
use cram::scaling::points::distinct;
use cram::scaling::spec::SweepSpec;
use cram::scaling::sweep::{plan, run_dir, sweep, SweepOptions, RESULT_FILE};
use cram::train::{pretrain, RunOptions};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

/// 3000 documents of four ten-word sentences; each sentence is the word list
/// of one of 40 topics over a 240-word invented vocabulary.
fn topic_corpus(dir: &Path) -> PathBuf {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let syllables = [
        "ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "ve", "du", "ga", "zo",
    ];
    let mut words: Vec<String> = Vec::new();
    while words.len() < 240 {
        let n = rng.random_range(2..=3);
        let w: String = (0..n)
            .map(|_| syllables[rng.random_range(0..syllables.len())])
            .collect();
        if !words.contains(&w) {
            words.push(w);
        }
    }
    let topics: Vec<Vec<&str>> = (0..40)
        .map(|_| {
            (0..10)
                .map(|_| words[rng.random_range(0..words.len())].as_str())
                .collect()
        })
        .collect();
    let docs: Vec<String> = (0..3000)
        .map(|_| {
            (0..4)
                .map(|_| format!("{}.", topics[rng.random_range(0..topics.len())].join(" ")))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let path = dir.join("topics.txt");
    std::fs::write(&path, docs.join("\n\n")).unwrap();
    path
}

fn prepared(dir: &Path) -> PathBuf {
    let out = dir.join("data");
    prepare(&PrepareOptions {
        vocab_size: 512,
        seq_len: 32,
        val_fraction: 0.03,
        shard_sequences: 4096,
        max_tokens_per_char: None,
        unigram_sort: false,
        dedup: false,
        near_dup_threshold: None,
        ..PrepareOptions::new(vec![topic_corpus(dir).into()], out.clone())
    })
    .unwrap();
    out
}

/// `cram scale fit --points CSV` with more arguments.
fn fit_table(csv: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["scale", "fit", "--points", csv.to_str().unwrap()];
    args.extend(extra);
    cram(&args)
}

/// `cram scale plan` of a fit (a sweep folder or a fit.json) for a day on an H100.
fn plan_24h_h100(fit: &Path) -> (i32, String, String) {
    let fit = fit.to_str().unwrap();
    cram(&[
        "scale", "plan", "--fit", fit, "--budget", "24h", "--device", "h100",
    ])
}

const SPEC: &str = r#"
preset = "tiny"
data = "data"
set = ["train.eval_every=25", "train.log_every=5", "train.eval_batches=8", "train.micro_batch=8",
       "train.batch_size=16", "train.checkpoint_every=20", "train.lr=1e-2"]
budgets = ["50 steps", "100 steps", "200 steps"]
widths = [16, 32, 64]
depths = [1]
measure_noise_scale = true
"#;

#[test]
fn sweep_resume_fit_plan_and_report() {
    let started = std::time::Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    prepared(tmp.path());
    let spec_path = tmp.path().join("sweep.toml");
    std::fs::write(&spec_path, SPEC).unwrap();
    let spec = SweepSpec::load(&spec_path).unwrap();
    let out = tmp.path().join("sweep");
    let be = Cpu::new();

    // Interrupt the first run after 20 steps, as a preempted sweep would leave it.
    let (store, runs) = plan(&spec).unwrap();
    assert_eq!(runs.len(), 9);
    let first = &runs[0];
    let stopped = pretrain(
        &be,
        &first.config,
        &store,
        &RunOptions {
            stop_after_steps: Some(20),
            measure_noise_scale: true,
            ..RunOptions::new(run_dir(&out, &first.name))
        },
    )
    .unwrap();
    assert!(!stopped.finished);

    let opts = SweepOptions {
        out: out.clone(),
        progress: false,
        max_runs: Some(4),
    };
    let mut log = Vec::new();
    let s = sweep(&be, &spec, SPEC, &opts, |l| log.push(l.to_string())).unwrap();
    assert_eq!((s.resumed, s.ran, s.skipped), (1, 3, 0), "{log:#?}");
    assert_eq!(s.points.points.len(), 4);
    let finished_metrics =
        std::fs::read(run_dir(&out, &runs[1].name).join("metrics.jsonl")).unwrap();

    let opts = SweepOptions {
        max_runs: None,
        ..opts
    };
    let s = sweep(&be, &spec, SPEC, &opts, |_| {}).unwrap();
    assert_eq!((s.resumed, s.ran, s.skipped), (0, 5, 4));
    assert_eq!(
        std::fs::read(run_dir(&out, &runs[1].name).join("metrics.jsonl")).unwrap(),
        finished_metrics,
        "a finished run is never redone"
    );
    let before = s.points.points.clone();
    // A run kept in a repository has its metrics gzipped (bench/sweep_keep.sh):
    // it is still finished, and its point and curve read the same.
    let kept = run_dir(&out, &runs[1].name);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, &finished_metrics).unwrap();
    std::fs::write(kept.join("metrics.jsonl.gz"), gz.finish().unwrap()).unwrap();
    std::fs::remove_file(kept.join("metrics.jsonl")).unwrap();
    let s = sweep(&be, &spec, SPEC, &opts, |_| {}).unwrap();
    assert_eq!((s.ran, s.resumed, s.skipped), (0, 0, 9));
    assert_eq!(s.points.points, before);

    // The resumed run logged each step once, up to its budget.
    let steps: Vec<u64> = std::fs::read_to_string(run_dir(&out, &first.name).join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"train\""))
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(
        steps.windows(2).all(|w| w[1] > w[0]) && *steps.last().unwrap() == 50,
        "{steps:?}"
    );
    assert!(run_dir(&out, &first.name).join(RESULT_FILE).is_file());

    let points = &s.points.points;
    assert_eq!(points.len(), 9);
    assert_eq!(distinct(points.iter().map(|p| p.n_params)).len(), 3);
    assert_eq!(distinct(points.iter().map(|p| p.tokens)).len(), 3);
    for (p, r) in points.iter().zip(&runs) {
        assert_eq!(p.compute, r.counts.compute(p.tokens));
        assert!(p.n_total > p.n_params);
        assert!(p.loss.is_finite() && p.loss < (512f64).ln(), "{p:?}");
        eprintln!(
            "{}: N {:.3e} D {:.3e} loss {:.4} B_simple {:?}",
            p.run, p.n_params, p.tokens, p.loss, p.noise_scale
        );
    }
    // B_simple is undefined where the averaged |G|² estimate comes out negative
    // (too few steps for the noise to average out), so not every run has one.
    let measured = points
        .iter()
        .filter(|p| p.noise_scale.is_some_and(|b| b > 0.0))
        .count();
    assert!(
        measured >= points.len() / 2,
        "only {measured} runs have a noise scale"
    );
    for c in &s.points.curves {
        assert!(c.samples.len() >= 2, "{c:?}");
    }
    // More steps help every size here: the data is learnable within the budgets.
    for size in distinct(points.iter().map(|p| p.n_params)) {
        let mut by_d: Vec<_> = points.iter().filter(|p| p.n_params == size).collect();
        by_d.sort_by(|a, b| a.tokens.total_cmp(&b.tokens));
        assert!(by_d.last().unwrap().loss < by_d[0].loss, "{by_d:?}");
    }

    let fit = fit_all(
        &s.points,
        FitOptions {
            bootstrap: 20,
            seed: 0,
            max_loss: None,
        },
    )
    .unwrap();
    let json = serde_json::to_string_pretty(&fit).unwrap();
    std::fs::write(out.join(FIT_FILE), &json).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    for key in ["alpha_n", "alpha_d", "n_c", "d_c"] {
        assert!(
            v["kaplan"][key]["value"].as_f64().unwrap().is_finite(),
            "kaplan.{key}"
        );
    }
    for key in [
        "e",
        "a",
        "b",
        "alpha",
        "beta",
        "optimal_n_exponent",
        "optimal_d_exponent",
    ] {
        assert!(
            v["chinchilla"][key]["value"].as_f64().unwrap().is_finite(),
            "chinchilla.{key}"
        );
    }

    let data = cram::scaling::plateau::SweepData::read(&out)
        .unwrap()
        .unwrap();
    assert!(
        data.unigram_loss > 3.0 && data.unigram_loss < 12.0,
        "the unigram cross-entropy of the topic corpus: {data:?}"
    );
    // The most frequent of at most 512 tokens covers at least 1/512 of them.
    let mode = data.unigram_accuracy.unwrap();
    assert!((1.0 / 512.0..0.5).contains(&mode), "{data:?}");

    let written = report(&out, &ReportOptions::default()).unwrap();
    let html = std::fs::read_to_string(&written.html).unwrap();
    assert!(written.plots.len() >= 6, "{:?}", written.plots);
    for plot in &written.plots {
        let name = plot.file_name().unwrap().to_str().unwrap();
        let svg = std::fs::read_to_string(plot).unwrap();
        assert!(svg.contains("<svg") && svg.len() > 1000, "{name} is empty");
        assert!(
            html.contains(&format!("plots/{name}")),
            "report.html does not reference {name}"
        );
    }
    assert!(!html.contains("<script"), "the report has no scripts");
    assert_eq!(
        html.matches("<svg").count(),
        written.plots.len(),
        "every plot inline"
    );

    let (code, stdout, stderr) = plan_24h_h100(&out);
    assert_eq!(code, 0, "{stderr}");
    for needle in [
        "Chinchilla approach 3",
        "Kaplan joint",
        "MFU of 40%",
        "batch size:",
        "gradient noise scale",
        "--set model.hidden=",
        "checked on a run the laws had not seen",
        "loss [interval]",
    ] {
        assert!(stdout.contains(needle), "plan lacks '{needle}':\n{stdout}");
    }
    // The joint law's expected loss lies inside its interval, which is at
    // least as wide as the law's held-out error.
    let fit = out.to_str().unwrap();
    let (code, json, stderr) = cram(&[
        "scale", "plan", "--fit", fit, "--budget", "24h", "--device", "h100", "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let plan: serde_json::Value = serde_json::from_str(&json).unwrap();
    let joint = &plan["allocations"][0];
    let loss = joint["loss"].as_f64().unwrap();
    let [lo, hi] = [0, 1].map(|i| joint["loss_interval"][i].as_f64().unwrap());
    let fitted: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join(FIT_FILE)).unwrap()).unwrap();
    let held = fitted["holdout"]["predictions"][0]["relative_error"]
        .as_f64()
        .unwrap()
        .abs();
    assert!(
        lo <= loss * (1.0 - held) + 1e-9 && hi >= loss * (1.0 + held) - 1e-9,
        "{joint} against a held-out error of {held}"
    );
    // The shape it names carries both laws' loss for it, and the interval covers both.
    let at_shape = joint["shape"]["losses"].as_array().unwrap();
    assert_eq!(at_shape.len(), 2, "{joint}");
    for l in at_shape {
        let v = l["loss"].as_f64().unwrap();
        assert!(
            v.is_finite() && lo <= v + 1e-9 && v <= hi + 1e-9,
            "{l} outside [{lo}, {hi}]"
        );
    }

    // With a batch sweep's measurement the batch follows the critical batch
    // measured there; a folder without one is refused with what to run.
    let batches = tempfile::tempdir().unwrap();
    synthetic_batch_sweep(batches.path());
    let batch_dir = batches.path().to_str().unwrap();
    let (code, _, stderr) = cram(&["scale", "batch", batch_dir]);
    assert_eq!(code, 0, "{stderr}");
    let (code, json, stderr) = cram(&[
        "scale", "plan", "--fit", fit, "--budget", "24h", "--json", "--batch", batch_dir,
    ]);
    assert_eq!(code, 0, "{stderr}");
    let plan: serde_json::Value = serde_json::from_str(&json).unwrap();
    let source = plan["batch"]["source"].as_str().unwrap_or_default();
    assert!(
        source.contains("critical batch measured"),
        "{}",
        plan["batch"]
    );
    let (code, _, stderr) = cram(&[
        "scale", "plan", "--fit", fit, "--budget", "24h", "--batch", fit,
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("cram scale batch"), "{stderr}");

    let run = run_dir(&out, &runs[8].name);
    let (code, stdout, stderr) = cram(&["report", run.to_str().unwrap(), "--device", "cpu"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("report.html"), "{stdout}");
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    for plot in [
        "loss_tokens",
        "loss_time",
        "lr",
        "batch_size",
        "throughput",
        "mfu",
        "noise_scale",
    ] {
        assert!(
            html.contains(&format!("plots/{plot}.svg")),
            "run report lacks {plot}"
        );
        assert!(run.join("plots").join(format!("{plot}.svg")).is_file());
    }
    eprintln!(
        "sweep, fits, plan and reports took {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

/// Chinchilla's law with irreducible loss `e` on a grid of 4 sizes × 4
/// token counts, exact, as a points table.
fn chinchilla_table(e: f64) -> String {
    let mut text = String::from("n_params,tokens,compute,loss\n");
    for n in [1e7, 1e8, 1e9, 1e10] {
        for d in [1e9, 1e10, 1e11, 1e12] {
            let loss = e + 406.4 / f64::powf(n, 0.34) + 410.7 / f64::powf(d, 0.28);
            text.push_str(&format!("{n},{d},{},{loss}\n", 6.0 * n * d));
        }
    }
    text
}

#[test]
fn cli_fit_of_a_table_and_its_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("points.csv");
    let text = chinchilla_table(1.69);
    std::fs::write(&csv, &text).unwrap();
    let (code, stdout, stderr) = fit_table(&csv, &["--bootstrap", "0"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("chinchilla.alpha"), "{stdout}");
    let fit: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join(FIT_FILE)).unwrap()).unwrap();
    let alpha = fit["chinchilla"]["alpha"]["value"].as_f64().unwrap();
    assert!((alpha / 0.34 - 1.0).abs() < 0.02, "alpha {alpha}");

    // A run still on the masked-LM plateau, far above the law: --max-loss
    // leaves it out, says so, and the law is recovered as before.
    let plateau_run = format!("3e7,1e8,{},7.3\n", 6.0 * 3e7 * 1e8);
    std::fs::write(&csv, format!("{text}{plateau_run}")).unwrap();
    let fit_with = |extra: &[&str]| fit_table(&csv, &[&["--bootstrap", "0"], extra].concat());
    let (code, stdout, stderr) = fit_with(&["--max-loss", "6.5"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("1 run left out as still on the masked-LM plateau (final loss ≥ 6.500)"),
        "{stdout}"
    );
    let fit: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join(FIT_FILE)).unwrap()).unwrap();
    assert_eq!(fit["plateau"]["left_out"][0]["loss"].as_f64(), Some(7.3));
    let alpha = fit["chinchilla"]["alpha"]["value"].as_f64().unwrap();
    assert!((alpha / 0.34 - 1.0).abs() < 0.02, "alpha {alpha}");
    let (code, stdout, stderr) = fit_with(&["--keep-plateau"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.contains("left out"), "{stdout}");
    let plan = |dir: &std::path::Path| {
        let args = [
            "scale",
            "plan",
            "--fit",
            dir.to_str().unwrap(),
            "--budget",
            "1e21 flops",
        ];
        let (code, stdout, stderr) = cram(&args);
        assert_eq!(code, 0, "{stderr}");
        stdout
    };
    let degenerate = "irreducible loss E fitted to";
    assert!(
        !plan(tmp.path()).contains(degenerate),
        "E = 1.69 is not degenerate"
    );

    // The same law without an irreducible loss: approach 3's E goes to zero,
    // and the plan says what that does to its far predictions.
    let no_floor = tmp.path().join("no-floor");
    std::fs::create_dir_all(&no_floor).unwrap();
    let zero_csv = no_floor.join("points.csv");
    std::fs::write(&zero_csv, chinchilla_table(0.0)).unwrap();
    let (code, _, stderr) = fit_table(&zero_csv, &["--bootstrap", "0"]);
    assert_eq!(code, 0, "{stderr}");
    let stdout = plan(&no_floor);
    assert!(stdout.contains(degenerate), "{stdout}");
    let (code, _, stderr) = fit_with(&["--max-loss", "1.0"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("every run ended at a loss of 1.000 or more"),
        "{stderr}"
    );

    std::fs::write(
        &csv,
        "n_params,tokens,compute,loss\n1e7,1e9,6e16,3.0\n1e7,1e10,6e17,2.9\n",
    )
    .unwrap();
    let (code, _, stderr) = fit_table(&csv, &[]);
    assert_eq!(code, 1);
    assert!(
        stderr.starts_with("error: ") && stderr.contains("one model size"),
        "{stderr}"
    );

    std::fs::write(
        &csv,
        "n_params,tokens,compute,loss\n1e7,1e9,6e16,NaN\n1e8,1e10,6e18,2.9\n",
    )
    .unwrap();
    let (code, _, stderr) = fit_table(&csv, &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("loss = NaN"), "{stderr}");

    let (code, _, stderr) = cram(&[
        "scale",
        "plan",
        "--fit",
        tmp.path().to_str().unwrap(),
        "--budget",
        "5M tokens",
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("a time (24h) or a FLOP count"), "{stderr}");
}

#[test]
fn evals_per_run_spread_evaluations_over_each_runs_steps() {
    let tmp = tempfile::tempdir().unwrap();
    prepared(tmp.path());
    let spec_path = tmp.path().join("sweep.toml");
    // 16 sequences of 32 tokens a step: 8192 tokens are 16 steps.
    std::fs::write(
        &spec_path,
        r#"
preset = "tiny"
data = "data"
set = ["train.eval_every=1000", "train.micro_batch=8", "train.batch_size=16"]
budgets = ["50 steps", "200 steps", "8192 tokens", "30s"]
widths = [16]
depths = [1]
evals_per_run = 4
"#,
    )
    .unwrap();
    let (_, runs) = plan(&SweepSpec::load(&spec_path).unwrap()).unwrap();
    let every: Vec<usize> = runs.iter().map(|r| r.config.train.eval_every).collect();
    // ceil(50/4), 200/4, 16/4, and the configured value for a time budget.
    assert_eq!(every, vec![13, 50, 4, 1000]);

    // Shapes that differ only in heads get folders of their own; two budgets
    // written two ways would share one, which is refused.
    let spec = |models: &str, budgets: &str| {
        let text = format!("preset = \"tiny\"\ndata = \"data\"\nbudgets = [{budgets}]\n{models}");
        std::fs::write(&spec_path, text).unwrap();
        SweepSpec::load(&spec_path).unwrap()
    };
    let two_heads =
        "[[models]]\nhidden = 32\nlayers = 1\n[[models]]\nhidden = 32\nlayers = 1\nheads = 4\n";
    let (_, runs) = plan(&spec(two_heads, "\"9 steps\"")).unwrap();
    let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["h32-l1-9steps", "h32-l1-4heads-9steps"]);
    let Err(err) = plan(&spec(two_heads, "\"9 steps\", \"9steps\"")) else {
        panic!("two runs in one folder were accepted");
    };
    let err = err.to_string();
    assert!(
        err.contains("two runs would share the folder runs/h32-l1-4heads-9steps")
            || err.contains("two runs would share the folder runs/h32-l1-9steps"),
        "{err}"
    );
}

/// The six runs of bench/sweeps/crammed-gpu-2 (H200) that left the masked-LM
/// plateau: every one data-limited, so the loss does not fall with N at fixed
/// C and approach 3 cannot be fitted. The fit still reports the Kaplan laws,
/// names approach 3 as skipped, and the plan gives no batch size.
#[test]
fn a_fit_without_approach_3_reports_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("points.csv");
    std::fs::write(
        &csv,
        "n_params,tokens,compute,loss,n_total,run\n\
         8.852737e6,5.4665216e7,3.000349e15,4.3711,2.1435649e7,h384-l6-3e15flops\n\
         8.852737e6,1.82198272e8,1.0000115e16,3.5320,2.1435649e7,h384-l6-1e16flops\n\
         2.0980737e7,7.7504512e7,1.0000419e16,3.9549,3.7757953e7,h512-l8-1e16flops\n\
         4.7199745e7,3.473408e7,1.0000534e16,4.7829,7.2365569e7,h768-l8-1e16flops\n\
         4.7199745e7,1.0420224e8,3.0001603e16,3.6929,7.2365569e7,h768-l8-3e16flops\n\
         9.4397953e7,5.210112e7,3.0001122e16,4.6098,1.19563777e8,h768-l16-3e16flops\n",
    )
    .unwrap();
    let (code, stdout, stderr) = fit_table(&csv, &["--bootstrap", "20"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("note: Chinchilla approach 3 skipped: the best parametric fit has the loss not falling with N"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Chinchilla approach 3 skipped\n"),
        "{stdout}"
    );
    let fit: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join(FIT_FILE)).unwrap()).unwrap();
    assert!(fit["chinchilla"]["e"].is_null(), "{}", fit["chinchilla"]);
    assert!(fit["kaplan"]["alpha_d"]["value"].as_f64().unwrap() > 0.0);
    // Held out: the 3e16 level, which leaves four runs, too few for a law in N and D.
    assert!(fit["holdout"].is_null(), "{}", fit["holdout"]);
    assert!(
        stdout.contains("note: hold-out check skipped")
            && stdout.contains("without the largest compute level (h768-l8-3e16flops)"),
        "{stdout}"
    );

    let (code, stdout, stderr) = plan_24h_h100(&tmp.path().join(FIT_FILE));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("Kaplan joint L(N,D)"), "{stdout}");
    assert!(
        !stdout.contains("Chinchilla approach 3 (parametric)"),
        "{stdout}"
    );
    assert!(!stdout.contains("\nbatch size:"), "{stdout}");
    assert!(
        stdout.contains("note: no batch size: approach 3 was not fitted"),
        "{stdout}"
    );

    // The report draws what was fitted and says why the contours are missing.
    let (code, stdout, stderr) = cram(&["report", tmp.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("with 5 plots"), "{stdout}");
    let html = std::fs::read_to_string(tmp.path().join("report.html")).unwrap();
    assert!(html.contains("no contour plot: approach 3 was not fitted"));
}

/// `width_scaling = true`: each run's learning rate scales by w₀/w and its
/// initialisation std by √(w₀/w) against the base config's width (tiny: 128).
#[test]
fn width_scaling_sets_lr_and_init_per_width() {
    let tmp = tempfile::tempdir().unwrap();
    prepared(tmp.path());
    let spec_path = tmp.path().join("sweep.toml");
    std::fs::write(
        &spec_path,
        "preset = \"tiny\"\ndata = \"data\"\nbudgets = [\"9 steps\"]\nwidth_scaling = true\n\
         widths = [32, 128, 512]\ndepths = [1]\n",
    )
    .unwrap();
    let spec = SweepSpec::load(&spec_path).unwrap();
    let (_, runs) = plan(&spec).unwrap();
    let base = cram::config::Config::resolve("tiny", &[]).unwrap();
    assert_eq!(base.model.hidden, 128);
    for (run, w) in runs.iter().zip([32.0, 128.0, 512.0]) {
        let ratio = 128.0 / w;
        let (lr, std) = (run.config.train.lr, run.config.model.init_std as f64);
        assert!(
            (lr - base.train.lr * ratio).abs() < 1e-12,
            "{}: lr {lr}",
            run.name
        );
        let want = base.model.init_std as f64 * f64::sqrt(ratio);
        assert!((std - want).abs() < 1e-6, "{}: std {std}", run.name);
    }
    assert_eq!(runs[0].config.train.lr, 4.0 * base.train.lr);
}

#[test]
fn batch_lr_scaling_follows_the_batch_on_top_of_the_width_rule() {
    let tmp = tempfile::tempdir().unwrap();
    prepared(tmp.path());
    let spec_path = tmp.path().join("sweep.toml");
    let spec_text = |rule: &str| {
        format!(
            "preset = \"tiny\"\ndata = \"data\"\nbudgets = [\"9 steps\"]\nwidth_scaling = true\n\
             set = [\"train.batch_size=16\", \"train.micro_batch=4\"]\nbatch_sizes = [4, 16, 64]\n{rule}\n\
             [[models]]\nhidden = 64\nlayers = 1\n"
        )
    };
    std::fs::write(&spec_path, spec_text("batch_lr_scaling = \"sqrt\"")).unwrap();
    let (_, runs) = plan(&SweepSpec::load(&spec_path).unwrap()).unwrap();
    let base = cram::config::Config::resolve("tiny", &[]).unwrap();
    // Width 64 against tiny's 128 doubles the rate; batch B against 16 scales it by √(B/16).
    for (run, factor) in runs.iter().zip([0.5, 1.0, 2.0]) {
        let want = base.train.lr * 2.0 * factor;
        let lr = run.config.train.lr;
        assert!(
            (lr - want).abs() < 1e-12,
            "{}: lr {lr}, want {want}",
            run.name
        );
    }
    std::fs::write(&spec_path, spec_text("batch_lr_scaling = \"linear\"")).unwrap();
    let (_, runs) = plan(&SweepSpec::load(&spec_path).unwrap()).unwrap();
    assert!((runs[2].config.train.lr - base.train.lr * 2.0 * 4.0).abs() < 1e-12);

    // The rule without batch sizes, or a rule it does not know, is refused by name.
    std::fs::write(
        &spec_path,
        "preset = \"tiny\"\ndata = \"data\"\nbudgets = [\"9 steps\"]\nbatch_lr_scaling = \"sqrt\"\n\
         [[models]]\nhidden = 64\nlayers = 1\n",
    )
    .unwrap();
    let err = SweepSpec::load(&spec_path).unwrap_err().to_string();
    assert!(
        err.contains("'batch_lr_scaling'") && err.contains("'batch_sizes'"),
        "{err}"
    );
    std::fs::write(&spec_path, spec_text("batch_lr_scaling = \"cubic\"")).unwrap();
    let err = SweepSpec::load(&spec_path).unwrap_err().to_string();
    assert!(
        err.contains("cubic") || err.contains("unknown variant"),
        "{err}"
    );
}

/// A batch sweep written as the trainer writes it: model 1e6 at five batch
/// sizes whose steps to every loss follow S ∝ 100 + 1600/B exactly (so B_crit
/// is 16 sequences at every loss), with B_simple 20 logged throughout; the
/// largest batch stops sooner (1.2 × its steps to 4.5, the others at 2 ×),
/// so the losses below its lowest are measured by the other four; model 4e6
/// at one batch size, which the measurement passes over.
fn synthetic_batch_sweep(dir: &Path) {
    let mut points = String::from("n_params,tokens,compute,loss,n_total,run\n");
    let mut write_run = |name: &str, n: f64, batch: u64, steps_to_target: f64| {
        let length = if batch == 128 { 1.2 } else { 2.0 };
        let run = dir.join("runs").join(name);
        std::fs::create_dir_all(&run).unwrap();
        // loss = 4 + 2·e^(−k·step), at 4.5 when step = steps_to_target.
        let k = 4f64.ln() / steps_to_target;
        let mut lines = String::new();
        let last = (length * steps_to_target) as u64;
        for step in (5..=last).step_by(5) {
            let loss = 4.0 + 2.0 * (-k * step as f64).exp();
            lines.push_str(&format!(
                "{{\"event\":\"train\",\"step\":{step},\"tokens\":{},\"flops\":0.0,\"progress\":0.5,\
                 \"loss\":{loss},\"lr\":0.001,\"batch_size\":{batch},\"grad_norm\":1.0,\"tokens_per_s\":1.0,\
                 \"mfu\":null,\"noise_grad_sq\":1.0,\"noise_trace\":20.0,\"noise_scale\":20.0,\"elapsed\":1.0}}\n",
                step * batch * 32
            ));
        }
        lines.push_str(&format!(
            "{{\"event\":\"eval\",\"step\":{last},\"tokens\":{},\"val_loss\":4.1,\"val_accuracy\":0.3,\"elapsed\":1.0}}\n",
            last * batch * 32
        ));
        std::fs::write(run.join("metrics.jsonl"), lines).unwrap();
        let tokens = (last * batch * 32) as f64;
        points.push_str(&format!(
            "{n},{tokens},{},4.1,{},{name}\n",
            6.0 * n * tokens,
            2.0 * n
        ));
    };
    for batch in [8u64, 16, 32, 64, 128] {
        write_run(
            &format!("h64-l2-b{batch}"),
            1e6,
            batch,
            100.0 + 1600.0 / batch as f64,
        );
    }
    write_run("h128-l2-b16", 4e6, 16, 300.0);
    std::fs::write(dir.join("points.csv"), points).unwrap();
}

#[test]
fn the_critical_batch_comes_from_steps_to_a_target_loss() {
    let tmp = tempfile::tempdir().unwrap();
    synthetic_batch_sweep(tmp.path());
    let dir = tmp.path().to_str().unwrap();
    let (code, stdout, stderr) = cram(&[
        "scale",
        "batch",
        dir,
        "--target-loss",
        "4.5",
        "--window",
        "1",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("reached by 5 of 5 runs"), "{stdout}");
    assert!(
        !stdout.contains("last tenth"),
        "halfway is not late: {stdout}"
    );
    assert!(
        !stdout.contains("4.000e6"),
        "the one-batch model is left out: {stdout}"
    );
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("critical_batch.json")).unwrap(),
    )
    .unwrap();
    let model = &report["models"][0];
    let b_crit = model["b_crit"].as_f64().unwrap();
    assert!((b_crit / 16.0 - 1.0).abs() < 0.02, "{model}");
    assert!(
        (model["s_min"].as_f64().unwrap() / 100.0 - 1.0).abs() < 0.02,
        "{model}"
    );
    assert_eq!(model["b_simple"].as_f64(), Some(20.0), "{model}");
    assert!((model["b_crit_tokens"].as_f64().unwrap() / (32.0 * b_crit) - 1.0).abs() < 1e-9);

    // The default target is the loss every run reaches before the last tenth
    // of its steps; smoothing keeps the line.
    let (code, stdout, stderr) = cram(&["scale", "batch", dir]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("B_crit"), "{stdout}");
    assert!(!stdout.contains("last tenth"), "{stdout}");
    // Below it, the ladder: the four runs that go on still find B_crit 16.
    assert!(stdout.contains("by target loss"), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("critical_batch.json")).unwrap(),
    )
    .unwrap();
    let ladder = report["models"][0]["ladder"].as_array().unwrap();
    assert!(ladder.len() > 2, "{ladder:?}");
    assert_eq!(ladder.last().unwrap()["reached"].as_u64(), Some(4));
    for rung in ladder {
        let b = rung["b_crit"].as_f64().unwrap();
        assert!((b / 16.0 - 1.0).abs() < 0.05, "{rung}");
        assert_eq!(rung["bracketed"].as_bool(), Some(true), "{rung}");
    }

    // A target reached only as the schedule ends is measured and flagged.
    let (code, stdout, stderr) = cram(&["scale", "batch", dir, "--target-loss", "4.14"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("h64-l2-b8 reaches 4.1400 only at step") && stdout.contains("last tenth"),
        "{stdout}"
    );

    // A target no run reaches: the runs are listed, the critical batch is not.
    let (code, stdout, stderr) = cram(&["scale", "batch", dir, "--target-loss", "3.5"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("no critical batch: 0 run(s) reached the target"),
        "{stdout}"
    );
    assert!(
        stdout.contains("h64-l2-b8 never reached 3.5000"),
        "{stdout}"
    );

    let (code, _, stderr) = cram(&["scale", "batch", dir, "--target-loss", "-1"]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("--target-loss must be a positive loss"),
        "{stderr}"
    );

    // The sweep's report draws steps against sequences with the fitted curve.
    let (code, stdout, stderr) = cram(&["report", dir]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("report.html"), "{stdout}");
    let svg = std::fs::read_to_string(tmp.path().join("plots/critical_batch.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("N = 1.00e6"), "{svg}");
    let html = std::fs::read_to_string(tmp.path().join("report.html")).unwrap();
    assert!(html.contains("plots/critical_batch.svg"));
    // And the critical batch against the loss, beside Kaplan et al.'s line.
    let svg = std::fs::read_to_string(tmp.path().join("plots/critical_batch_loss.svg")).unwrap();
    assert!(
        svg.contains("B_crit, N = 1.00e6") && svg.contains("Kaplan et al."),
        "{svg}"
    );
    assert!(html.contains("plots/critical_batch_loss.svg"));
}
