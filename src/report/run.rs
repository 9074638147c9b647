//! The report of one pretraining run: loss (training and held-out) against
//! tokens and time, learning rate and batch size against tokens, throughput
//! and MFU against time, and the gradient noise scale when it was measured.

use super::html::{Figure, Page};
use super::plot::{Chart, Mark, Series, PALETTE};
use super::{write_report, ReportError, ReportOptions, Written};
use crate::config::Config;
use crate::model::Model;
use crate::scaling::Counts;
use crate::train::{read_records, EvalRecord, Record, TrainRecord};
use std::path::Path;

/// The (x, y) pairs of `records` where both are known: a number that was
/// not finite was written as null and reads back as NaN.
fn series<R>(records: &[&R], xy: impl Fn(&R) -> (f64, f64)) -> Vec<(f64, f64)> {
    records
        .iter()
        .map(|r| xy(r))
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect()
}

/// MFU per logged interval: the FLOPs of the interval over its seconds and the peak.
fn mfu_from_flops(train: &[&TrainRecord], peak: f64) -> Vec<(f64, f64)> {
    let pts = series(train, |r| (r.elapsed, r.flops));
    pts.windows(2)
        .filter(|w| w[1].0 > w[0].0)
        .map(|w| (w[1].0, (w[1].1 - w[0].1) / (w[1].0 - w[0].0) / peak))
        .collect()
}

pub fn report(dir: &Path, opts: &ReportOptions) -> Result<Written, ReportError> {
    let path = crate::train::metrics_file(dir);
    let records = read_records(&path).map_err(|source| ReportError::Read {
        path: path.clone(),
        source,
    })?;
    let train: Vec<&TrainRecord> = records.iter().filter_map(Record::as_train).collect();
    let eval: Vec<&EvalRecord> = records.iter().filter_map(Record::as_eval).collect();
    if train.is_empty() {
        return Err(ReportError::Empty { path });
    }
    let mut notes: Vec<String> = Vec::new();
    let loss = |train_loss: Vec<(f64, f64)>, eval_loss: Vec<(f64, f64)>, xl: &str, title: &str| {
        Chart::new(title, xl, "loss (nats)")
            .with(Series::new(
                "training loss",
                PALETTE[0],
                Mark::Line,
                train_loss,
            ))
            .with(Series::new(
                "held-out loss",
                PALETTE[1],
                Mark::Line,
                eval_loss,
            ))
    };
    let mut charts = vec![
        (
            "loss_tokens.svg",
            "Loss against training tokens.".to_string(),
            loss(
                series(&train, |r| (r.tokens as f64, r.loss)),
                series(&eval, |r| (r.tokens as f64, r.val_loss)),
                "tokens",
                "loss vs tokens",
            ),
        ),
        (
            "loss_time.svg",
            "Loss against wall-clock time.".to_string(),
            loss(
                series(&train, |r| (r.elapsed, r.loss)),
                series(&eval, |r| (r.elapsed, r.val_loss)),
                "seconds",
                "loss vs time",
            ),
        ),
        (
            "lr.svg",
            "Learning rate against tokens: the schedule is a function of budget progress."
                .to_string(),
            Chart::new("learning rate", "tokens", "learning rate").with(Series::new(
                "lr",
                PALETTE[2],
                Mark::Line,
                series(&train, |r| (r.tokens as f64, r.lr)),
            )),
        ),
        (
            "batch_size.svg",
            "Batch size (sequences per optimizer step) against tokens.".to_string(),
            Chart::new("batch size", "tokens", "sequences per step").with(Series::new(
                "batch size",
                PALETTE[3],
                Mark::Line,
                series(&train, |r| (r.tokens as f64, r.batch_size as f64)),
            )),
        ),
        (
            "throughput.svg",
            "Training throughput against time.".to_string(),
            Chart::new("throughput", "seconds", "tokens / s").with(Series::new(
                "tokens/s",
                PALETTE[4],
                Mark::Line,
                series(&train, |r| (r.elapsed, r.tokens_per_s)),
            )),
        ),
    ];
    let logged_mfu = series(&train, |r| (r.elapsed, r.mfu.unwrap_or(f64::NAN)));
    let mfu = if !logged_mfu.is_empty() {
        Some(("MFU as logged by the trainer.".to_string(), logged_mfu))
    } else {
        opts.peak_flops.map(|peak| {
            (
                format!(
                    "MFU: training FLOPs per second (the trainer's count, with the output head) over a peak of {peak:.3e} FLOP/s."
                ),
                mfu_from_flops(&train, peak),
            )
        })
    };
    match mfu {
        Some((caption, pts)) => charts.push((
            "mfu.svg",
            caption,
            Chart::new("model FLOP utilisation", "seconds", "MFU").with(Series::new(
                "MFU",
                PALETTE[5],
                Mark::Line,
                pts,
            )),
        )),
        None => {
            let tflops: Vec<(f64, f64)> = mfu_from_flops(&train, 1e12);
            charts.push((
                "flops.svg",
                "Achieved training TFLOP/s (pass --device to plot MFU against a peak).".to_string(),
                Chart::new("achieved TFLOP/s", "seconds", "TFLOP/s").with(Series::new(
                    "TFLOP/s",
                    PALETTE[5],
                    Mark::Line,
                    tflops,
                )),
            ));
            notes.push(
                "no MFU in the log and no --device given: plotted achieved TFLOP/s instead".into(),
            );
        }
    }
    let noise = series(&train, |r| {
        let b = r.noise.as_ref().and_then(|n| n.noise_scale);
        (r.tokens as f64, b.unwrap_or(f64::NAN))
    });
    if !noise.is_empty() {
        charts.push((
            "noise_scale.svg",
            "Gradient noise scale B_simple = tr(Σ)/|G|² in sequences (McCandlish et al. 2018), averaged over each logging interval.".to_string(),
            Chart::new("gradient noise scale", "tokens", "B_simple (sequences)")
                .with(Series::new("B_simple", PALETTE[0], Mark::Line, noise)),
        ));
    }
    let figures: Vec<Figure> = charts
        .into_iter()
        .filter(|(_, _, c)| c.has_data())
        .map(|(file, caption, chart)| {
            Ok(Figure {
                file: file.to_string(),
                caption,
                svg: chart.svg()?,
            })
        })
        .collect::<Result<_, ReportError>>()?;
    let mut page = Page::new(&format!("cram run {}", dir.display()));
    page.table(&["quantity", "value"], &summary_rows(dir, &train, &eval));
    for n in &notes {
        page.paragraph(n);
    }
    for f in &figures {
        page.figure(f);
    }
    write_report(dir, page, &figures, notes)
}

