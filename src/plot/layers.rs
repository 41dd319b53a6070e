//! Pictures of a network's layers for `mnist-cnn inspect` and the `serve` page: a grid of
//! convolution kernels with their weights written in, grids of feature maps, the dense
//! activations as strips and the class probabilities as a bar chart.
//!
//! Same style as the other pictures (viridis, the bundled font), but each is rendered to PNG
//! bytes in memory, so the web server can send it without touching the disk; [`write_png`]
//! writes one atomically for the command line.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::RGBColor;
use plotters::style::text_anchor::{HPos, VPos};

use super::color::{TAB10, TEXT, colormap, luminance};
use super::text::{TITLE, TextStyle, draw_text, ensure_font};
use crate::error::{Error, Result};

const FRAME: RGBColor = RGBColor(170, 170, 170);
const BAR: RGBColor = TAB10[0];
const TOP_BAR: RGBColor = TAB10[1];
/// Captions and labels: anchored at the top centre of their capitals unless moved.
const CAPTION: TextStyle = TextStyle::new(14.0);
/// Small print: a tile's counts, a bar's percentage.
const SMALL: TextStyle = TextStyle::new(12.0);
const MARGIN: i32 = 16;
/// Side of one feature-map tile in pixels (a 28x28 map at 4 px per value).
const TILE: usize = 112;
/// Largest picture side; larger requests are refused rather than allocated.
const MAX_SIDE: usize = 8192;

fn picture_error(what: &str, reason: impl std::fmt::Display) -> Error {
    Error::Picture {
        what: what.into(),
        reason: reason.to_string(),
    }
}

/// Writes PNG bytes from this module to `path` atomically.
pub fn write_png(path: &Path, png: &[u8]) -> Result<()> {
    crate::fsutil::write_atomically(path, png)
}

/// A canvas of RGB pixels: plain pixel painting plus text through plotters.
struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
    /// Text to draw over the pixels.
    texts: Vec<(String, (i32, i32), TextStyle)>,
}

impl Canvas {
    fn new(what: &str, width: usize, height: usize) -> Result<Self> {
        if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
            return Err(picture_error(
                what,
                format!("picture size {width}x{height} is outside 1..={MAX_SIDE} pixels per side"),
            ));
        }
        Ok(Self {
            width,
            height,
            pixels: vec![255; width * height * 3],
            texts: Vec::new(),
        })
    }

    fn fill(&mut self, x: usize, y: usize, w: usize, h: usize, color: RGBColor) {
        for row in y..(y + h).min(self.height) {
            for col in x..(x + w).min(self.width) {
                let i = (row * self.width + col) * 3;
                self.pixels[i..i + 3].copy_from_slice(&[color.0, color.1, color.2]);
            }
        }
    }

    /// A one-pixel frame just outside the `w` x `h` box at (x, y).
    fn frame(&mut self, x: usize, y: usize, w: usize, h: usize) {
        let (x0, y0) = (x.saturating_sub(1), y.saturating_sub(1));
        self.fill(x0, y0, w + 2, 1, FRAME);
        self.fill(x0, y + h, w + 2, 1, FRAME);
        self.fill(x0, y0, 1, h + 2, FRAME);
        self.fill(x + w, y0, 1, h + 2, FRAME);
    }

    /// `values` (row-major, `rows` x `cols`) as colour-mapped cells of `cell` pixels.
    #[allow(clippy::too_many_arguments)]
    fn cells(
        &mut self,
        x: usize,
        y: usize,
        values: &[f32],
        rows: usize,
        cols: usize,
        (cell_w, cell_h): (usize, usize),
        (lo, hi): (f64, f64),
    ) {
        for r in 0..rows {
            for c in 0..cols {
                let v = values.get(r * cols + c).copied().unwrap_or(0.0);
                let color = colormap(normalized(f64::from(v), lo, hi));
                self.fill(x + c * cell_w, y + r * cell_h, cell_w, cell_h, color);
            }
        }
    }

    /// `text` drawn at `at` as `style` says (which point of the text is there, size, colour).
    fn text(&mut self, text: impl Into<String>, at: (i32, i32), style: TextStyle) {
        self.texts.push((text.into(), at, style));
    }

    fn title(&mut self, text: &str) {
        self.text(text, (self.width as i32 / 2, MARGIN), TITLE);
    }

    /// A horizontal colour bar `w` pixels wide at (x, y) with its two end values written below.
    fn colorbar(&mut self, x: usize, y: usize, w: usize, (lo, hi): (f64, f64)) {
        for i in 0..w {
            let t = i as f64 / (w.max(2) - 1) as f64;
            self.fill(x + i, y, 1, 12, colormap(t));
        }
        self.frame(x, y, w, 12);
        let below = (y + 16) as i32;
        self.text(
            format_value(lo),
            (x as i32, below),
            CAPTION.anchor(HPos::Left, VPos::Top),
        );
        self.text(
            format_value(hi),
            ((x + w) as i32, below),
            CAPTION.anchor(HPos::Right, VPos::Top),
        );
    }

    fn png(self, what: &str) -> Result<Vec<u8>> {
        ensure_font().map_err(|reason| picture_error(what, reason))?;
        let (width, height) = (self.width as u32, self.height as u32);
        let mut pixels = self.pixels;
        {
            let backend = BitMapBackend::with_buffer(&mut pixels, (width, height));
            let root = backend.into_drawing_area();
            for (text, at, style) in &self.texts {
                draw_text(&root, text, *at, style).map_err(|e| picture_error(what, e))?;
            }
            root.present().map_err(|e| picture_error(what, e))?;
        }
        let mut png = Vec::new();
        {
            use image::ImageEncoder;
            image::codecs::png::PngEncoder::new(&mut png)
                .write_image(&pixels, width, height, image::ExtendedColorType::Rgb8)
                .map_err(|e| picture_error(what, format!("PNG encoding failed: {e}")))?;
        }
        Ok(png)
    }
}

