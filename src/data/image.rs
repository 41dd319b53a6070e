//! Turning one's own digit pictures into MNIST-like 28x28 images.

use std::path::Path;

use image::imageops::FilterType;
use image::{GrayImage, Luma};

use crate::error::{Error, Result};

/// MNIST digits fit in a 20x20 box centred by mass in the 28x28 frame; other sizes keep the
/// same proportion.
const DIGIT_BOX_FRACTION: f64 = 20.0 / 28.0;
/// Pixels at least this bright (after inversion) count as ink when finding the digit.
const INK_THRESHOLD: u8 = 40;

/// Whether to invert the picture so the digit is light on dark, as in MNIST.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Invert {
    /// Invert when the border of the picture is light (a dark digit on paper).
    #[default]
    Auto,
    Yes,
    No,
}

/// The largest picture side accepted, in pixels.
pub const MAX_PICTURE_SIDE: u32 = 16_384;
/// The most memory a decoder may take for one picture, whatever its file.
const MAX_PICTURE_BYTES: u64 = 512 << 20;
/// How many decoded bytes one byte of a picture file can justify: DEFLATE (PNG) expands at most
/// about 1032 times, and a flat JPEG block of 8x8 pixels in 3 channels takes a few bits.
const MAX_PICTURE_RATIO: u64 = 2048;

/// Decodes a picture file by its content (PNG or JPEG), reading only a regular file, with the
/// decoder's memory bounded by what the file's size can justify, so that a small file declaring
/// a huge picture is refused instead of allocated.
pub fn decode_picture(path: &Path) -> std::result::Result<image::DynamicImage, String> {
    let file = crate::fsutil::open_regular(path).map_err(|e| match e {
        Error::Io { source, .. } => format!("cannot read ({source})"),
        e => format!("cannot read ({e})"),
    })?;
    let stored = file
        .metadata()
        .map_err(|e| format!("cannot read ({e})"))?
        .len();
    let mut reader = image::ImageReader::new(std::io::BufReader::new(file))
        .with_guessed_format()
        .map_err(|e| format!("cannot read ({e})"))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_PICTURE_SIDE);
    limits.max_image_height = Some(MAX_PICTURE_SIDE);
    limits.max_alloc = Some(
        stored
            .saturating_mul(MAX_PICTURE_RATIO)
            .saturating_add(1 << 20)
            .min(MAX_PICTURE_BYTES),
    );
    reader.limits(limits);
    let picture = reader
        .decode()
        .map_err(|e| format!("cannot read as an image ({e})"))?;
    if picture.width() == 0 || picture.height() == 0 {
        return Err("the image has no pixels".to_string());
    }
    Ok(picture)
}

/// Loads a PNG or JPEG of any size and returns `rows` x `cols` MNIST-style pixels.
pub fn load_digit(path: &Path, invert: Invert, rows: usize, cols: usize) -> Result<Vec<u8>> {
    let picture = decode_picture(path).map_err(|reason| Error::Image {
        path: path.to_path_buf(),
        reason,
    })?;
    to_mnist_layout(&picture.to_luma8(), invert, rows as u32, cols as u32).map_err(|reason| {
        Error::Image {
            path: path.to_path_buf(),
            reason,
        }
    })
}

/// Grayscale, inversion, crop to the digit, fit into 20x20 keeping the aspect ratio, and
/// centre by mass in 28x28, as the MNIST images were made (scaled for other frame sizes).
pub fn to_mnist_layout(
    gray: &GrayImage,
    invert: Invert,
    rows: u32,
    cols: u32,
) -> std::result::Result<Vec<u8>, String> {
    let mut gray = gray.clone();
    let should_invert = match invert {
        Invert::Yes => true,
        Invert::No => false,
        Invert::Auto => light_background(&gray),
    };
    if should_invert {
        image::imageops::invert(&mut gray);
    }
    let (x0, y0, x1, y1) = ink_bounds(&gray).ok_or("no digit found: the image is blank")?;
    let digit = image::imageops::crop_imm(&gray, x0, y0, x1 - x0 + 1, y1 - y0 + 1).to_image();
    let box_width = ((cols as f64 * DIGIT_BOX_FRACTION).round() as u32).max(1);
    let box_height = ((rows as f64 * DIGIT_BOX_FRACTION).round() as u32).max(1);
    let scale =
        (box_width as f64 / digit.width() as f64).min(box_height as f64 / digit.height() as f64);
    let width = ((digit.width() as f64 * scale).round() as u32).clamp(1, box_width);
    let height = ((digit.height() as f64 * scale).round() as u32).clamp(1, box_height);
    let resized = image::imageops::resize(&digit, width, height, FilterType::CatmullRom);

    let (mass_x, mass_y) = centre_of_mass(&resized);
    let left = (cols as f64 / 2.0 - mass_x)
        .round()
        .clamp(0.0, (cols - width) as f64) as u32;
    let top = (rows as f64 / 2.0 - mass_y)
        .round()
        .clamp(0.0, (rows - height) as f64) as u32;
    let mut frame = GrayImage::from_pixel(cols, rows, Luma([0]));
    image::imageops::overlay(&mut frame, &resized, i64::from(left), i64::from(top));
    Ok(frame.into_raw())
}

