//! PNG plots of the figures a picture explains better than a table: time to first token vs
//! history, tokens/s by mode, memory by context, aggregate speed by conversations at once.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use super::report::{Figure, Report};

/// Fonts looked for when `CORRAL_BENCH_FONT` is not set (Debian's fonts-dejavu-core first).
const FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// The font the plots' text is drawn with.
pub struct Font(&'static [u8]);

/// Reads the TrueType font for the plots' text.
///
/// # Errors
/// No font found: says how to get one or go without plots.
pub fn find_font() -> anyhow::Result<Font> {
    let candidates: Vec<PathBuf> = match std::env::var_os("CORRAL_BENCH_FONT") {
        Some(path) => vec![PathBuf::from(path)],
        None => FONTS.iter().map(PathBuf::from).collect(),
    };
    for path in &candidates {
        if let Ok(bytes) = std::fs::read(path) {
            // Registered once per process, for the process's life.
            return Ok(Font(Box::leak(bytes.into_boxed_slice())));
        }
    }
    bail!(
        "no TrueType font for the plots (looked for {}): install Debian's fonts-dejavu-core, \
         set CORRAL_BENCH_FONT to a .ttf file, or pass --no-plots",
        candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Writes one PNG per figure of `report` into `dir`; returns their paths.
///
/// # Errors
/// The folder cannot be made, the font is not TrueType, or drawing fails.
pub fn write_all(report: &Report, dir: &Path, font: &Font) -> anyhow::Result<Vec<PathBuf>> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, font.0)
        .map_err(|_| anyhow!("the plot font is not a TrueType font"))?;
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for figure in report.figures.iter().filter(|f| !f.series.is_empty()) {
        let path = dir.join(format!("{}.png", figure.file));
        let drawn = if figure.bars {
            draw_bars(figure, &path)
        } else {
            draw_lines(figure, &path)
        };
        drawn.map_err(|e| anyhow!("cannot draw {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn color(i: usize) -> RGBColor {
    const COLORS: [RGBColor; 6] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
    ];
    COLORS[i % COLORS.len()]
}

/// A white 900×560 picture to be written to `path`.
fn canvas(
    path: &Path,
) -> Result<DrawingArea<BitMapBackend<'_>, Shift>, Box<dyn std::error::Error>> {
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    Ok(root)
}

/// The title and axis margins every plot shares; the caller sets the ranges.
fn frame<'a, 'b>(
    root: &'a DrawingArea<BitMapBackend<'b>, Shift>,
    figure: &Figure,
) -> ChartBuilder<'a, 'b, BitMapBackend<'b>> {
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(&figure.title, ("sans-serif", 26))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72);
    builder
}

fn draw_lines(figure: &Figure, path: &Path) -> DrawResult {
    let points = figure.series.iter().flat_map(|s| s.points.iter());
    let (mut x_max, mut y_max) = (1.0f64, 0.0f64);
    for &(x, y) in points {
        x_max = x_max.max(x);
        y_max = y_max.max(y);
    }
    let root = canvas(path)?;
    let mut chart = frame(&root, figure)
        .build_cartesian_2d(0.0..x_max * 1.05, 0.0..(y_max * 1.15).max(1e-9))?;
    chart
        .configure_mesh()
        .x_desc(figure.x_label)
        .y_desc(figure.y_label)
        .label_style(("sans-serif", 15))
        .draw()?;
    for (i, series) in figure.series.iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(
                series.points.iter().copied(),
                c.stroke_width(2),
            ))?
            .label(series.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
        chart.draw_series(series.points.iter().map(|&p| Circle::new(p, 4, c.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn draw_bars(figure: &Figure, path: &Path) -> DrawResult {
    let values: Vec<(String, f64)> = figure
        .series
        .iter()
        .map(|s| (s.name.clone(), s.points.first().map_or(0.0, |p| p.1)))
        .collect();
    let y_max = values.iter().map(|v| v.1).fold(0.0f64, f64::max);
    let root = canvas(path)?;
    let mut chart = frame(&root, figure)
        .build_cartesian_2d(0.0..values.len() as f64, 0.0..(y_max * 1.2).max(1e-9))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .disable_x_axis()
        .y_desc(figure.y_label)
        .label_style(("sans-serif", 15))
        .draw()?;
    for (i, (name, value)) in values.iter().enumerate() {
        let x = i as f64;
        chart.draw_series(std::iter::once(Rectangle::new(
            [(x + 0.15, 0.0), (x + 0.85, *value)],
            color(i).filled(),
        )))?;
        // Two lines, so a long name stays over its own bar.
        for (line, text) in [(0.08, name.clone()), (0.03, format!("{value:.1}"))] {
            chart.draw_series(std::iter::once(Text::new(
                text,
                (x + 0.1, value + y_max * line),
                ("sans-serif", 13),
            )))?;
        }
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::bench::Plan;

    #[test]
    fn figures_become_png_files() {
        let Ok(font) = find_font() else {
            panic!("no font: the set-up installs fonts-dejavu-core");
        };
        let plan = Plan::new(true, None, 2);
        let mut report = Report::new(Path::new("m.gguf"), &plan, true, serde_json::json!({}));
        report.point("ttft", "corral", 0.0, 0.02);
        report.point("ttft", "corral", 2048.0, 0.025);
        report.bar("modes", "generation", "corral", 140.0);
        report.bar("modes", "generation", "llama-bench", 142.0);
        let dir = tempfile::tempdir().unwrap();
        let written = write_all(&report, dir.path(), &font).unwrap();
        assert_eq!(written.len(), 2);
        for path in written {
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
            assert!(bytes.len() > 5_000, "{} is nearly empty", path.display());
        }
    }
}
