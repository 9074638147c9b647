//! The run folder's life around the training loop: set up fresh or checked
//! for a resume (with the settings a resume may change written back and
//! reported), and held by one process at a time.

use super::checkpoint;
use super::metrics::{Record, ResumeChange};
use super::trainer::{io_err, RunOptions, TrainError};
use crate::config::{resume_changes, Change, Config};
use std::path::Path;

/// Sets up the run folder: a fresh one gets `config.toml`; a resumed one must
/// hold the same config up to the settings a resume may change
/// ([`crate::config::RESUMABLE`]), which are then written over the saved ones
/// and returned. A folder whose run stopped before its first checkpoint holds
/// nothing to resume, so a fresh start takes it over (its config and metrics
/// replaced), as a resume of it starts from step 0 (see [`resume_from_start`]).
pub(super) fn prepare_run_dir(cfg: &Config, opts: &RunOptions) -> Result<Vec<Change>, TrainError> {
    let config_path = opts.out.join("config.toml");
    if opts.resume {
        let saved = Config::load(&config_path)
            .map_err(|e| TrainError::Run(format!("cannot resume: {e}")))?;
        let changes = resume_changes(&saved, cfg)
            .map_err(|e| TrainError::Run(format!("cannot resume {}: {e}", opts.out.display())))?;
        if !changes.is_empty() {
            write_config(&config_path, cfg)?;
        }
        return Ok(changes);
    }
    if checkpoint::latest(&opts.out).is_some() {
        return Err(TrainError::Run(format!(
            "{} already holds a run; pass --resume to continue it or choose another --out",
            opts.out.display()
        )));
    }
    if config_path.exists() {
        eprintln!(
            "note: {} holds a run that stopped before its first checkpoint; it starts again here from step 0",
            opts.out.display()
        );
        let metrics = opts.out.join("metrics.jsonl");
        match std::fs::remove_file(&metrics) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(&metrics)(e)),
            _ => {}
        }
    }
    std::fs::create_dir_all(&opts.out).map_err(io_err(&opts.out))?;
    write_config(&config_path, cfg)?;
    Ok(Vec::new())
}

/// Whether `--resume` finds nothing to resume: the run stopped before its
/// first checkpoint. It then trains from step 0 with the saved config (and
/// the metrics of the lost attempt are dropped), after saying so.
pub(super) fn resume_from_start(opts: &RunOptions, lead: bool) -> bool {
    let nothing = opts.resume && checkpoint::latest(&opts.out).is_none();
    if nothing && lead {
        eprintln!(
            "note: {} stopped before its first checkpoint; resuming it from step 0",
            opts.out.display()
        );
    }
    nothing
}

/// The lock file of a run folder: held (an OS advisory lock, released by the
/// OS when the process ends, however it ends) by the process training in it.
pub const RUN_LOCK: &str = ".lock";

/// One writer per run folder. Two runs started on the same `--out` would
/// otherwise both pass the "already holds a run" check and write each other's
/// checkpoints. The holder's PID is written into the file for the message.
pub(super) fn lock_run(out: &Path) -> Result<std::fs::File, TrainError> {
    use std::io::{Read, Seek, Write};
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    let path = out.join(RUN_LOCK);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err(&path))?;
    match file.try_lock() {
        Ok(()) => {
            let pid = std::process::id().to_string();
            file.set_len(0)
                .and_then(|_| file.rewind())
                .and_then(|_| file.write_all(pid.as_bytes()))
                .map_err(io_err(&path))?;
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => "another process".to_string(),
                pid => format!("process {pid}"),
            };
            Err(TrainError::Run(format!(
                "{} is in use: {holder} is training in it; wait for it to finish or choose another --out",
                out.display()
            )))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(io_err(&path)(e)),
    }
}

fn write_config(path: &Path, cfg: &Config) -> Result<(), TrainError> {
    crate::fsio::write_atomically(path, cfg.to_toml().as_bytes()).map_err(io_err(path))
}

/// The `resume` event of `metrics.jsonl` and the line the user sees: what
/// changed, and for the budget what that means for the schedules.
pub(super) fn resume_record(step: u64, progress: f64, changes: &[Change]) -> (Record, String) {
    let changed = changes.iter().map(|c| {
        let change = ResumeChange {
            saved: c.saved.clone(),
            asked: c.asked.clone(),
        };
        (c.key.clone(), change)
    });
    let record = Record::Resume {
        step,
        progress,
        changes: changed.collect(),
    };
    let list: Vec<String> = changes.iter().map(Change::to_string).collect();
    let mut text = format!("resumed at step {step} with {}", list.join(", "));
    if changes.iter().any(|c| c.key == "train.budget") {
        text.push_str(&format!(
            "; the schedules are tied to the budget, so they continue from {:.1}% of the new one",
            100.0 * progress.min(1.0)
        ));
    }
    (record, text)
}
