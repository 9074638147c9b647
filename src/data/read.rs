//! Stage "read": find the input files and cut their text into documents.
//!
//! Input is plain UTF-8 text. Documents are separated by one or more blank
//! lines (lines holding only whitespace count as blank); a document's own
//! lines are joined with single newlines and the document is trimmed.

use std::path::{Path, PathBuf};

use super::error::DataError;

/// One input file and its size, as recorded in the manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputText {
    pub path: PathBuf,
    pub bytes: u64,
    pub documents: Vec<String>,
}

/// The files named by `inputs`: a file stands for itself, a folder for every
/// regular file inside it, recursively, sorted by path.
pub fn list_input_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, DataError> {
    let mut files = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).map_err(|cause| match cause.kind() {
            std::io::ErrorKind::NotFound => DataError::InputNotFound {
                path: input.clone(),
            },
            _ => DataError::ReadInput {
                path: input.clone(),
                cause,
            },
        })?;
        if meta.is_dir() {
            let mut found = Vec::new();
            walk_folder(input, &mut found)?;
            found.sort();
            files.extend(found);
        } else {
            files.push(input.clone());
        }
    }
    Ok(files)
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

/// Reads one file and cuts it into documents.
pub fn read_input(path: &Path) -> Result<InputText, DataError> {
    let bytes = std::fs::read(path).map_err(DataError::read_input(path))?;
    let size = bytes.len() as u64;
    let text = String::from_utf8(bytes).map_err(|e| DataError::NotUtf8 {
        path: path.to_path_buf(),
        offset: e.utf8_error().valid_up_to(),
    })?;
    Ok(InputText {
        path: path.to_path_buf(),
        bytes: size,
        documents: split_documents(&text),
    })
}

/// Cuts text into trimmed documents at runs of blank lines.
pub fn split_documents(text: &str) -> Vec<String> {
    let mut documents = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            push_document(&mut documents, &mut current);
        } else {
            if !current.is_empty() {
                current.push('\n');
            }
            current.push_str(line);
        }
    }
    push_document(&mut documents, &mut current);
    documents
}

fn push_document(documents: &mut Vec<String>, current: &mut String) {
    let trimmed = current.trim();
    if !trimmed.is_empty() {
        documents.push(trimmed.to_string());
    }
    current.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn folders_list_their_files_recursively_in_path_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("b/inner")).unwrap();
        for name in ["b/inner/z.txt", "b/a.txt", "c.txt", "a.txt"] {
            std::fs::write(root.join(name), "x").unwrap();
        }
        let files = list_input_files(&[root.to_path_buf()]).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().to_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["a.txt", "b/a.txt", "b/inner/z.txt", "c.txt"]);
    }

    #[test]
    fn bad_utf8_names_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.txt");
        std::fs::write(&path, b"good text \xff more").unwrap();
        match read_input(&path) {
            Err(DataError::NotUtf8 { offset, .. }) => assert_eq!(offset, 10),
            other => panic!("expected NotUtf8, got {other:?}"),
        }
    }
}
