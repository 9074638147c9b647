//! The `cram` command line: parse, call the library, print errors.

use clap::Parser;

fn main() {
    default_sigpipe();
    let cli = cram::cli::Cli::parse();
    if let Err(e) = cram::cli::run(cli) {
        eprintln!("error: {}", cram::cli::error_text(&e));
        std::process::exit(1);
    }
}

/// Output into a pipe whose reader is gone (`cram config list | head -1`)
/// ends cram quietly, as it ends any Unix tool. Rust's runtime ignores
/// SIGPIPE, so every later write fails with EPIPE instead, and `println!`
/// panics on that with a backtrace. Sockets are unaffected: the standard
/// library's and NCCL's sends pass MSG_NOSIGNAL and get the error.
#[cfg(unix)]
fn default_sigpipe() {
    // SAFETY: the first thing main does, before any other thread exists;
    // SIG_DFL is a valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn default_sigpipe() {}
