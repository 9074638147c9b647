//! The points table of a sweep: one finished run per row (N, D, C, final
//! held-out loss), plus each run's held-out loss curve for the envelope fits.
//! Stored as `points.csv` and `curves.csv` so that any data, not only cram's,
//! can be fitted: `cram scale fit --points FILE.csv` needs only the columns
//! `n_params,tokens,compute,loss`.

use super::ScalingError;
use std::fmt::Write as _;
use std::path::Path;

/// One finished run.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The run's folder name inside the sweep ("" when read from a table without it).
    pub run: String,
    /// Non-embedding parameters (Kaplan's N).
    pub n_params: f64,
    /// All parameters (Chinchilla's N); equals `n_params` when unknown.
    pub n_total: f64,
    /// Training tokens D.
    pub tokens: f64,
    /// Training compute C (see [`super::counts`]).
    pub compute: f64,
    /// Final held-out loss (nats per predicted token).
    pub loss: f64,
    /// Gradient noise scale B_simple (sequences) measured during the run.
    pub noise_scale: Option<f64>,
}

/// The held-out losses of one run as it trained.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    pub run: String,
    pub n_params: f64,
    pub n_total: f64,
    /// Compute per token, so that C = flops_per_token · tokens along the curve.
    pub flops_per_token: f64,
    /// (tokens, held-out loss), tokens increasing.
    pub samples: Vec<(f64, f64)>,
}

/// Which parameter count a fit uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamCount {
    /// Kaplan et al.: without embeddings.
    NonEmbedding,
    /// Hoffmann et al.: all parameters.
    Total,
}

impl Point {
    /// A run of `n` parameters (no embeddings counted apart) trained on `d`
    /// tokens with C = 6·N·D: the rows of synthetic tables.
    pub fn simple(run: impl Into<String>, n: f64, d: f64, loss: f64) -> Point {
        Point {
            run: run.into(),
            n_params: n,
            n_total: n,
            tokens: d,
            compute: 6.0 * n * d,
            loss,
            noise_scale: None,
        }
    }

    pub fn n(&self, count: ParamCount) -> f64 {
        match count {
            ParamCount::NonEmbedding => self.n_params,
            ParamCount::Total => self.n_total,
        }
    }
}

impl Curve {
    pub fn n(&self, count: ParamCount) -> f64 {
        match count {
            ParamCount::NonEmbedding => self.n_params,
            ParamCount::Total => self.n_total,
        }
    }
}

/// The points of a sweep and their curves (absent for a plain table).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PointSet {
    pub points: Vec<Point>,
    pub curves: Vec<Curve>,
}

pub const POINTS_FILE: &str = "points.csv";
pub const CURVES_FILE: &str = "curves.csv";
const REQUIRED: [&str; 4] = ["n_params", "tokens", "compute", "loss"];

impl PointSet {
    /// Reads `points.csv` and, when present beside it, `curves.csv`.
    pub fn read_dir(dir: &Path) -> Result<PointSet, ScalingError> {
        let points_path = dir.join(POINTS_FILE);
        if !points_path.is_file() {
            return Err(ScalingError::Degenerate(format!(
                "{} holds no {POINTS_FILE}; run `cram scale sweep --out {}` first, or pass --points FILE.csv",
                dir.display(),
                dir.display()
            )));
        }
        let mut set = PointSet {
            points: read_points(&points_path)?,
            curves: Vec::new(),
        };
        let curves_path = dir.join(CURVES_FILE);
        if curves_path.is_file() {
            set.curves = read_curves(&curves_path)?;
        }
        Ok(set)
    }

    pub fn write_dir(&self, dir: &Path) -> Result<(), ScalingError> {
        write_atomically(&dir.join(POINTS_FILE), &self.points_csv())?;
        write_atomically(&dir.join(CURVES_FILE), &self.curves_csv())
    }

    pub fn points_csv(&self) -> String {
        let mut out = String::from("n_params,tokens,compute,loss,n_total,run,noise_scale\n");
        for p in &self.points {
            let noise = p.noise_scale.map(|v| format!("{v:e}")).unwrap_or_default();
            let _ = writeln!(
                out,
                "{:e},{:e},{:e},{:e},{:e},{},{}",
                p.n_params, p.tokens, p.compute, p.loss, p.n_total, p.run, noise
            );
        }
        out
    }

