//! `mnist-cnn import`: folders of labelled pictures -> an MNIST-like data set, i.e. the four
//! gzipped IDX files plus `classes.txt` (class names in label order).
//!
//! Two layouts are accepted: `SRC/train/<class>/*` with `SRC/test/<class>/*`, or `SRC/<class>/*`
//! split per class by a seeded shuffle. A folder's name is its class's name, with `%XX`
//! sequences decoded ([`super::class_folder`]). Everything is read, decoded and checked before the first
//! byte is written, and the data set is then swapped in whole (see [`super::dataset`]), so a
//! failed or killed import leaves `out` as it was.
//!
//! Each picture is prepared by one [`Pipeline`], recorded in `dataset.json` beside
//! `classes.txt` so that `predict` prepares new pictures the same way. Both splits are stored in
//! a seeded random order, as MNIST's own files are: a file sorted by class would make Keras's
//! validation split (the last 10%) one class alone.

use std::io::Write;
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rayon::prelude::*;

use super::class_folder::class_of_folder;
use super::dataset::write_dataset;
use super::idx::{self, IdxImages};
use super::image::Invert;
use super::mnist::{MnistFile, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS};
use super::pipeline::{DATASET_FILE, DatasetInfo, Fit, Pipeline};
use crate::error::{Error, Result};

pub use super::mnist::CLASSES_FILE;
/// Labels are one byte each in IDX.
pub const MAX_CLASSES: usize = 256;
pub const MAX_SIDE: u32 = idx::MAX_IMAGE_SIDE as u32;

/// How the source folder is organised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceLayout {
    /// `SRC/train/<class>/*` with `SRC/test/<class>/*`.
    TrainTest,
    /// `SRC/<class>/*`, split per class by the test fraction.
    Split,
}

impl std::fmt::Display for SourceLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SourceLayout::TrainTest => "train/test folders",
            SourceLayout::Split => "one folder split by the test fraction",
        })
    }
}

