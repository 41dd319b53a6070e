//! The canvas every picture draws on: size checks, a white RGB buffer, PNG encoding and the
//! atomic write, the error types of drawing, simple shapes, and the spacing pictures share.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::RGBColor;

use super::font::ensure_font;
use crate::error::{Error, Result};

/// Largest accepted image side, in pixels.
const MAX_IMAGE_SIDE: u32 = 8192;

/// Space between the image border and its contents, in pixels.
pub(crate) const MARGIN: i32 = 14;
/// Length of an axis tick mark, in pixels.
pub(crate) const TICK_LEN: i32 = 5;

/// Errors raised while drawing; converted to [`Error::Plot`] with the target path.
pub(crate) type DrawError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type DrawResult<T = ()> = std::result::Result<T, DrawError>;
/// The whole canvas, in pixel coordinates from the top-left corner.
pub(crate) type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// The crate's error for a picture that could not be drawn to `path`.
pub(crate) fn plot_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Plot {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Draws into a fresh white `width` x `height` RGB canvas, lets `post` edit the raw pixels
/// afterwards, then encodes a PNG and writes it atomically to `path`.
pub(crate) fn render(
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

/// Fills the rectangle with corners `(x0, y0)` and `(x1, y1)` with `c`.
pub(crate) fn filled_rect(
    area: &Area,
    (x0, y0): (i32, i32),
    (x1, y1): (i32, i32),
    c: RGBColor,
) -> DrawResult {
    area.draw(&Rectangle::new([(x0, y0), (x1, y1)], c.filled()))?;
    Ok(())
}

/// Draws a one-pixel line in `c`.
pub(crate) fn line(area: &Area, from: (i32, i32), to: (i32, i32), c: RGBColor) -> DrawResult {
    area.draw(&PathElement::new(vec![from, to], c))?;
    Ok(())
}

/// Draws a one-pixel frame in `c` along the rectangle with corners `from` and `to`.
pub(crate) fn frame(area: &Area, from: (i32, i32), to: (i32, i32), c: RGBColor) -> DrawResult {
    area.draw(&Rectangle::new(
        [from, to],
        ShapeStyle::from(&c).stroke_width(1),
    ))?;
    Ok(())
}
