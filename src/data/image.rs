//! Decoding a picture file safely: PNG or JPEG by content, with one set of caps for every
//! command and the web server, and memory bounded for the whole process.
//!
//! A picture is decoded only after its header has been read and the memory that decoding and
//! preparing it will take has been reserved from one process-wide budget
//! ([`PICTURE_MEMORY_BUDGET`]). A picture that alone would need more is refused before anything
//! is allocated; pictures decoded on several threads at once wait for each other's memory, so
//! the peak does not grow with the thread count. [`super::pipeline`] turns the decoded picture
//! into a network's input.

use std::io::{BufRead, Seek};
use std::path::Path;
use std::sync::{Condvar, Mutex};

use image::{DynamicImage, ImageDecoder, ImageFormat};

use crate::error::Error;

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
/// The most memory that decoding and preparing pictures may hold at once, in the whole process;
/// also the most that one picture may need. With the program's own ~60 MiB, a process stays
/// under 512 MiB whatever pictures it prepares on however many threads.
pub const PICTURE_MEMORY_BUDGET: u64 = 416 << 20;
/// How many decoded bytes one byte of a picture file can justify: DEFLATE (PNG) expands at most
/// about 1032 times, and a flat JPEG block of 8x8 pixels in 3 channels takes a few bits.
const MAX_PICTURE_RATIO: u64 = 2048;
/// What a decoder holds besides its output: row buffers and tables.
const DECODER_OVERHEAD: u64 = 4 << 20;
/// A progressive JPEG keeps every component's coefficients, 2 bytes a sample, until its last
/// scan: as much again as its decoded 8-bit RGB pixels with the usual 4:2:0 subsampling.
const JPEG_COEFFICIENTS_FACTOR: u64 = 2;

/// The process-wide budget of [`PICTURE_MEMORY_BUDGET`] bytes.
static BUDGET: Budget = Budget {
    used: Mutex::new(0),
    freed: Condvar::new(),
};

struct Budget {
    used: Mutex<u64>,
    freed: Condvar,
}

/// Memory reserved from the budget for one picture; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut used = BUDGET.used.lock().unwrap_or_else(|e| e.into_inner());
        *used = used.saturating_sub(self.bytes);
        BUDGET.freed.notify_all();
    }
}

/// Waits until `bytes` fit in the budget beside the other pictures being prepared, and
/// reserves them. A request larger than the whole budget is refused at once.
fn reserve(bytes: u64, (width, height): (u32, u32)) -> Result<Reservation, String> {
    if bytes > PICTURE_MEMORY_BUDGET {
        return Err(format!(
            "the picture is too large to prepare: {width}x{height} pixels would take {} MiB of \
             memory (at most {} MiB)",
            bytes.div_ceil(1 << 20),
            PICTURE_MEMORY_BUDGET >> 20
        ));
    }
    let mut used = BUDGET.used.lock().unwrap_or_else(|e| e.into_inner());
    while *used + bytes > PICTURE_MEMORY_BUDGET {
        used = BUDGET.freed.wait(used).unwrap_or_else(|e| e.into_inner());
    }
    *used += bytes;
    Ok(Reservation { bytes })
}

/// Bytes of the budget in use now, for tests.
pub fn budget_in_use() -> u64 {
    *BUDGET.used.lock().unwrap_or_else(|e| e.into_inner())
}

/// A decoded picture and the memory reserved for it and for what its caller makes of it.
pub struct Decoded {
    pub picture: DynamicImage,
    /// Dropped with the picture, after its caller's work on it.
    pub reservation: Reservation,
}

/// Decodes a PNG or JPEG from memory (a request's body, say).
///
/// `bytes_per_pixel_after` is what the caller will allocate per pixel while the decoded
/// picture is alive (its own copies); it is reserved too.
pub fn decode_bytes(bytes: &[u8], bytes_per_pixel_after: u64) -> Result<Decoded, String> {
    decode(
        std::io::Cursor::new(bytes),
        bytes.len() as u64,
        bytes_per_pixel_after,
    )
}

/// Decodes a picture file by its content (PNG or JPEG), reading only a regular file and
/// streaming it rather than holding it whole; see [`decode_bytes`].
pub fn decode_file(path: &Path, bytes_per_pixel_after: u64) -> Result<Decoded, String> {
    let file = crate::fsutil::open_regular(path).map_err(|e| match e {
        Error::Io { source, .. } => format!("cannot read ({source})"),
        e => format!("cannot read ({e})"),
    })?;
    let stored = file
        .metadata()
        .map_err(|e| format!("cannot read ({e})"))?
        .len();
    decode(std::io::BufReader::new(file), stored, bytes_per_pixel_after)
}

