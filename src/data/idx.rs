//! The IDX file format of MNIST: a big-endian header (magic, dimensions) followed by raw bytes.
//!
//! Files are decoded as a stream, gzipped (one or more members, as `gzip -d` accepts) or raw:
//! the header is read and checked first, then exactly the data it promises, and anything after
//! that is refused. Memory therefore never exceeds what the header declares (within
//! [`MAX_FILE_BYTES`]), and for a gzipped file never more than its compressed size can
//! decompress to, whatever the file holds: a gzip bomb or a lying header costs nothing.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use md5::{Digest, Md5};

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
/// Upper bound on the data of one file, so a header cannot make us reserve more.
pub const MAX_FILE_BYTES: u64 = 4 << 30;
/// DEFLATE cannot expand its input more than about 1032 times; with a margin, the most that
/// one compressed byte can justify.
const MAX_GZIP_RATIO: u64 = 1040;
/// How much trailing data is counted for the message before giving up counting.
const TRAILING_COUNT_LIMIT: u64 = 1 << 20;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Images of one IDX file, row-major, `channels` bytes a pixel (interleaved, as RGB).
/// Grayscale images are the rank-3 files of MNIST; colour ones a rank-4 file
/// (`count x rows x cols x channels`, magic [`COLOR_IMAGES_MAGIC`]).
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

/// The decompressed content of a data file as a stream.
struct Content<'a> {
    reader: Box<dyn Read + 'a>,
    gzipped: bool,
    /// The size of the file on disk.
    stored_len: u64,
}

impl<'a> Content<'a> {
    fn open(path: &Path) -> Result<Self> {
        let file = crate::fsutil::open_regular(path)?;
        let stored_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut buffered = BufReader::with_capacity(64 << 10, file);
        let gzipped = buffered
            .fill_buf()
            .map_err(|e| Error::io(path, e))?
            .starts_with(&GZIP_MAGIC);
        let reader: Box<dyn Read + 'a> = if gzipped {
            Box::new(flate2::bufread::MultiGzDecoder::new(buffered))
        } else {
            Box::new(buffered)
        };
        Ok(Self {
            reader,
            gzipped,
            stored_len,
        })
    }

    fn of_bytes(bytes: &'a [u8]) -> Self {
        Self {
            reader: Box::new(bytes),
            gzipped: false,
            stored_len: bytes.len() as u64,
        }
    }

    /// The most content this file can hold: its size when raw, its size times the largest
    /// DEFLATE ratio when gzipped.
    fn max_content_len(&self) -> u64 {
        if self.gzipped {
            self.stored_len
                .saturating_mul(MAX_GZIP_RATIO)
                .saturating_add(64 << 10)
        } else {
            self.stored_len
        }
    }

    /// Fills `buffer` as far as the content goes; the number of bytes read.
    fn read_up_to(&mut self, buffer: &mut [u8], path: &Path) -> Result<usize> {
        let mut filled = 0;
        while filled < buffer.len() {
            match self.reader.read(&mut buffer[filled..]) {
                Ok(0) => break,
                Ok(count) => filled += count,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.read_error(path, e)),
            }
        }
        Ok(filled)
    }

    fn read_error(&self, path: &Path, e: std::io::Error) -> Error {
        if self.gzipped {
            invalid(path, format!("corrupt gzip data ({e})"))
        } else {
            Error::io(path, e)
        }
    }
}

/// Reads and validates an IDX images file (gzipped or raw); returns the images and the MD5 of
/// the decompressed file.
pub fn read_images(path: &Path) -> Result<(IdxImages, String)> {
    decode_images_from(Content::open(path)?, path)
}

/// Reads and validates an IDX labels file (gzipped or raw); returns the labels and the MD5 of
/// the decompressed file.
pub fn read_labels(path: &Path) -> Result<(Vec<u8>, String)> {
    decode_labels_from(Content::open(path)?, path)
}

pub fn decode_images(bytes: &[u8], path: &Path) -> Result<IdxImages> {
    decode_images_from(Content::of_bytes(bytes), path).map(|(images, _)| images)
}

pub fn decode_labels(bytes: &[u8], path: &Path) -> Result<Vec<u8>> {
    decode_labels_from(Content::of_bytes(bytes), path).map(|(labels, _)| labels)
}

fn decode_images_from(mut content: Content<'_>, path: &Path) -> Result<(IdxImages, String)> {
    let accepted = [(IMAGES_MAGIC, 3), (COLOR_IMAGES_MAGIC, 4)];
    let (header, dims) = read_header(&mut content, &accepted, "images", path)?;
    let (count, rows, cols) = (dims[0], dims[1], dims[2]);
    if rows == 0 || cols == 0 || rows > MAX_IMAGE_SIDE || cols > MAX_IMAGE_SIDE {
        return Err(invalid(
            path,
            format!("image size {rows}x{cols} is outside 1..={MAX_IMAGE_SIDE} pixels a side"),
        ));
    }
    let channels = dims.get(3).copied().unwrap_or(1);
    if !(1..=MAX_CHANNELS).contains(&channels) {
        return Err(invalid(
            path,
            format!("{channels} channels a pixel is outside 1..={MAX_CHANNELS}"),
        ));
    }
    let expected = (count as u64) * (rows as u64) * (cols as u64) * (channels as u64);
    let pixels = read_body(&mut content, header.len(), expected, path)?;
    let md5 = md5_of(&header, &pixels);
    let images = IdxImages {
        count,
        rows,
        cols,
        channels,
        pixels,
    };
    Ok((images, md5))
}

