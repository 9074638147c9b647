//! What the user names with `--input`: a file or folder with an optional
//! mixing weight (`path:0.7`), the files it stands for, and how each file is
//! encoded (plain or JSON Lines; raw, gzip or zstd).
//!
//! Compression is recognised by the file's first bytes, not its name, so a
//! mislabelled file still reads; the format comes from the name with any
//! `.gz`/`.zst` removed: `.jsonl`, `.ndjson` and `.json` are JSON Lines,
//! everything else is plain text.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use super::error::DataError;

/// One `--input`: a file or folder, and its share of the mix when weighted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    pub path: PathBuf,
    /// Relative weight; inputs without one keep all their text.
    pub weight: Option<f64>,
}

impl From<PathBuf> for InputSpec {
    fn from(path: PathBuf) -> InputSpec {
        InputSpec { path, weight: None }
    }
}

impl From<&Path> for InputSpec {
    fn from(path: &Path) -> InputSpec {
        InputSpec::from(path.to_path_buf())
    }
}

impl InputSpec {
    /// Parses `PATH` or `PATH:WEIGHT`. A path that exists as written wins,
    /// so a file whose name ends in `:0.5` still reads as itself.
    pub fn parse(text: &str) -> Result<InputSpec, DataError> {
        let whole = PathBuf::from(text);
        let Some((path, weight)) = text.rsplit_once(':') else {
            return Ok(whole.into());
        };
        if whole.exists() || path.is_empty() {
            return Ok(whole.into());
        }
        let Ok(weight) = weight.parse::<f64>() else {
            return Ok(whole.into());
        };
        if !(weight.is_finite() && weight > 0.0) {
            return Err(DataError::InvalidInputWeight {
                input: text.to_string(),
            });
        }
        Ok(InputSpec {
            path: PathBuf::from(path),
            weight: Some(weight),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    JsonLines,
}

/// The files named by one input: a file stands for itself, a folder for
/// every regular file inside it, recursively, sorted by path.
pub fn list_files(input: &Path) -> Result<Vec<PathBuf>, DataError> {
    let meta = std::fs::metadata(input).map_err(|cause| match cause.kind() {
        std::io::ErrorKind::NotFound => DataError::InputNotFound {
            path: input.to_path_buf(),
        },
        _ => DataError::ReadInput {
            path: input.to_path_buf(),
            cause,
        },
    })?;
    if !meta.is_dir() {
        return Ok(vec![input.to_path_buf()]);
    }
    let mut found = Vec::new();
    walk_folder(input, &mut found)?;
    found.sort();
    Ok(found)
}

fn walk_folder(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    let entries = std::fs::read_dir(dir).map_err(DataError::read_input(dir))?;
    for entry in entries {
        let path = entry.map_err(DataError::read_input(dir))?.path();
        let meta = std::fs::metadata(&path).map_err(DataError::read_input(&path))?;
        if meta.is_dir() {
            walk_folder(&path, out)?;
        } else if meta.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// The format a file's name announces, compression suffixes removed.
pub fn format_of(path: &Path) -> Format {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let base = [".gz", ".zst", ".zstd"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(&name);
    let is_json = [".jsonl", ".ndjson", ".json"]
        .iter()
        .any(|ext| base.ends_with(ext));
    if is_json {
        Format::JsonLines
    } else {
        Format::Text
    }
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

fn compression_of(head: &[u8]) -> Compression {
    if head.starts_with(&ZSTD_MAGIC) {
        Compression::Zstd
    } else if head.starts_with(&GZIP_MAGIC) {
        Compression::Gzip
    } else {
        Compression::None
    }
}

/// A file opened for reading its decoded bytes. Every raw byte read from
/// disk advances `progress`, so bars show input MB/s for compressed files too.
pub struct OpenedFile {
    pub reader: Box<dyn BufRead + Send>,
    pub compression: Compression,
    pub format: Format,
}

/// Buffer between the decoder and the line splitter.
const READ_BUFFER: usize = 1 << 20;

pub fn open_file(path: &Path, progress: &ProgressBar) -> Result<OpenedFile, DataError> {
    let mut file = File::open(path).map_err(DataError::read_input(path))?;
    let mut head = [0u8; 4];
    let n = read_head(&mut file, &mut head).map_err(DataError::read_input(path))?;
    let compression = compression_of(&head[..n]);
    let raw = Counting {
        inner: std::io::Cursor::new(head[..n].to_vec()).chain(file),
        progress: progress.clone(),
    };
    let reader: Box<dyn BufRead + Send> = match compression {
        Compression::None => Box::new(BufReader::with_capacity(READ_BUFFER, raw)),
        Compression::Gzip => Box::new(BufReader::with_capacity(
            READ_BUFFER,
            flate2::read::MultiGzDecoder::new(raw),
        )),
        Compression::Zstd => {
            let decoder =
                zstd::stream::read::Decoder::new(raw).map_err(|cause| DataError::Decompress {
                    path: path.to_path_buf(),
                    kind: "zstd",
                    cause,
                })?;
            Box::new(BufReader::with_capacity(READ_BUFFER, decoder))
        }
    };
    Ok(OpenedFile {
        reader,
        compression,
        format: format_of(path),
    })
}

/// Reads up to `buf.len()` bytes, fewer only at the end of the file.
fn read_head(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

struct Counting<R> {
    inner: R,
    progress: ProgressBar,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.inc(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn weights_follow_the_last_colon_unless_the_path_exists() {
        let spec = InputSpec::parse("wiki.jsonl.zst:0.7").unwrap();
        assert_eq!(spec.path, PathBuf::from("wiki.jsonl.zst"));
        assert_eq!(spec.weight, Some(0.7));
        assert_eq!(InputSpec::parse("books/").unwrap().weight, None);
        assert_eq!(
            InputSpec::parse("a:b").unwrap().path,
            PathBuf::from("a:b"),
            "a suffix that is no number is part of the path"
        );
        for bad in ["x:0", "x:-1", "x:inf", "x:NaN"] {
            let err = InputSpec::parse(bad).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("odd:2");
        std::fs::write(&odd, "x").unwrap();
        let spec = InputSpec::parse(odd.to_str().unwrap()).unwrap();
        assert_eq!((spec.path, spec.weight), (odd, None));
    }

    #[test]
    fn format_comes_from_the_name_without_compression_suffixes() {
        for (name, format) in [
            ("a.jsonl", Format::JsonLines),
            ("a.JSONL.zst", Format::JsonLines),
            ("a.ndjson.gz", Format::JsonLines),
            ("a.json", Format::JsonLines),
            ("a.txt.gz", Format::Text),
            ("a", Format::Text),
            ("jsonl", Format::Text),
        ] {
            assert_eq!(format_of(Path::new(name)), format, "{name}");
        }
    }

    #[test]
    fn compression_is_sniffed_from_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let text = "hello\nworld\n".repeat(100);
        let gz = dir.path().join("really-gzip.txt");
        let mut enc =
            flate2::write::GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::fast());
        enc.write_all(text.as_bytes()).unwrap();
        enc.finish().unwrap();
        let zst = dir.path().join("plain-name");
        std::fs::write(&zst, zstd::encode_all(text.as_bytes(), 1).unwrap()).unwrap();
        let tiny = dir.path().join("tiny.txt");
        std::fs::write(&tiny, "ab").unwrap();
        for (path, compression, expected) in [
            (&gz, Compression::Gzip, text.as_str()),
            (&zst, Compression::Zstd, text.as_str()),
            (&tiny, Compression::None, "ab"),
        ] {
            let bar = ProgressBar::hidden();
            let mut opened = open_file(path, &bar).unwrap();
            assert_eq!(opened.compression, compression);
            let mut back = String::new();
            opened.reader.read_to_string(&mut back).unwrap();
            assert_eq!(back, expected);
            assert_eq!(bar.position(), std::fs::metadata(path).unwrap().len());
        }
    }

    #[test]
    fn folders_list_their_files_recursively_in_path_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("b/inner")).unwrap();
        for name in ["b/inner/z.txt", "b/a.txt", "c.txt", "a.txt"] {
            std::fs::write(root.join(name), "x").unwrap();
        }
        let files = list_files(root).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().to_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["a.txt", "b/a.txt", "b/inner/z.txt", "c.txt"]);
        let err = list_files(&root.join("missing")).unwrap_err();
        assert!(matches!(err, DataError::InputNotFound { .. }), "{err}");
    }
}
