//! How transformers' tensors are made of cram's: one table per mapping,
//! read forwards by the export and backwards by the import, so that the two
//! directions cannot drift apart.

use super::tensors::{Tensor, Tensors};
use super::ExportError;
use crate::model::Model;
use std::collections::BTreeSet;
use std::path::Path;

/// Where one Hugging Face tensor comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A whole cram tensor.
    Whole(String),
    /// Row block `index` of `parts` equal blocks of a cram tensor: q|k|v of the
    /// packed attention projection, value|gate of a gated feed-forward.
    Rows {
        name: String,
        index: usize,
        parts: usize,
    },
    /// A second copy of a cram tensor that transformers reads under another
    /// name too; the import reads the first one.
    Copy(String),
    /// Zeros of this shape: a tensor transformers has and cram does not.
    Zeros(Vec<usize>),
}

/// The table of one mapping: Hugging Face name → source.
#[derive(Debug, Clone, Default)]
pub struct NameMap {
    pub entries: Vec<(String, Source)>,
}

impl NameMap {
    pub fn whole(&mut self, hf: impl Into<String>, cram: impl Into<String>) {
        self.entries.push((hf.into(), Source::Whole(cram.into())));
    }

    pub fn rows(
        &mut self,
        hf: impl Into<String>,
        cram: impl Into<String>,
        index: usize,
        parts: usize,
    ) {
        let name = cram.into();
        self.entries
            .push((hf.into(), Source::Rows { name, index, parts }));
    }

    pub fn copy(&mut self, hf: impl Into<String>, cram: impl Into<String>) {
        self.entries.push((hf.into(), Source::Copy(cram.into())));
    }

    pub fn zeros(&mut self, hf: impl Into<String>, shape: Vec<usize>) {
        self.entries.push((hf.into(), Source::Zeros(shape)));
    }

    /// `prefix.weight` and, with `bias`, `prefix.bias` of a linear or norm layer.
    pub fn layer(&mut self, hf: &str, cram: &str, bias: bool) {
        self.whole(format!("{hf}.weight"), format!("{cram}.weight"));
        if bias {
            self.whole(format!("{hf}.bias"), format!("{cram}.bias"));
        }
    }

    /// The Hugging Face tensors of `params`, laid out by `model`.
    pub fn export(&self, model: &Model, params: &[f32]) -> Tensors {
        let tensor = |name: &str| {
            let p = model
                .layout
                .find(name)
                .unwrap_or_else(|| panic!("name map refers to '{name}', which the layout lacks"));
            Tensor {
                shape: p.shape.clone(),
                data: params[p.span.range()].to_vec(),
            }
        };
        self.entries
            .iter()
            .map(|(hf, source)| {
                let t = match source {
                    Source::Whole(name) | Source::Copy(name) => tensor(name),
                    Source::Rows { name, index, parts } => row_block(&tensor(name), *index, *parts),
                    Source::Zeros(shape) => Tensor {
                        shape: shape.clone(),
                        data: vec![0.0; shape.iter().product()],
                    },
                };
                (hf.clone(), t)
            })
            .collect()
    }

    /// cram's flat parameters from Hugging Face tensors read from `path`, and
    /// the names of the tensors the table does not use.
    pub fn import(
        &self,
        model: &Model,
        tensors: &Tensors,
        path: &Path,
        class: &'static str,
    ) -> Result<(Vec<f32>, Vec<String>), ExportError> {
        let mut params = vec![0f32; model.num_params()];
        let mut filled = BTreeSet::new();
        for (hf, source) in &self.entries {
            let (name, index, parts) = match source {
                Source::Whole(name) => (name, 0, 1),
                Source::Rows { name, index, parts } => (name, *index, *parts),
                Source::Copy(_) | Source::Zeros(_) => continue,
            };
            let p = model
                .layout
                .find(name)
                .unwrap_or_else(|| panic!("name map refers to '{name}', which the layout lacks"));
            let t = tensors.get(hf).ok_or_else(|| ExportError::MissingTensor {
                path: path.to_path_buf(),
                name: hf.clone(),
                class,
            })?;
            let mut expected = p.shape.clone();
            expected[0] /= parts;
            if t.shape != expected {
                return Err(ExportError::TensorShape {
                    path: path.to_path_buf(),
                    name: hf.clone(),
                    expected,
                    actual: t.shape.clone(),
                });
            }
            let block = p.span.len / parts;
            let start = p.span.offset + index * block;
            params[start..start + block].copy_from_slice(&t.data);
            filled.insert(name.as_str());
        }
        for p in &model.layout.params {
            assert!(
                filled.contains(p.name.as_str()),
                "name map leaves '{}' unfilled",
                p.name
            );
        }
        let used: BTreeSet<&str> = self.entries.iter().map(|(hf, _)| hf.as_str()).collect();
        let unused = tensors
            .keys()
            .filter(|k| !used.contains(k.as_str()))
            .cloned()
            .collect();
        Ok((params, unused))
    }
}

/// Row block `index` of `parts` equal blocks along the first dimension.
fn row_block(t: &Tensor, index: usize, parts: usize) -> Tensor {
    let block = t.data.len() / parts;
    let mut shape = t.shape.clone();
    shape[0] /= parts;
    Tensor {
        shape,
        data: t.data[index * block..(index + 1) * block].to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_blocks_split_the_first_dimension() {
        let t = Tensor {
            shape: vec![6, 2],
            data: (0..12).map(|v| v as f32).collect(),
        };
        let k = row_block(&t, 1, 3);
        assert_eq!(k.shape, [2, 2]);
        assert_eq!(k.data, [4.0, 5.0, 6.0, 7.0]);
        let bias = Tensor {
            shape: vec![4],
            data: vec![1.0, 2.0, 3.0, 4.0],
        };
        assert_eq!(row_block(&bias, 1, 2).data, [3.0, 4.0]);
    }
}
