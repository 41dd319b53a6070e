//! Text: the bundled font (from `font`), standard sizes, measuring text, and drawing it with
//! anchors that sit where they say (see [`TextStyle`] and [`draw_text`]).

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontTransform, RGBColor};

use super::color::TEXT;
pub(crate) use super::font::{ensure_font, font};
use super::render::{Area, DrawResult};

/// Font size of picture titles.
pub(crate) const TITLE_SIZE: f64 = 22.0;
/// Font size of axis descriptions ("epoch", "True label").
pub(crate) const DESC_SIZE: f64 = 16.0;
/// Font size of tick labels and legends.
pub(crate) const TICK_SIZE: f64 = 14.0;

/// Height of capitals and digits as a fraction of the font size with ab_glyph's scaling
/// (the size is the ascent-to-descent height; DejaVu's cap height is 0.729 of 1.164 em).
pub(crate) const CAP: f64 = 0.626;

/// Width in pixels of `text` drawn at `size`.
pub(crate) fn text_width(text: &str, size: f64) -> DrawResult<i32> {
    let (w, _) = font(size).box_size(text).map_err(|e| format!("{e:?}"))?;
    Ok(w as i32)
}

/// The widest of `texts` drawn at `size`, in pixels (0 for none).
pub(crate) fn max_text_width<'a>(
    texts: impl IntoIterator<Item = &'a str>,
    size: f64,
) -> DrawResult<i32> {
    let mut widest = 0;
    for text in texts {
        widest = widest.max(text_width(text, size)?);
    }
    Ok(widest)
}

/// How far above its intended centre plotters draws vertically centred ab_glyph text, in
/// pixels: it centres a box of height `size / 1.24` whose top is half a size above the baseline.
pub(crate) fn plotters_bias(size: f64) -> i32 {
    ((1.0 / (2.0 * 1.24) + CAP / 2.0 - 0.5) * size).round() as i32
}

/// How [`draw_text`] draws a piece of text: size, colour, which point of the text the anchor
/// is, and whether it reads bottom to top. (Not plotters' `TextStyle`, which [`draw_text`]
/// builds from this.)
///
/// Vertically, `Top` puts the top of capitals/digits at the anchor, `Center` centres
/// capitals/digits on it and `Bottom` puts the baseline on it. When `rotated`, `h` and `v`
/// refer to the text's own axes.
#[derive(Clone, Copy)]
pub(crate) struct TextStyle {
    pub(crate) size: f64,
    pub(crate) color: RGBColor,
    pub(crate) h: HPos,
    pub(crate) v: VPos,
    pub(crate) rotated: bool,
}

impl TextStyle {
    /// Text of `size` in the text colour, anchored at its top centre, reading left to right.
    pub(crate) const fn new(size: f64) -> Self {
        TextStyle {
            size,
            color: TEXT,
            h: HPos::Center,
            v: VPos::Top,
            rotated: false,
        }
    }

    /// The same style in another colour.
    pub(crate) const fn color(self, color: RGBColor) -> Self {
        TextStyle { color, ..self }
    }

    /// The same style anchored at another point of the text.
    pub(crate) const fn anchor(self, h: HPos, v: VPos) -> Self {
        TextStyle { h, v, ..self }
    }

    /// The same style turned to read bottom to top.
    pub(crate) const fn rotated(self) -> Self {
        TextStyle {
            rotated: true,
            ..self
        }
    }
}

/// A picture's title: centred on the anchor, the top of its capitals on it.
pub(crate) const TITLE: TextStyle = TextStyle::new(TITLE_SIZE);

/// Draws `text` at `(x, y)` as `style` says, correcting for the way plotters positions
/// ab_glyph text so that the anchor lands where [`TextStyle`] describes.
pub(crate) fn draw_text(
    area: &Area,
    text: &str,
    (x, y): (i32, i32),
    style: &TextStyle,
) -> DrawResult {
    let size = style.size;
    // With plotters' `Top` anchor, the baseline lands at +0.5 size and cap tops at -0.126 size.
    let shift = match style.v {
        VPos::Top => 0.5 - CAP,
        VPos::Center => -(0.5 - CAP / 2.0),
        VPos::Bottom => -0.5,
    } * size;
    let shift = shift.round() as i32;
    let mut desc = font(size);
    let pos = if style.rotated {
        desc = desc.transform(FontTransform::Rotate270);
        (x + shift, y)
    } else {
        (x, y + shift)
    };
    let plotters_style = plotters::style::TextStyle::from(desc)
        .color(&style.color)
        .pos(Pos::new(style.h, VPos::Top));
    area.draw(&Text::new(text.to_string(), pos, plotters_style))?;
    Ok(())
}
