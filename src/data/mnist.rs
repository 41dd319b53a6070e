//! The MNIST data set on disk: its four files, where to find them, and loading them whole.

use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use super::idx;
use crate::error::{Error, Result};

/// Optional file in a data directory naming the classes, one per line in label order.
pub const CLASSES_FILE: &str = "classes.txt";

/// One of the four canonical MNIST files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MnistFile {
    /// The canonical name without `.gz`, e.g. `train-images-idx3-ubyte`.
    pub name: &'static str,
    /// The dotted variant some mirrors and archives use, e.g. `train-images.idx3-ubyte`.
    pub dotted_name: &'static str,
    /// MD5 of the decompressed content.
    pub md5: &'static str,
}

impl MnistFile {
    pub fn gz_name(&self) -> String {
        format!("{}.gz", self.name)
    }

    /// The first existing file in `dir` that holds this file's content, gzipped or raw.
    pub fn locate(&self, dir: &Path) -> Option<PathBuf> {
        [
            self.gz_name(),
            self.name.to_string(),
            format!("{}.gz", self.dotted_name),
            self.dotted_name.to_string(),
        ]
        .into_iter()
        .map(|candidate| dir.join(candidate))
        .find(|path| path.is_file())
    }

    pub fn locate_or_explain(&self, dir: &Path) -> Result<PathBuf> {
        self.locate(dir).ok_or_else(|| Error::MissingData {
            dir: dir.to_path_buf(),
            name: self.name,
            dotted: self.dotted_name,
        })
    }
}

pub const TRAIN_IMAGES: MnistFile = MnistFile {
    name: "train-images-idx3-ubyte",
    dotted_name: "train-images.idx3-ubyte",
    md5: "6bbc9ace898e44ae57da46a324031adb",
};
pub const TRAIN_LABELS: MnistFile = MnistFile {
    name: "train-labels-idx1-ubyte",
    dotted_name: "train-labels.idx1-ubyte",
    md5: "a25bea736e30d166cdddb491f175f624",
};
pub const TEST_IMAGES: MnistFile = MnistFile {
    name: "t10k-images-idx3-ubyte",
    dotted_name: "t10k-images.idx3-ubyte",
    md5: "2646ac647ad5339dbf082846283269ea",
};
pub const TEST_LABELS: MnistFile = MnistFile {
    name: "t10k-labels-idx1-ubyte",
    dotted_name: "t10k-labels.idx1-ubyte",
    md5: "27ae3e4e09519cfbb04c329615203637",
};

pub const MNIST_FILES: [MnistFile; 4] = [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS];

pub fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Which half of the data set.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum SplitKind {
    Train,
    Test,
}

impl SplitKind {
    pub fn files(self) -> (MnistFile, MnistFile) {
        match self {
            SplitKind::Train => (TRAIN_IMAGES, TRAIN_LABELS),
            SplitKind::Test => (TEST_IMAGES, TEST_LABELS),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SplitKind::Train => "train",
            SplitKind::Test => "test",
        }
    }
}

impl std::fmt::Display for SplitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Images and labels of one split, held as raw bytes (pixels 0..=255, row-major).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
    /// MD5 of the decompressed files.
    pub checksums: Checksums,
    /// Names from `classes.txt`, when the data directory has one; see [`Split::class_names`].
    pub named_classes: Option<Vec<String>>,
}

/// MD5 of a split's decompressed images and labels files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksums {
    pub images: String,
    pub labels: String,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image_len(&self) -> usize {
        self.rows * self.cols
    }

    /// Classes as named by `classes.txt`, else one more than the largest label.
    pub fn num_classes(&self) -> usize {
        match &self.named_classes {
            Some(names) => names.len(),
            None => self.labels.iter().max().map_or(1, |&max| max as usize + 1),
        }
    }

    /// Class names from `classes.txt`, else the labels as numbers.
    pub fn class_names(&self) -> Vec<String> {
        self.named_classes
            .clone()
            .unwrap_or_else(|| (0..self.num_classes()).map(|c| c.to_string()).collect())
    }

    pub fn image(&self, index: usize) -> &[u8] {
        let size = self.image_len();
        &self.pixels[index * size..(index + 1) * size]
    }

    /// Whether both files are the canonical MNIST ones.
    pub fn is_canonical_mnist(&self, kind: SplitKind) -> bool {
        let (images, labels) = kind.files();
        self.checksums.images == images.md5 && self.checksums.labels == labels.md5
    }

    /// The image at `index`, or an error stating the valid range.
    pub fn checked_image(&self, index: usize, kind: SplitKind) -> Result<&[u8]> {
        match self.len() {
            0 => Err(Error::InvalidArgument(format!(
                "index {index} is out of range: the {kind} split has no images"
            ))),
            len if index >= len => Err(Error::InvalidArgument(format!(
                "index {index} is out of range: the {kind} split has {len} images (valid: 0..={})",
                len - 1
            ))),
            _ => Ok(self.image(index)),
        }
    }
}