#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Output image size as (width, height).
    pub size: (u32, u32),
    pub invert: Invert,
    /// Keep colour (RGB) instead of grayscale.
    pub color: bool,
    /// How each picture is brought to `size`.
    pub fit: Fit,
    /// Share of each class held out for testing; only for the `SRC/<class>/*` layout.
    pub test_fraction: f64,
    /// Seed of the train/test split and of the order the images are stored in.
    pub seed: u64,
    /// Fail on the first unreadable file instead of skipping it.
    pub strict: bool,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            size: (28, 28),
            invert: Invert::Auto,
            color: false,
            fit: Fit::Stretch,
            test_fraction: 0.2,
            seed: 42,
            strict: false,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ClassCount {
    pub class: String,
    pub label: u8,
    pub train: usize,
    pub test: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ImportReport {
    pub out_dir: PathBuf,
    pub layout: SourceLayout,
    pub classes: Vec<ClassCount>,
    /// Files that could not be read as images, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
    pub train_images: usize,
    pub test_images: usize,
    pub rows: usize,
    pub cols: usize,
    /// How every picture was prepared, as recorded in `dataset.json`.
    pub pipeline: Pipeline,
    /// The seed of the order both splits are stored in.
    pub shuffle_seed: u64,
}

impl ImportOptions {
    /// The pipeline these options prepare pictures with.
    pub fn pipeline(&self) -> Pipeline {
        Pipeline {
            width: self.size.0,
            height: self.size.1,
            color: self.color,
            invert: self.invert,
            fit: self.fit,
        }
    }
}

/// Reads the labelled pictures under `src` and writes the MNIST-like data set into `out`.
pub fn import_folder(src: &Path, out: &Path, options: &ImportOptions) -> Result<ImportReport> {
    validate_options(options)?;
    let layout = find_layout(src, out)?;
    let classes = &layout.classes;
    match classes.len() {
        0 => {
            return Err(invalid(format!(
                "no class folders in {}: expected SRC/<class>/<images> or SRC/train/<class>/<images> with SRC/test/<class>/<images>",
                layout.root.display()
            )));
        }
        1 => {
            return Err(invalid(format!(
                "only one class (\"{}\") in {}: a classifier needs at least two class folders",
                classes[0],
                layout.root.display()
            )));
        }
        n if n > MAX_CLASSES => {
            return Err(invalid(format!(
                "{n} class folders in {}: at most {MAX_CLASSES} classes fit in one-byte IDX labels",
                layout.root.display()
            )));
        }
        _ => {}
    }

    // Every file to decode, as (class index, is it from the test folder, path).
    let mut jobs: Vec<(usize, bool, PathBuf)> = Vec::new();
    let mut files_per_dir: Vec<usize> = Vec::new();
    // Entries that are neither folders nor files (FIFOs, devices, dangling links): never
    // opened, and listed as skipped.
    let mut skipped = Vec::new();
    for (class, dirs) in layout.dirs.iter().enumerate() {
        for (is_test, dir) in dirs {
            let (files, others) = list_files(dir)?;
            if !is_test {
                files_per_dir.push(files.len() + others.len());
            }
            if let Some((path, reason)) = others.first().filter(|_| options.strict) {
                return Err(Error::Image {
                    path: path.clone(),
                    reason: reason.clone(),
                });
            }
            skipped.extend(others);
            jobs.extend(files.into_iter().map(|path| (class, *is_test, path)));
        }
    }

    let pipeline = options.pipeline();
    let decoded: Vec<std::result::Result<Vec<u8>, String>> = jobs
        .par_iter()
        .map(|(_, _, path)| load_picture(path, &pipeline))
        .collect();

    let mut train_sets: Vec<Vec<Vec<u8>>> = vec![Vec::new(); classes.len()];
    let mut test_sets: Vec<Vec<Vec<u8>>> = vec![Vec::new(); classes.len()];
    for ((class, is_test, path), result) in jobs.into_iter().zip(decoded) {
        match result {
            Ok(pixels) if is_test => test_sets[class].push(pixels),
            Ok(pixels) => train_sets[class].push(pixels),
            Err(reason) if options.strict => return Err(Error::Image { path, reason }),
            Err(reason) => skipped.push((path, reason)),
        }
    }

    let found: usize = train_sets.iter().chain(&test_sets).map(Vec::len).sum();
    if found == 0 {
        return Err(invalid(format!(
            "no images found in {} ({} files, none readable as an image)",
            src.display(),
            skipped.len()
        )));
    }
    for (class, set) in train_sets.iter().enumerate() {
        if set.is_empty() {
            let dir = &layout.dirs[class][0].1;
            let files = files_per_dir[class];
            let detail = if files == 0 {
                "the folder is empty".to_string()
            } else {
                format!("{files} files, none readable as an image")
            };
            return Err(invalid(format!(
                "class \"{}\" has no images in {} ({detail})",
                classes[class],
                dir.display()
            )));
        }
    }

    if layout.name == SourceLayout::Split {
        let mut rng = StdRng::seed_from_u64(options.seed);
        for (train, test) in train_sets.iter_mut().zip(&mut test_sets) {
            (*train, *test) = split(std::mem::take(train), options.test_fraction, &mut rng);
        }
    }

    let train_count: usize = train_sets.iter().map(Vec::len).sum();
    let test_count: usize = test_sets.iter().map(Vec::len).sum();
    if train_count.max(test_count) > idx::MAX_ITEMS {
        return Err(invalid(format!(
            "{} images in one split, more than the IDX limit of {}",
            train_count.max(test_count),
            idx::MAX_ITEMS
        )));
    }

    let (width, height) = options.size;
    let (rows, cols) = (height as usize, width as usize);
    let channels = pipeline.channels();
    let (train_images, train_labels) = assemble(
        &train_sets,
        rows,
        cols,
        channels,
        shuffle_seed(options.seed, 0),
    );
    let (test_images, test_labels) = assemble(
        &test_sets,
        rows,
        cols,
        channels,
        shuffle_seed(options.seed, 1),
    );
    let mut class_list = classes.join("\n");
    class_list.push('\n');
    let dataset = DatasetInfo {
        pipeline,
        shuffle_seed: Some(options.seed),
        written_by: format!("mnist-cnn {}", env!("CARGO_PKG_VERSION")),
    };
    let files = vec![
        gzipped(TRAIN_IMAGES, &idx::encode_images(&train_images))?,
        gzipped(TRAIN_LABELS, &idx::encode_labels(&train_labels))?,
        gzipped(TEST_IMAGES, &idx::encode_images(&test_images))?,
        gzipped(TEST_LABELS, &idx::encode_labels(&test_labels))?,
        (CLASSES_FILE.to_string(), class_list.into_bytes()),
        (DATASET_FILE.to_string(), dataset.to_json()),
    ];
    write_dataset(out, files)?;

    Ok(ImportReport {
        out_dir: out.to_path_buf(),
        layout: layout.name,
        classes: classes
            .iter()
            .enumerate()
            .map(|(label, class)| ClassCount {
                class: class.clone(),
                label: label as u8,
                train: train_sets[label].len(),
                test: test_sets[label].len(),
            })
            .collect(),
        skipped,
        train_images: train_count,
        test_images: test_count,
        rows,
        cols,
        pipeline,
        shuffle_seed: options.seed,
    })
}

fn validate_options(options: &ImportOptions) -> Result<()> {
    let (width, height) = options.size;
    if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
        return Err(invalid(format!(
            "image size {width}x{height} is outside 1..={MAX_SIDE} pixels a side"
        )));
    }
    if !(0.0..1.0).contains(&options.test_fraction) {
        return Err(invalid(format!(
            "test fraction {} is outside [0, 1)",
            options.test_fraction
        )));
    }
    Ok(())
}

