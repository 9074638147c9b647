//! Stage "read": one input file's decoded bytes cut into documents, one at a
//! time, so that memory holds a document, never a file.
//!
//! JSON Lines: one document per line, the text in a string field
//! (`--text-field`, default `text`). Plain text: documents separated by one
//! or more blank lines (lines of only whitespace count as blank), one per
//! non-blank line, or one per file (`TextSplit`). A document's lines are
//! joined with single newlines and the document is trimmed.
//!
//! A wrong field name shows in the first record, which is an error; a later
//! record without the field is skipped and counted, as one odd record in a
//! large dump should not stop a run.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};

pub use crate::config::TextSplit;

use super::error::DataError;
use super::input::{open_file, Compression, Format};

/// Reads the documents of one file.
pub struct DocumentReader {
    lines: LineReader,
    format: Format,
    split: TextSplit,
    text_field: String,
    records: u64,
    /// JSON records skipped because they lack a string `text_field`.
    pub skipped_records: u64,
}

/// The decoded lines of one file, checked to be UTF-8.
struct LineReader {
    path: PathBuf,
    reader: Box<dyn BufRead + Send>,
    compression: Compression,
    line: Vec<u8>,
    number: u64,
    /// Decoded bytes consumed so far: UTF-8 errors are reported at this offset.
    offset: u64,
    done: bool,
}

impl DocumentReader {
    pub fn open(
        path: &Path,
        split: TextSplit,
        text_field: &str,
        progress: &ProgressBar,
    ) -> Result<DocumentReader, DataError> {
        let opened = open_file(path, progress)?;
        Ok(DocumentReader {
            lines: LineReader {
                path: path.to_path_buf(),
                reader: opened.reader,
                compression: opened.compression,
                line: Vec::new(),
                number: 0,
                offset: 0,
                done: false,
            },
            format: opened.format,
            split,
            text_field: text_field.to_string(),
            records: 0,
            skipped_records: 0,
        })
    }

    /// Decoded bytes read so far.
    pub fn decoded_bytes(&self) -> u64 {
        self.lines.offset
    }

    /// The next document, or `None` at the end of the file.
    pub fn next_document(&mut self) -> Result<Option<String>, DataError> {
        match self.format {
            Format::JsonLines => self.next_json_document(),
            Format::Text => match self.split {
                TextSplit::BlankLine => self.lines.next_paragraph(),
                TextSplit::Line => self.lines.next_nonblank_line(),
                TextSplit::File => self.lines.rest_of_file(),
            },
        }
    }

    fn next_json_document(&mut self) -> Result<Option<String>, DataError> {
        while let Some(line) = self.lines.read_line()? {
            if line.trim().is_empty() {
                continue;
            }
            let field = self.text_field.as_str();
            let record = parse_record(line, field).map_err(|e| DataError::JsonLine {
                path: self.lines.path.clone(),
                line: self.lines.number,
                message: e.to_string(),
            })?;
            self.records += 1;
            match record {
                Record::Text(text) => return Ok(Some(text)),
                Record::NoText(found) if self.records == 1 => {
                    return Err(DataError::JsonField {
                        path: self.lines.path.clone(),
                        line: self.lines.number,
                        field: field.to_string(),
                        found,
                    })
                }
                Record::NoText(_) => self.skipped_records += 1,
            }
        }
        Ok(None)
    }
}

impl LineReader {
    /// The next line without its line break; `None` at the end.
    fn read_line(&mut self) -> Result<Option<&str>, DataError> {
        if self.done {
            return Ok(None);
        }
        self.line.clear();
        let n = self
            .reader
            .read_until(b'\n', &mut self.line)
            .map_err(|cause| read_error(&self.path, self.compression, cause))?;
        if n == 0 {
            self.done = true;
            return Ok(None);
        }
        let start = self.offset;
        self.offset += n as u64;
        self.number += 1;
        while matches!(self.line.last(), Some(b'\n' | b'\r')) {
            self.line.pop();
        }
        match std::str::from_utf8(&self.line) {
            Ok(text) => Ok(Some(text)),
            Err(e) => Err(DataError::NotUtf8 {
                path: self.path.clone(),
                offset: start + e.valid_up_to() as u64,
            }),
        }
    }

    fn next_paragraph(&mut self) -> Result<Option<String>, DataError> {
        let mut document = String::new();
        while let Some(line) = self.read_line()? {
            if line.trim().is_empty() {
                if !document.trim().is_empty() {
                    break;
                }
                document.clear();
            } else {
                if !document.is_empty() {
                    document.push('\n');
                }
                document.push_str(line);
            }
        }
        Ok(trimmed(document))
    }