fn decode_labels_from(mut content: Content<'_>, path: &Path) -> Result<(Vec<u8>, String)> {
    let (header, dims) = read_header(&mut content, &[(LABELS_MAGIC, 1)], "labels", path)?;
    let labels = read_body(&mut content, header.len(), dims[0] as u64, path)?;
    let md5 = md5_of(&header, &labels);
    Ok((labels, md5))
}

fn md5_of(header: &[u8], body: &[u8]) -> String {
    Md5::new()
        .chain_update(header)
        .chain_update(body)
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Reads a gzipped or raw file whole, as long as it decompresses to at most
/// [`MAX_FILE_BYTES`] and to no more than its size can justify.
pub fn read_maybe_gzipped(path: &Path) -> Result<Vec<u8>> {
    let mut content = Content::open(path)?;
    let limit = content.max_content_len().min(MAX_FILE_BYTES);
    let mut out = Vec::with_capacity(usize::try_from(limit.min(64 << 20)).unwrap_or(0));
    let mut limited = (&mut content.reader).take(limit + 1);
    if let Err(e) = limited.read_to_end(&mut out) {
        return Err(content.read_error(path, e));
    }
    if out.len() as u64 > limit {
        return Err(invalid(
            path,
            format!("decompresses to more than {limit} bytes; not an IDX file"),
        ));
    }
    Ok(out)
}

/// The length and MD5 of a file's decompressed content, read as a stream and refused once it
/// passes `max_len` bytes.
pub fn content_digest(path: &Path, max_len: u64) -> Result<(u64, String)> {
    let mut content = Content::open(path)?;
    let mut hasher = Md5::new();
    let mut buffer = vec![0u8; 64 << 10];
    let mut total = 0u64;
    loop {
        let count = content.read_up_to(&mut buffer, path)?;
        if count == 0 {
            break;
        }
        total += count as u64;
        if total > max_len {
            return Err(invalid(
                path,
                format!("decompresses to more than the expected {max_len} bytes"),
            ));
        }
        hasher.update(&buffer[..count]);
    }
    let md5 = hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    Ok((total, md5))
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

/// The header bytes and its dimensions, of which the first (the item count) is checked.
/// `accepted` lists the magic numbers allowed, each with its rank; the first is named when the
/// magic is none of them.
fn read_header(
    content: &mut Content<'_>,
    accepted: &[(u32, usize)],
    what: &str,
    path: &Path,
) -> Result<(Vec<u8>, Vec<usize>)> {
    let mut magic_bytes = [0u8; 4];
    let got = content.read_up_to(&mut magic_bytes, path)?;
    let truncated = |got: usize, header_len: usize| {
        invalid(
            path,
            format!("truncated: {got} bytes, shorter than the {header_len}-byte IDX {what} header"),
        )
    };
    if got < 4 {
        return Err(truncated(got, 4 + 4 * accepted[0].1));
    }
    let found = read_u32(&magic_bytes, 0);
    let Some(&(_, rank)) = accepted.iter().find(|(magic, _)| *magic == found) else {
        let magic = accepted[0].0;
        return Err(invalid(
            path,
            format!("wrong magic number {found:#010x}, expected {magic:#010x} for IDX {what}"),
        ));
    };
    let header_len = 4 + 4 * rank;
    let mut header = vec![0u8; header_len];
    header[..4].copy_from_slice(&magic_bytes);
    let got = 4 + content.read_up_to(&mut header[4..], path)?;
    if got < header_len {
        return Err(truncated(got, header_len));
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| read_u32(&header, 4 + 4 * i) as usize)
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
    Ok((header, dims))
}

/// The data after the header, which must be exactly `expected` bytes long. A raw file's size
/// is checked before anything is allocated; a gzipped file is read only as far as the header
/// promises, into memory reserved no larger than its compressed size can justify.
fn read_body(
    content: &mut Content<'_>,
    header_len: usize,
    expected: u64,
    path: &Path,
) -> Result<Vec<u8>> {
    if expected > MAX_FILE_BYTES {
        return Err(invalid(
            path,
            format!(
                "header promises {expected} data bytes, more than the limit of {} GiB",
                MAX_FILE_BYTES >> 30
            ),
        ));
    }
    let truncated = |got: u64| {
        invalid(
            path,
            format!("truncated: header promises {expected} data bytes, file has {got}"),
        )
    };
    let trailing = |extra: String| {
        invalid(
            path,
            format!("{extra} unexpected trailing bytes after the {expected} data bytes"),
        )
    };
    if !content.gzipped {
        let body_len = content.stored_len.saturating_sub(header_len as u64);
        if body_len < expected {
            return Err(truncated(body_len));
        }
        if body_len > expected {
            return Err(trailing((body_len - expected).to_string()));
        }
    }
    let reserve = expected.min(content.max_content_len());
    let mut body = Vec::with_capacity(usize::try_from(reserve).unwrap_or(0));
    let mut limited = (&mut content.reader).take(expected);
    if let Err(e) = limited.read_to_end(&mut body) {
        return Err(content.read_error(path, e));
    }
    if (body.len() as u64) < expected {
        return Err(truncated(body.len() as u64));
    }
    // Reading on to the end also checks the gzip trailer (CRC and length) of the last member.
    let mut extra = 0u64;
    let mut buffer = [0u8; 8192];
    loop {
        let count = content.read_up_to(&mut buffer, path)?;
        if count == 0 {
            break;
        }
        extra += count as u64;
        if extra >= TRAILING_COUNT_LIMIT {
            return Err(trailing(format!("at least {extra}")));
        }
    }
    if extra > 0 {
        return Err(trailing(extra.to_string()));
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

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn multi_member_gzip_is_one_stream() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = encode_images(&sample_images());
        let (first, second) = bytes.split_at(10);
        let mut joined = gzip(first);
        joined.extend(gzip(second));
        let path = write(&dir, "x.gz", &joined);
        let (images, md5) = read_images(&path).unwrap();
        assert_eq!(images, sample_images());
        assert_eq!(md5, crate::data::mnist::md5_hex(&bytes));
        assert_eq!(read_maybe_gzipped(&path).unwrap(), bytes);
    }

    #[test]
    fn junk_after_the_gzip_stream_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for junk in [&b"junk"[..], &[0u8; 16], &[0x1f, 0x8b, 8]] {
            let mut bytes = gzip(&encode_labels(&[1, 2]));
            bytes.extend_from_slice(junk);
            let path = write(&dir, "x.gz", &bytes);
            let message = error_of(read_labels(&path));
            assert!(message.contains("corrupt gzip data"), "{junk:?}: {message}");
            assert!(content_digest(&path, 1 << 20).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn data_beyond_the_header_is_refused_without_reading_it_all() {
        let dir = tempfile::tempdir().unwrap();
        // 2 labels promised, then 64 MiB of zeros: a bomb of about 64 KiB.
        let mut bytes = encode_labels(&[1, 2]);
        bytes.resize(bytes.len() + (64 << 20), 0);
        let path = write(&dir, "x.gz", &gzip(&bytes));
        let message = error_of(read_labels(&path));
        assert!(
            message.contains("at least 1048576 unexpected trailing bytes after the 2 data bytes"),
            "{message}"
        );
        // The same raw file is refused by its size alone.
        let path = write(&dir, "x", &bytes);
        let message = error_of(read_labels(&path));
        assert!(
            message.contains("67108864 unexpected trailing bytes"),
            "{message}"
        );
    }

    #[test]
    fn a_lying_header_is_refused_before_allocating() {
        let dir = tempfile::tempdir().unwrap();
        let lying = |count: u32, rows: u32, cols: u32| {
            let mut bytes = IMAGES_MAGIC.to_be_bytes().to_vec();
            for dim in [count, rows, cols] {
                bytes.extend_from_slice(&dim.to_be_bytes());
            }
            bytes.extend_from_slice(&[7; 100]);
            bytes
        };
        // 10 million 1024x1024 images: 10 TB, beyond the limit.
        let path = write(&dir, "huge", &lying(10_000_000, 1024, 1024));
        assert!(error_of(read_images(&path)).contains("more than the limit of 4 GiB"));
        // 4000 1024x1024 images (4 GB) in a 116-byte raw file: refused by size.
        let path = write(&dir, "raw", &lying(4000, 1024, 1024));
        let message = error_of(read_images(&path));
        assert!(
            message.contains("promises 4194304000 data bytes, file has 100"),
            "{message}"
        );
        // The same gzipped: read as far as it goes, then called truncated.
        let path = write(&dir, "gz", &gzip(&lying(4000, 1024, 1024)));
        let message = error_of(read_images(&path));
        assert!(
            message.contains("promises 4194304000 data bytes, file has 100"),
            "{message}"
        );
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fifo");
        let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a valid path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
        let message = error_of(read_labels(&path));
        assert!(message.contains("is not a regular file"), "{message}");
        assert!(error_of(read_labels(dir.path())).contains("is not a regular file"));
    }

    #[test]
    fn zero_sized_images_are_rejected() {
        let images = IdxImages::gray(0, 0, 28, vec![]);
        let message = error_of(decode_images(&encode_images(&images), path()));
        assert!(message.contains("image size 0x28"), "{message}");
    }
}
