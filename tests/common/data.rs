//! Data files for the tests: gzip, a gzip member of zeros for bombs, IDX pairs on disk.

use std::io::Write;
use std::path::Path;

use mnist_cnn::data::idx::{IdxImages, encode_images, encode_labels};
use mnist_cnn::data::mnist::MNIST_FILES;

/// The four MNIST files' `.gz` names, sorted.
pub fn all_gz_names() -> Vec<String> {
    let mut names: Vec<String> = MNIST_FILES.iter().map(|file| file.gz_name()).collect();
    names.sort();
    names
}

/// `bytes` as one gzip member (fast compression).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}

/// 64 MiB of zeros as one gzip member of about 64 KiB: repeated, a gzip bomb.
pub fn zeros_member() -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder
        .write_all(&vec![0u8; 64 << 20])
        .expect("writing to memory");
    encoder.finish().expect("writing to memory")
}

/// Writes a split's two IDX files into `dir` (created if needed), named as MNIST's:
/// `{prefix}-images-idx3-ubyte` and `{prefix}-labels-idx1-ubyte`, with `.gz` when `gzipped`.
pub fn write_idx_pair(dir: &Path, prefix: &str, images: &IdxImages, labels: &[u8], gzipped: bool) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let suffix = if gzipped { ".gz" } else { "" };
    for (name, bytes) in [
        (
            format!("{prefix}-images-idx3-ubyte{suffix}"),
            encode_images(images),
        ),
        (
            format!("{prefix}-labels-idx1-ubyte{suffix}"),
            encode_labels(labels),
        ),
    ] {
        let path = dir.join(name);
        let bytes = if gzipped { gzip(&bytes) } else { bytes };
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}
