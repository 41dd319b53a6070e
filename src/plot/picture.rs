//! A network's input as a picture: each pixel enlarged to a square, in colour or grayscale, as
//! `predict --show` and `heatmap` of colour data draw it.

use std::path::Path;

use image::RgbImage;

use crate::error::{Error, Result};

/// Pixels of the written picture per image pixel, up to this many on the longer side.
const TARGET_SIDE: usize = 280;
/// The PNG text (keyword, text) that marks a picture [`input_picture`] wrote, so that a later
/// run may replace it and nothing else ([`is_input_picture`]).
const MARK: (&str, &str) = ("Software", "mnist-cnn input picture");
/// Width of the gray frame around the picture, in output pixels.
const FRAME: u32 = 2;

/// Writes `pixels` (`rows` x `cols`, `channels` interleaved bytes a pixel: 1 gray, 3 RGB) as a
/// PNG in which each pixel is a square of about 280/side output pixels, in a thin gray frame.
pub fn input_picture(
    path: &Path,
    pixels: &[u8],
    rows: usize,
    cols: usize,
    channels: usize,
) -> Result<()> {
    let fail = |reason: String| Error::Plot {
        path: path.to_path_buf(),
        reason,
    };
    if rows == 0 || cols == 0 || !matches!(channels, 1 | 3) {
        return Err(fail(format!(
            "cannot draw {rows}x{cols} images of {channels} channels"
        )));
    }
    if pixels.len() != rows * cols * channels {
        return Err(fail(format!(
            "{} bytes for a {rows}x{cols} image of {channels} channels",
            pixels.len()
        )));
    }
    let scale = (TARGET_SIDE / rows.max(cols)).max(1) as u32;
    let (width, height) = (cols as u32 * scale, rows as u32 * scale);
    let picture = RgbImage::from_fn(width + 2 * FRAME, height + 2 * FRAME, |x, y| {
        if x < FRAME || y < FRAME || x >= width + FRAME || y >= height + FRAME {
            return image::Rgb([160, 160, 160]);
        }
        let (col, row) = (
            ((x - FRAME) / scale) as usize,
            ((y - FRAME) / scale) as usize,
        );
        let at = (row * cols + col) * channels;
        match channels {
            1 => image::Rgb([pixels[at]; 3]),
            _ => image::Rgb([pixels[at], pixels[at + 1], pixels[at + 2]]),
        }
    });
    let png = marked_png(&picture).map_err(|e| fail(format!("PNG encoding failed: {e}")))?;
    crate::fsutil::write_atomically(path, &png)
}

fn marked_png(picture: &RgbImage) -> std::result::Result<Vec<u8>, png::EncodingError> {
    let mut png = Vec::new();
    let mut encoder = png::Encoder::new(&mut png, picture.width(), picture.height());
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.add_text_chunk(MARK.0.to_string(), MARK.1.to_string())?;
    let mut writer = encoder.write_header()?;
    writer.write_image_data(picture.as_raw())?;
    writer.finish()?;
    Ok(png)
}

/// Whether `path` is a PNG that [`input_picture`] wrote: a regular file whose header carries
/// its mark. Only the header is read.
pub fn is_input_picture(path: &Path) -> bool {
    let Ok(file) = crate::fsutil::open_regular(path) else {
        return false;
    };
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_ignore_text_chunk(false);
    decoder.read_info().is_ok_and(|reader| {
        reader
            .info()
            .uncompressed_latin1_text
            .iter()
            .any(|chunk| (chunk.keyword.as_str(), chunk.text.as_str()) == MARK)
    })
}

/// One byte a pixel for [`super::terminal_preview`]: the strongest channel of each pixel, so
/// a saturated colour on black counts as ink as a white stroke does.
pub fn brightness(pixels: &[u8], channels: usize) -> Vec<u8> {
    if channels == 1 {
        return pixels.to_vec();
    }
    pixels
        .chunks(channels)
        .map(|p| p.iter().copied().max().unwrap_or(0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_pixels_become_squares() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.png");
        // 2x2: red, green / blue, white.
        let pixels = [255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255];
        input_picture(&path, &pixels, 2, 2, 3).unwrap();
        let written = image::open(&path).unwrap().to_rgb8();
        assert_eq!(written.dimensions(), (280 + 4, 280 + 4));
        assert_eq!(written.get_pixel(10, 10).0, [255, 0, 0]);
        assert_eq!(written.get_pixel(200, 10).0, [0, 255, 0]);
        assert_eq!(written.get_pixel(10, 200).0, [0, 0, 255]);
        assert!(input_picture(&path, &pixels[..5], 2, 2, 3).is_err());
        assert!(is_input_picture(&path));
        let other = dir.path().join("other.png");
        image::RgbImage::new(4, 4).save(&other).unwrap();
        assert!(!is_input_picture(&other));
        assert!(!is_input_picture(dir.path()));
        assert!(!is_input_picture(&dir.path().join("missing.png")));
        assert_eq!(brightness(&[200, 10, 10, 5, 0, 0], 3), vec![200, 5]);
    }
}
