//! The nine GLUE tasks and readers for the TSV layout that
//! `download_glue_data.py` writes: one folder per task, `train.tsv` and
//! `dev.tsv` (MNLI: `dev_matched.tsv` and `dev_mismatched.tsv`).
//!
//! Copies of GLUE differ in their columns, so columns are found by their
//! header name; CoLA alone has no header and is read by position. Fields are
//! split at every tab with no quoting (Python's `csv.QUOTE_NONE`, as GLUE's
//! own readers do): a `"` is an ordinary character. A leading byte-order mark
//! (MRPC) is skipped, `\r\n` line ends are accepted, blank lines are skipped,
//! and the last line may lack its newline.

use super::GlueError;
use std::path::{Path, PathBuf};

/// A GLUE task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Task {
    Cola,
    Sst2,
    Mrpc,
    Qqp,
    Stsb,
    Mnli,
    Qnli,
    Rte,
    Wnli,
}

/// How an evaluation split is scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Matthews,
    Accuracy,
    F1,
    Pearson,
    Spearman,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Matthews => "mcc",
            Metric::Accuracy => "accuracy",
            Metric::F1 => "f1",
            Metric::Pearson => "pearson",
            Metric::Spearman => "spearman",
        }
    }
}

/// Where a field sits in a row.
#[derive(Debug, Clone, Copy)]
enum Column {
    /// Found by its header name.
    Named(&'static str),
    /// By position, for files without a header (CoLA).
    Index(usize),
}

/// What a task predicts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Labels {
    /// One of these label strings; the class id is the position.
    Classes(&'static [&'static str]),
    /// A real-valued score (STS-B).
    Score,
}

impl Labels {
    /// Outputs of the head: one per class, one for a score.
    pub fn outputs(self) -> usize {
        match self {
            Labels::Classes(c) => c.len(),
            Labels::Score => 1,
        }
    }
}

/// A task's gold answer for one example.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Label {
    Class(u32),
    Score(f32),
}

impl Label {
    /// The class id. A task's labels are all of one kind (see [`Labels`]).
    pub fn class(self) -> u32 {
        match self {
            Label::Class(c) => c,
            Label::Score(_) => unreachable!("a score where a class was expected"),
        }
    }

    /// The score. A task's labels are all of one kind (see [`Labels`]).
    pub fn score(self) -> f32 {
        match self {
            Label::Score(s) => s,
            Label::Class(_) => unreachable!("a class where a score was expected"),
        }
    }
}

/// One example: a sentence or a sentence pair, and its label.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub a: String,
    pub b: Option<String>,
    pub label: Label,
}

/// An evaluation split: its name in the table ("dev", "matched", ...) and examples.
#[derive(Debug, Clone)]
pub struct DevSplit {
    pub name: &'static str,
    pub examples: Vec<Example>,
}

/// A task read from disk.
#[derive(Debug, Clone)]
pub struct TaskData {
    pub task: Task,
    pub train: Vec<Example>,
    pub dev: Vec<DevSplit>,
}

const BINARY: &[&str] = &["0", "1"];
const NLI: &[&str] = &["entailment", "not_entailment"];
/// GLUE's class order for MNLI.
const MNLI: &[&str] = &["contradiction", "entailment", "neutral"];

struct Spec {
    folder: &'static str,
    header: bool,
    a: Column,
    b: Option<Column>,
    label: Column,
    labels: Labels,
    /// Evaluation splits: (name, file).
    dev: &'static [(&'static str, &'static str)],
    metrics: &'static [Metric],
}

const DEV: &[(&str, &str)] = &[("dev", "dev.tsv")];

impl Task {
    pub const ALL: [Task; 9] = [
        Task::Cola,
        Task::Sst2,
        Task::Mrpc,
        Task::Qqp,
        Task::Stsb,
        Task::Mnli,
        Task::Qnli,
        Task::Rte,
        Task::Wnli,
    ];

    /// The tasks with 60 k to 400 k training examples, which short protocols
    /// fine-tune for fewer epochs.
    pub fn is_large(self) -> bool {
        matches!(self, Task::Sst2 | Task::Qnli | Task::Mnli | Task::Qqp)
    }

