//! Spool files: the cleaned, deduplicated documents of one input, kept on
//! disk between the first pass (read and clean) and the later ones (mix,
//! tokenizer sample, encode), so that no pass holds the corpus in memory
//! and a restarted run can skip the first pass.
//!
//! A spool is a zstd stream (fast level) of records: the document's key
//! (u64, little-endian; a hash of its text that decides its split and
//! sampling), its length in bytes (u32) and its UTF-8 text.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::DataError;

/// zstd level 1: several hundred MB/s, about a third of the text's size.
const LEVEL: i32 = 1;

/// A finished spool, as recorded in the work folder's stage record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpoolInfo {
    /// File name inside the work folder.
    pub file: String,
    pub documents: u64,
    /// Bytes of text (record headers not included).
    pub bytes: u64,
}

pub struct SpoolWriter {
    path: PathBuf,
    encoder: zstd::stream::write::Encoder<'static, BufWriter<File>>,
    documents: u64,
    bytes: u64,
}

impl SpoolWriter {
    pub fn create(path: &Path) -> Result<SpoolWriter, DataError> {
        let file = File::create(path).map_err(DataError::write(path))?;
        let encoder =
            zstd::stream::write::Encoder::new(BufWriter::with_capacity(1 << 20, file), LEVEL)
                .map_err(DataError::write(path))?;
        Ok(SpoolWriter {
            path: path.to_path_buf(),
            encoder,
            documents: 0,
            bytes: 0,
        })
    }

    pub fn write(&mut self, key: u64, text: &str) -> Result<(), DataError> {
        let len = u32::try_from(text.len()).map_err(|_| DataError::DocumentTooLarge {
            bytes: text.len() as u64,
        })?;
        self.encoder
            .write_all(&key.to_le_bytes())
            .and_then(|()| self.encoder.write_all(&len.to_le_bytes()))
            .and_then(|()| self.encoder.write_all(text.as_bytes()))
            .map_err(DataError::write(&self.path))?;
        self.documents += 1;
        self.bytes += text.len() as u64;
        Ok(())
    }

    /// Ends the stream and makes it durable.
    pub fn finish(self) -> Result<SpoolInfo, DataError> {
        let path = self.path;
        let file = self
            .encoder
            .finish()
            .map_err(DataError::write(&path))?
            .into_inner()
            .map_err(|e| DataError::Write {
                path: path.clone(),
                cause: e.into_error(),
            })?;
        file.sync_all().map_err(DataError::write(&path))?;
        Ok(SpoolInfo {
            file: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            documents: self.documents,
            bytes: self.bytes,
        })
    }
}

pub struct SpoolReader {
    path: PathBuf,
    decoder: BufReader<zstd::stream::read::Decoder<'static, BufReader<File>>>,
}

impl SpoolReader {
    pub fn open(path: &Path) -> Result<SpoolReader, DataError> {
        let damaged = |cause: std::io::Error| DataError::WorkFile {
            path: path.to_path_buf(),
            message: cause.to_string(),
        };
        let file = File::open(path).map_err(damaged)?;
        let decoder = zstd::stream::read::Decoder::new(file).map_err(damaged)?;
        Ok(SpoolReader {
            path: path.to_path_buf(),
            decoder: BufReader::with_capacity(1 << 20, decoder),
        })
    }

    /// The next document's key and text; `None` at the end.
    pub fn next_document(&mut self) -> Result<Option<(u64, String)>, DataError> {
        let mut header = [0u8; 12];
        match read_full(&mut self.decoder, &mut header) {
            Ok(0) => return Ok(None),
            Ok(12) => {}
            Ok(_) => return Err(self.damaged("a record is cut short")),
            Err(e) => return Err(self.damaged(&e.to_string())),
        }
        let key = u64::from_le_bytes(header[..8].try_into().unwrap_or_default());
        let len = u32::from_le_bytes(header[8..].try_into().unwrap_or_default()) as usize;
        let mut bytes = vec![0u8; len];
        self.decoder
            .read_exact(&mut bytes)
            .map_err(|e| self.damaged(&e.to_string()))?;
        let text = String::from_utf8(bytes).map_err(|_| self.damaged("a record is not UTF-8"))?;
        Ok(Some((key, text)))
    }

    fn damaged(&self, message: &str) -> DataError {
        DataError::WorkFile {
            path: self.path.clone(),
            message: message.to_string(),
        }
    }
}

/// Reads until `buf` is full or the stream ends; the number of bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_round_trip_with_their_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool-000.zst");
        let docs = [(7u64, "first"), (u64::MAX, ""), (3, "ünïcode\nlines")];
        let mut writer = SpoolWriter::create(&path).unwrap();
        for (key, text) in docs {
            writer.write(key, text).unwrap();
        }
        let info = writer.finish().unwrap();
        assert_eq!(
            info,
            SpoolInfo {
                file: "spool-000.zst".into(),
                documents: 3,
                bytes: 5 + 15
            }
        );
        let mut reader = SpoolReader::open(&path).unwrap();
        for (key, text) in docs {
            assert_eq!(
                reader.next_document().unwrap(),
                Some((key, text.to_string()))
            );
        }
        assert_eq!(reader.next_document().unwrap(), None);
    }

    #[test]
    fn a_truncated_spool_is_reported_as_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool-000.zst");
        let mut writer = SpoolWriter::create(&path).unwrap();
        for i in 0..1000u64 {
            writer
                .write(i, &format!("document number {i} with some text"))
                .unwrap();
        }
        writer.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let mut reader = SpoolReader::open(&path).unwrap();
        let err = loop {
            match reader.next_document() {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("a truncated spool read to the end"),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, DataError::WorkFile { .. }), "{err}");
        assert!(err.to_string().contains("spool-000.zst"), "{err}");
    }
}