fn normalized(v: f64, lo: f64, hi: f64) -> f64 {
    if hi > lo { (v - lo) / (hi - lo) } else { 0.5 }
}

/// `v` with two decimals, without a minus sign on what rounds to zero.
fn two_decimals(v: f64) -> String {
    let text = format!("{v:.2}");
    if text == "-0.00" { "0.00".into() } else { text }
}

fn format_value(v: f64) -> String {
    let v = v + 0.0;
    if v != 0.0 && v.abs() < 0.01 {
        format!("{v:.1e}")
    } else {
        format!("{v:.2}")
    }
}

/// Stacked `channels` maps of `rows` x `cols` values, as `inspect` returns them.
pub struct MapsView<'a> {
    pub channels: usize,
    pub rows: usize,
    pub cols: usize,
    pub values: &'a [f32],
}

impl MapsView<'_> {
    fn check(&self, what: &str) -> Result<()> {
        if self.channels == 0 || self.rows == 0 || self.cols == 0 {
            return Err(picture_error(what, "no values to draw"));
        }
        if self.values.len() != self.channels * self.rows * self.cols {
            return Err(picture_error(
                what,
                format!(
                    "{} values given for {} maps of {}x{}",
                    self.values.len(),
                    self.channels,
                    self.rows,
                    self.cols
                ),
            ));
        }
        if self.values.iter().any(|v| !v.is_finite()) {
            return Err(picture_error(what, "a value is not finite"));
        }
        Ok(())
    }

    fn map(&self, channel: usize) -> &[f32] {
        let len = self.rows * self.cols;
        &self.values[channel * len..(channel + 1) * len]
    }

    fn range(&self) -> (f64, f64) {
        self.values.iter().fold((0.0f64, 0.0f64), |(lo, hi), &v| {
            (lo.min(f64::from(v)), hi.max(f64::from(v)))
        })
    }
}

