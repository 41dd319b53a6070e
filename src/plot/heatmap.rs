//! Heatmaps of matrices, like seaborn's `sns.heatmap`: a digit's pixels, a layer's weights, a
//! confusion matrix. The layout is computed in `layout`; this file checks the input and draws
//! the cells, the axes and the colour bar.

use std::path::Path;

use plotters::style::text_anchor::{HPos, VPos};
use plotters::style::{BLACK, WHITE};

use super::color::{AXIS, colormap, luminance};
use super::render::{Area, DrawResult, MARGIN, TICK_LEN, filled_rect, line, plot_error, render};
use super::text::{DESC_SIZE, TICK_SIZE, TITLE, TextStyle, draw_text, ensure_font};
use crate::error::Result;

mod layout;

use layout::HeatmapLayout;

/// Largest accepted heatmap side, in cells.
const MAX_CELLS_PER_SIDE: usize = 4096;

/// How [`heatmap`] draws a matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct HeatmapOptions {
    /// Drawn centred above the grid.
    pub title: String,
    /// Values mapped to the two ends of the colour map; values outside are clamped.
    /// `lo == hi` is accepted (everything gets the middle colour).
    pub value_range: (f64, f64),
    /// Write each cell's value in the cell (integers when all values are whole, else 2 decimals).
    pub annotate: bool,
    /// One label per column (default: column indices).
    pub x_labels: Option<Vec<String>>,
    /// One label per row (default: row indices).
    pub y_labels: Option<Vec<String>>,
    /// Axis description under the x tick labels.
    pub x_desc: Option<String>,
    /// Axis description left of the y tick labels, reading bottom to top.
    pub y_desc: Option<String>,
    /// Draw a colour bar with ticks to the right of the grid.
    pub colorbar: bool,
}

impl HeatmapOptions {
    /// Options with a title and value range; no annotations, index labels, a colour bar.
    pub fn new(title: impl Into<String>, value_range: (f64, f64)) -> Self {
        HeatmapOptions {
            title: title.into(),
            value_range,
            annotate: false,
            x_labels: None,
            y_labels: None,
            x_desc: None,
            y_desc: None,
            colorbar: true,
        }
    }
}

/// Draws a matrix as a heatmap, like seaborn's `sns.heatmap`.
///
/// `values` is row-major, `rows` x `cols`; row 0 is at the top. Each cell gets
/// [`colormap`]`((v - lo) / (hi - lo))`. Axis ticks (cell indices, or the given labels) sit at
/// cell centres, thinned out when they would overlap. With `annotate`, each cell shows its value
/// in black or white, whichever contrasts with the cell (skipped when cells are too small for
/// legible text). The colour bar shows `value_range`.
/// The image is about 700x650 pixels for a 28x28 matrix (cells are square, 560 px for the longer
/// side, at most 64 px each). Non-finite values are rejected.
pub fn heatmap(
    path: &Path,
    values: &[f64],
    rows: usize,
    cols: usize,
    options: &HeatmapOptions,
) -> Result<()> {
    check_input(values, rows, cols, options).map_err(|reason| plot_error(path, reason))?;
    ensure_font().map_err(|reason| plot_error(path, reason))?;
    let layout =
        HeatmapLayout::new(rows, cols, options).map_err(|e| plot_error(path, e.to_string()))?;
    render(
        path,
        (layout.width, layout.height),
        |area| draw_heatmap(area, &layout, values, options),
        |_, _| {},
    )
}

