//! Named tensors as a Hugging Face folder holds them: read from
//! `model.safetensors` (or the shards an index names) in f32, f16 or bf16,
//! and written in f32 with the `{"format": "pt"}` metadata transformers
//! checks for.

use super::ExportError;
use crate::train::checkpoint::write_synced;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const WEIGHTS_INDEX_FILE: &str = "model.safetensors.index.json";

/// One tensor in f32, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Tensors by name, in name order (the order they are written in).
pub type Tensors = BTreeMap<String, Tensor>;

/// Writes `tensors` as one f32 safetensors file (fsynced).
pub fn write_safetensors(path: &Path, tensors: &Tensors) -> Result<(), ExportError> {
    let bytes: Vec<(&String, &Tensor, Vec<u8>)> = tensors
        .iter()
        .map(|(name, t)| {
            let data = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name, t, data)
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(name, t, data)| {
            TensorView::new(Dtype::F32, t.shape.clone(), data)
                .map(|view| (name.to_string(), view))
                .map_err(|e| ExportError::Safetensors {
                    path: path.to_path_buf(),
                    cause: format!("tensor '{name}': {e}"),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    // transformers refuses a safetensors file without this metadata.
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let data = safetensors::tensor::serialize(views, Some(metadata)).map_err(|e| {
        ExportError::Safetensors {
            path: path.to_path_buf(),
            cause: e.to_string(),
        }
    })?;
    Ok(write_synced(path, &data)?)
}

/// Reads the weights of a Hugging Face folder: `model.safetensors`, or every
/// shard that `model.safetensors.index.json` names.
pub fn read_hf_weights(dir: &Path) -> Result<Tensors, ExportError> {
    let single = dir.join(WEIGHTS_FILE);
    if single.is_file() {
        return read_safetensors(&single);
    }
    let index = dir.join(WEIGHTS_INDEX_FILE);
    if !index.is_file() {
        return Err(ExportError::NoWeights {
            dir: dir.to_path_buf(),
        });
    }
    let text = std::fs::read_to_string(&index).map_err(ExportError::read(&index))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| ExportError::config(&index, format!("not valid JSON: {e}")))?;
    let files: BTreeSet<&str> = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| ExportError::config(&index, "has no \"weight_map\" object"))?
        .values()
        .filter_map(|v| v.as_str())
        .collect();
    let mut all = Tensors::new();
    for file in files {
        all.extend(read_safetensors(&dir.join(file))?);
    }
    Ok(all)
}

/// Reads every tensor of a safetensors file, converting f16 and bf16 to f32 (exactly).
pub fn read_safetensors(path: &Path) -> Result<Tensors, ExportError> {
    let bytes = std::fs::read(path).map_err(ExportError::read(path))?;
    let bad = |cause: String| ExportError::Safetensors {
        path: path.to_path_buf(),
        cause,
    };
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let data = to_f32(view.dtype(), view.data()).ok_or_else(|| {
                bad(format!(
                    "tensor '{name}' is {:?}; cram reads F32, F16 and BF16",
                    view.dtype()
                ))
            })?;
            Ok((
                name,
                Tensor {
                    shape: view.shape().to_vec(),
                    data,
                },
            ))
        })
        .collect()
}

fn to_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    let pairs = || {
        bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
    };
    Some(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => pairs().map(|b| half::f16::from_bits(b).to_f32()).collect(),
        Dtype::BF16 => pairs().map(|b| half::bf16::from_bits(b).to_f32()).collect(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_round_trip_through_a_file_with_the_pt_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let mut tensors = Tensors::new();
        tensors.insert(
            "a.weight".into(),
            Tensor {
                shape: vec![2, 3],
                data: vec![1.0, -2.5, 3.0, f32::MIN_POSITIVE, -0.0, 7.0],
            },
        );
        tensors.insert(
            "b".into(),
            Tensor {
                shape: vec![1],
                data: vec![0.25],
            },
        );
        write_safetensors(&path, &tensors).unwrap();
        let back = read_safetensors(&path).unwrap();
        assert_eq!(back, tensors);
        let bytes = std::fs::read(&path).unwrap();
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let format = meta.metadata().as_ref().and_then(|m| m.get("format"));
        assert_eq!(format.map(String::as_str), Some("pt"));
    }

    #[test]
    fn half_precision_tensors_are_widened_exactly() {
        let values = [1.5f32, -0.125, 65504.0];
        let f16: Vec<u8> = values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect();
        let bf16: Vec<u8> = values
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect();
        assert_eq!(to_f32(Dtype::F16, &f16).unwrap(), values);
        assert_eq!(to_f32(Dtype::BF16, &bf16).unwrap(), [1.5, -0.125, 65536.0]);
        assert_eq!(to_f32(Dtype::I64, &[0; 8]), None);
    }

    #[test]
    fn a_folder_without_weights_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_hf_weights(dir.path()).unwrap_err();
        assert!(matches!(err, ExportError::NoWeights { .. }), "{err}");
        assert!(err.to_string().contains("model.safetensors"), "{err}");
    }
}