/// Where the class folders are. Each class has one folder, or a train and a test folder.
struct Layout {
    name: SourceLayout,
    /// The folder whose subfolders are the classes (for train/test folders, the train one).
    root: PathBuf,
    classes: Vec<String>,
    /// Per class, its folders as (is it the test folder, path); the first is never a test one.
    dirs: Vec<Vec<(bool, PathBuf)>>,
}

fn find_layout(src: &Path, out: &Path) -> Result<Layout> {
    let metadata = std::fs::metadata(src).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            invalid(format!("source folder {} does not exist", src.display()))
        } else {
            Error::io(src, e)
        }
    })?;
    if !metadata.is_dir() {
        return Err(invalid(format!(
            "source {} is not a folder: expected a folder of class folders",
            src.display()
        )));
    }
    // An output folder inside the source is not a class (it matters when importing again).
    let out = std::fs::canonicalize(out).ok();
    let top = subfolders(src, out.as_deref())?;
    let has = |name: &str| top.iter().any(|(n, _)| n == name);
    match (has("train"), has("test")) {
        (true, true) => {}
        (false, false) => {
            let classes: Vec<String> = top.iter().map(|(name, _)| name.clone()).collect();
            let dirs = top.into_iter().map(|(_, dir)| vec![(false, dir)]).collect();
            return Ok(Layout {
                name: SourceLayout::Split,
                root: src.to_path_buf(),
                classes,
                dirs,
            });
        }
        (has_train, _) => {
            let (present, absent) = if has_train {
                ("train", "test")
            } else {
                ("test", "train")
            };
            return Err(invalid(format!(
                "{} has a {present}/ folder but no {absent}/ folder: use SRC/train/<class> with SRC/test/<class>, or SRC/<class> alone",
                src.display()
            )));
        }
    }
    if let Some((name, _)) = top.iter().find(|(n, _)| n != "train" && n != "test") {
        return Err(invalid(format!(
            "unexpected folder {} next to train/ and test/: with train/test folders the classes go inside them",
            src.join(name).display()
        )));
    }

    let train_root = src.join("train");
    let test_root = src.join("test");
    let train = subfolders(&train_root, out.as_deref())?;
    let test = subfolders(&test_root, out.as_deref())?;
    let names = |side: &[(String, PathBuf)]| -> Vec<String> {
        side.iter().map(|(name, _)| name.clone()).collect()
    };
    let (train_names, test_names) = (names(&train), names(&test));
    if let Some(name) = train_names.iter().find(|n| !test_names.contains(n)) {
        return Err(invalid(format!(
            "class \"{name}\" is in {} but not in {}: both need the same class folders",
            train_root.display(),
            test_root.display()
        )));
    }
    if let Some(name) = test_names.iter().find(|n| !train_names.contains(n)) {
        return Err(invalid(format!(
            "class \"{name}\" is in {} but not in {}: both need the same class folders",
            test_root.display(),
            train_root.display()
        )));
    }
    let dirs = train
        .into_iter()
        .zip(test)
        .map(|((_, train_dir), (_, test_dir))| vec![(false, train_dir), (true, test_dir)])
        .collect();
    Ok(Layout {
        name: SourceLayout::TrainTest,
        root: train_root,
        classes: train_names,
        dirs,
    })
}