/// Why `values` cannot be drawn as a `rows` x `cols` heatmap with `options`, if they cannot.
fn check_input(
    values: &[f64],
    rows: usize,
    cols: usize,
    options: &HeatmapOptions,
) -> std::result::Result<(), String> {
    if rows == 0 || cols == 0 {
        return Err(format!(
            "heatmap needs at least one row and one column, got {rows}x{cols}"
        ));
    }
    if rows > MAX_CELLS_PER_SIDE || cols > MAX_CELLS_PER_SIDE {
        return Err(format!(
            "heatmap of {rows}x{cols} cells is too large (at most {MAX_CELLS_PER_SIDE} per side)"
        ));
    }
    if values.len() != rows * cols {
        return Err(format!(
            "heatmap has {} values, but {rows} rows x {cols} columns need {}",
            values.len(),
            rows * cols
        ));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(format!(
            "heatmap value at row {}, column {} is {}",
            i / cols,
            i % cols,
            values[i]
        ));
    }
    let (lo, hi) = options.value_range;
    if !lo.is_finite() || !hi.is_finite() || lo > hi {
        return Err(format!(
            "heatmap value range ({lo}, {hi}) must be finite with low <= high"
        ));
    }
    for (name, labels, n) in [
        ("x", &options.x_labels, cols),
        ("y", &options.y_labels, rows),
    ] {
        if let Some(labels) = labels
            && labels.len() != n
        {
            return Err(format!(
                "{} {name} labels given for {n} {}",
                labels.len(),
                if name == "x" { "columns" } else { "rows" }
            ));
        }
    }
    Ok(())
}

/// Tick labels under the grid; rotated ones read bottom to top and end at their tick.
const X_LABEL: TextStyle = TextStyle::new(TICK_SIZE);
const X_LABEL_ROTATED: TextStyle = TextStyle::new(TICK_SIZE)
    .anchor(HPos::Right, VPos::Center)
    .rotated();
/// Tick labels left of the grid, ending at their tick.
const Y_LABEL: TextStyle = TextStyle::new(TICK_SIZE).anchor(HPos::Right, VPos::Center);
const X_DESC: TextStyle = TextStyle::new(DESC_SIZE);
/// Rotated text: its "bottom" (baseline) faces the grid.
const Y_DESC: TextStyle = TextStyle::new(DESC_SIZE)
    .anchor(HPos::Center, VPos::Bottom)
    .rotated();

fn draw_heatmap(
    area: &Area,
    l: &HeatmapLayout,
    values: &[f64],
    options: &HeatmapOptions,
) -> DrawResult {
    draw_text(area, &options.title, (l.title_x, MARGIN), &TITLE)?;
    draw_cells(area, l, values, options)?;
    draw_x_ticks(area, l)?;
    draw_y_ticks(area, l)?;
    draw_axis_descriptions(area, l, options)?;
    if let Some(colorbar) = &l.colorbar {
        let (gx, gy) = l.grid;
        colorbar.draw(area, (gx + l.grid_size().0, gy))?;
    }
    Ok(())
}

/// Formats every cell value for annotations: whole numbers without decimals, others with two.
fn annotation_texts(values: &[f64]) -> Vec<String> {
    let whole = values.iter().all(|v| v.fract() == 0.0 && v.abs() < 1e12);
    values
        .iter()
        .map(|&v| {
            let v = v + 0.0; // turns -0.0 into 0.0
            if whole {
                format!("{v:.0}")
            } else {
                let s = format!("{v:.2}");
                if s == "-0.00" { "0.00".to_string() } else { s }
            }
        })
        .collect()
}

/// Font size for annotations in cells of side `cell` that fits the longest of `texts`.
fn annotation_size(texts: &[String], cell: i32) -> f64 {
    let longest = texts
        .iter()
        .map(|s| s.chars().count())
        .max()
        .unwrap_or(1)
        .max(1);
    // DejaVu digits are 0.547 of the font size wide; keep about a quarter of the cell free.
    (cell as f64 * 0.72 / (0.547 * longest as f64))
        .min(cell as f64 * 0.36)
        .min(18.0)
}

