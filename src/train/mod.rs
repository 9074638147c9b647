//! Pretraining: schedules tied to the budget clock, gradient accumulation
//! with a batch-size ramp, AdamW with global-norm clipping, periodic held-out
//! evaluation, metrics, checkpoints and resume.

pub mod bench;
pub mod checkpoint;
pub mod guard;
mod metrics;
pub mod noise;
mod options;
mod progress;
mod run_dir;
mod run_files;
pub mod schedule;
pub mod step;
mod trainer;

pub use checkpoint::{load_run, CheckpointError, LoadedRun, TrainProgress, TrainState};
pub use metrics::{
    metrics_file, read_records, read_without_timing, EvalRecord, MetricsWriter, NoiseRecord,
    Record, ResumeChange, TrainRecord,
};
pub use progress::Progress;
pub use run_files::{fit_to_data, record_data, RUN_DATA_MANIFEST, RUN_TOKENIZER};
pub use step::{micro_step, Step, StepError};
pub use trainer::{
    pretrain, pretrain_group, pretrain_parallel, RunOptions, RunSummary, TrainError,
};