/// Loads and validates one split from `dir`.
pub fn load_split(dir: &Path, kind: SplitKind) -> Result<Split> {
    let (images_file, labels_file) = kind.files();
    let images_path = images_file.locate_or_explain(dir)?;
    let labels_path = labels_file.locate_or_explain(dir)?;
    let image_bytes = idx::read_maybe_gzipped(&images_path)?;
    let label_bytes = idx::read_maybe_gzipped(&labels_path)?;
    let images = idx::decode_images(&image_bytes, &images_path)?;
    let labels = idx::decode_labels(&label_bytes, &labels_path)?;
    if images.count != labels.len() {
        return Err(Error::InvalidIdx {
            path: labels_path,
            reason: format!(
                "holds {} labels but {} holds {} images",
                labels.len(),
                images_path.display(),
                images.count
            ),
        });
    }
    let class_names = read_class_names(dir)?;
    if let Some(names) = &class_names
        && let Some(position) = labels
            .iter()
            .position(|&label| label as usize >= names.len())
    {
        return Err(Error::InvalidIdx {
            path: labels_path,
            reason: format!(
                "label {} at index {position} has no name: {} names {} classes",
                labels[position],
                dir.join(CLASSES_FILE).display(),
                names.len()
            ),
        });
    }
    Ok(Split {
        rows: images.rows,
        cols: images.cols,
        pixels: images.pixels,
        checksums: Checksums {
            images: md5_hex(&image_bytes),
            labels: md5_hex(&label_bytes),
        },
        labels,
        named_classes: class_names,
    })
}

/// The class names in `dir/classes.txt`, if present: one per line, blank lines ignored.
pub fn read_class_names(dir: &Path) -> Result<Option<Vec<String>>> {
    let path = dir.join(CLASSES_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect();
    if names.is_empty() || names.len() > 256 {
        return Err(Error::InvalidArgument(format!(
            "{}: needs 1 to 256 class names, one per line; found {}",
            path.display(),
            names.len()
        )));
    }
    Ok(Some(names))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::idx::{IdxImages, encode_images, encode_labels};

    fn write_split(dir: &Path, kind: SplitKind, count: usize, labels: Vec<u8>) {
        let (images_file, labels_file) = kind.files();
        let images = IdxImages {
            count,
            rows: 28,
            cols: 28,
            pixels: vec![7; count * 784],
        };
        std::fs::write(dir.join(images_file.name), encode_images(&images)).unwrap();
        std::fs::write(dir.join(labels_file.dotted_name), encode_labels(&labels)).unwrap();
    }

    #[test]
    fn loads_raw_and_dotted_names() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), SplitKind::Test, 2, vec![4, 2]);
        let split = load_split(dir.path(), SplitKind::Test).unwrap();
        assert_eq!(split.len(), 2);
        assert_eq!(split.labels, vec![4, 2]);
        assert_eq!(split.image(1).len(), 784);
        assert!(!split.is_canonical_mnist(SplitKind::Test));
    }

    #[test]
    fn count_mismatch_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), SplitKind::Train, 3, vec![1, 2]);
        let message = load_split(dir.path(), SplitKind::Train)
            .unwrap_err()
            .to_string();
        assert!(message.contains("holds 2 labels but"), "{message}");
        assert!(message.contains("holds 3 images"), "{message}");
    }

    #[test]
    fn label_without_a_class_name_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), SplitKind::Train, 2, vec![1, 12]);
        std::fs::write(dir.path().join(CLASSES_FILE), "a\nb\nc\n").unwrap();
        let message = load_split(dir.path(), SplitKind::Train)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("label 12 at index 1 has no name"),
            "{message}"
        );
    }

    #[test]
    fn classes_come_from_classes_txt_or_the_labels() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), SplitKind::Train, 2, vec![1, 4]);
        let split = load_split(dir.path(), SplitKind::Train).unwrap();
        assert_eq!(split.num_classes(), 5);
        assert_eq!(split.class_names()[4], "4");
        std::fs::write(
            dir.path().join(CLASSES_FILE),
            "zero\none\n\ntwo\nthree\nfour\nfive\n",
        )
        .unwrap();
        let split = load_split(dir.path(), SplitKind::Train).unwrap();
        assert_eq!(split.num_classes(), 6);
        assert_eq!(split.class_names()[1], "one");
    }

    #[test]
    fn missing_files_explain_what_to_run() {
        let dir = tempfile::tempdir().unwrap();
        let message = load_split(dir.path(), SplitKind::Train)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("train-images-idx3-ubyte not found"),
            "{message}"
        );
        assert!(message.contains("train-images-idx3-ubyte.gz"), "{message}");
    }

    #[test]
    fn index_out_of_range_states_valid_range() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), SplitKind::Test, 2, vec![4, 2]);
        let split = load_split(dir.path(), SplitKind::Test).unwrap();
        let message = split
            .checked_image(5, SplitKind::Test)
            .unwrap_err()
            .to_string();
        assert!(message.contains("valid: 0..=1"), "{message}");
    }
}