    pub fn curves_csv(&self) -> String {
        let mut out = String::from("run,n_params,n_total,flops_per_token,tokens,loss\n");
        for c in &self.curves {
            for (t, l) in &c.samples {
                let _ = writeln!(
                    out,
                    "{},{:e},{:e},{:e},{:e},{:e}",
                    c.run, c.n_params, c.n_total, c.flops_per_token, t, l
                );
            }
        }
        out
    }

    /// Fails on anything a fit cannot use: a non-finite or non-positive value,
    /// or fewer than two distinct model sizes.
    pub fn validate(&self) -> Result<(), ScalingError> {
        if self.points.is_empty() {
            return Err(ScalingError::Degenerate("there are no points".into()));
        }
        for (i, p) in self.points.iter().enumerate() {
            let fields = [
                ("n_params", p.n_params),
                ("n_total", p.n_total),
                ("tokens", p.tokens),
                ("compute", p.compute),
                ("loss", p.loss),
            ];
            for (name, v) in fields {
                if !(v.is_finite() && v > 0.0) {
                    return Err(ScalingError::Degenerate(format!(
                        "point {} ({}) has {name} = {v}; every value must be a positive finite number",
                        i + 1,
                        if p.run.is_empty() { "unnamed" } else { &p.run }
                    )));
                }
            }
        }
        let sizes = distinct(self.points.iter().map(|p| p.n_params));
        if sizes.len() < 2 {
            return Err(ScalingError::Degenerate(format!(
                "{} one model size (N = {:.4e}); a scaling law needs at least two",
                match self.points.len() {
                    1 => "the only point has".to_string(),
                    n => format!("all {n} points have"),
                },
                sizes[0]
            )));
        }
        for c in &self.curves {
            if c.samples
                .iter()
                .any(|(t, l)| !(t.is_finite() && *t > 0.0 && l.is_finite() && *l > 0.0))
            {
                return Err(ScalingError::Degenerate(format!(
                    "the loss curve of run {} holds a non-finite or non-positive value",
                    c.run
                )));
            }
        }
        Ok(())
    }
}

/// Distinct values (relative tolerance 1e-9), sorted.
pub fn distinct(values: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    v.dedup_by(|a, b| (*a - *b).abs() <= 1e-9 * b.abs());
    v
}

