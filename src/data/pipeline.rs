//! One image pipeline: how a picture file becomes the pixels a network sees. `import` prepares
//! every picture of a data set with it, records it in the data set's `dataset.json`, `train`
//! copies it into `run.json`, and `predict` (and the web page of `serve`) prepares a new picture
//! with the model's pipeline, so a picture is seen exactly as the training pictures were.
//!
//! The steps, in order: transparent parts are put on white paper; the picture becomes
//! grayscale (unless the pipeline keeps colour); it is inverted so the subject is light on dark,
//! when asked or when its border is light; then it is either resized whole to the frame
//! ([`Fit::Stretch`]) or cropped to the ink, fitted into 20/28 of the frame keeping its aspect
//! ratio and centred by mass ([`Fit::Digit`], the way the MNIST digits were made).

use std::path::Path;

use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, ImageBuffer, Pixel, Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use super::image::{Invert, decode_picture};
use crate::error::{Error, Result};

/// MNIST digits fit in a 20x20 box centred by mass in the 28x28 frame; other sizes keep the
/// same proportion.
const DIGIT_BOX_FRACTION: f64 = 20.0 / 28.0;
/// Pixels at least this bright (after inversion) count as ink when finding the subject.
const INK_THRESHOLD: u8 = 40;

/// How the picture is brought to the frame size.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    Serialize,
    Deserialize,
    strum::VariantArray,
    strum::EnumMessage,
    strum::EnumProperty,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Fit {
    /// Resize the whole picture to the frame, as for photos of objects
    #[default]
    Stretch,
    /// Crop to the ink, fit into 20/28 of the frame keeping the aspect ratio and centre by
    /// mass, as MNIST's digits were made
    Digit,
}

/// Everything that decides how a picture file becomes a network's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pipeline {
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Keep red, green and blue (3 channels) instead of grayscale (1).
    pub color: bool,
    pub invert: Invert,
    pub fit: Fit,
}

impl Pipeline {
    /// MNIST's own preparation, for a frame of `rows` x `cols`: grayscale, inverted when the
    /// paper is light, the digit cropped, fitted into 20x20 and centred by mass in 28x28.
    pub fn mnist(rows: usize, cols: usize) -> Self {
        Self {
            width: cols as u32,
            height: rows as u32,
            color: false,
            invert: Invert::Auto,
            fit: Fit::Digit,
        }
    }

    /// 1 for grayscale, 3 for colour.
    pub fn channels(&self) -> usize {
        if self.color { 3 } else { 1 }
    }

    /// A short name for summaries, e.g. `digit 28x28 gray, invert auto`.
    pub fn name(&self) -> String {
        format!(
            "{} {}x{} {}, invert {}",
            match self.fit {
                Fit::Stretch => "stretch",
                Fit::Digit => "digit",
            },
            self.width,
            self.height,
            if self.color { "colour" } else { "gray" },
            match self.invert {
                Invert::Auto => "auto",
                Invert::Yes => "yes",
                Invert::No => "no",
            }
        )
    }

    /// Reads a picture file, by its content rather than its extension, and prepares it.
    pub fn load(&self, path: &Path) -> Result<Vec<u8>> {
        let picture = decode_picture(path).map_err(|reason| image_error(path, reason))?;
        self.prepare(&picture)
            .map_err(|reason| image_error(path, reason))
    }

    /// The frame's pixels, row-major, `channels()` bytes a pixel (RGB interleaved).
    pub fn prepare(&self, picture: &DynamicImage) -> std::result::Result<Vec<u8>, String> {
        if picture.width() == 0 || picture.height() == 0 {
            return Err("the image has no pixels".to_string());
        }
        let on_paper = on_white_paper(picture);
        if self.color {
            self.frame(on_paper)
        } else {
            self.frame(DynamicImage::ImageRgb8(on_paper).to_luma8())
        }
    }