    fn next_nonblank_line(&mut self) -> Result<Option<String>, DataError> {
        while let Some(line) = self.read_line()? {
            let line = line.trim();
            if !line.is_empty() {
                return Ok(Some(line.to_string()));
            }
        }
        Ok(None)
    }

    fn rest_of_file(&mut self) -> Result<Option<String>, DataError> {
        let mut document = String::new();
        while let Some(line) = self.read_line()? {
            if !document.is_empty() {
                document.push('\n');
            }
            document.push_str(line);
        }
        Ok(trimmed(document))
    }
}

fn read_error(path: &Path, compression: Compression, cause: std::io::Error) -> DataError {
    let path = path.to_path_buf();
    match compression {
        Compression::None => DataError::ReadInput { path, cause },
        Compression::Gzip => DataError::Decompress {
            path,
            kind: "gzip",
            cause,
        },
        Compression::Zstd => DataError::Decompress {
            path,
            kind: "zstd",
            cause,
        },
    }
}

fn trimmed(document: String) -> Option<String> {
    let text = document.trim();
    if text.is_empty() {
        None
    } else if text.len() == document.len() {
        Some(document)
    } else {
        Some(text.to_string())
    }
}

/// What one JSON Lines record holds in the text field.
#[derive(Debug, PartialEq)]
enum Record {
    Text(String),
    /// The field is absent or not a string: what was found instead.
    NoText(String),
}

fn parse_record(line: &str, field: &str) -> serde_json::Result<Record> {
    let mut de = serde_json::Deserializer::from_str(line);
    let record = FieldOf(field).deserialize(&mut de)?;
    de.end()?;
    Ok(record)
}

/// Pulls one string field out of a JSON object without building the other
/// fields' values.
struct FieldOf<'f>(&'f str);

impl<'de> DeserializeSeed<'de> for FieldOf<'_> {
    type Value = Record;

    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<Record, D::Error> {
        de.deserialize_map(self)
    }
}

/// Keys listed in an error about a missing field.
const KEYS_SHOWN: usize = 8;

