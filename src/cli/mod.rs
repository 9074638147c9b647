//! One file per subcommand: its flags and the library call it makes.

mod bench;
mod config;
mod data;
mod demo;
mod eval;
mod export;
mod glue;
mod import;
mod infer;
mod pretrain;
mod report;
mod scale;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "cram",
    version,
    about = "Train language models from scratch under a fixed compute budget, and measure what you got.",
    after_help = "Start with `cram demo`: it prepares the built-in corpus, trains a tiny model on 1.6M tokens on the CPU (about 45 seconds on 2 cores) and shows what it learned."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Prepare raw text into a tokenizer and packed token shards.
    Data(data::DataArgs),
    /// Pretrain a model under a budget.
    Pretrain(pretrain::PretrainArgs),
    /// Held-out loss and accuracy of a run's checkpoint.
    Eval(eval::EvalArgs),
    /// Fine-tune a run's checkpoint on the GLUE tasks and report the dev scores.
    Glue(glue::GlueArgs),
    /// Logits at every position of given token ids, as JSON.
    Infer(infer::InferArgs),
    /// Write a run's checkpoint in another format (Hugging Face transformers).
    Export(export::ExportArgs),
    /// Turn a model in another format (Hugging Face transformers) into a run folder.
    Import(import::ImportArgs),
    /// Time training steps on the GPU (tokens/s, MFU, memory), as JSON lines.
    Bench(bench::BenchArgs),
    /// Show resolved configurations.
    Config(config::ConfigArgs),
    /// Prepare the built-in corpus, pretrain `tiny` on 1.6M tokens on the CPU (under a minute on a laptop; a GPU is not used), evaluate, and show guesses.
    Demo(demo::DemoArgs),
    /// Scaling laws: sweep runs, fit Kaplan and Chinchilla laws, plan a budget.
    Scale(scale::ScaleArgs),
    /// Plots and a self-contained report.html of a run or a sweep folder.
    Report(report::ReportArgs),
}

/// An error and its causes in one line, each cause once: many library errors
/// already name their cause in their own message ("cannot read X: No such
/// file"), and anyhow's `{:#}` would print it again after it.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Data(a) => data::run(a),
        Command::Pretrain(a) => pretrain::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Glue(a) => glue::run(a),
        Command::Infer(a) => infer::run(a),
        Command::Export(a) => export::run(a),
        Command::Import(a) => import::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Config(a) => config::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Scale(a) => scale::run(a),
        Command::Report(a) => report::run(a),
    }
}

/// `--set key.path=value`, repeatable, shared by every command that takes a config.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SetArgs {
    /// Override a config value, e.g. --set train.lr=5e-4 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

/// The data-parallel flags that `cram pretrain` and `cram bench` share.
#[derive(clap::Args, Debug, Clone)]
pub struct DistArgs {
    /// Data parallel on this many local GPUs: starts one worker process per
    /// GPU (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT set for
    /// each). Under an external launcher that sets those variables, leave it out.
    #[arg(long, value_name = "N")]
    pub gpus: Option<usize>,
    /// Shard the optimizer state across ranks (ZeRO stage 1).
    #[arg(long)]
    pub zero1: bool,
    /// Seconds a rank waits for the others (rendezvous, NCCL set-up, each
    /// collective) before it stops with an error that names what it waited for.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub dist_timeout: u64,
    /// Size of the gradient buckets that GPUs reduce while the backward pass
    /// goes on (MB of f32 gradients).
    #[arg(long, value_name = "MB", default_value_t = 25.0)]
    pub bucket_mb: f64,
}

impl DistArgs {
    /// The group these flags describe.
    pub fn group(&self) -> anyhow::Result<crate::launch::Group> {
        Ok(crate::launch::Group {
            zero1: self.zero1,
            timeout: std::time::Duration::from_secs(self.dist_timeout),
            bucket_bytes: crate::launch::bucket_bytes(self.bucket_mb)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::error_text;
    use anyhow::Context;

    #[test]
    fn each_cause_is_printed_once() {
        let os = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        // A message that already holds its cause, as thiserror's "{source}" does.
        let e = anyhow::Error::new(os).context("cannot read /x: No such file");
        assert_eq!(error_text(&e), "cannot read /x: No such file");
        let e: anyhow::Result<()> = Err(anyhow::anyhow!("inner")).context("outer");
        assert_eq!(error_text(&e.unwrap_err()), "outer: inner");
    }
}
