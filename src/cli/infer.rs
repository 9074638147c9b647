//! `cram infer`: logits at every position of given token ids (or text lines),
//! printed as JSON `{"ids": [...], "logits": [[[...vocab...] per position] per sequence]}`.

use crate::backend::cpu::Cpu;
use crate::eval::infer::{encode_lines, logits_at_every_position, read_ids_file};
use crate::train::{load_run, RUN_TOKENIZER};
use anyhow::{bail, Context};
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
#[command(group = clap::ArgGroup::new("input").required(true))]
pub struct InferArgs {
    /// Run folder written by `cram pretrain` or `cram import hf`.
    #[arg(long)]
    run: PathBuf,
    /// Checkpoint step (default: the newest).
    #[arg(long)]
    step: Option<u64>,
    /// JSON list of token-id lists, e.g. [[2, 17, 3], [2, 5, 3]].
    #[arg(long, group = "input")]
    ids_file: Option<PathBuf>,
    /// Text file: each non-empty line is encoded with the run's tokenizer.json, special tokens added.
    #[arg(long, group = "input")]
    text_file: Option<PathBuf>,
}

#[derive(Serialize)]
struct Output {
    ids: Vec<Vec<u32>>,
    logits: Vec<Vec<Vec<f32>>>,
}

pub fn run(args: InferArgs) -> anyhow::Result<()> {
    let be = Cpu::new();
    let run = load_run(&be, &args.run, args.step)?;
    let cfg = &run.model.cfg;
    let ids = match (&args.ids_file, &args.text_file) {
        (Some(path), _) => read_ids_file(path, cfg)?,
        (None, text) => {
            let path = text.as_ref().context("give --ids-file or --text-file")?;
            let tok_path = args.run.join(RUN_TOKENIZER);
            if !tok_path.is_file() {
                bail!(
                    "{} holds no tokenizer.json (runs started before cram kept a copy of it), \
                     which --text-file needs; use --ids-file instead",
                    args.run.display()
                );
            }
            let tokenizer = crate::data::load_tokenizer(&tok_path)?;
            encode_lines(path, &tokenizer, cfg)?
        }
    };
    let vocab = cfg.vocab_size;
    let logits = ids
        .iter()
        .map(|seq| {
            logits_at_every_position(&be, &run.model, &run.params, seq)
                .chunks_exact(vocab)
                .map(<[f32]>::to_vec)
                .collect()
        })
        .collect();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    serde_json::to_writer(&mut out, &Output { ids, logits }).context("cannot write the logits")?;
    writeln!(out).context("cannot write the logits")?;
    out.flush().context("cannot write the logits")?;
    Ok(())
}
