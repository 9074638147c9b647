//! One self-contained `report.html`: the SVG plots inlined, tables, no
//! scripts and nothing loaded from elsewhere.

use std::fmt::Write as _;

/// A plot of the report: its file name (under `plots/`), caption and SVG text.
pub struct Figure {
    pub file: String,
    pub caption: String,
    pub svg: String,
}

/// A page being assembled.
pub struct Page {
    body: String,
    title: String,
}

pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl Page {
    pub fn new(title: &str) -> Page {
        Page {
            body: String::new(),
            title: title.to_string(),
        }
    }

    pub fn heading(&mut self, text: &str) {
        let _ = writeln!(self.body, "<h2>{}</h2>", escape(text));
    }

    pub fn paragraph(&mut self, text: &str) {
        let _ = writeln!(self.body, "<p>{}</p>", escape(text));
    }

    pub fn preformatted(&mut self, text: &str) {
        let _ = writeln!(self.body, "<pre>{}</pre>", escape(text));
    }

    pub fn table(&mut self, header: &[&str], rows: &[Vec<String>]) {
        let _ = write!(self.body, "<table><tr>");
        for h in header {
            let _ = write!(self.body, "<th>{}</th>", escape(h));
        }
        let _ = writeln!(self.body, "</tr>");
        for row in rows {
            let _ = write!(self.body, "<tr>");
            for cell in row {
                let _ = write!(self.body, "<td>{}</td>", escape(cell));
            }
            let _ = writeln!(self.body, "</tr>");
        }
        let _ = writeln!(self.body, "</table>");
    }

    /// The figure inline, with its caption naming the file it was also written to.
    pub fn figure(&mut self, fig: &Figure) {
        let svg = fig
            .svg
            .strip_prefix("<?xml")
            .and_then(|rest| rest.find("?>").map(|i| &rest[i + 2..]))
            .unwrap_or(&fig.svg);
        let _ = writeln!(
            self.body,
            "<figure id=\"{}\">{}<figcaption>{} <span class=\"file\">(plots/{})</span></figcaption></figure>",
            escape(&fig.file),
            svg.trim(),
            escape(&fig.caption),
            escape(&fig.file)
        );
    }

    pub fn finish(self) -> String {
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>\n\
             body {{ font-family: sans-serif; max-width: 820px; margin: 2em auto; color: #222; }}\n\
             table {{ border-collapse: collapse; font-size: 13px; margin: 1em 0; }}\n\
             td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}\n\
             pre {{ background: #f6f6f6; padding: 8px; font-size: 12px; overflow-x: auto; }}\n\
             figure {{ margin: 1.5em 0; }} figcaption {{ font-size: 13px; color: #444; }}\n\
             .file {{ color: #888; }}\n</style></head>\n<body>\n<h1>{}</h1>\n{}</body></html>\n",
            escape(&self.title),
            escape(&self.title),
            self.body
        )
    }
}