/// The first convolution's kernels (`[filters, 3, 3]` for one input channel), each a small
/// heatmap with its weights written in, on one colour scale symmetric around zero.
pub fn kernel_grid(title: &str, kernels: &MapsView, bias: &[f32]) -> Result<Vec<u8>> {
    kernels.check(title)?;
    ensure_font().map_err(|reason| picture_error(title, reason))?;
    let columns = kernels.channels.min(8);
    let grid_rows = kernels.channels.div_ceil(columns);
    let cell = 40;
    let (tile_w, tile_h) = (kernels.cols * cell, kernels.rows * cell);
    let (slot_w, slot_h) = (tile_w + 28, tile_h + 44);
    let top = MARGIN as usize + 40;
    let width = (slot_w * columns + 2 * MARGIN as usize).max(520);
    let height = top + slot_h * grid_rows + 50;
    let mut canvas = Canvas::new(title, width, height)?;
    canvas.title(title);
    let extent = kernels
        .values
        .iter()
        .fold(0.0f64, |m, &v| m.max(f64::from(v).abs()))
        .max(f64::EPSILON);
    let range = (-extent, extent);
    let left = (width - slot_w * columns) / 2;
    for k in 0..kernels.channels {
        let x = left + (k % columns) * slot_w + 14;
        let y = top + (k / columns) * slot_h;
        let values = kernels.map(k);
        canvas.cells(
            x,
            y,
            values,
            kernels.rows,
            kernels.cols,
            (cell, cell),
            range,
        );
        canvas.frame(x, y, tile_w, tile_h);
        for (i, &v) in values.iter().enumerate() {
            let color = colormap(normalized(f64::from(v), range.0, range.1));
            let ink = if luminance(color) > 0.4 {
                RGBColor(0, 0, 0)
            } else {
                WHITE
            };
            let cx = (x + (i % kernels.cols) * cell + cell / 2) as i32;
            let cy = (y + (i / kernels.cols) * cell + cell / 2) as i32;
            let style = TextStyle::new(11.0)
                .color(ink)
                .anchor(HPos::Center, VPos::Center);
            canvas.text(two_decimals(f64::from(v)), (cx, cy), style);
        }
        let caption = match bias.get(k) {
            Some(b) => format!("#{k}  b={}", two_decimals(f64::from(*b))),
            None => format!("#{k}"),
        };
        canvas.text(
            caption,
            ((x + tile_w / 2) as i32, (y + tile_h + 8) as i32),
            CAPTION,
        );
    }
    let bar_w = 300.min(width - 2 * MARGIN as usize);
    canvas.colorbar((width - bar_w) / 2, height - 46, bar_w, range);
    canvas.png(title)
}

/// Feature maps side by side, `columns` to a row, each scaled to about 112 pixels, all on one
/// colour scale from the layer's smallest to its largest value (0 up for ReLU outputs).
pub fn feature_grid(title: &str, maps: &MapsView, columns: usize) -> Result<Vec<u8>> {
    maps.check(title)?;
    let columns = columns.clamp(1, maps.channels);
    let grid_rows = maps.channels.div_ceil(columns);
    let scale = (TILE / maps.rows.max(maps.cols)).max(1);
    let (tile_w, tile_h) = (maps.cols * scale, maps.rows * scale);
    let (slot_w, slot_h) = (tile_w + 16, tile_h + 30);
    let top = MARGIN as usize + 40;
    let width = (slot_w * columns + 2 * MARGIN as usize).max(420);
    let height = top + slot_h * grid_rows + 50;
    let mut canvas = Canvas::new(title, width, height)?;
    canvas.title(title);
    let range = maps.range();
    let left = (width - slot_w * columns) / 2;
    for k in 0..maps.channels {
        let x = left + (k % columns) * slot_w + 8;
        let y = top + (k / columns) * slot_h;
        canvas.cells(
            x,
            y,
            maps.map(k),
            maps.rows,
            maps.cols,
            (scale, scale),
            range,
        );
        canvas.frame(x, y, tile_w, tile_h);
        canvas.text(
            format!("#{k}"),
            ((x + tile_w / 2) as i32, (y + tile_h + 6) as i32),
            CAPTION,
        );
    }
    let bar_w = 300.min(width - 2 * MARGIN as usize);
    canvas.colorbar((width - bar_w) / 2, height - 46, bar_w, range);
    canvas.png(title)
}

/// Dense layers' activations, one strip of cells per layer with its name on the left, all on
/// one colour scale.
pub fn dense_strips(title: &str, layers: &[(&str, &[f32])]) -> Result<Vec<u8>> {
    if layers.is_empty() || layers.iter().any(|(_, v)| v.is_empty()) {
        return Err(picture_error(title, "no activations to draw"));
    }
    if layers
        .iter()
        .flat_map(|(_, v)| v.iter())
        .any(|v| !v.is_finite())
    {
        return Err(picture_error(title, "an activation is not finite"));
    }
    let longest = layers.iter().map(|(_, v)| v.len()).max().unwrap_or(1);
    let cell_w = (768 / longest).clamp(1, 48);
    let (label_w, strip_h, gap) = (90, 40, 34);
    let top = MARGIN as usize + 40;
    let width = label_w + cell_w * longest + 2 * MARGIN as usize;
    let height = top + (strip_h + gap) * layers.len() + 40;
    let mut canvas = Canvas::new(title, width, height)?;
    canvas.title(title);
    let range = layers
        .iter()
        .flat_map(|(_, v)| v.iter())
        .fold((0.0f64, 0.0f64), |(lo, hi), &v| {
            (lo.min(f64::from(v)), hi.max(f64::from(v)))
        });
    for (i, (name, values)) in layers.iter().enumerate() {
        let x = MARGIN as usize + label_w;
        let y = top + i * (strip_h + gap);
        canvas.cells(x, y, values, 1, values.len(), (cell_w, strip_h), range);
        canvas.frame(x, y, cell_w * values.len(), strip_h);
        canvas.text(
            *name,
            (MARGIN, (y + strip_h / 2) as i32),
            CAPTION.anchor(HPos::Left, VPos::Center),
        );
        let active = values.iter().filter(|&&v| v > 0.0).count();
        canvas.text(
            format!("{} units, {active} active (> 0)", values.len()),
            (x as i32, (y + strip_h + 6) as i32),
            SMALL.anchor(HPos::Left, VPos::Top),
        );
    }
    let bar_w = 300.min(width - 2 * MARGIN as usize);
    canvas.colorbar(width - MARGIN as usize - bar_w, height - 40, bar_w, range);
    canvas.png(title)
}

