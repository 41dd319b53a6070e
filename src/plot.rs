//! All PNG drawing: heatmaps (weights, confusion matrices), training-history line charts,
//! image grids, plus a plain-text terminal preview of a digit.
//!
//! Everything is rendered with plotters into an in-memory RGB buffer, encoded as PNG with the
//! `image` crate and written with [`crate::fsutil::write_atomically`], so a failed drawing never
//! leaves a half-written file. Text uses the bundled DejaVu Sans (no system fonts are needed).

pub mod picture;

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, FontTransform, RGBColor};

use crate::error::{Error, Result};

/// The font family every text element uses; registered from the bundled TTF.
const FAMILY: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static FONT_REGISTERED: OnceLock<std::result::Result<(), String>> = OnceLock::new();

/// Largest accepted heatmap side, in cells, and image side, in pixels.
const MAX_CELLS_PER_SIDE: usize = 4096;
const MAX_IMAGE_SIDE: u32 = 8192;

const TEXT: RGBColor = RGBColor(32, 32, 32);
const AXIS: RGBColor = RGBColor(64, 64, 64);

/// Errors raised while drawing; converted to [`Error::Plot`] with the target path.
type DrawError = Box<dyn std::error::Error + Send + Sync>;
type DrawResult<T = ()> = std::result::Result<T, DrawError>;
type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

