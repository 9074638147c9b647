//! Line and scatter charts as SVG text, through plotters' SVG backend. Text
//! is written as SVG `<text>` elements, so no font file is needed (a PNG
//! would need one to rasterise the labels, which is why the report has none).

use super::ReportError;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Line,
    /// A fitted law.
    Dashed,
    Dots,
}

#[derive(Debug, Clone)]
pub struct Series {
    pub name: Option<String>,
    pub color: RGBColor,
    pub mark: Mark,
    pub points: Vec<(f64, f64)>,
}

impl Series {
    pub fn new(
        name: impl Into<String>,
        color: RGBColor,
        mark: Mark,
        points: Vec<(f64, f64)>,
    ) -> Series {
        Series {
            name: Some(name.into()),
            color,
            mark,
            points,
        }
    }

    /// A series that does not appear in the legend.
    pub fn unnamed(color: RGBColor, mark: Mark, points: Vec<(f64, f64)>) -> Series {
        Series {
            name: None,
            color,
            mark,
            points,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub log_y: bool,
    pub series: Vec<Series>,
}

const SIZE: (u32, u32) = (760, 460);

impl Chart {
    pub fn new(title: &str, x_label: &str, y_label: &str) -> Chart {
        Chart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            log_x: false,
            log_y: false,
            series: Vec::new(),
        }
    }

    pub fn log_log(mut self) -> Chart {
        self.log_x = true;
        self.log_y = true;
        self
    }

    pub fn log_x(mut self) -> Chart {
        self.log_x = true;
        self
    }

    pub fn with(mut self, s: Series) -> Chart {
        self.series.push(s);
        self
    }

    /// Whether any series has a point to draw.
    pub fn has_data(&self) -> bool {
        self.series.iter().any(|s| !s.points.is_empty())
    }

    /// The chart as an SVG document.
    pub fn svg(&self) -> Result<String, ReportError> {
        let mut text = String::new();
        {
            let root = SVGBackend::with_string(&mut text, SIZE).into_drawing_area();
            root.fill(&WHITE).map_err(plot_err)?;
            // plotters labels a log axis at powers of ten only: a narrower
            // range would have no labels, so it is drawn linear.
            let log_x = self.log_x && self.spans_a_decade(|p| p.0);
            let log_y = self.log_y && self.spans_a_decade(|p| p.1);
            let (x0, x1) = self.range(|p| p.0, log_x);
            let (y0, y1) = self.range(|p| p.1, log_y);
            match (log_x, log_y) {
                (false, false) => self.draw(&root, x0..x1, y0..y1),
                (true, false) => self.draw(&root, (x0..x1).log_scale(), y0..y1),
                (false, true) => self.draw(&root, x0..x1, (y0..y1).log_scale()),
                (true, true) => self.draw(&root, (x0..x1).log_scale(), (y0..y1).log_scale()),
            }?;
            root.present().map_err(plot_err)?;
        }
        Ok(text)
    }

    fn spans_a_decade(&self, coord: fn(&(f64, f64)) -> f64) -> bool {
        let (lo, hi) = self.range(coord, true);
        hi / lo >= 10.0
    }

    /// The padded range of one coordinate over every drawable point.
    fn range(&self, coord: fn(&(f64, f64)) -> f64, log: bool) -> (f64, f64) {
        let values = self
            .series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .map(coord)
            .filter(|v| !log || *v > 0.0);
        let (lo, hi) = crate::scaling::fit::stats::extent(values);
        if !lo.is_finite() {
            return if log { (1.0, 10.0) } else { (0.0, 1.0) };
        }
        if log {
            let (l, h) = (lo.ln(), hi.ln());
            let pad = ((h - l) * 0.05).max(0.05);
            ((l - pad).exp(), (h + pad).exp())
        } else {
            let pad = ((hi - lo) * 0.05).max(hi.abs().max(1e-12) * 0.05);
            (lo - pad, hi + pad)
        }
    }

    fn draw<X, Y>(
        &self,
        root: &DrawingArea<SVGBackend, plotters::coord::Shift>,
        x: X,
        y: Y,
    ) -> Result<(), ReportError>
    where
        X: AsRangedCoord<Value = f64>,
        Y: AsRangedCoord<Value = f64>,
        X::CoordDescType: ValueFormatter<f64>,
        Y::CoordDescType: ValueFormatter<f64>,
    {
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d(x, y)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_labels(8)
            .y_labels(8)
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .x_label_formatter(&|v| short(*v))
            .y_label_formatter(&|v| short(*v))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(plot_err)?;
        let ok = |p: &&(f64, f64)| {
            p.0.is_finite()
                && p.1.is_finite()
                && (!self.log_x || p.0 > 0.0)
                && (!self.log_y || p.1 > 0.0)
        };
        for s in &self.series {
            let pts: Vec<(f64, f64)> = s.points.iter().filter(ok).copied().collect();
            let color = s.color;
            let drawn = match s.mark {
                Mark::Line => chart
                    .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                    .map_err(plot_err)?,
                Mark::Dashed => chart
                    .draw_series(DashedLineSeries::new(pts, 6, 4, color.stroke_width(2)))
                    .map_err(plot_err)?,
                Mark::Dots => chart
                    .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))
                    .map_err(plot_err)?,
            };
            if let Some(name) = &s.name {
                drawn.label(name.clone()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3))
                });
            }
        }
        if self.series.iter().any(|s| s.name.is_some()) {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(200, 200, 200))
                .label_font(("sans-serif", 12))
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(plot_err)?;
        }
        Ok(())
    }
}

