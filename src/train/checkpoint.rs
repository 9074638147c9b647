//! Checkpoints: `RUN/checkpoints/step-N/` holds `model.safetensors` (fp32
//! parameters by name), `optimizer.safetensors` (AdamW moments `m.<name>`,
//! `v.<name>`) and `state.json` (step, budget spent, data position). A
//! checkpoint is written under a temporary name, synced, then renamed (and the
//! parent folder synced), so a crash never leaves a half-written one.
//! `state.json` also records the sha256 of both tensor files, checked at every
//! load: a file damaged later (a bad disk, a partial copy) is an error, and a
//! resume falls back to the newest checkpoint that is intact.

use crate::backend::Backend;
use crate::config::Spent;
use crate::model::Model;
use crate::optim::Weights;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CheckpointError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read checkpoint file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("checkpoint file {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{run} holds no checkpoint (no checkpoints/step-N folder)")]
    NoCheckpoint { run: PathBuf },
    #[error("{run} has no checkpoint at step {step}; its checkpoints are at steps {steps}")]
    NoSuchStep {
        run: PathBuf,
        step: u64,
        steps: String,
    },
    #[error("{0} is not a run folder (it has no config.toml); pass the --out folder of a `cram pretrain` run")]
    NotARun(PathBuf),
    #[error("{dir} holds {count} non-finite parameters (the run had diverged); use an earlier checkpoint (--step)")]
    NotFinite { dir: PathBuf, count: usize },
}

/// What a checkpoint remembers besides tensors.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainProgress {
    pub step: u64,
    /// Training sequences consumed: the position in the data order.
    pub position: u64,
    pub spent: Spent,
    /// The learning rate's multiplier after the guard's rollbacks (1 before any).
    #[serde(default = "unit_scale", skip_serializing_if = "is_unit_scale")]
    pub lr_scale: f64,
    /// Rollbacks so far (see [`crate::config::GuardConfig`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rollbacks: u32,
}

/// The progress of a run that has not started.
impl Default for TrainProgress {
    fn default() -> Self {
        TrainProgress {
            step: 0,
            position: 0,
            spent: Spent::default(),
            lr_scale: 1.0,
            rollbacks: 0,
        }
    }
}

fn unit_scale() -> f64 {
    1.0
}

fn is_unit_scale(x: &f64) -> bool {
    *x == 1.0
}

fn is_zero(x: &u32) -> bool {
    *x == 0
}

/// `state.json`: the progress, and the sha256 of each tensor file (absent in
/// checkpoints written before checksums, which load unchecked).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StateFile {
    #[serde(flatten)]
    progress: TrainProgress,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    sha256: std::collections::BTreeMap<String, String>,
}

const MODEL_FILE: &str = "model.safetensors";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// The state of a run on the device: the weights with their AdamW moments,
/// and how far the run has come.
pub struct TrainState<B: Backend> {
    pub weights: Weights<B>,
    pub progress: TrainProgress,
}

impl<B: Backend> TrainState<B> {
    pub fn fresh(be: &B, model: &Model, seed: u64) -> Self {
        TrainState {
            weights: Weights::new(be, &model.init_params(seed), model.layout.decay_len),
            progress: TrainProgress::default(),
        }
    }
}

pub fn step_dir(run: &Path, step: u64) -> PathBuf {
    run.join("checkpoints").join(format!("step-{step}"))
}

/// The newest `checkpoints/step-N` of a run.
pub fn latest(run: &Path) -> Option<(u64, PathBuf)> {
    complete(run).pop()
}

/// Every complete checkpoint of `run` (its `state.json` is written last),
/// by step.
pub fn complete(run: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = fs::read_dir(run.join("checkpoints")) else {
        return Vec::new();
    };
    let mut found: Vec<(u64, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let step: u64 = name.strip_prefix("step-")?.parse().ok()?;
            e.path()
                .join("state.json")
                .is_file()
                .then(|| (step, e.path()))
        })
        .collect();
    found.sort_by_key(|(step, _)| *step);
    found
}

/// Deletes all but the newest `keep` complete checkpoints of `run` (`keep`
/// 0: none is deleted). Called after a save, so the newest is the one just
/// written; an older intact one stays for a resume to fall back to.
pub fn prune(run: &Path, keep: usize) -> Result<(), CheckpointError> {
    if keep == 0 {
        return Ok(());
    }
    let all = complete(run);
    for (_, dir) in &all[..all.len().saturating_sub(keep)] {
        fs::remove_dir_all(dir).map_err(|source| CheckpointError::Write {
            path: dir.clone(),
            source,
        })?;
    }
    Ok(())
}