/// Fills each cell with its colour and, with `annotate`, writes its value in it.
fn draw_cells(
    area: &Area,
    l: &HeatmapLayout,
    values: &[f64],
    options: &HeatmapOptions,
) -> DrawResult {
    let (gx, gy) = l.grid;
    let c = l.cell;
    let (lo, hi) = options.value_range;
    let normalise = |v: f64| if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
    let texts = if options.annotate {
        annotation_texts(values)
    } else {
        Vec::new()
    };
    let annotation = if options.annotate {
        annotation_size(&texts, c)
    } else {
        0.0
    };
    let annotation = TextStyle::new(annotation).anchor(HPos::Center, VPos::Center);
    for r in 0..l.rows {
        for col in 0..l.cols {
            let v = values[r * l.cols + col];
            let color = colormap(normalise(v));
            let (x0, y0) = (gx + col as i32 * c, gy + r as i32 * c);
            filled_rect(area, (x0, y0), (x0 + c, y0 + c), color)?;
            if options.annotate && annotation.size >= 6.0 {
                let text_color = if luminance(color) > 0.408 {
                    BLACK
                } else {
                    WHITE
                };
                draw_text(
                    area,
                    &texts[r * l.cols + col],
                    (x0 + c / 2, y0 + c / 2),
                    &annotation.color(text_color),
                )?;
            }
        }
    }
    Ok(())
}

/// X ticks and labels, centred on columns.
fn draw_x_ticks(area: &Area, l: &HeatmapLayout) -> DrawResult {
    let (gx, gy) = l.grid;
    let (c, grid_h) = (l.cell, l.grid_size().1);
    let style = if l.x_rotated {
        &X_LABEL_ROTATED
    } else {
        &X_LABEL
    };
    for col in (0..l.cols).step_by(l.x_step) {
        let x = gx + col as i32 * c + c / 2;
        line(area, (x, gy + grid_h), (x, gy + grid_h + TICK_LEN), AXIS)?;
        let y = gy + grid_h + TICK_LEN + 6;
        draw_text(area, &l.x_labels[col], (x, y), style)?;
    }
    Ok(())
}

/// Y ticks and labels, centred on rows.
fn draw_y_ticks(area: &Area, l: &HeatmapLayout) -> DrawResult {
    let (gx, gy) = l.grid;
    let c = l.cell;
    for r in (0..l.rows).step_by(l.y_step) {
        let y = gy + r as i32 * c + c / 2;
        line(area, (gx - TICK_LEN, y), (gx, y), AXIS)?;
        draw_text(area, &l.y_labels[r], (gx - TICK_LEN - 6, y), &Y_LABEL)?;
    }
    Ok(())
}

