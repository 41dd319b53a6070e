//! A colour bar: a vertical [`colormap`] gradient beside a picture, with value ticks on its
//! right, showing which colour stands for which value.

use plotters::style::text_anchor::{HPos, VPos};

use super::color::{AXIS, colormap};
use super::render::{Area, DrawResult, MARGIN, TICK_LEN, filled_rect, frame, line};
use super::text::{TICK_SIZE, TextStyle, draw_text, max_text_width};
use super::ticks::{format_tick, nice_ticks};

/// Space between the picture and the bar, and the bar's width, in pixels.
const GAP: i32 = 24;
const WIDTH: i32 = 22;

/// Tick labels: left-aligned, centred on their tick.
const LABEL: TextStyle = TextStyle::new(TICK_SIZE).anchor(HPos::Left, VPos::Center);

/// A colour bar for values in `range`, `height` pixels tall: `hi` at the top, `lo` at the
/// bottom, mapped to the ends of [`colormap`]. A flat range (`lo == hi`) shows the middle colour
/// and one tick.
pub(crate) struct ColorBar {
    range: (f64, f64),
    height: i32,
    ticks: Vec<(f64, String)>,
    label_width: i32,
}

impl ColorBar {
    /// Chooses round ticks for `range` (about one per 60 pixels, 2 to 6) and measures their
    /// labels. `range` must be finite with `lo <= hi`.
    pub(crate) fn new(range: (f64, f64), height: i32) -> DrawResult<Self> {
        let (lo, hi) = range;
        let target = (height / 60).clamp(2, 6) as usize;
        let (ticks, step) = if hi > lo {
            nice_ticks(lo, hi, target)
        } else {
            (vec![lo], 1.0)
        };
        let ticks: Vec<(f64, String)> = ticks
            .into_iter()
            .map(|v| (v, format_tick(v, step)))
            .collect();
        let label_width = max_text_width(ticks.iter().map(|(_, s)| s.as_str()), TICK_SIZE)?;
        Ok(ColorBar {
            range,
            height,
            ticks,
            label_width,
        })
    }

    /// Height of the bar, in pixels.
    pub(crate) fn height(&self) -> i32 {
        self.height
    }

    /// Width from the right edge of the picture to the right border of the image: the gap, the
    /// bar, its ticks and labels, and the image margin.
    pub(crate) fn extent(&self) -> i32 {
        GAP + WIDTH + TICK_LEN + 6 + self.label_width + MARGIN + 4
    }

    /// Draws the bar beside a picture whose top-right corner is at `(right, top)`.
    pub(crate) fn draw(&self, area: &Area, (right, top): (i32, i32)) -> DrawResult {
        let (lo, hi) = self.range;
        let (bx, bh) = (right + GAP, self.height);
        // A vertical gradient from hi (top) to lo (bottom), one pixel row at a time.
        for py in 0..bh {
            let t = if bh > 1 {
                1.0 - py as f64 / (bh - 1) as f64
            } else {
                0.5
            };
            let t = if hi > lo { t } else { 0.5 };
            filled_rect(
                area,
                (bx, top + py),
                (bx + WIDTH, top + py + 1),
                colormap(t),
            )?;
        }
        frame(area, (bx, top), (bx + WIDTH, top + bh), AXIS)?;
        for (v, label) in &self.ticks {
            let t = if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
            let y = top + ((1.0 - t) * (bh - 1) as f64).round() as i32;
            let x = bx + WIDTH;
            line(area, (x, y), (x + TICK_LEN, y), AXIS)?;
            draw_text(area, label, (x + TICK_LEN + 6, y), &LABEL)?;
        }
        Ok(())
    }
}
