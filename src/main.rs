//! The `cram` command line: parse, call the library, print errors.

use clap::Parser;

fn main() {
    let cli = cram::cli::Cli::parse();
    if let Err(e) = cram::cli::run(cli) {
        eprintln!("error: {}", cram::cli::error_text(&e));
        std::process::exit(1);
    }
}