    /// The name `--tasks` takes.
    pub fn key(self) -> &'static str {
        match self {
            Task::Cola => "cola",
            Task::Sst2 => "sst2",
            Task::Mrpc => "mrpc",
            Task::Qqp => "qqp",
            Task::Stsb => "stsb",
            Task::Mnli => "mnli",
            Task::Qnli => "qnli",
            Task::Rte => "rte",
            Task::Wnli => "wnli",
        }
    }

    /// The name tables print.
    pub fn title(self) -> &'static str {
        match self {
            Task::Cola => "CoLA",
            Task::Sst2 => "SST-2",
            Task::Mrpc => "MRPC",
            Task::Qqp => "QQP",
            Task::Stsb => "STS-B",
            Task::Mnli => "MNLI",
            Task::Qnli => "QNLI",
            Task::Rte => "RTE",
            Task::Wnli => "WNLI",
        }
    }

    pub fn from_name(name: &str) -> Result<Task, GlueError> {
        let wanted = name.trim().to_ascii_lowercase().replace('-', "");
        Task::ALL
            .into_iter()
            .find(|t| t.key() == wanted)
            .ok_or_else(|| GlueError::UnknownTask(name.to_string()))
    }

    fn spec(self) -> Spec {
        let pair = |a, b, label, labels| Spec {
            folder: self.title(),
            header: true,
            a: Column::Named(a),
            b: Some(Column::Named(b)),
            label: Column::Named(label),
            labels,
            dev: DEV,
            metrics: &[Metric::Accuracy],
        };
        match self {
            Task::Cola => Spec {
                folder: "CoLA",
                header: false,
                a: Column::Index(3),
                b: None,
                label: Column::Index(1),
                labels: Labels::Classes(BINARY),
                dev: DEV,
                metrics: &[Metric::Matthews],
            },
            Task::Sst2 => Spec {
                folder: "SST-2",
                header: true,
                a: Column::Named("sentence"),
                b: None,
                label: Column::Named("label"),
                labels: Labels::Classes(BINARY),
                dev: DEV,
                metrics: &[Metric::Accuracy],
            },
            Task::Mrpc => Spec {
                metrics: &[Metric::F1, Metric::Accuracy],
                ..pair("#1 String", "#2 String", "Quality", Labels::Classes(BINARY))
            },
            Task::Qqp => Spec {
                metrics: &[Metric::F1, Metric::Accuracy],
                ..pair(
                    "question1",
                    "question2",
                    "is_duplicate",
                    Labels::Classes(BINARY),
                )
            },
            Task::Stsb => Spec {
                metrics: &[Metric::Pearson, Metric::Spearman],
                ..pair("sentence1", "sentence2", "score", Labels::Score)
            },
            Task::Mnli => Spec {
                dev: &[
                    ("matched", "dev_matched.tsv"),
                    ("mismatched", "dev_mismatched.tsv"),
                ],
                ..pair(
                    "sentence1",
                    "sentence2",
                    "gold_label",
                    Labels::Classes(MNLI),
                )
            },
            Task::Qnli => pair("question", "sentence", "label", Labels::Classes(NLI)),
            Task::Rte => pair("sentence1", "sentence2", "label", Labels::Classes(NLI)),
            Task::Wnli => pair("sentence1", "sentence2", "label", Labels::Classes(BINARY)),
        }
    }

    pub fn labels(self) -> Labels {
        self.spec().labels
    }

    pub fn metrics(self) -> &'static [Metric] {
        self.spec().metrics
    }

    /// Sentence pairs get `[CLS] a [SEP] b [SEP]`; single sentences `[CLS] a [SEP]`.
    pub fn is_pair(self) -> bool {
        self.spec().b.is_some()
    }

    /// The task's folder under the GLUE folder.
    pub fn folder(self, glue_dir: &Path) -> PathBuf {
        glue_dir.join(self.spec().folder)
    }

    /// Every file the task needs: `train.tsv` first, then the evaluation splits.
    pub fn files(self, glue_dir: &Path) -> Vec<PathBuf> {
        let dir = self.folder(glue_dir);
        std::iter::once("train.tsv")
            .chain(self.spec().dev.iter().map(|(_, f)| *f))
            .map(|f| dir.join(f))
            .collect()
    }

    /// The first file the task needs that is not on disk.
    pub fn first_missing_file(self, glue_dir: &Path) -> Option<PathBuf> {
        self.files(glue_dir).into_iter().find(|f| !f.is_file())
    }

    /// Reads the training set and every evaluation split.
    pub fn load(self, glue_dir: &Path) -> Result<TaskData, GlueError> {
        let train = self.load_split(glue_dir, "train.tsv")?;
        let dev = self
            .spec()
            .dev
            .iter()
            .map(|(name, file)| {
                Ok(DevSplit {
                    name,
                    examples: self.load_split(glue_dir, file)?,
                })
            })
            .collect::<Result<_, GlueError>>()?;
        Ok(TaskData {
            task: self,
            train,
            dev,
        })
    }

    /// Reads one of the task's files (`train.tsv`, `dev.tsv`, ...).
    pub fn load_split(self, glue_dir: &Path, file: &str) -> Result<Vec<Example>, GlueError> {
        let path = self.folder(glue_dir).join(file);
        let bytes = std::fs::read(&path).map_err(|source| GlueError::Read {
            task: self.title(),
            path: path.clone(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|_| GlueError::NotUtf8 {
            task: self.title(),
            path: path.clone(),
        })?;
        self.parse(&text, &path)
    }

    /// Parses the text of one of the task's TSV files; `path` names it in errors.
    pub fn parse(self, text: &str, path: &Path) -> Result<Vec<Example>, GlueError> {
        self.parse_tsv(&self.spec(), text, path)
    }

    fn parse_tsv(self, spec: &Spec, text: &str, path: &Path) -> Result<Vec<Example>, GlueError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l))
            .filter(|(_, l)| !l.is_empty());
        let header: Vec<&str> = if spec.header {
            match lines.next() {
                Some((_, h)) => h.split('\t').collect(),
                None => {
                    return Err(GlueError::Empty {
                        task: self.title(),
                        path: path.to_path_buf(),
                    })
                }
            }
        } else {
            Vec::new()
        };
        let index = |column: Column| -> Result<usize, GlueError> {
            match column {
                Column::Index(i) => Ok(i),
                Column::Named(name) => {
                    header.iter().position(|h| h.trim() == name).ok_or_else(|| {
                        GlueError::MissingColumn {
                            task: self.title(),
                            path: path.to_path_buf(),
                            column: name,
                            found: header.join(", "),
                        }
                    })
                }
            }
        };
        let a = index(spec.a)?;
        let b = spec.b.map(index).transpose()?;
        let label = index(spec.label)?;
        let needed = 1 + a.max(label).max(b.unwrap_or(0));
        let mut examples = Vec::new();
        for (line, row) in lines {
            let fields: Vec<&str> = row.split('\t').collect();
            if fields.len() < needed {
                return Err(GlueError::ShortRow {
                    task: self.title(),
                    path: path.to_path_buf(),
                    line,
                    found: fields.len(),
                    needed,
                });
            }
            let bad_label = || GlueError::BadLabel {
                task: self.title(),
                path: path.to_path_buf(),
                line,
                value: fields[label].to_string(),
                expected: match spec.labels {
                    Labels::Classes(c) => c.join(", "),
                    Labels::Score => "a number".into(),
                },
            };
            let value = fields[label].trim();
            let gold = match spec.labels {
                Labels::Classes(classes) => Label::Class(
                    classes
                        .iter()
                        .position(|c| *c == value)
                        .ok_or_else(bad_label)? as u32,
                ),
                Labels::Score => Label::Score(
                    value
                        .parse::<f32>()
                        .ok()
                        .filter(|s| s.is_finite())
                        .ok_or_else(bad_label)?,
                ),
            };
            examples.push(Example {
                a: fields[a].to_string(),
                b: b.map(|b| fields[b].to_string()),
                label: gold,
            });
        }
        if examples.is_empty() {
            return Err(GlueError::Empty {
                task: self.title(),
                path: path.to_path_buf(),
            });
        }
        Ok(examples)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(task: Task, text: &str) -> Result<Vec<Example>, GlueError> {
        task.parse(text, Path::new("snippet.tsv"))
    }

    #[test]
    fn columns_are_found_by_header_name_in_any_order() {
        let text = "label\textra\tsentence\n1\tx\tgood film\n0\ty\tbad film\n";
        let ex = parse(Task::Sst2, text).unwrap();
        assert_eq!(ex.len(), 2);
        assert_eq!(ex[0].a, "good film");
        assert_eq!(ex[0].b, None);
        assert_eq!(ex[1].label, Label::Class(0));
    }

    #[test]
    fn cola_has_no_header_and_the_last_line_may_lack_a_newline() {
        let text = "gj04\t1\t\tThe sailors rode.\ngj04\t0\t*\tRode sailors the.";
        let ex = parse(Task::Cola, text).unwrap();
        assert_eq!(ex.len(), 2);
        assert_eq!(ex[1].a, "Rode sailors the.");
        assert_eq!(ex[1].label, Label::Class(0));
    }

    #[test]
    fn byte_order_mark_and_crlf_are_accepted() {
        let text =
            "\u{feff}Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\r\n1\t7\t8\tA b .\tA c .\r\n";
        let ex = parse(Task::Mrpc, text).unwrap();
        assert_eq!(ex.len(), 1);
        assert_eq!(ex[0].a, "A b .");
        assert_eq!(ex[0].b.as_deref(), Some("A c ."));
        assert_eq!(ex[0].label, Label::Class(1));
    }

    #[test]
    fn quotes_are_ordinary_characters() {
        // An unbalanced quote must not swallow the tab or the next line.
        let text = "index\tsentence1\tsentence2\tlabel\n\
                    0\tHe said \"stop\tit \" now\tentailment\n\
                    1\t\"open\tclosed\"\tnot_entailment\n";
        let ex = parse(Task::Rte, text).unwrap();
        assert_eq!(ex.len(), 2);
        assert_eq!(ex[0].a, "He said \"stop");
        assert_eq!(ex[0].b.as_deref(), Some("it \" now"));
        assert_eq!(ex[1].a, "\"open");
        assert_eq!(ex[1].b.as_deref(), Some("closed\""));
        assert_eq!(ex[1].label, Label::Class(1));
    }

    #[test]
    fn mnli_labels_are_words_in_glue_order() {
        let text = "index\tsentence1\tsentence2\tgold_label\n\
                    0\ta\tb\tneutral\n1\ta\tb\tcontradiction\n2\ta\tb\tentailment\n";
        let labels: Vec<Label> = parse(Task::Mnli, text)
            .unwrap()
            .into_iter()
            .map(|e| e.label)
            .collect();
        assert_eq!(labels, [Label::Class(2), Label::Class(0), Label::Class(1)]);
    }

    #[test]
    fn stsb_scores_are_numbers() {
        let text = "sentence1\tsentence2\tscore\na\tb\t3.800\n";
        assert_eq!(parse(Task::Stsb, text).unwrap()[0].label, Label::Score(3.8));
        let err = parse(Task::Stsb, "sentence1\tsentence2\tscore\na\tb\thigh\n").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("STS-B") && msg.contains("snippet.tsv"),
            "{msg}"
        );
        assert!(msg.contains("line 2") && msg.contains("'high'"), "{msg}");
    }

    #[test]
    fn missing_column_names_task_file_and_column() {
        let err = parse(Task::Qnli, "index\tquestion\tlabel\n0\tq\tentailment\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("QNLI"), "{msg}");
        assert!(msg.contains("snippet.tsv"), "{msg}");
        assert!(msg.contains("'sentence'"), "{msg}");
    }

    #[test]
    fn missing_field_names_the_line() {
        let text = "sentence\tlabel\ngood\t1\nno label here\n";
        let msg = parse(Task::Sst2, text).unwrap_err().to_string();
        assert!(
            msg.contains("SST-2") && msg.contains("snippet.tsv"),
            "{msg}"
        );
        assert!(msg.contains("line 3"), "{msg}");
        assert!(msg.contains("1 field"), "{msg}");
    }

    #[test]
    fn unknown_label_and_empty_file_are_errors() {
        let msg = parse(Task::Rte, "sentence1\tsentence2\tlabel\na\tb\tmaybe\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("'maybe'") && msg.contains("not_entailment"),
            "{msg}"
        );
        let msg = parse(Task::Wnli, "sentence1\tsentence2\tlabel\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("WNLI") && msg.contains("no examples"), "{msg}");
    }

    #[test]
    fn task_names_parse_loosely_and_unknown_ones_list_the_tasks() {
        assert_eq!(Task::from_name("SST-2").unwrap(), Task::Sst2);
        assert_eq!(Task::from_name("sts-b").unwrap(), Task::Stsb);
        let msg = Task::from_name("squad").unwrap_err().to_string();
        assert!(msg.contains("squad") && msg.contains("cola"), "{msg}");
    }
}