/// Writes `text` under a temporary name, syncs, then renames: a crash never
/// leaves a half-written table.
pub fn write_atomically(path: &Path, text: &str) -> Result<(), ScalingError> {
    crate::fsio::write_atomically(path, text.as_bytes()).map_err(|source| ScalingError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// A CSV table of plain fields (no quoting): the header's column names and the rows.
struct Table {
    columns: Vec<String>,
    rows: Vec<(usize, Vec<String>)>,
}

fn read_table(path: &Path) -> Result<Table, ScalingError> {
    let text = std::fs::read_to_string(path).map_err(|source| ScalingError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Err(ScalingError::Table {
            path: path.to_path_buf(),
            line: 1,
            reason: "the file is empty; it needs a header line".into(),
        });
    };
    let columns: Vec<String> = header.split(',').map(|c| c.trim().to_string()).collect();
    let rows = lines
        .map(|(i, l)| (i + 1, l.split(',').map(|f| f.trim().to_string()).collect()))
        .collect();
    Ok(Table { columns, rows })
}

impl Table {
    fn column(&self, path: &Path, name: &str) -> Result<usize, ScalingError> {
        self.columns
            .iter()
            .position(|c| c == name)
            .ok_or_else(|| ScalingError::Table {
                path: path.to_path_buf(),
                line: 1,
                reason: format!(
                    "the header has no column '{name}' (it has: {}; needed: {})",
                    self.columns.join(","),
                    REQUIRED.join(",")
                ),
            })
    }

    fn number(
        &self,
        path: &Path,
        line: usize,
        row: &[String],
        col: usize,
    ) -> Result<f64, ScalingError> {
        let field = row.get(col).ok_or_else(|| ScalingError::Table {
            path: path.to_path_buf(),
            line,
            reason: format!(
                "the row has {} fields, the header {}",
                row.len(),
                self.columns.len()
            ),
        })?;
        field.parse().map_err(|_| ScalingError::Table {
            path: path.to_path_buf(),
            line,
            reason: format!(
                "'{field}' in column '{}' is not a number",
                self.columns[col]
            ),
        })
    }
}

/// The points of a table with at least the columns `n_params,tokens,compute,loss`.
pub fn read_points(path: &Path) -> Result<Vec<Point>, ScalingError> {
    let t = read_table(path)?;
    let [n, d, c, l] = REQUIRED.map(|name| t.column(path, name));
    let (n, d, c, l) = (n?, d?, c?, l?);
    let total = t.column(path, "n_total").ok();
    let run = t.column(path, "run").ok();
    let noise = t.column(path, "noise_scale").ok();
    let mut points = Vec::with_capacity(t.rows.len());
    for (line, row) in &t.rows {
        let n_params = t.number(path, *line, row, n)?;
        let optional = |col: Option<usize>| -> Result<Option<f64>, ScalingError> {
            match col {
                Some(i) if row.get(i).is_some_and(|f| !f.is_empty()) => {
                    t.number(path, *line, row, i).map(Some)
                }
                _ => Ok(None),
            }
        };
        points.push(Point {
            run: run.and_then(|i| row.get(i).cloned()).unwrap_or_default(),
            n_params,
            n_total: optional(total)?.unwrap_or(n_params),
            tokens: t.number(path, *line, row, d)?,
            compute: t.number(path, *line, row, c)?,
            loss: t.number(path, *line, row, l)?,
            noise_scale: optional(noise)?,
        });
    }
    Ok(points)
}

fn read_curves(path: &Path) -> Result<Vec<Curve>, ScalingError> {
    let t = read_table(path)?;
    let cols: Vec<usize> = [
        "run",
        "n_params",
        "n_total",
        "flops_per_token",
        "tokens",
        "loss",
    ]
    .iter()
    .map(|name| t.column(path, name))
    .collect::<Result<_, _>>()?;
    let mut curves: Vec<Curve> = Vec::new();
    for (line, row) in &t.rows {
        let run = row.get(cols[0]).cloned().unwrap_or_default();
        let value = |i: usize| t.number(path, *line, row, cols[i]);
        let sample = (value(4)?, value(5)?);
        match curves.last_mut() {
            Some(c) if c.run == run => c.samples.push(sample),
            _ => curves.push(Curve {
                run,
                n_params: value(1)?,
                n_total: value(2)?,
                flops_per_token: value(3)?,
                samples: vec![sample],
            }),
        }
    }
    Ok(curves)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(n: f64, d: f64, loss: f64) -> Point {
        Point {
            run: format!("r{n}"),
            n_params: n,
            n_total: 2.0 * n,
            tokens: d,
            compute: 6.0 * n * d,
            loss,
            noise_scale: Some(12.5),
        }
    }

    #[test]
    fn tables_round_trip() {
        let set = PointSet {
            points: vec![point(1e6, 1e8, 4.0), point(2e6, 1e8, 3.5)],
            curves: vec![Curve {
                run: "r1".into(),
                n_params: 1e6,
                n_total: 2e6,
                flops_per_token: 6e6,
                samples: vec![(1e3, 7.0), (1e4, 5.0)],
            }],
        };
        let dir = tempfile::tempdir().unwrap();
        set.write_dir(dir.path()).unwrap();
        assert_eq!(PointSet::read_dir(dir.path()).unwrap(), set);
    }

    #[test]
    fn minimal_columns_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.csv");
        std::fs::write(&path, "loss,compute,tokens,n_params\n3.0,6e14,1e8,1e6\n").unwrap();
        let p = &read_points(&path).unwrap()[0];
        assert_eq!(
            (p.n_params, p.n_total, p.tokens, p.loss),
            (1e6, 1e6, 1e8, 3.0)
        );
    }

    #[test]
    fn bad_tables_name_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.csv");
        std::fs::write(&path, "n_params,tokens,loss\n1,2,3\n").unwrap();
        let e = read_points(&path).unwrap_err().to_string();
        assert!(e.contains("no column 'compute'"), "{e}");
        std::fs::write(&path, "n_params,tokens,compute,loss\n1,2,3,4\n1,x,3,4\n").unwrap();
        let e = read_points(&path).unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("'x'"), "{e}");
    }

    #[test]
    fn validation_rejects_nan_and_one_size() {
        let mut set = PointSet {
            points: vec![point(1e6, 1e8, 4.0), point(1e6, 2e8, 3.9)],
            curves: vec![],
        };
        let e = set.validate().unwrap_err().to_string();
        assert!(e.contains("one model size"), "{e}");
        set.points.push(point(2e6, 1e8, f64::NAN));
        let e = set.validate().unwrap_err().to_string();
        assert!(e.contains("loss = NaN"), "{e}");
    }
}
