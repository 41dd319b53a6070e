//! All PNG drawing: heatmaps (weights, confusion matrices), training-history line charts,
//! image grids, plus a plain-text terminal preview of a digit.
//!
//! Everything is rendered with plotters into an in-memory RGB buffer, encoded as PNG with the
//! `image` crate and written with [`crate::fsutil::write_atomically`], so a failed drawing never
//! leaves a half-written file. Text uses the bundled DejaVu Sans (no system fonts are needed).
//!
//! Each kind of picture has its own file ([`heatmap()`], [`line_chart()`], [`runs_chart()`]
//! (several runs' curves), [`image_grid()`], [`terminal_preview`]); the pieces they share live
//! beside them: `font` (the bundled font), `render` (canvas, PNG output, errors, shapes,
//! spacing), `text` (sizes, measuring and drawing text), `color` (colour maps and palettes),
//! `ticks` (round axis values) and `colorbar` (a value scale beside a picture).
//! A new kind of picture is a new file here that builds on those; [`layers`] draws a network's
//! layers (`inspect`) as PNG bytes in memory.

mod color;
mod colorbar;
mod compare;
mod font;
mod heatmap;
mod image_grid;
pub mod layers;
mod line_chart;
pub mod picture;
mod render;
mod terminal;
mod text;
mod ticks;

#[cfg(test)]
mod test_util;

pub use color::colormap;
pub use compare::{RunCurves, runs_chart};
pub use heatmap::{HeatmapOptions, heatmap};
pub use image_grid::{GridImage, image_grid};
pub use line_chart::{Series, line_chart};
pub use terminal::terminal_preview;
