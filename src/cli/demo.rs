//! `cram demo`: the whole day in a minute on the CPU. Prepares the built-in
//! corpus (US State of the Union addresses, installed by `scripts/setup`),
//! pretrains `tiny`, evaluates it against a unigram baseline, and shows the
//! model's guesses for masked words.

use crate::backend::cpu::Cpu;
use crate::backend::{Device, IGNORE};
use crate::config::Config;
use crate::data::batches::{read_sequences, HostBatch, Objective};
use crate::data::{prepare, PrepareOptions, SpecialTokens, Split, TokenStore};
use crate::eval::{evaluate, full_eval_batches, unigram_cross_entropy};
use crate::model::upload_batch;
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
    /// Training budget.
    #[arg(long, default_value = "4M tokens")]
    budget: String,
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
    sets.push(format!("train.budget={}", args.budget));
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
        args.budget,
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
    let whole = whole_words(&store, &tokenizer);
    println!(
        "  in sentences written for the demo (the right word marked *so*; a word start that needs more pieces, such as circum-, marked -):"
    );
    for probe in PROBES {
        show_probe(
            &be,
            &run.model,
            &run.params,
            (&tokenizer, &whole),
            &store,
            probe,
        )?;
    }
    println!("  in held-out text:");
    show_held_out(
        &be,
        &run.model,
        &run.params,
        (&tokenizer, &whole),
        &store,
        5,
    )?;
    println!(
        "\nrun folder: {} (metrics.jsonl, checkpoints/)",
        run_dir.display()
    );
    Ok(())
}

/// The model's five most likely ordinary tokens at position `at` of `ids`.
fn top_guesses(
    be: &Cpu,
    (model, tokenizer): (&Model, &tokenizers::Tokenizer),
    params: &<Cpu as Device>::Buf,
    ids: Vec<u32>,
    at: usize,
    special: SpecialTokens,
) -> Vec<u32> {
    let hb = HostBatch {
        batch: 1,
        seq: ids.len(),
        targets: vec![IGNORE],
        predict: Some(vec![at as u32]),
        counted: 0,
        ids,
    };
    let mut acts = Activations::new(be, &model.cfg, 1, hb.seq);
    let batch = upload_batch(be, &hb);
    model.forward_logits(be, params, &mut acts, &batch, false, 0);
    let logits = be.download(&acts.head.logits);
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
    order
        .into_iter()
        .filter(|&t| t > special.mask && starts_a_word(tokenizer, t))
        .take(5)
        .collect()
}

/// A masked word's guesses are word starts: a WordPiece continuation
/// (`##ould`) cannot begin the word at the masked position.
fn starts_a_word(tokenizer: &tokenizers::Tokenizer, id: u32) -> bool {
    tokenizer
        .id_to_token(id)
        .is_some_and(|t| !t.starts_with("##"))
}

/// Which word-start tokens are whole words: those that stand alone (the
/// next token is no `##` continuation) in at least half of their uses in
/// the training data. `circum` is a word start the data always continues
/// (`circum ##stances`); the demo marks such guesses as fragments.
fn whole_words(store: &TokenStore, tokenizer: &tokenizers::Tokenizer) -> Vec<bool> {
    let vocab = tokenizer.get_vocab_size(true);
    let continues: Vec<bool> = (0..vocab as u32)
        .map(|t| !starts_a_word(tokenizer, t))
        .collect();
    let tokens = read_sequences(store, Split::Train, 0..store.len(Split::Train));
    stand_alone(tokens.chunks(store.seq_len()), &continues)
}

/// Per token id: does it stand alone (is not followed by a continuation) in
/// at least half of its uses in `sequences`? Tokens never seen count as whole.
fn stand_alone<'a>(sequences: impl Iterator<Item = &'a [u32]>, continues: &[bool]) -> Vec<bool> {
    let vocab = continues.len();
    let (mut alone, mut seen) = (vec![0u64; vocab], vec![0u64; vocab]);
    for seq in sequences {
        for pair in seq.windows(2) {
            let (t, next) = (pair[0] as usize, pair[1] as usize);
            if t < vocab {
                seen[t] += 1;
                alone[t] += u64::from(!continues.get(next).copied().unwrap_or(false));
            }
        }
    }
    (0..vocab).map(|t| 2 * alone[t] >= seen[t]).collect()
}