fn summary_rows(dir: &Path, train: &[&TrainRecord], eval: &[&EvalRecord]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    if let Ok(cfg) = Config::load(&dir.join("config.toml")) {
        let model = Model::new(&cfg.model);
        let counts = Counts::of(&cfg);
        let m = &cfg.model;
        rows.push(vec![
            "model".into(),
            format!(
                "{:?}, hidden {}, {} layers, {} heads, ffn {}",
                m.arch, m.hidden, m.layers, m.heads, m.ffn
            ),
        ]);
        rows.push(vec![
            "parameters".into(),
            format!(
                "{} ({:.0} without embeddings)",
                model.num_params(),
                counts.n_params
            ),
        ]);
        rows.push(vec!["budget".into(), cfg.train.budget.to_string()]);
    }
    let last = train.last().expect("checked non-empty");
    let num = |v: f64| {
        if v.is_finite() {
            table_number(v)
        } else {
            "-".into()
        }
    };
    rows.push(vec!["steps".into(), num(last.step as f64)]);
    rows.push(vec!["tokens".into(), num(last.tokens as f64)]);
    rows.push(vec!["seconds".into(), num(last.elapsed)]);
    rows.push(vec!["last training loss".into(), num(last.loss)]);
    if let Some(e) = eval.last() {
        rows.push(vec!["last held-out loss".into(), num(e.val_loss)]);
        rows.push(vec!["last held-out accuracy".into(), num(e.val_accuracy)]);
    }
    rows
}

/// A number of the summary table: whole numbers as integers (steps, tokens),
/// others to four decimals (losses, accuracy, seconds).
fn table_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::table_number;

    #[test]
    fn whole_numbers_read_as_integers() {
        assert_eq!(table_number(200.0), "200");
        assert_eq!(table_number(102400.0), "102400");
        assert_eq!(table_number(7.234924), "7.2349");
    }
}
