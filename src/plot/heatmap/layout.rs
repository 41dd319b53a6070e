//! A heatmap's pixel geometry: cell size, margins for titles and labels, which tick labels fit,
//! and the colour bar, worked out before drawing so the image size fits its contents.

use super::HeatmapOptions;
use crate::plot::colorbar::ColorBar;
use crate::plot::render::{DrawResult, MARGIN, TICK_LEN};
use crate::plot::text::{CAP, DESC_SIZE, TICK_SIZE, TITLE_SIZE, max_text_width, text_width};

/// Side of the cell grid for its longer dimension, in pixels (before rounding to whole cells).
const GRID_TARGET: usize = 560;

/// Pixel geometry of a heatmap of `rows` x `cols` cells.
pub(super) struct HeatmapLayout {
    pub(super) width: u32,
    pub(super) height: u32,
    pub(super) rows: usize,
    pub(super) cols: usize,
    /// Side of one (square) cell.
    pub(super) cell: i32,
    /// Top-left corner of the cell grid.
    pub(super) grid: (i32, i32),
    pub(super) x_labels: Vec<String>,
    pub(super) y_labels: Vec<String>,
    /// Label every `x_step`-th column and `y_step`-th row.
    pub(super) x_step: usize,
    pub(super) y_step: usize,
    /// Whether x labels read bottom to top (custom labels wider than a cell).
    pub(super) x_rotated: bool,
    /// Height the x labels take below their ticks.
    pub(super) x_label_extent: i32,
    pub(super) y_label_width: i32,
    pub(super) colorbar: Option<ColorBar>,
    /// Centre of the title.
    pub(super) title_x: i32,
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

impl HeatmapLayout {
    pub(super) fn new(rows: usize, cols: usize, options: &HeatmapOptions) -> DrawResult<Self> {
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

        let colorbar = if options.colorbar {
            Some(ColorBar::new(options.value_range, grid_h)?)
        } else {
            None
        };
        let right = colorbar.as_ref().map_or(MARGIN + 6, ColorBar::extent);
        let colorbar_h = colorbar.as_ref().map_or(0, ColorBar::height);

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
            rows,
            cols,
            cell,
            grid: (left, top),
            x_labels,
            y_labels,
            x_step,
            y_step,
            x_rotated,
            x_label_extent,
            y_label_width: y_max,
            colorbar,
            title_x,
        })
    }

    /// Width and height of the cell grid, in pixels.
    pub(super) fn grid_size(&self) -> (i32, i32) {
        (self.cell * self.cols as i32, self.cell * self.rows as i32)
    }
}
