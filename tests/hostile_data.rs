//! Hostile data files against the real binary: gzip bombs, lying headers, FIFOs, junk after
//! the gzip stream, multi-member gzip. Each run's peak memory is measured (`wait4`'s maximum
//! resident set of that one child) and must stay within the data the header declares plus a
//! small constant.

mod common;

use std::io::Write;
use std::path::Path;

use common::data::{gzip, write_idx_pair, zeros_member};
use common::run_measured;
use mnist_cnn::data::idx::{IdxImages, encode_images};

/// What the binary itself takes to start, load a small split and draw: well under this.
const BASELINE_MB: f64 = 120.0;

/// A split of `count` 28x28 images and labels in `dir`, as raw IDX files.
fn write_small_split(dir: &Path, prefix: &str, count: usize) {
    let images = IdxImages::gray(count, 28, 28, vec![9; count * 784]);
    let labels: Vec<u8> = (0..count).map(|i| (i % 10) as u8).collect();
    write_idx_pair(dir, prefix, &images, &labels, false);
}

/// A gzip bomb of about `members` x 64 KiB: the header of 60,000 28x28 images (47 MB of
/// pixels, the size of MNIST's), then `members` x 64 MiB of zeros as concatenated gzip members.
fn write_bomb(path: &Path, members: usize) -> u64 {
    let mut header = encode_images(&IdxImages {
        count: 60_000,
        rows: 28,
        cols: 28,
        channels: 1,
        pixels: Vec::new(),
    });
    header.truncate(16);
    let zeros = zeros_member();
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    file.write_all(&gzip(&header)).unwrap();
    for _ in 0..members {
        file.write_all(&zeros).unwrap();
    }
    file.flush().unwrap();
    std::fs::metadata(path).unwrap().len()
}

#[test]
fn a_gzip_bomb_in_the_data_dir_costs_no_more_than_its_header_declares() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_small_split(&data, "train", 10);
    std::fs::remove_file(data.join("train-images-idx3-ubyte")).unwrap();
    // About 20 MB on disk, 20 GB decompressed.
    let size = write_bomb(&data.join("train-images-idx3-ubyte.gz"), 300);
    assert!((19_000_000..25_000_000).contains(&size), "{size}");
    let (code, stderr, peak_mb) = run_measured(dir.path(), &["--data-dir", "data", "heatmap"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("at least 1048576 unexpected trailing bytes after the 47040000 data bytes"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let declared_mb = 47_040_016.0 / 1e6;
    eprintln!("heatmap on a {size}-byte gzip bomb: peak {peak_mb:.0} MB");
    assert!(
        peak_mb < declared_mb + BASELINE_MB,
        "peak {peak_mb:.0} MB for a file declaring {declared_mb:.0} MB"
    );
}

#[test]
fn a_raw_file_with_a_lying_header_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_small_split(&data, "train", 10);
    // 3 GiB (sparse) whose header claims 4.2 million images: 3.3 GB, a little more than it holds.
    let path = data.join("train-images-idx3-ubyte");
    let mut header = Vec::new();
    for word in [0x0803u32, 4_200_000, 28, 28] {
        header.extend_from_slice(&word.to_be_bytes());
    }
    let file = std::fs::File::create(&path).unwrap();
    (&file).write_all(&header).unwrap();
    file.set_len(3 << 30).unwrap();
    drop(file);
    let (code, stderr, peak_mb) = run_measured(dir.path(), &["--data-dir", "data", "heatmap"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("truncated: header promises 3292800000 data bytes, file has 3221225456"),
        "{stderr}"
    );
    eprintln!("heatmap on a 3 GiB raw file with a lying header: peak {peak_mb:.0} MB");
    assert!(peak_mb < BASELINE_MB, "peak {peak_mb:.0} MB");
    // And a header claiming 2^31 images fails on the header alone.
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &(1u32 << 31).to_be_bytes(), 4).unwrap();
    drop(file);
    let (code, stderr, peak_mb) = run_measured(dir.path(), &["--data-dir", "data", "heatmap"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("header claims 2147483648 images"),
        "{stderr}"
    );
    assert!(peak_mb < BASELINE_MB, "peak {peak_mb:.0} MB");
}

#[test]
fn multi_member_gzip_is_read_and_junk_after_it_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_small_split(&data, "train", 20);
    let raw = std::fs::read(data.join("train-images-idx3-ubyte")).unwrap();
    std::fs::remove_file(data.join("train-images-idx3-ubyte")).unwrap();
    let (first, second) = raw.split_at(1000);
    let mut two_members = gzip(first);
    two_members.extend(gzip(second));
    std::fs::write(data.join("train-images-idx3-ubyte.gz"), &two_members).unwrap();
    common::mnist_cnn(dir.path())
        .args(["--data-dir", "data", "heatmap", "--index", "19"])
        .assert()
        .success();
    let mut with_junk = two_members;
    with_junk.extend_from_slice(b"<html>junk</html>");
    std::fs::write(data.join("train-images-idx3-ubyte.gz"), &with_junk).unwrap();
    let output = common::mnist_cnn(dir.path())
        .args(["--data-dir", "data", "heatmap"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("train-images-idx3-ubyte.gz: corrupt gzip data"),
        "{stderr}"
    );
}

#[test]
fn a_fifo_in_the_data_dir_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_small_split(&data, "train", 10);
    let fifo = data.join("train-labels-idx1-ubyte.gz");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
    // `locate` passes over what is not a regular file: the raw labels are read instead, and
    // without them the labels are missing. Nothing ever opens the FIFO, which would block.
    common::mnist_cnn(dir.path())
        .args(["--data-dir", "data", "heatmap", "--index", "3"])
        .timeout(std::time::Duration::from_secs(20))
        .assert()
        .success();
    std::fs::remove_file(data.join("train-labels-idx1-ubyte")).unwrap();
    let output = common::mnist_cnn(dir.path())
        .args(["--data-dir", "data", "heatmap"])
        .timeout(std::time::Duration::from_secs(20))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("train-labels-idx1-ubyte not found"),
        "{stderr}"
    );
}