fn plot_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Plot {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn ensure_font() -> std::result::Result<(), String> {
    FONT_REGISTERED
        .get_or_init(|| {
            plotters::style::register_font(FAMILY, FontStyle::Normal, FONT_BYTES)
                .map_err(|_| "the bundled font DejaVuSans.ttf could not be loaded".to_string())
        })
        .clone()
}

// ---------------------------------------------------------------------------------------------
// Colour map
// ---------------------------------------------------------------------------------------------

/// Matplotlib's viridis sampled at nine evenly spaced points.
const VIRIDIS: [(u8, u8, u8); 9] = [
    (68, 1, 84),
    (72, 40, 120),
    (62, 73, 137),
    (49, 104, 142),
    (38, 130, 142),
    (31, 158, 137),
    (53, 183, 121),
    (110, 206, 88),
    (253, 231, 37),
];

/// A perceptual colour map (viridis): dark purple at 0, teal at 0.5, yellow at 1.
///
/// `t` is clamped to `[0, 1]`; NaN maps to 0. Interpolates linearly between nine control points.
pub fn colormap(t: f64) -> RGBColor {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    let scaled = t * (VIRIDIS.len() - 1) as f64;
    let i = (scaled.floor() as usize).min(VIRIDIS.len() - 2);
    let f = scaled - i as f64;
    let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
    let lerp = |x: u8, y: u8| (x as f64 + (y as f64 - x as f64) * f).round() as u8;
    RGBColor(lerp(a.0, b.0), lerp(a.1, b.1), lerp(a.2, b.2))
}

/// Relative luminance (0 dark .. 1 bright) of an sRGB colour, as WCAG defines it.
fn luminance(c: RGBColor) -> f64 {
    let lin = |v: u8| {
        let v = v as f64 / 255.0;
        if v <= 0.03928 {
            v / 12.92
        } else {
            ((v + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * lin(c.0) + 0.7152 * lin(c.1) + 0.0722 * lin(c.2)
}

// ---------------------------------------------------------------------------------------------
// Rendering plumbing
// ---------------------------------------------------------------------------------------------

/// Draws into a fresh white `width` x `height` RGB canvas, lets `post` edit the raw pixels
/// afterwards, then encodes a PNG and writes it atomically to `path`.
fn render(
    path: &Path,
    (width, height): (u32, u32),
    draw: impl FnOnce(&Area) -> DrawResult,
    post: impl FnOnce(&mut [u8], u32),
) -> Result<()> {
    ensure_font().map_err(|reason| plot_error(path, reason))?;
    if width == 0 || height == 0 || width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE {
        return Err(plot_error(
            path,
            format!("image size {width}x{height} is outside 1..={MAX_IMAGE_SIDE} pixels per side"),
        ));
    }
    let mut buffer = vec![255u8; width as usize * height as usize * 3];
    {
        let backend = BitMapBackend::with_buffer_and_format(&mut buffer, (width, height))
            .map_err(|e| plot_error(path, format!("cannot create the drawing surface: {e}")))?;
        let root = backend.into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| plot_error(path, e.to_string()))?;
        draw(&root).map_err(|e| plot_error(path, e.to_string()))?;
        root.present()
            .map_err(|e| plot_error(path, e.to_string()))?;
    }
    post(&mut buffer, width);
    let mut png = Vec::new();
    {
        use image::ImageEncoder;
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(&buffer, width, height, image::ExtendedColorType::Rgb8)
            .map_err(|e| plot_error(path, format!("PNG encoding failed: {e}")))?;
    }
    crate::fsutil::write_atomically(path, &png)
}

fn font(size: f64) -> FontDesc<'static> {
    FontDesc::new(FontFamily::Name(FAMILY), size, FontStyle::Normal)
}

/// Width in pixels of `text` drawn at `size`.
fn text_width(text: &str, size: f64) -> DrawResult<i32> {
    let (w, _) = font(size).box_size(text).map_err(|e| format!("{e:?}"))?;
    Ok(w as i32)
}

/// The widest of `texts` drawn at `size`, in pixels (0 for none).
fn max_text_width<'a>(texts: impl IntoIterator<Item = &'a str>, size: f64) -> DrawResult<i32> {
    let mut widest = 0;
    for text in texts {
        widest = widest.max(text_width(text, size)?);
    }
    Ok(widest)
}

/// Height of capitals and digits as a fraction of the font size with ab_glyph's scaling
/// (the size is the ascent-to-descent height; DejaVu's cap height is 0.729 of 1.164 em).
const CAP: f64 = 0.626;

/// How far above its intended centre plotters draws vertically centred ab_glyph text, in
/// pixels: it centres a box of height `size / 1.24` whose top is half a size above the baseline.
fn plotters_bias(size: f64) -> i32 {
    ((1.0 / (2.0 * 1.24) + CAP / 2.0 - 0.5) * size).round() as i32
}

/// Draws `text` with our own vertical anchoring, which corrects for the way plotters positions
/// ab_glyph text: `Top` puts the top of capitals/digits at `y`, `Center` centres capitals/digits
/// on `y`, `Bottom` puts the baseline on `y`. `rotated` turns the text to read bottom to top,
/// with `h` and `v` then referring to the text's own axes.
#[allow(clippy::too_many_arguments)]
fn draw_text(
    area: &Area,
    text: &str,
    (x, y): (i32, i32),
    size: f64,
    color: RGBColor,
    h: HPos,
    v: VPos,
    rotated: bool,
) -> DrawResult {
    // With plotters' `Top` anchor, the baseline lands at +0.5 size and cap tops at -0.126 size.
    let shift = match v {
        VPos::Top => 0.5 - CAP,
        VPos::Center => -(0.5 - CAP / 2.0),
        VPos::Bottom => -0.5,
    } * size;
    let shift = shift.round() as i32;
    let mut desc = font(size);
    let pos = if rotated {
        desc = desc.transform(FontTransform::Rotate270);
        (x + shift, y)
    } else {
        (x, y + shift)
    };
    let style = TextStyle::from(desc)
        .color(&color)
        .pos(Pos::new(h, VPos::Top));
    area.draw(&Text::new(text.to_string(), pos, style))?;
    Ok(())
}

fn filled_rect(area: &Area, (x0, y0): (i32, i32), (x1, y1): (i32, i32), c: RGBColor) -> DrawResult {
    area.draw(&Rectangle::new([(x0, y0), (x1, y1)], c.filled()))?;
    Ok(())
}

fn line(area: &Area, from: (i32, i32), to: (i32, i32), c: RGBColor) -> DrawResult {
    area.draw(&PathElement::new(vec![from, to], c))?;
    Ok(())
}

/// About `target` round tick values (steps of 1, 2 or 5 times a power of ten) within `[lo, hi]`,
/// with the step.
fn nice_ticks(lo: f64, hi: f64, target: usize) -> (Vec<f64>, f64) {
    let span = hi - lo;
    if span.is_nan() || span <= 0.0 || span.is_infinite() {
        return (vec![lo], 1.0);
    }
    let raw = span / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * mag);
    let first = (lo / step - 1e-9).ceil();
    let mut ticks = Vec::new();
    let mut k = first;
    while k * step <= hi + step * 1e-9 && ticks.len() < 1000 {
        let v = k * step;
        ticks.push(if v.abs() < step * 1e-9 { 0.0 } else { v });
        k += 1.0;
    }
    (ticks, step)
}

/// Formats a tick value with just enough decimals for `step`.
fn format_tick(v: f64, step: f64) -> String {
    let decimals = if step > 0.0 && step.is_finite() {
        (-step.log10().floor()).max(0.0) as usize
    } else {
        2
    };
    format!("{v:.decimals$}")
}

// ---------------------------------------------------------------------------------------------
// Heatmap
// ---------------------------------------------------------------------------------------------

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

/// Smallest step in 1, 2, 5, 10, 20, 50, ... with `step * cell >= needed`.
fn label_step(cell: i32, needed: i32) -> usize {
    let mut base = 1usize;
    loop {
        for m in [1, 2, 5] {
            let step = base * m;
            if step as i64 * cell as i64 >= needed as i64 || step >= 1_000_000 {
                return step;
            }
        }
        base *= 10;
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
    if rows == 0 || cols == 0 {
        return Err(plot_error(
            path,
            format!("heatmap needs at least one row and one column, got {rows}x{cols}"),
        ));
    }
    if rows > MAX_CELLS_PER_SIDE || cols > MAX_CELLS_PER_SIDE {
        return Err(plot_error(
            path,
            format!(
                "heatmap of {rows}x{cols} cells is too large (at most {MAX_CELLS_PER_SIDE} per side)"
            ),
        ));
    }
    if values.len() != rows * cols {
        return Err(plot_error(
            path,
            format!(
                "heatmap has {} values, but {rows} rows x {cols} columns need {}",
                values.len(),
                rows * cols
            ),
        ));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(plot_error(
            path,
            format!(
                "heatmap value at row {}, column {} is {}",
                i / cols,
                i % cols,
                values[i]
            ),
        ));
    }
    let (lo, hi) = options.value_range;
    if !lo.is_finite() || !hi.is_finite() || lo > hi {
        return Err(plot_error(
            path,
            format!("heatmap value range ({lo}, {hi}) must be finite with low <= high"),
        ));
    }
    for (name, labels, n) in [
        ("x", &options.x_labels, cols),
        ("y", &options.y_labels, rows),
    ] {
        if let Some(labels) = labels
            && labels.len() != n
        {
            return Err(plot_error(
                path,
                format!(
                    "{} {name} labels given for {n} {}",
                    labels.len(),
                    if name == "x" { "columns" } else { "rows" }
                ),
            ));
        }
    }
    ensure_font().map_err(|reason| plot_error(path, reason))?;
    let layout =
        HeatmapLayout::new(rows, cols, options).map_err(|e| plot_error(path, e.to_string()))?;
    render(
        path,
        (layout.width, layout.height),
        |area| draw_heatmap(area, &layout, values, rows, cols, options),
        |_, _| {},
    )
}

const TITLE_SIZE: f64 = 22.0;
const DESC_SIZE: f64 = 16.0;
const TICK_SIZE: f64 = 14.0;
const TICK_LEN: i32 = 5;
const MARGIN: i32 = 14;

/// Pixel geometry of a heatmap, computed before drawing so the image size fits its contents.
struct HeatmapLayout {
    width: u32,
    height: u32,
    cell: i32,
    grid: (i32, i32),
    x_labels: Vec<String>,
    y_labels: Vec<String>,
    x_step: usize,
    y_step: usize,
    x_rotated: bool,
    x_label_extent: i32,
    y_label_width: i32,
    colorbar_x: i32,
    colorbar_h: i32,
    colorbar_ticks: Vec<(f64, String)>,
    title_x: i32,
}

/// Side of the cell grid for its longer dimension, in pixels (before rounding to whole cells).
const GRID_TARGET: usize = 560;
const COLORBAR_GAP: i32 = 24;
const COLORBAR_WIDTH: i32 = 22;

impl HeatmapLayout {
    fn new(rows: usize, cols: usize, options: &HeatmapOptions) -> DrawResult<Self> {
        let cell = (GRID_TARGET / rows.max(cols)).clamp(1, 64) as i32;
        let (grid_w, grid_h) = (cell * cols as i32, cell * rows as i32);
        let x_labels = options
            .x_labels
            .clone()
            .unwrap_or_else(|| (0..cols).map(|i| i.to_string()).collect());
        let y_labels = options
            .y_labels
            .clone()
            .unwrap_or_else(|| (0..rows).map(|i| i.to_string()).collect());
        let x_max = max_text_width(x_labels.iter().map(String::as_str), TICK_SIZE)?;
        let y_max = max_text_width(y_labels.iter().map(String::as_str), TICK_SIZE)?;
        let label_h = (TICK_SIZE * CAP).ceil() as i32;
        // Rotate custom x labels that are wider than a cell; index labels just get thinned out.
        let x_rotated = options.x_labels.is_some() && x_max + 6 > cell;
        let x_step = if x_rotated {
            label_step(cell, label_h + 6)
        } else {
            label_step(cell, x_max + 8)
        };
        let y_step = label_step(cell, label_h + 12);
        let x_label_extent = if x_rotated { x_max } else { label_h };

        let title_w = text_width(&options.title, TITLE_SIZE)?;
        let desc_h = (DESC_SIZE * CAP).ceil() as i32 + 4; // descenders
        let top = MARGIN + (TITLE_SIZE * CAP).ceil() as i32 + 6 + 18;
        let left =
            MARGIN + options.y_desc.as_ref().map_or(0, |_| desc_h + 10) + y_max + 6 + TICK_LEN;
        let bottom = TICK_LEN
            + 6
            + x_label_extent
            + 4
            + options.x_desc.as_ref().map_or(0, |_| desc_h + 12)
            + MARGIN;

        let (lo, hi) = options.value_range;
        let (colorbar_ticks, right, colorbar_h) = if options.colorbar {
            let target = (grid_h / 60).clamp(2, 6) as usize;
            let (ticks, step) = if hi > lo {
                nice_ticks(lo, hi, target)
            } else {
                (vec![lo], 1.0)
            };
            let ticks: Vec<(f64, String)> = ticks
                .into_iter()
                .map(|v| (v, format_tick(v, step)))
                .collect();
            let label_w = max_text_width(ticks.iter().map(|(_, s)| s.as_str()), TICK_SIZE)?;
            let right = COLORBAR_GAP + COLORBAR_WIDTH + TICK_LEN + 6 + label_w + MARGIN + 4;
            (ticks, right, grid_h)
        } else {
            (Vec::new(), MARGIN + 6, 0)
        };

        let mut width = left + grid_w + right;
        if width < title_w + 2 * MARGIN {
            width = title_w + 2 * MARGIN;
        }
        let height = top + grid_h.max(colorbar_h) + bottom;
        let half = title_w / 2;
        let title_x =
            (left + grid_w / 2).clamp(MARGIN + half, (width - MARGIN - half).max(MARGIN + half));
        Ok(HeatmapLayout {
            width: width as u32,
            height: height as u32,
            cell,
            grid: (left, top),
            x_labels,
            y_labels,
            x_step,
            y_step,
            x_rotated,
            x_label_extent,
            y_label_width: y_max,
            colorbar_x: left + grid_w + COLORBAR_GAP,
            colorbar_h,
            colorbar_ticks,
            title_x,
        })
    }
}

fn draw_heatmap(
    area: &Area,
    l: &HeatmapLayout,
    values: &[f64],
    rows: usize,
    cols: usize,
    options: &HeatmapOptions,
) -> DrawResult {
    let (gx, gy) = l.grid;
    let c = l.cell;
    let (grid_w, grid_h) = (c * cols as i32, c * rows as i32);
    let (lo, hi) = options.value_range;
    let normalise = |v: f64| if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };

    // Title.
    draw_text(
        area,
        &options.title,
        (l.title_x, MARGIN),
        TITLE_SIZE,
        TEXT,
        HPos::Center,
        VPos::Top,
        false,
    )?;

    // Cells.
    let texts = if options.annotate {
        annotation_texts(values)
    } else {
        Vec::new()
    };
    let annotation_size = if options.annotate {
        let longest = texts
            .iter()
            .map(|s| s.chars().count())
            .max()
            .unwrap_or(1)
            .max(1);
        // DejaVu digits are 0.547 of the font size wide; keep about a quarter of the cell free.
        (c as f64 * 0.72 / (0.547 * longest as f64))
            .min(c as f64 * 0.36)
            .min(18.0)
    } else {
        0.0
    };
    for r in 0..rows {
        for col in 0..cols {
            let v = values[r * cols + col];
            let color = colormap(normalise(v));
            let (x0, y0) = (gx + col as i32 * c, gy + r as i32 * c);
            filled_rect(area, (x0, y0), (x0 + c, y0 + c), color)?;
            if options.annotate && annotation_size >= 6.0 {
                let text_color = if luminance(color) > 0.408 {
                    BLACK
                } else {
                    WHITE
                };
                draw_text(
                    area,
                    &texts[r * cols + col],
                    (x0 + c / 2, y0 + c / 2),
                    annotation_size,
                    text_color,
                    HPos::Center,
                    VPos::Center,
                    false,
                )?;
            }
        }
    }

    // X ticks and labels, centred on columns.
    for col in (0..cols).step_by(l.x_step) {
        let x = gx + col as i32 * c + c / 2;
        line(area, (x, gy + grid_h), (x, gy + grid_h + TICK_LEN), AXIS)?;
        let y = gy + grid_h + TICK_LEN + 6;
        if l.x_rotated {
            draw_text(
                area,
                &l.x_labels[col],
                (x, y),
                TICK_SIZE,
                TEXT,
                HPos::Right,
                VPos::Center,
                true,
            )?;
        } else {
            draw_text(
                area,
                &l.x_labels[col],
                (x, y),
                TICK_SIZE,
                TEXT,
                HPos::Center,
                VPos::Top,
                false,
            )?;
        }
    }
    // Y ticks and labels, centred on rows.
    for r in (0..rows).step_by(l.y_step) {
        let y = gy + r as i32 * c + c / 2;
        line(area, (gx - TICK_LEN, y), (gx, y), AXIS)?;
        draw_text(
            area,
            &l.y_labels[r],
            (gx - TICK_LEN - 6, y),
            TICK_SIZE,
            TEXT,
            HPos::Right,
            VPos::Center,
            false,
        )?;
    }
    // Axis descriptions.
    if let Some(desc) = &options.x_desc {
        let y = gy + grid_h + TICK_LEN + 6 + l.x_label_extent + 12;
        draw_text(
            area,
            desc,
            (gx + grid_w / 2, y),
            DESC_SIZE,
            TEXT,
            HPos::Center,
            VPos::Top,
            false,
        )?;
    }
    if let Some(desc) = &options.y_desc {
        let x = gx - TICK_LEN - 6 - l.y_label_width - 10;
        // Rotated text: its "bottom" (baseline) faces the grid.
        draw_text(
            area,
            desc,
            (x, gy + grid_h / 2),
            DESC_SIZE,
            TEXT,
            HPos::Center,
            VPos::Bottom,
            true,
        )?;
    }

    // Colour bar: a vertical gradient from hi (top) to lo (bottom), ticks on the right.
    if options.colorbar {
        let (bx, bh) = (l.colorbar_x, l.colorbar_h);
        for py in 0..bh {
            let t = if bh > 1 {
                1.0 - py as f64 / (bh - 1) as f64
            } else {
                0.5
            };
            let t = if hi > lo { t } else { 0.5 };
            filled_rect(
                area,
                (bx, gy + py),
                (bx + COLORBAR_WIDTH, gy + py + 1),
                colormap(t),
            )?;
        }
        area.draw(&Rectangle::new(
            [(bx, gy), (bx + COLORBAR_WIDTH, gy + bh)],
            ShapeStyle::from(&AXIS).stroke_width(1),
        ))?;
        for (v, label) in &l.colorbar_ticks {
            let t = if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
            let y = gy + ((1.0 - t) * (bh - 1) as f64).round() as i32;
            let x = bx + COLORBAR_WIDTH;
            line(area, (x, y), (x + TICK_LEN, y), AXIS)?;
            draw_text(
                area,
                label,
                (x + TICK_LEN + 6, y),
                TICK_SIZE,
                TEXT,
                HPos::Left,
                VPos::Center,
                false,
            )?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Line chart
// ---------------------------------------------------------------------------------------------

/// One named line of a [`line_chart`].
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Matplotlib's tab10 colours, cycled through for series.
const TAB10: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// `[min, max]` widened by 5% on each side; a zero-width range is widened around its value.
fn padded_range(min: f64, max: f64) -> (f64, f64) {
    let span = max - min;
    let pad = if span > 0.0 {
        span * 0.05
    } else if min != 0.0 {
        min.abs() * 0.1
    } else {
        0.5
    };
    (min - pad, max + pad)
}

/// Trims a tick value to at most 4 decimals without trailing zeros ("3", "0.25").
fn trim_number(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

/// Draws a line chart like matplotlib's `plt.plot` of a Keras history: each series a coloured
/// line with point markers, a legend, the title and axis descriptions. 800x500 pixels.
///
/// Axis ranges cover all points with 5% margins; a single point or a constant series gets a
/// range around its value. Non-finite points (a diverged loss) are skipped; it is an error when
/// there are no series, a series has no points, or no point at all is finite.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
) -> Result<()> {
    if series.is_empty() {
        return Err(plot_error(path, "line chart needs at least one series"));
    }
    if let Some(s) = series.iter().find(|s| s.points.is_empty()) {
        return Err(plot_error(
            path,
            format!("series \"{}\" has no points", s.name),
        ));
    }
    let finite: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| {
            s.points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect()
        })
        .collect();
    let all = || finite.iter().flatten();
    if all().next().is_none() {
        return Err(plot_error(path, "line chart has no finite points"));
    }
    let fold = |f: fn(&(f64, f64)) -> f64| {
        all()
            .map(f)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            })
    };
    let (x_min, x_max) = fold(|p| p.0);
    let (y_min, y_max) = fold(|p| p.1);
    let x_range = padded_range(x_min, x_max);
    let y_range = padded_range(y_min, y_max);
    let x_whole = all().all(|p| p.0.fract() == 0.0);

    // Put the legend where the data is not: look at the right third of the x range.
    let cut = x_min + (x_max - x_min) * 2.0 / 3.0;
    let mid = (y_range.0 + y_range.1) / 2.0;
    let (high, low) =
        all().filter(|p| p.0 >= cut).fold(
            (0, 0),
            |(h, l), p| if p.1 >= mid { (h + 1, l) } else { (h, l + 1) },
        );
    let legend_pos = if high > low {
        SeriesLabelPosition::LowerRight
    } else {
        SeriesLabelPosition::UpperRight
    };

    render(
        path,
        (800, 500),
        |area| {
            let area = area.margin(10, 10, 10, 20);
            let mut chart = ChartBuilder::on(&area)
                .caption(title, font(TITLE_SIZE).color(&TEXT))
                .margin(8)
                .x_label_area_size(48)
                .y_label_area_size(64)
                .build_cartesian_2d(x_range.0..x_range.1, y_range.0..y_range.1)?;
            let x_format = |v: &f64| {
                if x_whole && v.fract() != 0.0 {
                    String::new() // no "1.5" epochs
                } else {
                    trim_number(*v)
                }
            };
            let y_format = |v: &f64| trim_number(*v);
            chart
                .configure_mesh()
                .x_desc(x_desc)
                .y_desc(y_desc)
                .x_label_formatter(&x_format)
                .y_label_formatter(&y_format)
                .x_labels(if x_whole {
                    ((x_max - x_min) as usize + 1).clamp(2, 12)
                } else {
                    10
                })
                .y_labels(8)
                .label_style(font(TICK_SIZE).color(&TEXT))
                .axis_desc_style(font(DESC_SIZE).color(&TEXT))
                .y_label_offset(plotters_bias(TICK_SIZE))
                .bold_line_style(RGBColor(225, 225, 225))
                .max_light_lines(0)
                .axis_style(AXIS)
                .draw()?;
            for (i, (s, points)) in series.iter().zip(&finite).enumerate() {
                let color = TAB10[i % TAB10.len()];
                chart
                    .draw_series(LineSeries::new(
                        points.iter().copied(),
                        color.stroke_width(2),
                    ))?
                    .label(s.name.clone())
                    .legend(move |(x, y)| {
                        // Plotters centres the marker on the text box, not on the glyphs.
                        EmptyElement::at((x, y - plotters_bias(TICK_SIZE)))
                            + PathElement::new(vec![(0, 0), (24, 0)], color.stroke_width(2))
                            + Circle::new((12, 0), 3, color.filled())
                    });
                chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
            }
            chart
                .configure_series_labels()
                .position(legend_pos)
                .margin(12)
                .legend_area_size(32)
                .label_font(font(TICK_SIZE).color(&TEXT))
                .background_style(WHITE.mix(0.9))
                .border_style(RGBColor(200, 200, 200))
                .draw()?;
            Ok(())
        },
        |_, _| {},
    )
}

// ---------------------------------------------------------------------------------------------
// Image grid
// ---------------------------------------------------------------------------------------------

/// One grayscale image of an [`image_grid`]: `rows` x `cols` bytes, row-major, 0 = black
/// background and 255 = white ink, as MNIST stores them.
#[derive(Debug, Clone, PartialEq)]
pub struct GridImage {
    pub pixels: Vec<u8>,
    pub rows: usize,
    pub cols: usize,
    pub caption: String,
}

const CAPTION_SIZE: f64 = 14.0;

/// Draws grayscale images in a grid, `columns` per row, each scaled up (about 112 px for a
/// 28x28 digit, nearest neighbour) with its caption below, under a title.
///
/// Images are shown as dark ink on white (MNIST's white-on-black inverted), each inside a thin
/// grey frame.
pub fn image_grid(path: &Path, title: &str, images: &[GridImage], columns: usize) -> Result<()> {
    if images.is_empty() {
        return Err(plot_error(path, "image grid needs at least one image"));
    }
    if columns == 0 {
        return Err(plot_error(path, "image grid needs at least one column"));
    }
    for (i, img) in images.iter().enumerate() {
        if img.rows == 0 || img.cols == 0 || img.rows > 1024 || img.cols > 1024 {
            return Err(plot_error(
                path,
                format!(
                    "image {i} is {}x{} pixels; each side must be 1..=1024",
                    img.rows, img.cols
                ),
            ));
        }
        if img.pixels.len() != img.rows * img.cols {
            return Err(plot_error(
                path,
                format!(
                    "image {i} has {} pixels, but {}x{} needs {}",
                    img.pixels.len(),
                    img.rows,
                    img.cols,
                    img.rows * img.cols
                ),
            ));
        }
    }
    ensure_font().map_err(|reason| plot_error(path, reason))?;
    let columns = columns.min(images.len());
    let grid_rows = images.len().div_ceil(columns);
    let max_side = images.iter().map(|i| i.rows.max(i.cols)).max().unwrap_or(1);
    let scale = (112 / max_side).max(1) as i32;
    let tile_w = images.iter().map(|i| i.cols).max().unwrap_or(1) as i32 * scale;
    let tile_h = images.iter().map(|i| i.rows).max().unwrap_or(1) as i32 * scale;
    let caption_w = max_text_width(images.iter().map(|i| i.caption.as_str()), CAPTION_SIZE)
        .map_err(|e| plot_error(path, e.to_string()))?;
    let title_w = text_width(title, TITLE_SIZE).map_err(|e| plot_error(path, e.to_string()))?;
    let cell_w = tile_w.max(caption_w) + 24;
    let caption_h = (CAPTION_SIZE * CAP).ceil() as i32 + 4;
    let cell_h = tile_h + 8 + caption_h + 16;
    let top = MARGIN + (TITLE_SIZE * CAP).ceil() as i32 + 22;
    let width = (cell_w * columns as i32 + 2 * MARGIN).max(title_w + 2 * MARGIN);
    let height = top + cell_h * grid_rows as i32 + MARGIN - 8;
    let left = (width - cell_w * columns as i32) / 2;

    // Top-left corner of each image, centred in its cell.
    let origin = |k: usize| {
        let img = &images[k];
        let (gr, gc) = ((k / columns) as i32, (k % columns) as i32);
        let x = left + gc * cell_w + (cell_w - img.cols as i32 * scale) / 2;
        let y = top + gr * cell_h + (tile_h - img.rows as i32 * scale) / 2;
        (x, y)
    };
    render(
        path,
        (width as u32, height as u32),
        |area| {
            draw_text(
                area,
                title,
                (width / 2, MARGIN),
                TITLE_SIZE,
                TEXT,
                HPos::Center,
                VPos::Top,
                false,
            )?;
            for (k, img) in images.iter().enumerate() {
                let (x, y) = origin(k);
                let (w, h) = (img.cols as i32 * scale, img.rows as i32 * scale);
                area.draw(&Rectangle::new(
                    [(x - 1, y - 1), (x + w, y + h)],
                    ShapeStyle::from(&RGBColor(170, 170, 170)).stroke_width(1),
                ))?;
                let cx = left + (k % columns) as i32 * cell_w + cell_w / 2;
                let cy = top + (k / columns) as i32 * cell_h + tile_h + 8;
                draw_text(
                    area,
                    &img.caption,
                    (cx, cy),
                    CAPTION_SIZE,
                    TEXT,
                    HPos::Center,
                    VPos::Top,
                    false,
                )?;
            }
            Ok(())
        },
        |buffer, width| {
            // Paint the pixels directly: exact nearest-neighbour scaling, no anti-aliasing.
            let width = width as usize;
            for (k, img) in images.iter().enumerate() {
                let (x0, y0) = origin(k);
                for py in 0..img.rows * scale as usize {
                    for px in 0..img.cols * scale as usize {
                        let v = img.pixels[(py / scale as usize) * img.cols + px / scale as usize];
                        let (x, y) = (x0 as usize + px, y0 as usize + py);
                        let i = (y * width + x) * 3;
                        if let Some(p) = buffer.get_mut(i..i + 3) {
                            p.fill(255 - v);
                        }
                    }
                }
            }
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Terminal preview
// ---------------------------------------------------------------------------------------------

/// Pixels at or above this value count as ink in [`terminal_preview`].
const INK_THRESHOLD: u8 = 128;

/// A plain-text preview of a grayscale image (bright = ink) for a terminal: one character per
/// column and per two pixel rows, using the half blocks `▀`, `▄`, `█` and space, so a 28x28
/// digit becomes 14 lines of 28 characters, joined by `\n` without a trailing newline. An odd
/// last row is paired with a dark row. Missing pixels (a short slice) count as dark.
pub fn terminal_preview(pixels: &[u8], rows: usize, cols: usize) -> String {
    let ink = |r: usize, c: usize| {
        r < rows
            && pixels
                .get(r * cols + c)
                .is_some_and(|&v| v >= INK_THRESHOLD)
    };
    let mut lines = Vec::with_capacity(rows.div_ceil(2));
    for r in (0..rows).step_by(2) {
        let line: String = (0..cols)
            .map(|c| match (ink(r, c), ink(r + 1, c)) {
                (true, true) => '█',
                (true, false) => '▀',
                (false, true) => '▄',
                (false, false) => ' ',
            })
            .collect();
        lines.push(line);
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(path: &Path) -> image::RgbImage {
        image::open(path)
            .unwrap_or_else(|e| panic!("{} does not decode: {e}", path.display()))
            .to_rgb8()
    }

    fn pixel(img: &image::RgbImage, x: i32, y: i32) -> RGBColor {
        let p = img.get_pixel(x as u32, y as u32);
        RGBColor(p[0], p[1], p[2])
    }

    fn assert_plot_error(result: Result<()>, path: &Path, expected: &str) {
        match result {
            Err(Error::Plot { path: p, reason }) => {
                assert_eq!(p, path);
                assert!(
                    reason.contains(expected),
                    "reason {reason:?} lacks {expected:?}"
                );
            }
            other => panic!("expected Error::Plot containing {expected:?}, got {other:?}"),
        }
        assert!(
            !path.exists(),
            "{} was written despite the error",
            path.display()
        );
    }

    /// Only the finished PNG is in `dir`: no temporary files are left behind.
    fn assert_only_file(dir: &Path, name: &str) {
        let names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![name.to_string()]);
    }

    #[test]
    fn colormap_runs_from_dark_purple_to_yellow_and_clamps() {
        assert_eq!(colormap(0.0), RGBColor(68, 1, 84));
        assert_eq!(colormap(1.0), RGBColor(253, 231, 37));
        assert_ne!(colormap(0.0), colormap(1.0));
        assert_eq!(colormap(-3.0), colormap(0.0));
        assert_eq!(colormap(7.0), colormap(1.0));
        assert_eq!(colormap(f64::NAN), colormap(0.0));
        // Perceptual: brightness rises steadily.
        let lum: Vec<f64> = (0..=20)
            .map(|i| luminance(colormap(i as f64 / 20.0)))
            .collect();
        assert!(lum.windows(2).all(|w| w[1] > w[0]), "{lum:?}");
    }

    #[test]
    fn nice_ticks_are_round_and_inside_the_range() {
        assert_eq!(
            nice_ticks(0.0, 99.0, 6).0,
            vec![0.0, 20.0, 40.0, 60.0, 80.0]
        );
        let (ticks, step) = nice_ticks(0.0, 1.0, 5);
        let labels: Vec<String> = ticks.iter().map(|&v| format_tick(v, step)).collect();
        assert_eq!(labels, ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
        let (ticks, step) = nice_ticks(-0.3, 0.3, 6);
        assert_eq!(step, 0.1);
        assert_eq!(format_tick(ticks[0], step), "-0.3");
        assert!(ticks.contains(&0.0));
        assert_eq!(format_tick(250.0, 50.0), "250");
    }

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

    fn history(values: &[f64]) -> Vec<(f64, f64)> {
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as f64 + 1.0, v))
            .collect()
    }

    #[test]
    fn line_chart_draws_each_series_in_its_colour() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accuracy.png");
        let series = [
            Series {
                name: "train".into(),
                points: history(&[0.91, 0.95, 0.97, 0.98, 0.985]),
            },
            Series {
                name: "test".into(),
                points: history(&[0.93, 0.96, 0.975, 0.982, 0.987]),
            },
        ];
        line_chart(&path, "Model accuracy", "epoch", "accuracy", &series).unwrap();
        assert_only_file(dir.path(), "accuracy.png");
        let img = decode(&path);
        assert_eq!(img.dimensions(), (800, 500));
        let count = |c: RGBColor| {
            img.pixels()
                .filter(|p| p[0] == c.0 && p[1] == c.1 && p[2] == c.2)
                .count()
        };
        assert!(count(TAB10[0]) > 200, "first series missing");
        assert!(count(TAB10[1]) > 200, "second series missing");
    }

    #[test]
    fn line_chart_handles_single_points_constants_and_gaps() {
        let dir = tempfile::tempdir().unwrap();
        for (name, points) in [
            ("single.png", vec![(1.0, 0.25)]),
            ("constant.png", history(&[0.5, 0.5, 0.5])),
            ("zero.png", history(&[0.0, 0.0])),
            ("nan.png", history(&[0.3, f64::NAN, 0.2])),
        ] {
            let path = dir.path().join(name);
            let series = [Series {
                name: "loss".into(),
                points,
            }];
            line_chart(&path, "Model loss", "epoch", "loss", &series).unwrap();
            assert_eq!(decode(&path).dimensions(), (800, 500), "{name}");
        }
    }

    #[test]
    fn line_chart_rejects_missing_data_without_writing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.png");
        assert_plot_error(
            line_chart(&path, "t", "x", "y", &[]),
            &path,
            "at least one series",
        );
        let empty = Series {
            name: "val_loss".into(),
            points: vec![],
        };
        assert_plot_error(
            line_chart(&path, "t", "x", "y", &[empty]),
            &path,
            "val_loss",
        );
        let nan = Series {
            name: "loss".into(),
            points: vec![(1.0, f64::NAN)],
        };
        assert_plot_error(line_chart(&path, "t", "x", "y", &[nan]), &path, "finite");
    }

    #[test]
    fn image_grid_scales_images_up_as_dark_ink_on_white() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mistakes.png");
        // A 10x10 block of full ink inside each 28x28 image.
        let mut pixels = vec![0u8; 28 * 28];
        for r in 9..19 {
            for c in 9..19 {
                pixels[r * 28 + c] = 255;
            }
        }
        let images: Vec<GridImage> = (0..7)
            .map(|i| GridImage {
                pixels: pixels.clone(),
                rows: 28,
                cols: 28,
                caption: format!("true {i}, pred 9 (0.98)"),
            })
            .collect();
        image_grid(&path, "Most confident mistakes", &images, 4).unwrap();
        assert_only_file(dir.path(), "mistakes.png");
        let img = decode(&path);
        let (w, h) = img.dimensions();
        // Two rows of four columns of 112-pixel images with captions and a title.
        assert!((4 * 112..1000).contains(&w), "width {w}");
        assert!((2 * 112 + 60..450).contains(&h), "height {h}");
        // Text is dark grey and antialiased, so pure black comes only from the ink, scaled 4x.
        let black = img.pixels().filter(|p| p.0 == [0, 0, 0]).count();
        assert_eq!(black, 7 * 40 * 40);
        assert_eq!(img.get_pixel(0, 0).0, [255, 255, 255]);
    }

    #[test]
    fn image_grid_rejects_bad_input_without_writing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.png");
        let image = GridImage {
            pixels: vec![0; 28 * 28],
            rows: 28,
            cols: 28,
            caption: "x".into(),
        };
        assert_plot_error(image_grid(&path, "t", &[], 4), &path, "at least one image");
        assert_plot_error(
            image_grid(&path, "t", std::slice::from_ref(&image), 0),
            &path,
            "column",
        );
        let short = GridImage {
            pixels: vec![0; 10],
            ..image
        };
        assert_plot_error(image_grid(&path, "t", &[short], 4), &path, "784");
    }

    #[test]
    fn terminal_preview_marks_bright_pixels_with_half_blocks() {
        let mut pixels = vec![0u8; 28 * 28];
        // A bright bar on rows 4..=6, columns 10..14 (row 6 pairs with dark row 7).
        for r in 4..=6 {
            for c in 10..14 {
                pixels[r * 28 + c] = 200;
            }
        }
        pixels[27 * 28] = 255; // bottom-left corner: lower half of the last line
        let text = terminal_preview(&pixels, 28, 28);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 14);
        assert!(lines.iter().all(|l| l.chars().count() == 28));
        assert_eq!(
            lines[2],
            format!("{}████{}", " ".repeat(10), " ".repeat(14))
        );
        assert_eq!(
            lines[3],
            format!("{}▀▀▀▀{}", " ".repeat(10), " ".repeat(14))
        );
        assert!(lines[13].starts_with('▄'));
        let marked: usize = lines
            .iter()
            .map(|l| l.chars().filter(|&c| c != ' ').count())
            .sum();
        assert_eq!(marked, 9);
        assert!(!text.contains('\x1b'));
        // Odd heights round up; a short slice does not panic.
        assert_eq!(terminal_preview(&[255; 3], 3, 1), "█\n▀");
        assert_eq!(terminal_preview(&[], 2, 2), "  ");
    }
}
