//! The MNIST data set on disk: its four files, where to find them, and loading them whole.

use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use super::idx;
use super::pipeline::{DATASET_FILE, DatasetInfo, Pipeline};
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
    /// Size of the decompressed content in bytes.
    pub bytes: u64,
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
    bytes: 47_040_016,
};
pub const TRAIN_LABELS: MnistFile = MnistFile {
    name: "train-labels-idx1-ubyte",
    dotted_name: "train-labels.idx1-ubyte",
    md5: "a25bea736e30d166cdddb491f175f624",
    bytes: 60_008,
};
pub const TEST_IMAGES: MnistFile = MnistFile {
    name: "t10k-images-idx3-ubyte",
    dotted_name: "t10k-images.idx3-ubyte",
    md5: "2646ac647ad5339dbf082846283269ea",
    bytes: 7_840_016,
};
pub const TEST_LABELS: MnistFile = MnistFile {
    name: "t10k-labels-idx1-ubyte",
    dotted_name: "t10k-labels.idx1-ubyte",
    md5: "27ae3e4e09519cfbb04c329615203637",
    bytes: 10_008,
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
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    strum::VariantArray,
    strum::EnumMessage,
    strum::EnumProperty,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
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

/// Images and labels of one split, held as raw bytes (pixels 0..=255, row-major, `channels`
/// bytes a pixel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub rows: usize,
    pub cols: usize,
    /// 1 for grayscale, 3 for RGB.
    pub channels: usize,
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
    /// MD5 of the decompressed files.
    pub checksums: Checksums,
    /// Names from `classes.txt`, when the data directory has one; see [`Split::class_names`].
    pub named_classes: Option<Vec<String>>,
    /// How the pictures were prepared: as `dataset.json` records it, else MNIST's pipeline.
    pub pipeline: Pipeline,
    /// The seed of the shuffle the data set was stored in, when `dataset.json` records one.
    pub shuffle_seed: Option<u64>,
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

    /// Bytes of one image: rows x cols x channels.
    pub fn image_len(&self) -> usize {
        self.rows * self.cols * self.channels
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

    /// Without `classes.txt` the classes are 0 to the largest label, so one stray label (200 in
    /// a data set of digits) would silently make a network of 201 classes. Refuses that: every
    /// class below the largest label must have an image here, unless `classes.txt` names the
    /// classes. `dir` is the data directory, for the message.
    pub fn check_classes_populated(&self, dir: &Path) -> Result<()> {
        if self.named_classes.is_some() || self.is_empty() {
            return Ok(());
        }
        let mut seen = [false; 256];
        for &label in &self.labels {
            seen[label as usize] = true;
        }
        let classes = self.num_classes();
        let empty: Vec<usize> = (0..classes).filter(|&class| !seen[class]).collect();
        if empty.is_empty() {
            return Ok(());
        }
        let largest = classes - 1;
        let index = self
            .labels
            .iter()
            .position(|&label| label as usize == largest)
            .unwrap_or(0);
        Err(Error::EmptyClasses {
            dir: dir.to_path_buf(),
            label: largest,
            index,
            empty: summarize_classes(&empty),
        })
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
    let (labels, labels_md5) = idx::read_labels(&labels_path)?;
    let (images, images_md5) = idx::read_images(&images_path)?;
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
    let dataset = DatasetInfo::read(dir)?;
    let pipeline = match &dataset {
        Some(info) => {
            let frame = (info.pipeline.height as usize, info.pipeline.width as usize);
            if frame != (images.rows, images.cols) || info.pipeline.channels() != images.channels {
                return Err(Error::corrupt(
                    dir.join(DATASET_FILE),
                    format!(
                        "describes {}x{} images of {} channels but {} holds {}x{} images of {}",
                        frame.0,
                        frame.1,
                        info.pipeline.channels(),
                        images_path.display(),
                        images.rows,
                        images.cols,
                        images.channels
                    ),
                ));
            }
            info.pipeline
        }
        None => Pipeline {
            color: images.channels == 3,
            ..Pipeline::mnist(images.rows, images.cols)
        },
    };
    Ok(Split {
        rows: images.rows,
        cols: images.cols,
        channels: images.channels,
        pipeline,
        shuffle_seed: dataset.and_then(|info| info.shuffle_seed),
        pixels: images.pixels,
        checksums: Checksums {
            images: images_md5,
            labels: labels_md5,
        },
        labels,
        named_classes: class_names,
    })
}

/// "3, 5, 7-199": classes as a short list of numbers and ranges.
fn summarize_classes(classes: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut index = 0;
    while index < classes.len() {
        let start = classes[index];
        let mut end = start;
        while index + 1 < classes.len() && classes[index + 1] == end + 1 {
            index += 1;
            end += 1;
        }
        parts.push(if end > start {
            format!("{start}-{end}")
        } else {
            start.to_string()
        });
        index += 1;
    }
    parts.join(", ")
}

/// The class names in `dir/classes.txt`, if present: one per line, blank lines ignored.
pub fn read_class_names(dir: &Path) -> Result<Option<Vec<String>>> {
    let path = dir.join(CLASSES_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    // 256 names of any sensible length fit in far less; a larger file is not a list of names.
    const MAX_BYTES: u64 = 1 << 20;
    let file = crate::fsutil::open_regular(&path)?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_BYTES + 1), &mut bytes)
        .map_err(|e| Error::io(&path, e))?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(Error::InvalidArgument(format!(
            "{}: larger than {} KiB; expected one class name per line",
            path.display(),
            MAX_BYTES >> 10
        )));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::InvalidArgument(format!("{}: not UTF-8 text", path.display())))?;
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
        let images = IdxImages::gray(count, 28, 28, vec![7; count * 784]);
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
    fn a_stray_label_without_classes_txt_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut labels: Vec<u8> = (0..10).collect();
        labels.push(200);
        write_split(dir.path(), SplitKind::Train, 11, labels);
        let split = load_split(dir.path(), SplitKind::Train).unwrap();
        let message = split
            .check_classes_populated(dir.path())
            .unwrap_err()
            .to_string();
        assert!(message.contains("label 200 (image 10)"), "{message}");
        assert!(
            message.contains("classes 10-199 have no images"),
            "{message}"
        );
        // Named classes may be empty.
        let names: Vec<String> = (0..=200).map(|c| format!("c{c}\n")).collect();
        std::fs::write(dir.path().join(CLASSES_FILE), names.concat()).unwrap();
        let split = load_split(dir.path(), SplitKind::Train).unwrap();
        split.check_classes_populated(dir.path()).unwrap();
        assert_eq!(summarize_classes(&[1, 3, 4, 5, 9]), "1, 3-5, 9");
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
    fn an_index_into_an_empty_split_says_it_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), SplitKind::Test, 0, vec![]);
        let split = load_split(dir.path(), SplitKind::Test).unwrap();
        let message = split
            .checked_image(0, SplitKind::Test)
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "index 0 is out of range: the test split has no images"
        );
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
