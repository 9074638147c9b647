//! `cram demo`: the whole day in a minute on the CPU. Prepares the built-in
//! corpus (US State of the Union addresses, installed by `scripts/setup`),
//! pretrains `tiny`, evaluates it against a unigram baseline, and shows the
//! model's guesses for masked words. It runs on the CPU on purpose, a GPU or
//! not: it shows what the reference backend learns in minutes on any machine
//! (`cram pretrain`, `eval`, `infer` and `glue` take `--device`).

use crate::backend::cpu::Cpu;
use crate::backend::Device;
use crate::config::Config;
use crate::data::batches::Objective;
use crate::data::{prepare, PrepareOptions, Split, TokenStore};
use crate::eval::guess::Guesser;
use crate::eval::{evaluate, full_eval_batches, unigram_cross_entropy};
use crate::model::{Activations, Model};
use crate::train::{fit_to_data, load_run, pretrain, Progress, RunOptions};
use anyhow::{bail, Context};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// Where `scripts/setup` puts the default corpus, relative to the project root.
const DEFAULT_CORPUS: &str = ".corpus/sotu";

/// Sentences written for the demo; the word in brackets is masked.
const PROBES: &[&str] = &[
    "the congress of the united [states] shall make laws for the people.",
    "we must work together to build a better [future] for our children.",
    "i will send the budget to the [congress] next month.",
    "our armed forces defend the [freedom] of our nation.",
    "the american people want good jobs and lower [taxes].",
    "the secretary of [state] met with the leaders of europe.",
];

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Folder of plain-text files to learn from (default: the built-in corpus, or $CRAM_CORPUS).
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Where to write the prepared data and the run.
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    /// Training budget (default: the `tiny` preset's, 1.6M tokens).
    #[arg(long)]
    budget: Option<String>,
    #[command(flatten)]
    set: super::SetArgs,
}

fn find_corpus(arg: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = arg {
        // The user's own text: `scripts/setup` would not help.
        if !path.exists() {
            bail!(
                "--corpus {} does not exist; pass a text file or a folder of them",
                path.display()
            );
        }
        return Ok(path);
    }
    let path = std::env::var_os("CRAM_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CORPUS));
    if !path.exists() {
        bail!(
            "the demo corpus {} is not installed; run `scripts/setup` first (it installs the public-domain \
             State of the Union addresses from the npm registry), or pass --corpus DIR",
            path.display()
        );
    }
    Ok(path)
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let created = missing_folders(&args.out);
    let result = run_demo(args);
    if result.is_err() {
        // A failed demo leaves no empty folders behind (those it made, deepest
        // first; a folder that holds anything stays).
        for dir in &created {
            let _ = std::fs::remove_dir(dir);
        }
    }
    result
}

/// `dir` and those of its ancestors that do not exist yet, deepest first.
fn missing_folders(dir: &Path) -> Vec<PathBuf> {
    dir.ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
        .map(Path::to_path_buf)
        .collect()
}

fn run_demo(args: DemoArgs) -> anyhow::Result<()> {
    let corpus = find_corpus(args.corpus)?;
    let mut sets = args.set.sets.clone();
    if let Some(budget) = &args.budget {
        sets.push(format!("train.budget={budget}"));
    }
    let mut cfg = Config::resolve("tiny", &sets)?;
    let data_dir = args.out.join("data");
    let run_dir = args.out.join("run");
    let show = std::io::stderr().is_terminal();

    println!(
        "1/4 preparing {} → {}",
        corpus.display(),
        data_dir.display()
    );
    let manifest = prepare(&PrepareOptions {
        overwrite: true,
        progress: show,
        ..PrepareOptions::from_config(vec![corpus.into()], data_dir.clone(), &cfg)
    })?;
    let store = TokenStore::open(&data_dir)?;
    println!(
        "    {} training and {} held-out sequences of {} tokens, vocabulary {}",
        store.len(Split::Train),
        store.len(Split::Val),
        store.seq_len(),
        manifest.tokenizer.vocab_size
    );
    fit_to_data(&mut cfg, &store)?;

    println!(
        "2/4 pretraining `tiny` for {} on the CPU → {}",
        cfg.train.budget,
        run_dir.display()
    );
    if run_dir.exists() {
        println!(
            "    (replacing the earlier demo run in {})",
            run_dir.display()
        );
        std::fs::remove_dir_all(&run_dir)
            .with_context(|| format!("cannot clear {}", run_dir.display()))?;
    }
    let be = Cpu::new();
    let opts = RunOptions {
        progress: Progress::for_stderr(false),
        ..RunOptions::new(&run_dir)
    };
    let summary = pretrain(&be, &cfg, &store, &opts)?;
    println!(
        "    {} steps, {} tokens in {:.0}s ({})",
        summary.steps,
        summary.tokens,
        summary.seconds,
        be.name()
    );

    println!("3/4 evaluating on held-out text");
    let run = load_run(&be, &run_dir, None)?;
    let objective = Objective::for_store(&cfg.objective, &store)?;
    let mut acts = Activations::new(&be, &cfg.model, cfg.train.micro_batch, store.seq_len());
    let initial = Model::new(&cfg.model).init_params(cfg.train.seed);
    // The set `cram eval` scores by default, so that both print the same number.
    let full = full_eval_batches(&store, cfg.train.micro_batch);
    let before = evaluate(
        &be,
        &run.model,
        &be.upload(&initial),
        &mut acts,
        &store,
        &objective,
        full,
        cfg.train.seed,
    );
    let after = evaluate(
        &be,
        &run.model,
        &run.params,
        &mut acts,
        &store,
        &objective,
        full,
        cfg.train.seed,
    );
    let unigram = unigram_cross_entropy(&store);
    println!(
        "    masked-LM loss before training: {:>7.3} nats/token",
        before.loss
    );
    println!(
        "    unigram model of the tokens:    {:>7.3} nats/token",
        unigram
    );
    println!(
        "    masked-LM loss after training:  {:>7.3} nats/token (accuracy {:.1}%; {} predictions on {} held-out sequences)",
        after.loss,
        100.0 * after.accuracy,
        after.predictions,
        after.sequences
    );
    if after.loss < unigram {
        println!(
            "    → {:.2} nats/token better than the unigram model: the model uses context.",
            unigram - after.loss
        );
    } else {
        println!("    → not yet better than the unigram model; give it a larger --budget.");
    }

    println!("4/4 guessing masked words");
    let tokenizer = store.tokenizer()?;
    let guesser = Guesser::new((&be, &run.model, &run.params), &tokenizer, &store);
    println!(
        "  in sentences written for the demo (the right word marked *so*; a word start that needs more pieces, such as circum-, marked -):"
    );
    for probe in PROBES {
        let masked = guesser.mask_probe(probe)?;
        let guesses = guesser.describe(&guesser.top(&masked), masked.answer);
        println!("    {}  →  {guesses}", masked.context);
    }
    println!("  in held-out text:");
    for masked in guesser.mask_held_out(&store, 5)? {
        let guesses = guesser.describe(&guesser.top(&masked), masked.answer);
        println!("    … {} …  →  {guesses}", masked.context);
    }
    println!(
        "\nrun folder: {} (metrics.jsonl, checkpoints/)",
        run_dir.display()
    );
    Ok(())
}
