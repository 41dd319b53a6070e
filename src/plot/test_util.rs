//! Helpers for the pictures' unit tests: decoding a written PNG and checking failures.

use std::path::Path;

use plotters::style::RGBColor;

use crate::error::{Error, Result};

pub(crate) fn decode(path: &Path) -> image::RgbImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("{} does not decode: {e}", path.display()))
        .to_rgb8()
}

pub(crate) fn pixel(img: &image::RgbImage, x: i32, y: i32) -> RGBColor {
    let p = img.get_pixel(x as u32, y as u32);
    RGBColor(p[0], p[1], p[2])
}

/// `result` is an [`Error::Plot`] for `path` mentioning `expected`, and nothing was written.
pub(crate) fn assert_plot_error(result: Result<()>, path: &Path, expected: &str) {
    match result {
        Err(Error::Plot { path: p, reason }) => {
            assert_eq!(p, path);
            assert!(
                reason.contains(expected),
                "reason {reason:?} lacks {expected:?}"
            );
        }
        other => panic!("expected Error::Plot containing {expected:?}, got {other:?}"),
    }
    assert!(
        !path.exists(),
        "{} was written despite the error",
        path.display()
    );
}

/// Only the finished PNG is in `dir`: no temporary files are left behind.
pub(crate) fn assert_only_file(dir: &Path, name: &str) {
    let names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec![name.to_string()]);
}
