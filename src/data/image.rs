//! Turning one's own digit pictures into MNIST-like images: thin wrappers over
//! [`Pipeline::mnist`](super::pipeline::Pipeline::mnist), kept for callers that want MNIST's
//! preparation whatever the model. `predict` uses the model's own pipeline instead.

use std::path::Path;

use image::GrayImage;

use super::pipeline::{Pipeline, gray};
use crate::error::{Error, Result};

/// Whether to invert the picture so the digit is light on dark, as in MNIST.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    strum::VariantArray,
    strum::EnumMessage,
    strum::EnumProperty,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
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

/// Loads a PNG or JPEG of any size and returns `rows` x `cols` MNIST-style pixels (MNIST's
/// pipeline with the given inversion).
pub fn load_digit(path: &Path, invert: Invert, rows: usize, cols: usize) -> Result<Vec<u8>> {
    Pipeline {
        invert,
        ..Pipeline::mnist(rows, cols)
    }
    .load(path)
}

/// Grayscale, inversion, crop to the digit, fit into 20x20 keeping the aspect ratio, and
/// centre by mass in 28x28, as the MNIST images were made (scaled for other frame sizes).
pub fn to_mnist_layout(
    picture: &GrayImage,
    invert: Invert,
    rows: u32,
    cols: u32,
) -> std::result::Result<Vec<u8>, String> {
    Pipeline {
        invert,
        ..Pipeline::mnist(rows as usize, cols as usize)
    }
    .prepare(&gray(picture.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Luma;

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
    fn no_inversion_when_asked() {
        let pixels = to_mnist_layout(&bar_on_paper(), Invert::No, 28, 28).unwrap();
        // Without inversion the white paper is the "ink" and fills the frame's box.
        assert!(pixels.iter().filter(|&&p| p > 200).count() > 150);
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