/// The axis descriptions: under the x tick labels, and left of the y tick labels.
fn draw_axis_descriptions(area: &Area, l: &HeatmapLayout, options: &HeatmapOptions) -> DrawResult {
    let (gx, gy) = l.grid;
    let (grid_w, grid_h) = l.grid_size();
    if let Some(desc) = &options.x_desc {
        let y = gy + grid_h + TICK_LEN + 6 + l.x_label_extent + 12;
        draw_text(area, desc, (gx + grid_w / 2, y), &X_DESC)?;
    }
    if let Some(desc) = &options.y_desc {
        let x = gx - TICK_LEN - 6 - l.y_label_width - 10;
        draw_text(area, desc, (x, gy + grid_h / 2), &Y_DESC)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::test_util::{assert_only_file, assert_plot_error, decode, pixel};

    #[test]
    fn heatmap_draws_cells_with_row_zero_at_the_top() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("digit.png");
        // A digit-like 28x28 image: a bright ring on black, with value 0 at the top-left corner
        // and 255 at the bottom-right one.
        let mut values = vec![0.0; 28 * 28];
        for r in 0..28 {
            for c in 0..28 {
                let d =
                    (((c as f64 - 14.0) / 6.0).powi(2) + ((r as f64 - 14.0) / 9.0).powi(2)).sqrt();
                values[r * 28 + c] =
                    ((1.0 - (d - 1.0).abs() * 4.0).clamp(0.0, 1.0) * 255.0).round();
            }
        }
        values[28 * 28 - 1] = 255.0;
        let options = HeatmapOptions::new("digit", (0.0, 255.0));
        heatmap(&path, &values, 28, 28, &options).unwrap();
        assert_only_file(dir.path(), "digit.png");

        let img = decode(&path);
        let layout = HeatmapLayout::new(28, 28, &options).unwrap();
        assert_eq!(img.dimensions(), (layout.width, layout.height));
        assert!((600..=800).contains(&img.width()) && (550..=720).contains(&img.height()));
        let (gx, gy) = layout.grid;
        let centre = |r: i32, c: i32| {
            (
                gx + c * layout.cell + layout.cell / 2,
                gy + r * layout.cell + layout.cell / 2,
            )
        };
        let (x, y) = centre(0, 0);
        assert_eq!(pixel(&img, x, y), colormap(0.0));
        let (x, y) = centre(27, 27);
        assert_eq!(pixel(&img, x, y), colormap(1.0));
        // Row 5 crosses the ring at its top: a bright cell in the middle column.
        let (x, y) = centre(5, 14);
        assert_eq!(pixel(&img, x, y), colormap(values[5 * 28 + 14] / 255.0));
        assert_ne!(pixel(&img, x, y), colormap(0.0));
    }

    #[test]
    fn annotated_heatmap_writes_contrasting_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("confusion.png");
        let mut counts = vec![3.0; 100];
        for i in 0..10 {
            counts[i * 11] = 980.0;
        }
        let mut options = HeatmapOptions::new("Confusion matrix", (0.0, 980.0));
        options.annotate = true;
        options.x_desc = Some("Predicted label".into());
        options.y_desc = Some("True label".into());
        heatmap(&path, &counts, 10, 10, &options).unwrap();
        let img = decode(&path);
        let layout = HeatmapLayout::new(10, 10, &options).unwrap();
        assert_eq!(img.dimensions(), (layout.width, layout.height));
        assert!(
            layout.cell >= 40,
            "cells too small to read: {}",
            layout.cell
        );
        let (gx, gy, c) = (layout.grid.0, layout.grid.1, layout.cell);
        let cell_pixels = |r: i32, col: i32| {
            let mut px = Vec::new();
            for y in gy + r * c + 2..gy + (r + 1) * c - 2 {
                for x in gx + col * c + 2..gx + (col + 1) * c - 2 {
                    px.push(pixel(&img, x, y));
                }
            }
            px
        };
        // Dark off-diagonal cell: its colour plus white text.
        let dark = cell_pixels(0, 1);
        assert!(dark.contains(&colormap(3.0 / 980.0)));
        assert!(dark.contains(&WHITE), "no white digits on a dark cell");
        // Bright diagonal cell: its colour plus black text.
        let bright = cell_pixels(0, 0);
        assert!(bright.contains(&colormap(1.0)));
        assert!(bright.contains(&BLACK), "no black digits on a bright cell");
    }

    #[test]
    fn heatmap_rejects_bad_input_without_writing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.png");
        let options = HeatmapOptions::new("bad", (0.0, 1.0));
        assert_plot_error(heatmap(&path, &[0.0; 5], 2, 3, &options), &path, "6");
        assert_plot_error(
            heatmap(&path, &[], 0, 3, &options),
            &path,
            "at least one row",
        );
        assert_plot_error(
            heatmap(&path, &[0.0, f64::NAN], 1, 2, &options),
            &path,
            "row 0, column 1",
        );
        let backwards = HeatmapOptions::new("bad", (1.0, 0.0));
        assert_plot_error(heatmap(&path, &[0.0; 4], 2, 2, &backwards), &path, "range");
        let mut labelled = options.clone();
        labelled.x_labels = Some(vec!["a".into()]);
        assert_plot_error(
            heatmap(&path, &[0.0; 4], 2, 2, &labelled),
            &path,
            "x labels",
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn heatmap_handles_labels_without_colorbar_and_a_flat_range() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labels.png");
        let mut options = HeatmapOptions::new("flat", (2.0, 2.0));
        options.colorbar = false;
        options.x_labels = Some(vec!["airplane".into(), "automobile".into()]);
        options.y_labels = Some(vec!["a".into()]);
        heatmap(&path, &[2.0, 2.0], 1, 2, &options).unwrap();
        let layout = HeatmapLayout::new(1, 2, &options).unwrap();
        assert!(layout.x_rotated);
        assert_eq!(decode(&path).dimensions(), (layout.width, layout.height));
    }
}
