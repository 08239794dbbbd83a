//! The benchmark's results: rows of corral vs a reference, notes, and the series the plots draw.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Value};

use super::Plan;

/// Which way a ratio should go.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// corral / reference should be at least this.
    AtLeast(f64),
    /// corral / reference should be at most this.
    AtMost(f64),
}

impl Target {
    fn met(self, ratio: f64) -> bool {
        match self {
            Target::AtLeast(t) => ratio >= t,
            Target::AtMost(t) => ratio <= t,
        }
    }

    fn text(self) -> String {
        match self {
            Target::AtLeast(t) => format!(">= {t}"),
            Target::AtMost(t) => format!("<= {t}"),
        }
    }
}

/// One comparison: corral's figure, the reference's, their ratio and the target.
#[derive(Debug, Clone)]
pub struct Row {
    pub section: &'static str,
    /// What was measured, with its size (`pp512`, `TTFT @ 8192`).
    pub test: String,
    pub unit: &'static str,
    pub corral: f64,
    /// The reference's name and figure, when there is one.
    pub reference: Option<(String, f64)>,
    pub target: Option<Target>,
}

impl Row {
    /// corral / reference.
    pub fn ratio(&self) -> Option<f64> {
        self.reference
            .as_ref()
            .filter(|(_, r)| *r > 0.0)
            .map(|(_, r)| self.corral / r)
    }
}

/// A named line of points for a plot (x, y).
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A plot's data: title, axis labels, and its lines (or bars, one point per series).
#[derive(Debug, Clone)]
pub struct Figure {
    /// File stem of the PNG.
    pub file: &'static str,
    pub title: String,
    pub x_label: &'static str,
    pub y_label: &'static str,
    pub series: Vec<Series>,
    /// Draw bars (categories are the series) instead of lines.
    pub bars: bool,
}

/// Everything one `corral bench` found.
#[derive(Debug)]
pub struct Report {
    model: String,
    threads: u32,
    quick: bool,
    build: Value,
    pub rows: Vec<Row>,
    pub notes: Vec<(&'static str, String)>,
    pub figures: Vec<Figure>,
}

impl Report {
    pub fn new(model: &Path, plan: &Plan, quick: bool, build: Value) -> Report {
        Report {
            model: model.display().to_string(),
            threads: plan.threads,
            quick,
            build,
            rows: Vec::new(),
            notes: Vec::new(),
            figures: Vec::new(),
        }
    }

    pub fn row(&mut self, row: Row) {
        self.rows.push(row);
    }

    /// Adds a bar `name` (in `group`) to the bar chart `file`.
    pub fn bar(&mut self, file: &'static str, group: &str, name: &str, value: f64) {
        let figure = self.figure(file, true);
        figure.series.push(Series {
            name: format!("{name} ({group})"),
            points: vec![(figure.series.len() as f64, value)],
        });
    }

    /// Adds the point (`x`, `y`) to the line `name` of the line chart `file`.
    pub fn point(&mut self, file: &'static str, name: &str, x: f64, y: f64) {
        let figure = self.figure(file, false);
        match figure.series.iter_mut().find(|s| s.name == name) {
            Some(series) => series.points.push((x, y)),
            None => figure.series.push(Series {
                name: name.to_string(),
                points: vec![(x, y)],
            }),
        }
    }

    fn figure(&mut self, file: &'static str, bars: bool) -> &mut Figure {
        if let Some(i) = self.figures.iter().position(|f| f.file == file) {
            return &mut self.figures[i];
        }
        let (title, x_label, y_label) = match file {
            "modes" => ("Generation speed by mode", "", "tokens/s"),
            "ttft" => (
                "Time to first token vs history",
                "history (tokens)",
                "seconds",
            ),
            "memory" => ("Peak RSS by context", "context (tokens)", "MB"),
            "concurrency" => ("Aggregate generation", "conversations at once", "tokens/s"),
            _ => (file, "", ""),
        };
        self.figures.push(Figure {
            file,
            title: title.to_string(),
            x_label,
            y_label,
            series: Vec::new(),
            bars,
        });
        self.figures.last_mut().expect("just pushed")
    }