/// The checkpoint at `step`, or the newest one when `step` is `None`.
pub fn find(run: &Path, step: Option<u64>) -> Result<PathBuf, CheckpointError> {
    match step {
        Some(s) => {
            let dir = step_dir(run, s);
            if dir.join("state.json").is_file() {
                return Ok(dir);
            }
            let steps: Vec<String> = complete(run).iter().map(|(s, _)| s.to_string()).collect();
            if steps.is_empty() {
                return Err(CheckpointError::NoCheckpoint {
                    run: run.to_path_buf(),
                });
            }
            Err(CheckpointError::NoSuchStep {
                run: run.to_path_buf(),
                step: s,
                steps: steps.join(", "),
            })
        }
        None => latest(run)
            .map(|(_, p)| p)
            .ok_or_else(|| CheckpointError::NoCheckpoint {
                run: run.to_path_buf(),
            }),
    }
}

fn to_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Writes the tensors and returns the file's sha256 (hex).
fn write_tensors(
    path: &Path,
    model: &Model,
    sets: &[(&str, &[f32])],
) -> Result<String, CheckpointError> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = sets
        .iter()
        .flat_map(|(prefix, flat)| {
            model.layout.params.iter().map(move |p| {
                let name = if prefix.is_empty() {
                    p.name.clone()
                } else {
                    format!("{prefix}.{}", p.name)
                };
                (name, p.shape.clone(), to_bytes(&flat[p.span.range()]))
            })
        })
        .collect();
    let views: Vec<(String, TensorView)> = bytes
        .iter()
        .map(|(name, shape, data)| {
            let view = TensorView::new(Dtype::F32, shape.clone(), data)
                .expect("shape matches data length");
            (name.clone(), view)
        })
        .collect();
    let data =
        safetensors::tensor::serialize(views, None).map_err(|e| CheckpointError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    write_synced(path, &data)?;
    Ok(sha256_hex(&data))
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn write_synced(path: &Path, data: &[u8]) -> Result<(), CheckpointError> {
    crate::fsio::write_synced(path, data).map_err(|source| CheckpointError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes the checkpoint of `state` and returns its folder.
pub fn save<B: Backend>(
    be: &B,
    run: &Path,
    model: &Model,
    state: &TrainState<B>,
) -> Result<PathBuf, CheckpointError> {
    let params = be.download(&state.weights.params);
    let (m, v) = (be.download(&state.weights.m), be.download(&state.weights.v));
    save_host(run, model, (&params, &m, &v), &state.progress)
}

/// Writes a checkpoint from host copies of the parameters and of AdamW's
/// moments (whole buffers in layout order; a data-parallel run gathers its
/// sharded moments first) and returns its folder.
pub fn save_host(
    run: &Path,
    model: &Model,
    (params, m, v): (&[f32], &[f32], &[f32]),
    progress: &TrainProgress,
) -> Result<PathBuf, CheckpointError> {
    let dir = step_dir(run, progress.step);
    let tmp = dir.with_extension("tmp");
    let err = |source| CheckpointError::Write {
        path: tmp.clone(),
        source,
    };
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(err)?;
    }
    fs::create_dir_all(&tmp).map_err(err)?;
    let mut sha256 = std::collections::BTreeMap::new();
    sha256.insert(
        MODEL_FILE.to_string(),
        write_tensors(&tmp.join(MODEL_FILE), model, &[("", params)])?,
    );
    sha256.insert(
        OPTIMIZER_FILE.to_string(),
        write_tensors(&tmp.join(OPTIMIZER_FILE), model, &[("m", m), ("v", v)])?,
    );
    let state = StateFile {
        progress: progress.clone(),
        sha256,
    };
    let json = serde_json::to_vec_pretty(&state).expect("progress serializes");
    write_synced(&tmp.join("state.json"), &json)?;
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(err)?;
    }
    fs::rename(&tmp, &dir).map_err(err)?;
    // The rename is durable only once the folder that holds it is synced.
    crate::fsio::sync_parent(&dir).map_err(err)?;
    Ok(dir)
}

fn read_file(path: &Path) -> Result<Vec<u8>, CheckpointError> {
    fs::read(path).map_err(|source| CheckpointError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads the tensor file `name` of checkpoint folder `dir` once, checks it
/// against the sha256 its `state.json` recorded, and returns, for each
/// prefix, the tensors named `prefix.<param>` of `model` as one flat buffer
/// in layout order.
fn read_tensors(
    dir: &Path,
    name: &str,
    state: &StateFile,
    model: &Model,
    prefixes: &[&str],
) -> Result<Vec<Vec<f32>>, CheckpointError> {
    let path = dir.join(name);
    let bytes = read_file(&path)?;
    let corrupt = |reason: String| CheckpointError::Corrupt {
        path: path.clone(),
        reason,
    };
    if let Some(expected) = state.sha256.get(name) {
        let actual = sha256_hex(&bytes);
        if actual != *expected {
            return Err(corrupt(format!(
                "its sha256 is {actual} but state.json recorded {expected} when it was written"
            )));
        }
    }
    let st = SafeTensors::deserialize(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let mut buffers = Vec::with_capacity(prefixes.len());
    for prefix in prefixes {
        let mut out = vec![0f32; model.num_params()];
        for p in &model.layout.params {
            let name = if prefix.is_empty() {
                p.name.clone()
            } else {
                format!("{prefix}.{}", p.name)
            };
            let t = st.tensor(&name).map_err(|_| {
                corrupt(format!(
                    "tensor '{name}' is missing (was it written for another model config?)"
                ))
            })?;
            if t.dtype() != Dtype::F32 || t.shape() != p.shape.as_slice() {
                return Err(corrupt(format!(
                    "tensor '{name}' is {:?} {:?}, expected F32 {:?}",
                    t.dtype(),
                    t.shape(),
                    p.shape
                )));
            }
            let dst = &mut out[p.span.range()];
            for (d, chunk) in dst.iter_mut().zip(t.data().chunks_exact(4)) {
                *d = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            }
        }
        buffers.push(out);
    }
    Ok(buffers)
}

fn read_state(dir: &Path) -> Result<StateFile, CheckpointError> {
    let state_path = dir.join("state.json");
    serde_json::from_slice(&read_file(&state_path)?).map_err(|e| CheckpointError::Corrupt {
        path: state_path.clone(),
        reason: e.to_string(),
    })
}

/// The parameters of a checkpoint folder, in layout order.
pub fn load_params(dir: &Path, model: &Model) -> Result<Vec<f32>, CheckpointError> {
    let state = read_state(dir)?;
    let [params] = read_tensors(dir, MODEL_FILE, &state, model, &[""])?
        .try_into()
        .expect("one buffer per prefix");
    Ok(params)
}

/// The whole training state of a checkpoint folder.
pub fn load<B: Backend>(
    be: &B,
    dir: &Path,
    model: &Model,
) -> Result<TrainState<B>, CheckpointError> {
    let state = read_state(dir)?;
    let [params] = read_tensors(dir, MODEL_FILE, &state, model, &[""])?
        .try_into()
        .expect("one buffer per prefix");
    let [m, v] = read_tensors(dir, OPTIMIZER_FILE, &state, model, &["m", "v"])?
        .try_into()
        .expect("one buffer per prefix");
    let progress = state.progress;
    let weights = Weights {
        params: be.upload(&params),
        grads: be.alloc(model.num_params()),
        m: be.upload(&m),
        v: be.upload(&v),
        decay_len: model.layout.decay_len,
    };
    Ok(TrainState { weights, progress })
}

/// The training state of the newest intact checkpoint of `run`, and a
/// warning for each newer one that failed its checks (damaged files are
/// skipped, not trained on). The newest one's error when none loads.
pub fn load_newest_intact<B: Backend>(
    be: &B,
    run: &Path,
    model: &Model,
) -> Result<(TrainState<B>, Vec<String>), CheckpointError> {
    let mut warnings = Vec::new();
    let mut first_err = None;
    for (step, dir) in complete(run).into_iter().rev() {
        match load(be, &dir, model) {
            Ok(state) => return Ok((state, warnings)),
            Err(e @ CheckpointError::Corrupt { .. }) => {
                warnings.push(format!(
                    "checkpoint step-{step} is damaged and was skipped: {e}"
                ));
                first_err.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(first_err.unwrap_or(CheckpointError::NoCheckpoint {
        run: run.to_path_buf(),
    }))
}

/// A trained model read back from a run folder.
pub struct LoadedRun<B: Backend> {
    pub config: crate::config::Config,
    pub model: Model,
    pub params: B::Buf,
    pub checkpoint: PathBuf,
}

/// Loads `RUN/config.toml` and the parameters of checkpoint `step` (default: newest).
pub fn load_run<B: Backend>(
    be: &B,
    run: &Path,
    step: Option<u64>,
) -> Result<LoadedRun<B>, CheckpointError> {
    let config_path = run.join("config.toml");
    if !config_path.is_file() {
        return Err(CheckpointError::NotARun(run.to_path_buf()));
    }
    let config =
        crate::config::Config::load(&config_path).map_err(|e| CheckpointError::Corrupt {
            path: config_path.clone(),
            reason: e.to_string(),
        })?;
    let model = Model::new(&config.model);
    let checkpoint = find(run, step)?;
    let host = load_params(&checkpoint, &model)?;
    // A diverged checkpoint (written before the trainer refused to save one)
    // would evaluate to NaN with exit 0 and export NaN weights.
    let bad = host.iter().filter(|x| !x.is_finite()).count();
    if bad > 0 {
        return Err(CheckpointError::NotFinite {
            dir: checkpoint,
            count: bad,
        });
    }
    let params = be.upload(&host);
    Ok(LoadedRun {
        config,
        model,
        params,
        checkpoint,
    })
}