/// One bar per class with its probability above it; the most probable class is highlighted.
pub fn probability_bars(
    title: &str,
    probabilities: &[f32],
    class_names: &[String],
) -> Result<Vec<u8>> {
    if probabilities.is_empty() || probabilities.iter().any(|p| !p.is_finite()) {
        return Err(picture_error(title, "no finite probabilities to draw"));
    }
    ensure_font().map_err(|reason| picture_error(title, reason))?;
    let slot = 56;
    let plot_h = 240;
    let top = MARGIN as usize + 60;
    let width = (slot * probabilities.len() + 2 * MARGIN as usize + 40).max(420);
    let height = top + plot_h + 50;
    let mut canvas = Canvas::new(title, width, height)?;
    canvas.title(title);
    // The first of the highest, as `model::argmax` picks the predicted class.
    let best = probabilities
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &p)| {
            if p > best.1 { (i, p) } else { best }
        })
        .0;
    let left = (width - slot * probabilities.len()) / 2;
    let base = top + plot_h;
    canvas.fill(left - 6, base, slot * probabilities.len() + 12, 1, TEXT);
    for (i, &p) in probabilities.iter().enumerate() {
        let h = ((f64::from(p).clamp(0.0, 1.0)) * plot_h as f64).round() as usize;
        let x = left + i * slot + 8;
        let color = if i == best { TOP_BAR } else { BAR };
        canvas.fill(x, base - h, slot - 16, h, color);
        let cx = (left + i * slot + slot / 2) as i32;
        canvas.text(
            format!("{:.1}%", f64::from(p) * 100.0),
            (cx, (base - h) as i32 - 18),
            SMALL,
        );
        let name = class_names.get(i).cloned().unwrap_or_else(|| i.to_string());
        canvas.text(name, (cx, base as i32 + 8), CAPTION);
    }
    canvas.png(title)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(png: &[u8]) -> image::RgbImage {
        image::load_from_memory(png).unwrap().to_rgb8()
    }

    #[test]
    fn kernel_grid_draws_sixteen_kernels() {
        let values: Vec<f32> = (0..16 * 9).map(|i| (i as f32 - 72.0) / 100.0).collect();
        let maps = MapsView {
            channels: 16,
            rows: 3,
            cols: 3,
            values: &values,
        };
        let png = kernel_grid("kernels", &maps, &[0.1; 16]).unwrap();
        let image = decode(&png);
        assert!(image.width() >= 8 * 120 && image.height() > 2 * 120);
        let colours: std::collections::HashSet<[u8; 3]> = image.pixels().map(|p| p.0).collect();
        assert!(colours.len() > 50, "a colour map with text");
    }

    #[test]
    fn feature_grid_and_strips_and_bars_render() {
        let values: Vec<f32> = (0..32 * 49).map(|i| (i % 13) as f32).collect();
        let maps = MapsView {
            channels: 32,
            rows: 7,
            cols: 7,
            values: &values,
        };
        let grid = decode(&feature_grid("maps", &maps, 8).unwrap());
        assert_eq!(grid.height() as usize, 56 + 4 * (112 + 30) + 50);
        let dense: Vec<f32> = (0..128).map(|i| i as f32).collect();
        decode(&dense_strips("dense", &[("dense", &dense), ("dense_1", &dense)]).unwrap());
        let names: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        let mut p = vec![0.01f32; 10];
        p[7] = 0.91;
        decode(&probability_bars("p", &p, &names).unwrap());
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let maps = MapsView {
            channels: 2,
            rows: 3,
            cols: 3,
            values: &[0.0; 5],
        };
        assert!(feature_grid("x", &maps, 4).is_err());
        assert!(kernel_grid("x", &maps, &[]).is_err());
        assert!(dense_strips("x", &[]).is_err());
        assert!(probability_bars("x", &[f32::NAN], &[]).is_err());
    }
}