    pub fn note(&mut self, section: &'static str, text: impl Into<String>) {
        self.notes.push((section, text.into()));
    }

    /// The table printed on a terminal.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "corral bench{}: {} ({} threads)",
            if self.quick {
                " --quick (sizes too small for the figures to mean anything)"
            } else {
                ""
            },
            self.model,
            self.threads
        );
        let _ = writeln!(
            out,
            "{:<12} {:<34} {:>12} {:>12}  {:<16} {:>7}  target",
            "section", "test", "corral", "reference", "", "ratio"
        );
        for row in &self.rows {
            let (reference, who) = match &row.reference {
                Some((who, value)) => (number(*value), who.as_str()),
                None => (String::new(), ""),
            };
            let ratio = row.ratio().map(|r| format!("{r:.3}")).unwrap_or_default();
            let target = match (row.target, row.ratio()) {
                (Some(t), Some(r)) => {
                    format!("{} {}", t.text(), if t.met(r) { "met" } else { "MISSED" })
                }
                (Some(t), None) => t.text(),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "{:<12} {:<34} {:>12} {:>12}  {:<16} {:>7}  {}",
                row.section,
                format!("{} ({})", row.test, row.unit),
                number(row.corral),
                reference,
                who,
                ratio,
                target
            );
        }
        if !self.notes.is_empty() {
            out.push('\n');
        }
        for (section, note) in &self.notes {
            let _ = writeln!(out, "{section}: {note}");
        }
        out
    }

    /// The whole report as JSON.
    pub fn to_json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                json!({
                    "section": r.section,
                    "test": r.test,
                    "unit": r.unit,
                    "corral": r.corral,
                    "reference": r.reference.as_ref().map(|(who, _)| who),
                    "reference_value": r.reference.as_ref().map(|(_, v)| v),
                    "ratio": r.ratio(),
                    "target": r.target.map(Target::text),
                    "target_met": match (r.target, r.ratio()) {
                        (Some(t), Some(ratio)) => Some(t.met(ratio)),
                        _ => None,
                    },
                })
            })
            .collect();
        let notes: Vec<Value> = self
            .notes
            .iter()
            .map(|(section, text)| json!({"section": section, "note": text}))
            .collect();
        json!({
            "model": self.model,
            "threads": self.threads,
            "quick": self.quick,
            "llama_cpp": self.build,
            "rows": rows,
            "notes": notes,
        })
    }
}

/// A figure with as many significant digits as it needs.
fn number(value: f64) -> String {
    if value.abs() >= 100.0 {
        format!("{value:.1}")
    } else if value.abs() >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        let plan = Plan::new(true, None, 2);
        let mut r = Report::new(Path::new("m.gguf"), &plan, true, json!({}));
        r.row(Row {
            section: "raw",
            test: "pp64".into(),
            unit: "t/s",
            corral: 95.0,
            reference: Some(("llama-bench".into(), 100.0)),
            target: Some(Target::AtLeast(0.97)),
        });
        r.row(Row {
            section: "memory",
            test: "overhead @ 1024 f16".into(),
            unit: "MB",
            corral: 12.5,
            reference: None,
            target: None,
        });
        r.note("raw", "both repack");
        r
    }

    #[test]
    fn the_table_shows_ratio_and_whether_the_target_was_met() {
        let table = report().table();
        assert!(table.contains("0.950"), "{table}");
        assert!(table.contains(">= 0.97 MISSED"), "{table}");
        assert!(table.contains("raw: both repack"), "{table}");
        assert!(table.contains("12.50"), "{table}");
    }

    #[test]
    fn the_json_has_every_row_with_its_ratio() {
        let json = report().to_json();
        let rows = json["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["target_met"], false);
        assert!((rows[0]["ratio"].as_f64().unwrap() - 0.95).abs() < 1e-9);
        assert!(rows[1]["ratio"].is_null());
        assert_eq!(json["quick"], true);
    }
}
