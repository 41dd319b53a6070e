//! Grids of small grayscale images with captions, such as the most confident mistakes: each
//! image scaled up pixel for pixel, dark ink on white, in a thin frame.

use std::path::Path;

use plotters::style::RGBColor;

use super::render::{MARGIN, frame, plot_error, render};
use super::text::{
    CAP, TITLE, TITLE_SIZE, TextStyle, draw_text, ensure_font, max_text_width, text_width,
};
use crate::error::Result;

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
/// Captions: centred under their image, the top of capitals at the anchor.
const CAPTION: TextStyle = TextStyle::new(CAPTION_SIZE);
/// Colour of the frame around each image.
const FRAME: RGBColor = RGBColor(170, 170, 170);

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
            draw_text(area, title, (width / 2, MARGIN), &TITLE)?;
            for (k, img) in images.iter().enumerate() {
                let (x, y) = origin(k);
                let (w, h) = (img.cols as i32 * scale, img.rows as i32 * scale);
                frame(area, (x - 1, y - 1), (x + w, y + h), FRAME)?;
                let cx = left + (k % columns) as i32 * cell_w + cell_w / 2;
                let cy = top + (k / columns) as i32 * cell_h + tile_h + 8;
                draw_text(area, &img.caption, (cx, cy), &CAPTION)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::test_util::{assert_only_file, assert_plot_error, decode};

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
}
