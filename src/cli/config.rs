//! `cram config show`: the fully resolved configuration of a preset.

use super::SetArgs;
use crate::config::Config;
use crate::model::Model;

#[derive(clap::Args, Debug)]
pub struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(clap::Subcommand, Debug)]
enum ConfigCommand {
    /// Print the resolved TOML of a preset with overrides, and its parameter count.
    Show {
        #[arg(long, default_value = "crammed-bert")]
        preset: String,
        #[command(flatten)]
        set: SetArgs,
    },
    /// List the presets.
    List,
}

pub fn run(args: ConfigArgs) -> anyhow::Result<()> {
    match args.command {
        ConfigCommand::Show { preset, set } => {
            let cfg = Config::resolve(&preset, &set.sets)?;
            let model = Model::new(&cfg.model);
            println!("# preset: {preset}");
            println!(
                "# parameters: {} ({} outside the embeddings)",
                model.num_params(),
                model.layout.non_embedding_count()
            );
            println!(
                "# training FLOPs per token at seq_len {}: {:.4e}",
                cfg.data.seq_len,
                model.flops_per_token(cfg.data.seq_len, &cfg.objective)
            );
            print!("{}", cfg.to_toml());
        }
        ConfigCommand::List => {
            for name in crate::config::preset_names() {
                let cfg = Config::resolve(name, &[])?;
                let m = Model::new(&cfg.model);
                println!(
                    "{name:<14} {:>6.1}M parameters  {:?}",
                    m.num_params() as f64 / 1e6,
                    cfg.model.arch
                );
            }
        }
    }
    Ok(())
}
