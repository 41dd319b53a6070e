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
use image::{DynamicImage, GenericImageView, GrayImage, ImageBuffer, Pixel, Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use super::image::{Decoded, Invert, decode_bytes, decode_file};
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

    /// What preparing a picture does, in words, for people (the `serve` page says it).
    pub fn describe(&self) -> String {
        let colour = if self.color { "in colour" } else { "grayscale" };
        let invert = match self.invert {
            Invert::Auto => ", inverted when its border is light (dark ink on paper)",
            Invert::Yes => ", inverted",
            Invert::No => "",
        };
        let (width, height) = (self.width, self.height);
        let fit = match self.fit {
            Fit::Stretch => format!("resized whole to {width}x{height}"),
            Fit::Digit => {
                let (box_width, box_height) = digit_box(width, height);
                format!(
                    "cropped to the ink, fitted into {box_width}x{box_height} keeping its shape and \
                     centred by mass in {width}x{height}"
                )
            }
        };
        format!("{colour}{invert}, {fit}")
    }

    /// What preparing takes per pixel of the picture beside the decoded picture itself: the
    /// picture on paper, one byte a channel (the crop to the ink is a view of it, and the
    /// resized frame is small).
    fn bytes_per_pixel(&self) -> u64 {
        self.channels() as u64
    }

    /// Reads a picture file, by its content rather than its extension, and prepares it. The
    /// one path from a file to a network's input: `import`, `predict` and `inspect` use it.
    pub fn load(&self, path: &Path) -> Result<Vec<u8>> {
        decode_file(path, self.bytes_per_pixel())
            .and_then(|decoded| self.prepare_decoded(decoded))
            .map_err(|reason| image_error(path, reason))
    }

    /// Decodes an encoded PNG or JPEG held in memory and prepares it, as [`Pipeline::load`]
    /// does a file; the web server's path.
    pub fn prepare_bytes(&self, bytes: &[u8]) -> std::result::Result<Vec<u8>, String> {
        decode_bytes(bytes, self.bytes_per_pixel())
            .and_then(|decoded| self.prepare_decoded(decoded))
    }

    /// Prepares a picture decoded within the memory budget, then gives its memory back.
    fn prepare_decoded(&self, decoded: Decoded) -> std::result::Result<Vec<u8>, String> {
        let Decoded {
            picture,
            reservation,
        } = decoded;
        let pixels = self.prepare(&picture);
        drop(picture);
        drop(reservation);
        pixels
    }

    /// The frame's pixels, row-major, `channels()` bytes a pixel (RGB interleaved).
    pub fn prepare(&self, picture: &DynamicImage) -> std::result::Result<Vec<u8>, String> {
        if picture.width() == 0 || picture.height() == 0 {
            return Err("the image has no pixels".to_string());
        }
        if self.color {
            self.frame(on_white_paper(picture))
        } else {
            self.frame(grey_on_white_paper(picture))
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

/// Rows converted at a time to grey, so that the RGB copy stays small.
const GREY_BAND_ROWS: u32 = 64;

/// The picture as 8-bit RGB on white paper: transparent parts become paper, as in a drawing
/// exported from a canvas. One buffer of the output's size, however the picture was stored.
fn on_white_paper(picture: &DynamicImage) -> RgbImage {
    rows_on_white_paper(picture, 0, picture.height())
}

/// The same, in grey, made a band of rows at a time: the grey buffer is the only full-size
/// copy.
fn grey_on_white_paper(picture: &DynamicImage) -> GrayImage {
    let (width, height) = picture.dimensions();
    let mut grey = Vec::with_capacity(width as usize * height as usize);
    for top in (0..height).step_by(GREY_BAND_ROWS as usize) {
        let band = rows_on_white_paper(picture, top, GREY_BAND_ROWS.min(height - top));
        grey.extend(DynamicImage::ImageRgb8(band).to_luma8().into_raw());
    }
    GrayImage::from_raw(width, height, grey).expect("one byte per pixel")
}

/// `rows` rows of the picture from `top`, as [`on_white_paper`] makes them.
fn rows_on_white_paper(picture: &DynamicImage, top: u32, rows: u32) -> RgbImage {
    let has_alpha = picture.color().has_alpha();
    RgbImage::from_fn(picture.width(), rows, |x, y| {
        // `get_pixel` converts any stored depth and layout to 8-bit RGBA exactly as `to_rgba8`
        // and `to_rgb8` do, without their whole-picture copies.
        let [r, g, b, alpha] = picture.get_pixel(x, top + y).0;
        if !has_alpha {
            return Rgb([r, g, b]);
        }
        let alpha = u32::from(alpha);
        let blend = |v: u8| ((u32::from(v) * alpha + 255 * (255 - alpha) + 127) / 255) as u8;
        Rgb([blend(r), blend(g), blend(b)])
    })
}

/// The box a digit is fitted into, in a frame of `width` x `height`.
fn digit_box(width: u32, height: u32) -> (u32, u32) {
    (
        ((width as f64 * DIGIT_BOX_FRACTION).round() as u32).max(1),
        ((height as f64 * DIGIT_BOX_FRACTION).round() as u32).max(1),
    )
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
    // A view, not a copy: the resize reads the ink's box in place.
    let digit = image::imageops::crop_imm(picture, x0, y0, x1 - x0 + 1, y1 - y0 + 1);
    let (box_width, box_height) = digit_box(cols, rows);
    let scale =
        (box_width as f64 / digit.width() as f64).min(box_height as f64 / digit.height() as f64);
    let width = ((digit.width() as f64 * scale).round() as u32).clamp(1, box_width);
    let height = ((digit.height() as f64 * scale).round() as u32).clamp(1, box_height);
    let resized = image::imageops::resize(&*digit, width, height, FilterType::CatmullRom);

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

    /// The conversions before this pass: the whole picture to 8-bit RGB(A), blended onto
    /// paper, then to grey.
    fn on_paper_by_copies(picture: &DynamicImage) -> (RgbImage, GrayImage) {
        let rgb = if picture.color().has_alpha() {
            let rgba = picture.to_rgba8();
            RgbImage::from_fn(picture.width(), picture.height(), |x, y| {
                let [r, g, b, alpha] = rgba.get_pixel(x, y).0;
                let alpha = u32::from(alpha);
                let blend =
                    |v: u8| ((u32::from(v) * alpha + 255 * (255 - alpha) + 127) / 255) as u8;
                Rgb([blend(r), blend(g), blend(b)])
            })
        } else {
            picture.to_rgb8()
        };
        let grey = DynamicImage::ImageRgb8(rgb.clone()).to_luma8();
        (rgb, grey)
    }

    #[test]
    fn one_pass_equals_whole_picture_conversions_for_every_layout() {
        let value = |x: u32, y: u32, c: u32| (x * 37 + y * 91 + c * 53) % 65_536;
        // Taller than a band of grey rows, and not a multiple of it.
        let (w, h) = (23, GREY_BAND_ROWS * 2 + 17);
        let pictures = [
            DynamicImage::ImageLuma8(ImageBuffer::from_fn(w, h, |x, y| {
                image::Luma([value(x, y, 0) as u8])
            })),
            DynamicImage::ImageLumaA8(ImageBuffer::from_fn(w, h, |x, y| {
                image::LumaA([value(x, y, 0) as u8, value(x, y, 1) as u8])
            })),
            DynamicImage::ImageRgb8(ImageBuffer::from_fn(w, h, |x, y| {
                Rgb([0, 1, 2].map(|c| value(x, y, c) as u8))
            })),
            DynamicImage::ImageRgba8(ImageBuffer::from_fn(w, h, |x, y| {
                image::Rgba([0, 1, 2, 3].map(|c| value(x, y, c) as u8))
            })),
            DynamicImage::ImageLuma16(ImageBuffer::from_fn(w, h, |x, y| {
                image::Luma([(value(x, y, 0) * 97 % 65_536) as u16])
            })),
            DynamicImage::ImageLumaA16(ImageBuffer::from_fn(w, h, |x, y| {
                image::LumaA([0, 1].map(|c| (value(x, y, c) * 97 % 65_536) as u16))
            })),
            DynamicImage::ImageRgb16(ImageBuffer::from_fn(w, h, |x, y| {
                Rgb([0, 1, 2].map(|c| (value(x, y, c) * 97 % 65_536) as u16))
            })),
            DynamicImage::ImageRgba16(ImageBuffer::from_fn(w, h, |x, y| {
                image::Rgba([0, 1, 2, 3].map(|c| (value(x, y, c) * 97 % 65_536) as u16))
            })),
        ];
        for picture in pictures {
            let (rgb, grey) = on_paper_by_copies(&picture);
            assert_eq!(on_white_paper(&picture), rgb, "{:?}", picture.color());
            assert_eq!(grey_on_white_paper(&picture), grey, "{:?}", picture.color());
        }
    }

    #[test]
    fn descriptions_name_the_steps() {
        let digit = Pipeline::mnist(28, 28).describe();
        assert_eq!(
            digit,
            "grayscale, inverted when its border is light (dark ink on paper), cropped to the \
             ink, fitted into 20x20 keeping its shape and centred by mass in 28x28"
        );
        let stretch = Pipeline {
            fit: Fit::Stretch,
            color: true,
            invert: Invert::No,
            ..Pipeline::mnist(32, 64)
        };
        assert_eq!(stretch.describe(), "in colour, resized whole to 64x32");
    }

    #[test]
    fn blank_picture_is_an_error() {
        let blank = GrayImage::from_pixel(10, 10, Luma([255]));
        let error = Pipeline::mnist(28, 28).prepare(&gray(blank)).unwrap_err();
        assert!(error.contains("blank"), "{error}");
    }
}