/// Whether the outermost pixels are mostly light, as for dark ink on paper.
pub fn light_background(gray: &GrayImage) -> bool {
    border_mean(gray) > 127.0
}

fn border_mean(gray: &GrayImage) -> f64 {
    let (w, h) = gray.dimensions();
    let border: Vec<u8> = gray
        .enumerate_pixels()
        .filter(|(x, y, _)| *x == 0 || *y == 0 || *x + 1 == w || *y + 1 == h)
        .map(|(_, _, p)| p.0[0])
        .collect();
    border.iter().map(|&v| f64::from(v)).sum::<f64>() / border.len().max(1) as f64
}

fn ink_bounds(gray: &GrayImage) -> Option<(u32, u32, u32, u32)> {
    gray.enumerate_pixels()
        .filter(|(_, _, p)| p.0[0] >= INK_THRESHOLD)
        .fold(None, |bounds, (x, y, _)| match bounds {
            None => Some((x, y, x, y)),
            Some((x0, y0, x1, y1)) => Some((x0.min(x), y0.min(y), x1.max(x), y1.max(y))),
        })
}

fn centre_of_mass(gray: &GrayImage) -> (f64, f64) {
    let (mut total, mut sum_x, mut sum_y) = (0.0, 0.0, 0.0);
    for (x, y, p) in gray.enumerate_pixels() {
        let weight = f64::from(p.0[0]);
        total += weight;
        sum_x += weight * (x as f64 + 0.5);
        sum_y += weight * (y as f64 + 0.5);
    }
    if total == 0.0 {
        (gray.width() as f64 / 2.0, gray.height() as f64 / 2.0)
    } else {
        (sum_x / total, sum_y / total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dark vertical bar on white paper, off-centre in a wide picture.
    fn bar_on_paper() -> GrayImage {
        GrayImage::from_fn(120, 60, |x, y| {
            if (20..30).contains(&x) && (10..50).contains(&y) {
                Luma([0])
            } else {
                Luma([255])
            }
        })
    }

    #[test]
    fn light_background_is_inverted_and_digit_centred() {
        let pixels = to_mnist_layout(&bar_on_paper(), Invert::Auto, 28, 28).unwrap();
        assert_eq!(pixels.len(), 28 * 28);
        let frame = GrayImage::from_raw(28, 28, pixels).unwrap();
        assert_eq!(frame.get_pixel(0, 0).0[0], 0, "background becomes black");
        assert!(
            frame.get_pixel(14, 14).0[0] > 200,
            "the bar is centred and bright"
        );
        let (x0, y0, x1, y1) = ink_bounds(&frame).unwrap();
        assert_eq!(y1 - y0 + 1, 20, "tall side scaled to 20 pixels");
        assert!((x1 - x0 + 1) <= 6, "aspect ratio kept: {x0}..{x1}");
    }

    #[test]
    fn no_inversion_when_asked() {
        let pixels = to_mnist_layout(&bar_on_paper(), Invert::No, 28, 28).unwrap();
        // Without inversion the white paper is the "ink" and fills the frame's box.
        assert!(pixels.iter().filter(|&&p| p > 200).count() > 150);
    }

    #[test]
    fn blank_image_is_an_error() {
        let blank = GrayImage::from_pixel(10, 10, Luma([255]));
        let error = to_mnist_layout(&blank, Invert::Auto, 28, 28).unwrap_err();
        assert!(error.contains("blank"), "{error}");
    }

    #[test]
    fn unreadable_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-an-image.png");
        std::fs::write(&path, b"hello").unwrap();
        let message = load_digit(&path, Invert::Auto, 28, 28)
            .unwrap_err()
            .to_string();
        assert!(message.contains("cannot read as an image"), "{message}");
    }
}
