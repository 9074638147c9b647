//! `cram infer`: logits at every position of given token ids (or text lines),
//! printed as JSON `{"ids": [...], "logits": [[[...vocab...] per position] per sequence]}`.

use crate::backend::{select_device, DeviceChoice};
use crate::eval::infer::{encode_lines, logits_by_position, read_ids_file};
use crate::on_device;
use crate::train::{load_run, RUN_TOKENIZER};
use anyhow::{bail, Context};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

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
    /// Where to run the model: the GPU when one is usable (auto), or the one named. The CPU
    /// computes in f32 throughout; the GPU keeps activations in bf16, so its logits differ
    /// slightly (compare with other frameworks' fp32 logits on the CPU).
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
}

#[derive(Serialize)]
struct Output {
    ids: Vec<Vec<u32>>,
    logits: Vec<Vec<Vec<f32>>>,
}

pub fn run(args: InferArgs) -> anyhow::Result<()> {
    let (device, note) = select_device(args.device)?;
    let (ids, logits) = on_device!(&device, |be| {
        let run = load_run(be, &args.run, args.step)?;
        let cfg = &run.model.cfg;
        let ids = match (&args.ids_file, &args.text_file) {
            (Some(path), _) => read_ids_file(path, cfg)?,
            (None, Some(path)) => encode_lines(path, &run_tokenizer(&args.run)?, cfg)?,
            (None, None) => bail!("give --ids-file or --text-file"),
        };
        let logits = logits_by_position(be, &run.model, &run.params, &ids);
        (ids, logits)
    });
    // Said after the model ran, so that an error is the first line a failed run prints.
    if let Some(note) = note {
        eprintln!("note: {note}");
    }
    eprintln!("device: {}", device.name());
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    serde_json::to_writer(&mut out, &Output { ids, logits }).context("cannot write the logits")?;
    writeln!(out).context("cannot write the logits")?;
    out.flush().context("cannot write the logits")?;
    Ok(())
}

/// The run's copy of its tokenizer, which --text-file needs.
fn run_tokenizer(run: &Path) -> anyhow::Result<tokenizers::Tokenizer> {
    let path = run.join(RUN_TOKENIZER);
    if !path.is_file() {
        bail!(
            "{} holds no tokenizer.json (runs started before cram kept a copy of it), \
             which --text-file needs; use --ids-file instead",
            run.display()
        );
    }
    Ok(crate::data::load_tokenizer(&path)?)
}
