//! The IDX file format of MNIST: a big-endian header (magic, dimensions) followed by raw bytes.

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Colour images: rank 4, `count x rows x cols x channels` (channels interleaved per pixel).
pub const COLOR_IMAGES_MAGIC: u32 = 0x0000_0804;
/// Gray (1), RGB (3) or RGBA (4).
pub const MAX_CHANNELS: usize = 4;
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// No IDX data set we read comes near this; a header claiming more is corrupt or hostile.
pub const MAX_ITEMS: usize = 10_000_000;
pub const MAX_IMAGE_SIDE: usize = 1024;
/// Upper bound on a decompressed file, so a gzip bomb cannot exhaust memory.
pub const MAX_FILE_BYTES: u64 = 4 << 30;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Images of one IDX file, row-major, `channels` bytes a pixel (interleaved, as RGB).
/// Grayscale images are the rank-3 files of MNIST; colour ones a rank-4 file
/// (`count x rows x cols x channels`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub channels: usize,
    pub pixels: Vec<u8>,
}

impl IdxImages {
    /// Grayscale images, one byte a pixel.
    pub fn gray(count: usize, rows: usize, cols: usize, pixels: Vec<u8>) -> Self {
        Self {
            count,
            rows,
            cols,
            channels: 1,
            pixels,
        }
    }
}

/// Reads a file, gunzipping it when it starts with the gzip magic.
pub fn read_maybe_gzipped(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok(raw);
    }
    gunzip(&raw).map_err(|reason| invalid(path, reason))
}

/// Decompresses a whole gzip stream, refusing output beyond [`MAX_FILE_BYTES`].
pub fn gunzip(compressed: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(compressed.len().saturating_mul(4));
    flate2::read::GzDecoder::new(compressed)
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("corrupt gzip data ({e})"))?;
    if out.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "decompresses to more than {} GiB; not an IDX file",
            MAX_FILE_BYTES >> 30
        ));
    }
    Ok(out)
}

pub fn decode_images(bytes: &[u8], path: &Path) -> Result<IdxImages> {
    let color = bytes.len() >= 4 && read_u32(bytes, 0) == COLOR_IMAGES_MAGIC;
    let (magic, rank) = if color {
        (COLOR_IMAGES_MAGIC, 4)
    } else {
        (IMAGES_MAGIC, 3)
    };
    let dims = decode_header(bytes, magic, rank, "images", path)?;
    let (count, rows, cols) = (dims[0], dims[1], dims[2]);
    let channels = if color { dims[3] } else { 1 };
    if !(1..=MAX_CHANNELS).contains(&channels) {
        return Err(invalid(
            path,
            format!("{channels} channels a pixel is outside 1..={MAX_CHANNELS}"),
        ));
    }
    if rows == 0 || cols == 0 || rows > MAX_IMAGE_SIDE || cols > MAX_IMAGE_SIDE {
        return Err(invalid(
            path,
            format!("image size {rows}x{cols} is outside 1..={MAX_IMAGE_SIDE} pixels a side"),
        ));
    }
    let pixels = checked_body(bytes, 4 + 4 * rank, count * rows * cols * channels, path)?;
    Ok(IdxImages {
        count,
        rows,
        cols,
        channels,
        pixels: pixels.to_vec(),
    })
}

pub fn decode_labels(bytes: &[u8], path: &Path) -> Result<Vec<u8>> {
    let dims = decode_header(bytes, LABELS_MAGIC, 1, "labels", path)?;
    Ok(checked_body(bytes, 8, dims[0], path)?.to_vec())
}

pub fn encode_images(images: &IdxImages) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + images.pixels.len());
    if images.channels == 1 {
        out.extend_from_slice(&IMAGES_MAGIC.to_be_bytes());
    } else {
        out.extend_from_slice(&COLOR_IMAGES_MAGIC.to_be_bytes());
    }
    for dim in [images.count, images.rows, images.cols] {
        out.extend_from_slice(&(dim as u32).to_be_bytes());
    }
    if images.channels != 1 {
        out.extend_from_slice(&(images.channels as u32).to_be_bytes());
    }
    out.extend_from_slice(&images.pixels);
    out
}

pub fn encode_labels(labels: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + labels.len());
    out.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
    out.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    out.extend_from_slice(labels);
    out
}

fn decode_header(
    bytes: &[u8],
    magic: u32,
    rank: usize,
    what: &str,
    path: &Path,
) -> Result<Vec<usize>> {
    let header_len = 4 + 4 * rank;
    let truncated = || {
        invalid(
            path,
            format!(
                "truncated: {} bytes, shorter than the {header_len}-byte IDX {what} header",
                bytes.len()
            ),
        )
    };
    if bytes.len() < 4 {
        return Err(truncated());
    }
    let found = read_u32(bytes, 0);
    if found != magic {
        return Err(invalid(
            path,
            format!("wrong magic number {found:#010x}, expected {magic:#010x} for IDX {what}"),
        ));
    }
    if bytes.len() < header_len {
        return Err(truncated());
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| read_u32(bytes, 4 + 4 * i) as usize)
        .collect();
    if dims[0] > MAX_ITEMS {
        return Err(invalid(
            path,
            format!(
                "header claims {} {what}, more than the limit of {MAX_ITEMS}",
                dims[0]
            ),
        ));
    }
    Ok(dims)
}