    fn frame<P>(&self, mut picture: ImageBuffer<P, Vec<u8>>) -> std::result::Result<Vec<u8>, String>
    where
        P: Pixel<Subpixel = u8> + 'static,
    {
        let should_invert = match self.invert {
            Invert::Yes => true,
            Invert::No => false,
            Invert::Auto => border_mean(&picture) > 127.0,
        };
        if should_invert {
            image::imageops::invert(&mut picture);
        }
        let (width, height) = (self.width, self.height);
        match self.fit {
            Fit::Stretch if picture.dimensions() == (width, height) => Ok(picture.into_raw()),
            Fit::Stretch => {
                Ok(
                    image::imageops::resize(&picture, width, height, FilterType::Triangle)
                        .into_raw(),
                )
            }
            Fit::Digit => fit_digit(&picture, width, height),
        }
    }
}

/// Transparent parts become white paper, as in a drawing exported from a canvas.
fn on_white_paper(picture: &DynamicImage) -> RgbImage {
    if !picture.color().has_alpha() {
        return picture.to_rgb8();
    }
    let rgba = picture.to_rgba8();
    RgbImage::from_fn(picture.width(), picture.height(), |x, y| {
        let [r, g, b, alpha] = rgba.get_pixel(x, y).0;
        let alpha = u32::from(alpha);
        let blend = |v: u8| ((u32::from(v) * alpha + 255 * (255 - alpha) + 127) / 255) as u8;
        Rgb([blend(r), blend(g), blend(b)])
    })
}

fn luma<P: Pixel<Subpixel = u8>>(pixel: &P) -> u8 {
    pixel.to_luma().0[0]
}

/// Mean brightness of the outermost pixels: light for dark ink on paper.
fn border_mean<P: Pixel<Subpixel = u8>>(picture: &ImageBuffer<P, Vec<u8>>) -> f64 {
    let (w, h) = picture.dimensions();
    let (mut sum, mut count) = (0.0, 0usize);
    for (x, y, p) in picture.enumerate_pixels() {
        if x == 0 || y == 0 || x + 1 == w || y + 1 == h {
            sum += f64::from(luma(p));
            count += 1;
        }
    }
    sum / count.max(1) as f64
}

fn fit_digit<P>(
    picture: &ImageBuffer<P, Vec<u8>>,
    cols: u32,
    rows: u32,
) -> std::result::Result<Vec<u8>, String>
where
    P: Pixel<Subpixel = u8> + 'static,
{
    let (x0, y0, x1, y1) = ink_bounds(picture).ok_or("no digit found: the image is blank")?;
    let digit = image::imageops::crop_imm(picture, x0, y0, x1 - x0 + 1, y1 - y0 + 1).to_image();
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
    let black = P::from_slice(&[0u8; 4][..P::CHANNEL_COUNT as usize]).to_owned();
    let mut frame = ImageBuffer::from_pixel(cols, rows, black);
    image::imageops::overlay(&mut frame, &resized, i64::from(left), i64::from(top));
    Ok(frame.into_raw())
}

fn ink_bounds<P: Pixel<Subpixel = u8>>(
    picture: &ImageBuffer<P, Vec<u8>>,
) -> Option<(u32, u32, u32, u32)> {
    picture
        .enumerate_pixels()
        .filter(|(_, _, p)| luma(*p) >= INK_THRESHOLD)
        .fold(None, |bounds, (x, y, _)| match bounds {
            None => Some((x, y, x, y)),
            Some((x0, y0, x1, y1)) => Some((x0.min(x), y0.min(y), x1.max(x), y1.max(y))),
        })
}

fn centre_of_mass<P: Pixel<Subpixel = u8>>(picture: &ImageBuffer<P, Vec<u8>>) -> (f64, f64) {
    let (mut total, mut sum_x, mut sum_y) = (0.0, 0.0, 0.0);
    for (x, y, p) in picture.enumerate_pixels() {
        let weight = f64::from(luma(p));
        total += weight;
        sum_x += weight * (x as f64 + 0.5);
        sum_y += weight * (y as f64 + 0.5);
    }
    if total == 0.0 {
        (picture.width() as f64 / 2.0, picture.height() as f64 / 2.0)
    } else {
        (sum_x / total, sum_y / total)
    }
}

