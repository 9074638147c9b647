//! Reading and writing the fields of a transformers `config.json`.

use super::ExportError;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// An f32 as the shortest decimal that reads back to it (1e-5, not
/// 9.999999747378752e-6), so config.json holds the value the user wrote.
pub fn decimal(x: f32) -> Value {
    let shortest: f64 = x.to_string().parse().expect("a float's text parses");
    Value::from(shortest)
}

/// A parsed config.json and its path, for errors that name the field.
pub struct HfConfig {
    pub path: PathBuf,
    pub json: Map<String, Value>,
}

impl HfConfig {
    pub fn read(dir: &Path) -> Result<HfConfig, ExportError> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(ExportError::read(&path))?;
        let json = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.as_object().cloned())
            .ok_or_else(|| ExportError::config(&path, "is not a JSON object"))?;
        Ok(HfConfig { path, json })
    }

    fn error(&self, reason: String) -> ExportError {
        ExportError::config(&self.path, reason)
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        self.json.get(key).and_then(Value::as_str)
    }

    pub fn usize(&self, key: &str) -> Result<usize, ExportError> {
        self.json
            .get(key)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| self.error(format!("\"{key}\" is missing or not a whole number")))
    }

    pub fn f32_or(&self, key: &str, default: f32) -> Result<f32, ExportError> {
        match self.json.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_f64()
                .map(|v| v as f32)
                .ok_or_else(|| self.error(format!("\"{key}\" is not a number"))),
        }
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool, ExportError> {
        match self.json.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.error(format!("\"{key}\" is not true or false"))),
        }
    }

    /// Fails unless `key` is absent, null, or one of `allowed`; `why` says
    /// what cram computes instead.
    pub fn require(&self, key: &str, allowed: &[Value], why: &str) -> Result<(), ExportError> {
        match self.json.get(key) {
            None | Some(Value::Null) => Ok(()),
            Some(v) if allowed.contains(v) => Ok(()),
            Some(v) => Err(self.error(format!("\"{key}\" is {v}; {why}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_the_shortest_that_read_back() {
        assert_eq!(decimal(1e-5).to_string(), "0.00001");
        assert_eq!(
            serde_json::json!(1e-5f32).to_string(),
            "9.999999747378752e-6"
        );
        assert_eq!(decimal(0.1).to_string(), "0.1");
        assert_eq!(decimal(1e-12).as_f64().unwrap() as f32, 1e-12f32);
        assert_eq!(decimal(10000.0).to_string(), "10000.0");
    }
}