/// Non-hidden subfolders of `dir` as (name, path), sorted by name, leaving out `exclude`.
fn subfolders(dir: &Path, exclude: Option<&Path>) -> Result<Vec<(String, PathBuf)>> {
    let mut found = Vec::new();
    for (name, path) in visible_entries(dir)? {
        if !path.is_dir() {
            continue;
        }
        if exclude.is_some() && std::fs::canonicalize(&path).ok().as_deref() == exclude {
            continue;
        }
        let Some(folder) = name.to_str() else {
            return Err(invalid(format!(
                "class folder name {} is not valid UTF-8",
                path.display()
            )));
        };
        // `%XX` in a folder name stands for a character a folder name cannot hold (as
        // `serve --collect` writes a class named `a/b`).
        let name = class_of_folder(folder);
        let name = name.as_str();
        // classes.txt holds one trimmed name a line.
        if name.contains(['\n', '\r']) || name.trim() != name {
            return Err(invalid(format!(
                "class folder name {name:?} has a line break or surrounding spaces, which {CLASSES_FILE} cannot keep; rename {}",
                path.display()
            )));
        }
        found.push((name.to_string(), path));
    }
    found.sort();
    if let Some(pair) = found.windows(2).find(|pair| pair[0].0 == pair[1].0) {
        return Err(invalid(format!(
            "folders {} and {} both name the class \"{}\" (%XX in a folder name stands for one character)",
            pair[0].1.display(),
            pair[1].1.display(),
            pair[0].0
        )));
    }
    Ok(found)
}

/// A file not read, and why.
type Skipped = (PathBuf, String);

/// Non-hidden files (or links to files) in `dir`, sorted by name, and the other entries that
/// are not folders (FIFOs, devices, sockets, dangling links) with why they are not read;
/// subfolders are ignored.
fn list_files(dir: &Path) -> Result<(Vec<PathBuf>, Vec<Skipped>)> {
    let mut entries = visible_entries(dir)?;
    entries.sort();
    let (mut files, mut others) = (Vec::new(), Vec::new());
    for (_, path) in entries {
        match std::fs::metadata(&path) {
            Ok(metadata) if metadata.is_file() => files.push(path),
            Ok(metadata) if metadata.is_dir() => {}
            Ok(metadata) => {
                let reason = format!("not a regular file ({})", kind_of(&metadata.file_type()));
                others.push((path, reason));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                others.push((path, "a link to nothing".to_string()));
            }
            Err(e) => others.push((path, format!("cannot read ({e})"))),
        }
    }
    Ok((files, others))
}

/// What a file that is neither a regular file nor a folder is, in a word or two.
fn kind_of(file_type: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "a FIFO";
        }
        if file_type.is_char_device() || file_type.is_block_device() {
            return "a device";
        }
        if file_type.is_socket() {
            return "a socket";
        }
    }
    let _ = file_type;
    "not a file"
}

fn visible_entries(dir: &Path) -> Result<Vec<(std::ffi::OsString, PathBuf)>> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        if name.as_encoded_bytes().starts_with(b".") {
            continue;
        }
        entries.push((name, entry.path()));
    }
    Ok(entries)
}

/// Decodes one picture, by its content rather than its extension, and prepares its pixels.
fn load_picture(path: &Path, pipeline: &Pipeline) -> std::result::Result<Vec<u8>, String> {
    pipeline.load(path).map_err(|error| match error {
        Error::Image { reason, .. } => reason,
        other => other.to_string(),
    })
}

/// Splits one class's images (in file-name order) into (train, test) by a seeded shuffle,
/// keeping at least one for training and the name order within each part.
fn split<T>(items: Vec<T>, test_fraction: f64, rng: &mut StdRng) -> (Vec<T>, Vec<T>) {
    let count = items.len();
    let test_count = test_size(count, test_fraction);
    let mut order: Vec<usize> = (0..count).collect();
    order.shuffle(rng);
    let mut is_test = vec![false; count];
    for &index in &order[..test_count] {
        is_test[index] = true;
    }
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (item, is_test) in items.into_iter().zip(is_test) {
        if is_test {
            test.push(item);
        } else {
            train.push(item);
        }
    }
    (train, test)
}

/// How many of `count` images go to the test split: the rounded fraction, leaving one to train.
fn test_size(count: usize, test_fraction: f64) -> usize {
    ((count as f64 * test_fraction).round() as usize).min(count.saturating_sub(1))
}