/// Guesses in order, the right one marked `*so*`, fragments `circum-`.
fn format_guesses(
    tokenizer: &tokenizers::Tokenizer,
    whole: &[bool],
    guesses: &[u32],
    answer: u32,
) -> String {
    let words: Vec<String> = guesses
        .iter()
        .map(|&t| {
            let mut w = tokenizer.id_to_token(t).unwrap_or_default();
            if !whole.get(t as usize).copied().unwrap_or(true) {
                w.push('-');
            }
            if t == answer {
                format!("*{w}*")
            } else {
                w
            }
        })
        .collect();
    words.join(", ")
}

/// Masks the bracketed word of `probe` and prints the model's five best guesses.
fn show_probe(
    be: &Cpu,
    model: &Model,
    params: &<Cpu as Device>::Buf,
    (tokenizer, whole): (&tokenizers::Tokenizer, &[bool]),
    store: &TokenStore,
    probe: &str,
) -> anyhow::Result<()> {
    let (before, rest) = probe.split_once('[').context("probe without [word]")?;
    let (word, after) = rest.split_once(']').context("probe without [word]")?;
    let encode = |text: &str| -> anyhow::Result<Vec<u32>> {
        let enc = tokenizer
            .encode(text, false)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(enc.get_ids().to_vec())
    };
    let special = store.special();
    let answer = encode(word)?;
    let mut ids = vec![special.cls];
    ids.extend(encode(before)?);
    let at = ids.len();
    ids.push(special.mask);
    ids.extend(encode(after)?);
    ids.push(special.sep);
    ids.truncate(store.seq_len());
    let guesses = top_guesses(be, (model, tokenizer), params, ids, at, special);
    let answer = if answer.len() == 1 { answer[0] } else { IGNORE };
    println!(
        "    {before}[MASK]{after}  →  {}",
        format_guesses(tokenizer, whole, &guesses, answer)
    );
    Ok(())
}

/// Masks one whole word in each of a few held-out sequences and prints the
/// guesses with the words around it.
fn show_held_out(
    be: &Cpu,
    model: &Model,
    params: &<Cpu as Device>::Buf,
    (tokenizer, whole): (&tokenizers::Tokenizer, &[bool]),
    store: &TokenStore,
    count: usize,
) -> anyhow::Result<()> {
    let special = store.special();
    let n = store.len(Split::Val);
    let mut ids = vec![0u32; store.seq_len()];
    for i in 0..count.min(n) {
        store.read(Split::Val, i * n / count, &mut ids);
        let word = |t: u32| {
            let w = tokenizer.id_to_token(t).unwrap_or_default();
            w.len() >= 4 && w.chars().all(|c| c.is_ascii_alphabetic())
        };
        // A whole word: the next token does not continue it.
        let whole_at =
            |p: usize| word(ids[p]) && ids.get(p + 1).is_none_or(|&t| starts_a_word(tokenizer, t));
        let Some(at) = (ids.len() / 2..ids.len()).find(|&p| whole_at(p)) else {
            continue;
        };
        let answer = ids[at];
        let mut masked = ids.clone();
        masked[at] = special.mask;
        let guesses = top_guesses(be, (model, tokenizer), params, masked.clone(), at, special);
        let lo = at.saturating_sub(10);
        let hi = (at + 6).min(masked.len());
        let context = tokenizer
            .decode(&masked[lo..hi], false)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .replace(" ##", "");
        println!(
            "    … {context} …  →  {}",
            format_guesses(tokenizer, whole, &guesses, answer)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{stand_alone, starts_a_word};

    /// Ids: 0 `the`, 1 `circum`, 2 `##stances`, 3 `under`. `circum` is always
    /// continued, `under` once in three: only `circum` is a fragment.
    #[test]
    fn word_starts_the_data_always_continues_are_fragments() {
        let continues = [false, false, true, false];
        let seqs = [0, 1, 2, 0, 3, 0, 3, 2, 1, 2, 3, 0];
        assert_eq!(
            stand_alone(seqs.chunks(6), &continues),
            [true, false, true, true]
        );
    }

    #[test]
    fn continuation_pieces_are_not_guesses() {
        let vocab: ahash::AHashMap<String, u32> =
            [("[UNK]", 0), ("would", 1), ("##ould", 2), ("circum", 3)]
                .into_iter()
                .map(|(t, i)| (t.to_string(), i))
                .collect();
        let wp = tokenizers::models::wordpiece::WordPiece::builder()
            .vocab(vocab)
            .build()
            .unwrap();
        let tokenizer = tokenizers::Tokenizer::new(wp);
        assert!(starts_a_word(&tokenizer, 1));
        assert!(!starts_a_word(&tokenizer, 2));
        assert!(starts_a_word(&tokenizer, 3));
    }
}