impl<'de> Visitor<'de> for FieldOf<'_> {
    type Value = Record;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "a JSON object with a string field \"{}\"", self.0)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Record, A::Error> {
        let mut text = None;
        let mut other = None;
        let mut keys = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == self.0 && text.is_none() && other.is_none() {
                match map.next_value::<serde_json::Value>()? {
                    serde_json::Value::String(s) => text = Some(s),
                    value => other = Some(json_kind(&value)),
                }
            } else {
                if keys.len() < KEYS_SHOWN {
                    keys.push(format!("\"{key}\""));
                }
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(match (text, other) {
            (Some(text), _) => Record::Text(text),
            (None, Some(kind)) => Record::NoText(format!("\"{}\" holding {kind}", self.0)),
            (None, None) if keys.is_empty() => Record::NoText("no fields".into()),
            (None, None) => Record::NoText(format!("the fields {}", keys.join(", "))),
        })
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Cuts text into trimmed documents at runs of blank lines.
pub fn split_documents(text: &str) -> Vec<String> {
    let mut lines = LineReader {
        path: PathBuf::new(),
        reader: Box::new(std::io::Cursor::new(text.as_bytes().to_vec())),
        compression: Compression::None,
        line: Vec::new(),
        number: 0,
        offset: 0,
        done: false,
    };
    std::iter::from_fn(|| lines.next_paragraph().ok().flatten()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn read_all(path: &Path, split: TextSplit, field: &str) -> Result<Vec<String>, DataError> {
        let mut reader = DocumentReader::open(path, split, field, &ProgressBar::hidden())?;
        let mut docs = Vec::new();
        while let Some(doc) = reader.next_document()? {
            docs.push(doc);
        }
        Ok(docs)
    }

    #[test]
    fn blank_lines_separate_documents() {
        let text = "first line\nsecond line\n\nnext doc\n\n\n  \t \nlast one";
        assert_eq!(
            split_documents(text),
            vec!["first line\nsecond line", "next doc", "last one"]
        );
    }

    #[test]
    fn documents_are_trimmed_and_crlf_is_a_line_end() {
        let text = "\n\n   padded doc  \r\n  indented second line\r\n\r\nother\r\n";
        assert_eq!(
            split_documents(text),
            vec!["padded doc  \n  indented second line", "other"]
        );
    }

    #[test]
    fn empty_and_blank_text_has_no_documents() {
        assert!(split_documents("").is_empty());
        assert!(split_documents("\n \n\t\n").is_empty());
    }

    #[test]
    fn lines_and_files_as_documents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        std::fs::write(&path, "one\n  two  \n\nthree\n").unwrap();
        assert_eq!(
            read_all(&path, TextSplit::Line, "text").unwrap(),
            ["one", "two", "three"]
        );
        assert_eq!(
            read_all(&path, TextSplit::File, "text").unwrap(),
            ["one\n  two  \n\nthree"]
        );
    }

    #[test]
    fn json_lines_give_one_document_per_record_and_skip_later_records_without_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docs.jsonl.zst");
        let lines = concat!(
            "{\"id\": 1, \"body\": \"first\\ndoc\", \"meta\": {\"x\": [1, 2]}}\n",
            "\n",
            "{\"body\": \"  second  \"}\n",
            "{\"id\": 3}\n",
            "{\"body\": null}\n",
            "{\"body\": \"caf\\u00e9\"}\n",
        );
        std::fs::write(&path, zstd::encode_all(lines.as_bytes(), 3).unwrap()).unwrap();
        let mut reader =
            DocumentReader::open(&path, TextSplit::BlankLine, "body", &ProgressBar::hidden())
                .unwrap();
        let mut docs = Vec::new();
        while let Some(doc) = reader.next_document().unwrap() {
            docs.push(doc);
        }
        assert_eq!(docs, ["first\ndoc", "  second  ", "café"]);
        assert_eq!(reader.skipped_records, 2);
        assert_eq!(reader.decoded_bytes(), lines.len() as u64);
    }

    #[test]
    fn a_wrong_text_field_is_named_with_the_fields_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docs.jsonl");
        std::fs::write(&path, "{\"id\": 1, \"content\": \"x\"}\n").unwrap();
        let err = read_all(&path, TextSplit::BlankLine, "text").unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, DataError::JsonField { line: 1, .. }), "{err}");
        for part in ["docs.jsonl", "\"text\"", "\"content\"", "--text-field"] {
            assert!(message.contains(part), "{part} missing in: {message}");
        }
        std::fs::write(&path, "{\"text\": 5}\n").unwrap();
        let err = read_all(&path, TextSplit::BlankLine, "text").unwrap_err();
        assert!(err.to_string().contains("a number"), "{err}");
    }

    #[test]
    fn broken_json_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docs.jsonl");
        std::fs::write(&path, "{\"text\": \"ok\"}\n{\"text\": \"cut\n").unwrap();
        let err = read_all(&path, TextSplit::BlankLine, "text").unwrap_err();
        assert!(matches!(err, DataError::JsonLine { line: 2, .. }), "{err}");
        assert!(err.to_string().contains("docs.jsonl"), "{err}");
        std::fs::write(&path, "[1, 2]\n").unwrap();
        let err = read_all(&path, TextSplit::BlankLine, "text").unwrap_err();
        assert!(matches!(err, DataError::JsonLine { line: 1, .. }), "{err}");
    }

    #[test]
    fn bad_utf8_names_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.txt");
        std::fs::write(&path, b"line one\ngood text \xff more").unwrap();
        match read_all(&path, TextSplit::BlankLine, "text") {
            Err(DataError::NotUtf8 { offset, .. }) => assert_eq!(offset, 19),
            other => panic!("expected NotUtf8, got {other:?}"),
        }
    }

    #[test]
    fn corrupt_compressed_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let text = "some text that compresses\n".repeat(2000);
        let zst = dir.path().join("broken.txt.zst");
        let mut bytes = zstd::encode_all(text.as_bytes(), 3).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        bytes.truncate(bytes.len() - 10);
        std::fs::write(&zst, &bytes).unwrap();
        let gz = dir.path().join("broken.txt.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(text.as_bytes()).unwrap();
        let mut bytes = enc.finish().unwrap();
        bytes.truncate(bytes.len() / 2);
        std::fs::write(&gz, &bytes).unwrap();
        for (path, kind) in [(zst, "zstd"), (gz, "gzip")] {
            let err = read_all(&path, TextSplit::BlankLine, "text").unwrap_err();
            assert!(matches!(err, DataError::Decompress { .. }), "{err}");
            let message = err.to_string();
            assert!(
                message.contains(kind) && message.contains(path.to_str().unwrap()),
                "{message}"
            );
        }
    }
}