/// The seed of the order one split is stored in: the import's seed, a different stream per
/// split and apart from the train/test split's.
fn shuffle_seed(seed: u64, split: u64) -> u64 {
    seed ^ (0x5eed_0000_0000_0000 | (split + 1)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// One IDX image set and its labels, in an order shuffled by `seed`.
fn assemble(
    sets: &[Vec<Vec<u8>>],
    rows: usize,
    cols: usize,
    channels: usize,
    seed: u64,
) -> (IdxImages, Vec<u8>) {
    let mut items: Vec<(u8, &[u8])> = sets
        .iter()
        .enumerate()
        .flat_map(|(label, set)| set.iter().map(move |image| (label as u8, image.as_slice())))
        .collect();
    items.shuffle(&mut StdRng::seed_from_u64(seed));
    let count = items.len();
    let mut pixels = Vec::with_capacity(count * rows * cols * channels);
    let mut labels = Vec::with_capacity(count);
    for (label, image) in items {
        debug_assert_eq!(image.len(), rows * cols * channels);
        pixels.extend_from_slice(image);
        labels.push(label);
    }
    let images = IdxImages {
        count,
        rows,
        cols,
        channels,
        pixels,
    };
    (images, labels)
}

/// One file of the data set: its `.gz` name and gzipped content.
fn gzipped(file: MnistFile, bytes: &[u8]) -> Result<(String, Vec<u8>)> {
    let name = file.gz_name();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(bytes)
        .map_err(|e| Error::io(PathBuf::from(&name), e))?;
    let compressed = encoder
        .finish()
        .map_err(|e| Error::io(PathBuf::from(&name), e))?;
    Ok((name, compressed))
}

fn invalid(message: String) -> Error {
    Error::InvalidArgument(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assembled_splits_are_shuffled_by_the_seed() {
        let sets: Vec<Vec<Vec<u8>>> = (0..4u8).map(|c| vec![vec![c]; 25]).collect();
        let (images, labels) = assemble(&sets, 1, 1, 1, 7);
        assert_eq!(images.pixels, labels, "each image stays with its label");
        assert_eq!(labels.len(), 100);
        assert!(!labels.is_sorted(), "not stored class by class");
        assert!(
            labels[90..]
                .iter()
                .collect::<std::collections::HashSet<_>>()
                .len()
                > 1,
            "the last tenth holds more than one class"
        );
        assert_eq!(
            assemble(&sets, 1, 1, 1, 7).1,
            labels,
            "the same seed, the same order"
        );
        assert_ne!(assemble(&sets, 1, 1, 1, 8).1, labels);
    }

    #[test]
    fn test_size_keeps_one_for_training() {
        assert_eq!(test_size(10, 0.2), 2);
        assert_eq!(test_size(5, 0.3), 2);
        assert_eq!(test_size(1, 0.5), 0);
        assert_eq!(test_size(2, 0.9), 1);
        assert_eq!(test_size(0, 0.5), 0);
        assert_eq!(test_size(7, 0.0), 0);
    }

    #[test]
    fn split_is_seeded_and_keeps_name_order() {
        let items: Vec<u32> = (0..20).collect();
        let run = |seed| split(items.clone(), 0.25, &mut StdRng::seed_from_u64(seed));
        let (train, test) = run(3);
        assert_eq!((train.len(), test.len()), (15, 5));
        assert!(train.is_sorted() && test.is_sorted());
        assert_eq!(run(3), (train.clone(), test.clone()));
        assert_ne!(run(4).1, test);
    }

    #[test]
    fn bad_options_are_rejected() {
        let with = |change: fn(&mut ImportOptions)| {
            let mut options = ImportOptions::default();
            change(&mut options);
            validate_options(&options).map_err(|e| e.to_string())
        };
        assert!(with(|_| {}).is_ok());
        assert!(with(|o| o.size = (0, 28)).unwrap_err().contains("0x28"));
        assert!(
            with(|o| o.size = (28, 1025))
                .unwrap_err()
                .contains("28x1025")
        );
        assert!(
            with(|o| o.test_fraction = 1.0)
                .unwrap_err()
                .contains("[0, 1)")
        );
        assert!(with(|o| o.test_fraction = -0.1).is_err());
        assert!(with(|o| o.test_fraction = f64::NAN).is_err());
    }
}
