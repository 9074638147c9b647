//! The report of one pretraining run: loss (training and held-out) against
//! tokens and time, learning rate and batch size against tokens, throughput
//! and MFU against time, and the gradient noise scale when it was measured.

use super::html::{Figure, Page};
use super::plot::{Chart, Mark, Series, PALETTE};
use super::{write_report, ReportError, ReportOptions, Written};
use crate::config::Config;
use crate::model::Model;
use crate::scaling::sweep::read_metrics;
use crate::scaling::Counts;
use serde_json::Value;
use std::path::Path;

fn field(m: &Value, k: &str) -> Option<f64> {
    m.get(k).and_then(Value::as_f64)
}

fn event<'a>(records: &'a [Value], name: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|m| m.get("event").and_then(Value::as_str) == Some(name))
        .collect()
}

fn series(records: &[&Value], x: &str, y: &str) -> Vec<(f64, f64)> {
    records
        .iter()
        .filter_map(|m| Some((field(m, x)?, field(m, y)?)))
        .collect()
}

/// MFU per logged interval: the FLOPs of the interval over its seconds and the peak.
fn mfu_from_flops(train: &[&Value], peak: f64) -> Vec<(f64, f64)> {
    let pts = series(train, "elapsed", "flops");
    pts.windows(2)
        .filter(|w| w[1].0 > w[0].0)
        .map(|w| (w[1].0, (w[1].1 - w[0].1) / (w[1].0 - w[0].0) / peak))
        .collect()
}

pub fn report(dir: &Path, opts: &ReportOptions) -> Result<Written, ReportError> {
    let records = read_metrics(&dir.join("metrics.jsonl"))?;
    let train = event(&records, "train");
    let eval = event(&records, "eval");
    if train.is_empty() {
        return Err(ReportError::Empty {
            path: dir.join("metrics.jsonl"),
        });
    }
    let mut notes: Vec<String> = Vec::new();
    let loss = |x: &str, xl: &str, title: &str| {
        Chart::new(title, xl, "loss (nats)")
            .with(Series::new(
                "training loss",
                PALETTE[0],
                Mark::Line,
                series(&train, x, "loss"),
            ))
            .with(Series::new(
                "held-out loss",
                PALETTE[1],
                Mark::Line,
                series(&eval, x, "val_loss"),
            ))
    };
    let mut charts = vec![
        (
            "loss_tokens.svg",
            "Loss against training tokens.".to_string(),
            loss("tokens", "tokens", "loss vs tokens"),
        ),
        (
            "loss_time.svg",
            "Loss against wall-clock time.".to_string(),
            loss("elapsed", "seconds", "loss vs time"),
        ),
        (
            "lr.svg",
            "Learning rate against tokens: the schedule is a function of budget progress."
                .to_string(),
            Chart::new("learning rate", "tokens", "learning rate").with(Series::new(
                "lr",
                PALETTE[2],
                Mark::Line,
                series(&train, "tokens", "lr"),
            )),
        ),
        (
            "batch_size.svg",
            "Batch size (sequences per optimizer step) against tokens.".to_string(),
            Chart::new("batch size", "tokens", "sequences per step").with(Series::new(
                "batch size",
                PALETTE[3],
                Mark::Line,
                series(&train, "tokens", "batch_size"),
            )),
        ),
        (
            "throughput.svg",
            "Training throughput against time.".to_string(),
            Chart::new("throughput", "seconds", "tokens / s").with(Series::new(
                "tokens/s",
                PALETTE[4],
                Mark::Line,
                series(&train, "elapsed", "tokens_per_s"),
            )),
        ),
    ];
    let logged_mfu = series(&train, "elapsed", "mfu");
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
    let noise = series(&train, "tokens", "noise_scale");
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

fn summary_rows(dir: &Path, train: &[&Value], eval: &[&Value]) -> Vec<Vec<String>> {
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
    let get = |m: &Value, k: &str| field(m, k).map(table_number).unwrap_or("-".into());
    rows.push(vec!["steps".into(), get(last, "step")]);
    rows.push(vec!["tokens".into(), get(last, "tokens")]);
    rows.push(vec!["seconds".into(), get(last, "elapsed")]);
    rows.push(vec!["last training loss".into(), get(last, "loss")]);
    if let Some(e) = eval.last() {
        rows.push(vec!["last held-out loss".into(), get(e, "val_loss")]);
        rows.push(vec![
            "last held-out accuracy".into(),
            get(e, "val_accuracy"),
        ]);
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