/// The decoding itself: the header first, then the reservation, then the pixels, with the
/// decoder's memory bounded by what the file's size can justify, so that a small file
/// declaring a huge picture is refused instead of allocated.
fn decode<R: BufRead + Seek>(
    source: R,
    stored: u64,
    bytes_per_pixel_after: u64,
) -> Result<Decoded, String> {
    let unreadable = |e: image::ImageError| format!("cannot read as an image ({e})");
    let mut reader = image::ImageReader::new(source)
        .with_guessed_format()
        .map_err(|e| format!("cannot read ({e})"))?;
    let decoder_factor = match reader.format() {
        Some(ImageFormat::Png) => 1,
        Some(ImageFormat::Jpeg) => JPEG_COEFFICIENTS_FACTOR,
        Some(format) => {
            return Err(format!(
                "cannot read as an image ({format:?} pictures are not supported: use PNG or JPEG)"
            ));
        }
        None => return Err("cannot read as an image (not a PNG or JPEG picture)".into()),
    };
    let justified = stored
        .saturating_mul(MAX_PICTURE_RATIO)
        .saturating_add(1 << 20);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_PICTURE_SIDE);
    limits.max_image_height = Some(MAX_PICTURE_SIDE);
    limits.max_alloc = Some(justified.min(PICTURE_MEMORY_BUDGET));
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(unreadable)?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err("the image has no pixels".to_string());
    }
    let decoded = decoder.total_bytes();
    if decoded > justified {
        return Err(format!(
            "cannot read as an image (its header declares a {width}x{height} picture of {decoded} \
             bytes, more than its file of {stored} bytes can hold)"
        ));
    }
    let pixels = u64::from(width) * u64::from(height);
    let reservation = reserve(
        decoded
            .saturating_mul(decoder_factor)
            .saturating_add(pixels.saturating_mul(bytes_per_pixel_after))
            .saturating_add(DECODER_OVERHEAD),
        (width, height),
    )?;
    let picture = DynamicImage::from_decoder(decoder).map_err(unreadable)?;
    Ok(Decoded {
        picture,
        reservation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(picture: DynamicImage) -> Vec<u8> {
        let mut bytes = Vec::new();
        picture
            .write_to(&mut std::io::Cursor::new(&mut bytes), ImageFormat::Png)
            .unwrap();
        bytes
    }

    #[test]
    fn unreadable_bytes_are_a_clear_error() {
        let error = decode_bytes(b"hello", 1).err().unwrap();
        assert!(error.contains("cannot read as an image"), "{error}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-an-image.png");
        std::fs::write(&path, b"hello").unwrap();
        let error = decode_file(&path, 1).err().unwrap();
        assert!(error.contains("cannot read as an image"), "{error}");
    }

    #[test]
    fn sides_beyond_the_cap_are_refused_before_decoding() {
        let wide = png(DynamicImage::ImageLuma8(image::GrayImage::new(
            MAX_PICTURE_SIDE + 1,
            1,
        )));
        let error = decode_bytes(&wide, 1).err().unwrap();
        assert!(error.contains("cannot read as an image"), "{error}");
    }

    /// A PNG whose header declares `width` x `height` 16-bit grey pixels, padded with a text
    /// chunk of `padding` bytes; its pixel data is cut short (nothing here decodes it).
    fn declared_png(width: u32, height: u32, padding: usize) -> Vec<u8> {
        fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
            out.extend((data.len() as u32).to_be_bytes());
            let mut crc = flate2::Crc::new();
            crc.update(kind);
            crc.update(data);
            out.extend(kind);
            out.extend(data);
            out.extend(crc.sum().to_be_bytes());
        }
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut header = Vec::new();
        header.extend(width.to_be_bytes());
        header.extend(height.to_be_bytes());
        header.extend([16, 0, 0, 0, 0]);
        chunk(&mut png, b"IHDR", &header);
        let mut text = b"Comment\0".to_vec();
        text.resize(padding, b'x');
        chunk(&mut png, b"tEXt", &text);
        chunk(&mut png, b"IDAT", &[0x78, 0x9c]);
        png
    }

    #[test]
    fn a_picture_needing_more_than_the_budget_is_refused_before_decoding() {
        // 14000x14000 16-bit grey: 392 MB decoded, and 196 MB more to prepare. The file is
        // large enough to justify that many bytes, so the budget refuses it.
        let big = declared_png(14_000, 14_000, 250_000);
        let error = decode_bytes(&big, 1).err().unwrap();
        assert!(error.contains("too large to prepare"), "{error}");
        // A small file declaring the same picture is refused for its size.
        let lying = declared_png(14_000, 14_000, 100);
        let error = decode_bytes(&lying, 1).err().unwrap();
        assert!(error.contains("more than its file of"), "{error}");
    }

    #[test]
    fn a_reservation_is_held_while_the_picture_lives() {
        let small = png(DynamicImage::ImageLuma8(image::GrayImage::new(50, 40)));
        let decoded = decode_bytes(&small, 3).unwrap();
        assert_eq!(decoded.picture.width(), 50);
        assert!(budget_in_use() >= 2000 + 3 * 2000 + DECODER_OVERHEAD);
    }

    #[test]
    fn only_png_and_jpeg_are_read() {
        let gif = b"GIF89a\x02\x00\x02\x00\x00\x00\x00;";
        let error = decode_bytes(gif, 1).err().unwrap();
        assert!(error.contains("use PNG or JPEG"), "{error}");
    }
}
