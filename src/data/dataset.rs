//! Writing a whole data set (the four IDX files, `classes.txt` and any other file of it) as one
//! atomic step: everything is staged in a folder beside the target and swapped in (see
//! [`crate::fsutil::replace_dir_atomically`]), so that a failure or a kill at any point leaves
//! the old data set whole, never new images with old labels.

use std::path::Path;

use super::mnist::{CLASSES_FILE, MNIST_FILES};
use super::pipeline::DATASET_FILE;
use crate::error::Result;
use crate::fsutil::{DirFile, replace_dir_atomically};

/// Makes `dir` hold exactly the data set `files` (plain names and contents). Files of an old data
/// set there (any name [`MnistFile::locate`](super::MnistFile::locate) finds, `classes.txt` and
/// `dataset.json`) are replaced; other files in `dir` are kept; a subfolder is refused.
pub fn write_dataset(dir: &Path, files: Vec<(String, Vec<u8>)>) -> Result<()> {
    let files: Vec<DirFile> = files
        .into_iter()
        .map(|(name, bytes)| DirFile::new(name, bytes))
        .collect();
    replace_dir_atomically(dir, &files, &is_dataset_file)
}

/// Whether `name` is a file of a data set in MNIST's layout.
pub fn is_dataset_file(name: &str) -> bool {
    name == CLASSES_FILE
        || name == DATASET_FILE
        || MNIST_FILES.iter().any(|file| {
            name == file.name
                || name == file.dotted_name
                || name.strip_suffix(".gz") == Some(file.name)
                || name.strip_suffix(".gz") == Some(file.dotted_name)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_the_data_set_files() {
        assert!(is_dataset_file("train-images-idx3-ubyte.gz"));
        assert!(is_dataset_file("t10k-labels.idx1-ubyte"));
        assert!(is_dataset_file("classes.txt"));
        assert!(is_dataset_file("dataset.json"));
        assert!(!is_dataset_file("notes.txt"));
    }
}