fn plot_err<E: std::fmt::Display>(e: E) -> ReportError {
    ReportError::Plot(e.to_string())
}

/// An axis label: plain for ordinary magnitudes, scientific otherwise.
fn short(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 {
        "0".into()
    } else if !(1e-2..1e5).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

/// Colour of position `t` ∈ [0, 1] on a viridis-like scale (small → purple, large → yellow).
pub fn scale_color(t: f64) -> RGBColor {
    const STOPS: [(u8, u8, u8); 5] = [
        (68, 1, 84),
        (59, 82, 139),
        (33, 145, 140),
        (94, 201, 98),
        (253, 231, 37),
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let pos = t * (STOPS.len() - 1) as f64;
    let i = (pos.floor() as usize).min(STOPS.len() - 2);
    let f = pos - i as f64;
    let mix = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * f).round() as u8;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Distinct colours for a handful of series.
pub const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_has_title_labels_and_series() {
        let chart = Chart::new("loss", "tokens", "nats")
            .log_log()
            .with(Series::new(
                "run a",
                PALETTE[0],
                Mark::Line,
                vec![(1e3, 5.0), (1e6, 3.0)],
            ))
            .with(Series::unnamed(
                PALETTE[1],
                Mark::Dots,
                vec![(1e4, 4.0), (-1.0, 2.0)],
            ));
        let svg = chart.svg().unwrap();
        assert!(
            svg.starts_with("<svg") || svg.starts_with("<?xml"),
            "{}",
            &svg[..40]
        );
        for needle in ["loss", "tokens", "nats", "run a", "<circle", "<polyline"] {
            assert!(svg.contains(needle), "no {needle} in the SVG");
        }
    }

    #[test]
    fn empty_and_flat_charts_still_render() {
        assert!(Chart::new("empty", "x", "y")
            .svg()
            .unwrap()
            .contains("empty"));
        let flat = Chart::new("flat", "x", "y").with(Series::new(
            "c",
            PALETTE[0],
            Mark::Line,
            vec![(1.0, 2.0), (2.0, 2.0)],
        ));
        assert!(flat.svg().is_ok());
    }

    #[test]
    fn colour_scale_ends() {
        assert_eq!(scale_color(0.0), RGBColor(68, 1, 84));
        assert_eq!(scale_color(1.0), RGBColor(253, 231, 37));
    }
}