/// The data after the header, which must be exactly `expected` bytes long.
fn checked_body<'a>(
    bytes: &'a [u8],
    header_len: usize,
    expected: usize,
    path: &Path,
) -> Result<&'a [u8]> {
    let body = &bytes[header_len..];
    if body.len() < expected {
        return Err(invalid(
            path,
            format!(
                "truncated: header promises {expected} data bytes, file has {}",
                body.len()
            ),
        ));
    }
    if body.len() > expected {
        return Err(invalid(
            path,
            format!(
                "{} unexpected trailing bytes after the {expected} data bytes",
                body.len() - expected
            ),
        ));
    }
    Ok(body)
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn invalid(path: &Path, reason: impl Into<String>) -> Error {
    Error::InvalidIdx {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path() -> &'static Path {
        Path::new("test.idx")
    }

    fn sample_images() -> IdxImages {
        IdxImages::gray(3, 4, 5, (0..60).map(|i| (i * 4) as u8).collect())
    }

    #[test]
    fn colour_images_round_trip_as_rank_4() {
        let images = IdxImages {
            count: 2,
            rows: 3,
            cols: 4,
            channels: 3,
            pixels: (0..72).map(|i| (i * 3) as u8).collect(),
        };
        let bytes = encode_images(&images);
        assert_eq!(read_u32(&bytes, 0), COLOR_IMAGES_MAGIC);
        assert_eq!(read_u32(&bytes, 16), 3);
        assert_eq!(decode_images(&bytes, path()).unwrap(), images);
        let mut bad = bytes.clone();
        bad[16..20].copy_from_slice(&9u32.to_be_bytes());
        let message = error_of(decode_images(&bad, path()));
        assert!(message.contains("9 channels"), "{message}");
    }

    fn error_of<T: std::fmt::Debug>(result: Result<T>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn images_round_trip() {
        let images = sample_images();
        assert_eq!(
            decode_images(&encode_images(&images), path()).unwrap(),
            images
        );
    }

    #[test]
    fn labels_round_trip() {
        let labels = vec![0, 9, 3, 3, 7];
        assert_eq!(
            decode_labels(&encode_labels(&labels), path()).unwrap(),
            labels
        );
    }

    #[test]
    fn gzipped_file_round_trips() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.gz");
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&encode_labels(&[1, 2])).unwrap();
        std::fs::write(&file, encoder.finish().unwrap()).unwrap();
        let bytes = read_maybe_gzipped(&file).unwrap();
        assert_eq!(decode_labels(&bytes, &file).unwrap(), vec![1, 2]);
    }

    #[test]
    fn corrupt_gzip_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.gz");
        std::fs::write(&file, [0x1f, 0x8b, 8, 0, 1, 2, 3, 4, 5, 6, 7]).unwrap();
        let message = error_of(read_maybe_gzipped(&file));
        assert!(message.contains("corrupt gzip"), "{message}");
        assert!(message.contains("x.gz"), "{message}");
    }

    #[test]
    fn wrong_magic_is_rejected() {
        let message = error_of(decode_images(&encode_labels(&[1, 2, 3]), path()));
        assert!(
            message.contains("wrong magic number 0x00000801"),
            "{message}"
        );
        assert!(message.starts_with("test.idx"), "{message}");
    }

    #[test]
    fn short_header_is_rejected() {
        let message = error_of(decode_images(&[0, 0, 8, 3, 0, 0], path()));
        assert!(message.contains("truncated"), "{message}");
    }

    #[test]
    fn truncated_body_is_rejected() {
        let mut bytes = encode_images(&sample_images());
        bytes.truncate(bytes.len() - 1);
        let message = error_of(decode_images(&bytes, path()));
        assert!(
            message.contains("promises 60 data bytes, file has 59"),
            "{message}"
        );
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = encode_labels(&[1, 2]);
        bytes.push(0);
        let message = error_of(decode_labels(&bytes, path()));
        assert!(message.contains("1 unexpected trailing bytes"), "{message}");
    }

    #[test]
    fn billions_of_items_fail_before_allocating() {
        let mut bytes = encode_labels(&[]);
        bytes[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        let message = error_of(decode_labels(&bytes, path()));
        assert!(message.contains("4294967295 labels"), "{message}");
    }

    #[test]
    fn absurd_image_size_is_rejected() {
        let mut bytes = encode_images(&sample_images());
        bytes[8..12].copy_from_slice(&100_000u32.to_be_bytes());
        let message = error_of(decode_images(&bytes, path()));
        assert!(message.contains("image size 100000x5"), "{message}");
    }

    #[test]
    fn zero_sized_images_are_rejected() {
        let images = IdxImages::gray(0, 0, 28, vec![]);
        let message = error_of(decode_images(&encode_images(&images), path()));
        assert!(message.contains("image size 0x28"), "{message}");
    }
}