/// The data set's metadata file, beside `classes.txt`: how its pictures were prepared and in
/// what order its images are stored.
pub const DATASET_FILE: &str = "dataset.json";

/// `dataset.json`, as `import` writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetInfo {
    /// How each picture was prepared.
    pub pipeline: Pipeline,
    /// The seed of the shuffle that put each split in random order (none: stored as found).
    #[serde(default)]
    pub shuffle_seed: Option<u64>,
    /// The tool that wrote it, e.g. `mnist-cnn 0.1.0`.
    #[serde(default)]
    pub written_by: String,
}

impl DatasetInfo {
    /// Reads `dir/dataset.json`, if present.
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(DATASET_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        crate::fsutil::read_json(&path).map(Some)
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut text = serde_json::to_string_pretty(self).expect("plain data serialises");
        text.push('\n');
        text.into_bytes()
    }
}

fn image_error(path: &Path, reason: String) -> Error {
    Error::Image {
        path: path.to_path_buf(),
        reason,
    }
}

/// A grayscale picture as a [`DynamicImage`], for callers holding raw luma pixels.
pub fn gray(picture: GrayImage) -> DynamicImage {
    DynamicImage::ImageLuma8(picture)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Luma;

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
    fn digit_fit_inverts_and_centres() {
        let pixels = Pipeline::mnist(28, 28)
            .prepare(&gray(bar_on_paper()))
            .unwrap();
        assert_eq!(pixels.len(), 28 * 28);
        let frame = GrayImage::from_raw(28, 28, pixels).unwrap();
        assert_eq!(frame.get_pixel(0, 0).0[0], 0, "background becomes black");
        assert!(frame.get_pixel(14, 14).0[0] > 200, "bar centred and bright");
        let (x0, y0, x1, y1) = ink_bounds(&frame).unwrap();
        assert_eq!(y1 - y0 + 1, 20, "tall side scaled to 20 pixels");
        assert!((x1 - x0 + 1) <= 6, "aspect ratio kept: {x0}..{x1}");
    }

    #[test]
    fn stretch_resizes_the_whole_picture() {
        let pipeline = Pipeline {
            fit: Fit::Stretch,
            ..Pipeline::mnist(30, 60)
        };
        let pixels = pipeline.prepare(&gray(bar_on_paper())).unwrap();
        let frame = GrayImage::from_raw(60, 30, pixels).unwrap();
        // The bar stays where it was, at a sixth of the width, and is not centred.
        assert!(frame.get_pixel(12, 15).0[0] > 200);
        assert!(frame.get_pixel(30, 15).0[0] < 20);
    }

    #[test]
    fn colour_keeps_three_channels_and_transparency_is_paper() {
        let picture = DynamicImage::ImageRgba8(image::RgbaImage::from_fn(8, 8, |x, _| {
            if x < 4 {
                image::Rgba([200, 10, 10, 255])
            } else {
                image::Rgba([0, 0, 0, 0])
            }
        }));
        let pipeline = Pipeline {
            color: true,
            invert: Invert::No,
            ..Pipeline::mnist(8, 8)
        };
        let stretched = Pipeline {
            fit: Fit::Stretch,
            ..pipeline
        };
        let pixels = stretched.prepare(&picture).unwrap();
        assert_eq!(pixels.len(), 8 * 8 * 3);
        assert_eq!(&pixels[..3], &[200, 10, 10]);
        assert_eq!(
            &pixels[7 * 3..8 * 3],
            &[255, 255, 255],
            "transparent is white"
        );
    }

    #[test]
    fn blank_picture_is_an_error() {
        let blank = GrayImage::from_pixel(10, 10, Luma([255]));
        let error = Pipeline::mnist(28, 28).prepare(&gray(blank)).unwrap_err();
        assert!(error.contains("blank"), "{error}");
    }
}
