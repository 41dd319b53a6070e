//! `import_folder`: folders of drawn pictures -> the four gzipped IDX files and classes.txt.

use std::path::{Path, PathBuf};

use image::{GrayImage, Luma, Rgb, RgbImage};
use mnist_cnn::data::idx::{IdxImages, decode_images, decode_labels, read_maybe_gzipped};
use mnist_cnn::data::image::Invert;
use mnist_cnn::data::import::{ImportOptions, ImportReport, SourceLayout, import_folder};
use mnist_cnn::data::pipeline::{DatasetInfo, Fit, Pipeline};

const OUTPUTS: [&str; 6] = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
    "classes.txt",
    "dataset.json",
];

/// Sorted by name, so these are also the labels 0, 1, 2.
const CLASSES: [&str; 3] = ["bar", "circle", "cross"];
const WIDTH: u32 = 40;
const HEIGHT: u32 = 30;

/// A dark shape on white paper, moved by up to a pixel each way according to `variant`.
fn draw(shape: &str, variant: u32) -> GrayImage {
    let (cx, cy) = (
        (WIDTH / 2) as i32 + (variant % 3) as i32 - 1,
        (HEIGHT / 2) as i32 + (variant / 3 % 3) as i32 - 1,
    );
    GrayImage::from_fn(WIDTH, HEIGHT, |x, y| {
        let (dx, dy) = (x as i32 - cx, y as i32 - cy);
        let ink = match shape {
            "bar" => dx.abs() <= 3 && dy.abs() <= 10,
            "circle" => (81..=169).contains(&(dx * dx + dy * dy)),
            "cross" => (dx.abs() <= 3 && dy.abs() <= 11) || (dy.abs() <= 3 && dx.abs() <= 11),
            _ => unreachable!(),
        };
        Luma([if ink { 20 } else { 250 }])
    })
}

/// Saves every third picture as an RGB JPEG, the others as grayscale PNG.
fn save(dir: &Path, shape: &str, variant: u32) {
    std::fs::create_dir_all(dir).unwrap();
    let gray = draw(shape, variant);
    if variant % 3 == 2 {
        let rgb = RgbImage::from_fn(WIDTH, HEIGHT, |x, y| {
            let v = gray.get_pixel(x, y).0[0];
            Rgb([v, v, v])
        });
        rgb.save(dir.join(format!("{shape}-{variant:02}.jpg")))
            .unwrap();
    } else {
        gray.save(dir.join(format!("{shape}-{variant:02}.png")))
            .unwrap();
    }
}

/// Creates the class folders out of name order, so listing order is not label order.
fn populate(dir: &Path, counts: &[usize; 3]) {
    for class in [2, 0, 1] {
        let shape = CLASSES[class];
        for variant in 0..counts[class] as u32 {
            save(&dir.join(shape), shape, variant);
        }
    }
}

struct Written {
    train: IdxImages,
    train_labels: Vec<u8>,
    test: IdxImages,
    test_labels: Vec<u8>,
    classes: String,
}

fn read_output(out: &Path) -> Written {
    let images = |name: &str| {
        let path = out.join(name);
        decode_images(&read_maybe_gzipped(&path).unwrap(), &path).unwrap()
    };
    let labels = |name: &str| {
        let path = out.join(name);
        decode_labels(&read_maybe_gzipped(&path).unwrap(), &path).unwrap()
    };
    Written {
        train: images(OUTPUTS[0]),
        train_labels: labels(OUTPUTS[1]),
        test: images(OUTPUTS[2]),
        test_labels: labels(OUTPUTS[3]),
        classes: std::fs::read_to_string(out.join(OUTPUTS[4])).unwrap(),
    }
}

fn count_labels(labels: &[u8]) -> [usize; 3] {
    let mut counts = [0; 3];
    for &label in labels {
        counts[label as usize] += 1;
    }
    counts
}

fn pixel(images: &IdxImages, index: usize, x: usize, y: usize) -> u8 {
    images.pixels[index * images.rows * images.cols + y * images.cols + x]
}

/// Recognises a (light on dark) drawn shape: the ring is hollow, the cross has a horizontal arm.
fn recognise(images: &IdxImages, index: usize) -> u8 {
    let (cx, cy) = (images.cols / 2, images.rows / 2);
    let arm_x = cx - images.cols * 8 / WIDTH as usize;
    if pixel(images, index, cx, cy) < 100 {
        1
    } else if pixel(images, index, arm_x, cy) > 100 {
        2
    } else {
        0
    }
}

/// Light-on-dark, correctly labelled images of the expected size.
fn check_images(images: &IdxImages, labels: &[u8], rows: usize, cols: usize) {
    assert_eq!((images.rows, images.cols), (rows, cols));
    assert_eq!(images.count, labels.len());
    for (index, &label) in labels.iter().enumerate() {
        let corners = [(0, 0), (cols - 1, 0), (0, rows - 1), (cols - 1, rows - 1)];
        for (x, y) in corners {
            let value = pixel(images, index, x, y);
            assert!(value < 50, "image {index}: corner ({x},{y}) is {value}");
        }
        let brightest = (0..rows * cols)
            .map(|i| images.pixels[index * rows * cols + i])
            .max()
            .unwrap();
        assert!(brightest > 180, "image {index}: shape only {brightest}");
        assert_eq!(recognise(images, index), label, "image {index}");
    }
}

fn assert_no_outputs(out: &Path) {
    for name in OUTPUTS {
        assert!(!out.join(name).exists(), "{name} was written");
    }
}

fn import_error(src: &Path, out: &Path, options: &ImportOptions) -> String {
    let error = import_folder(src, out, options)
        .map(|report| format!("{report:?}"))
        .expect_err("import should fail")
        .to_string();
    assert_no_outputs(out);
    error
}

fn counts_of(report: &ImportReport) -> Vec<(String, u8, usize, usize)> {
    report
        .classes
        .iter()
        .map(|c| (c.class.clone(), c.label, c.train, c.test))
        .collect()
}

#[test]
fn train_test_folders_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    populate(&src.join("train"), &[5, 4, 6]);
    populate(&src.join("test"), &[2, 3, 1]);
    // Hidden files and subfolders inside class folders are ignored.
    std::fs::write(src.join("train/bar/.DS_Store"), b"junk").unwrap();
    std::fs::create_dir_all(src.join("train/bar/nested")).unwrap();
    save(&src.join("train/bar/nested"), "cross", 0);
    std::fs::create_dir_all(src.join("train/.hidden")).unwrap();
    let out = dir.path().join("out");

    let report = import_folder(&src, &out, &ImportOptions::default()).unwrap();
    assert_eq!(report.layout, SourceLayout::TrainTest);
    assert_eq!(
        counts_of(&report),
        vec![
            ("bar".to_string(), 0, 5, 2),
            ("circle".to_string(), 1, 4, 3),
            ("cross".to_string(), 2, 6, 1),
        ]
    );
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_eq!((report.train_images, report.test_images), (15, 6));
    assert_eq!((report.rows, report.cols), (28, 28));
    assert_eq!(report.out_dir, out);

    let written = read_output(&out);
    assert_eq!(count_labels(&written.train_labels), [5, 4, 6]);
    assert_eq!(count_labels(&written.test_labels), [2, 3, 1]);
    check_images(&written.train, &written.train_labels, 28, 28);
    check_images(&written.test, &written.test_labels, 28, 28);
    assert_eq!(written.classes, "bar\ncircle\ncross\n");

    // A custom, non-square size; files already in `out` other than the five are kept.
    std::fs::write(out.join("notes.txt"), b"mine").unwrap();
    let options = ImportOptions {
        size: (16, 12),
        ..ImportOptions::default()
    };
    let report = import_folder(&src, &out, &options).unwrap();
    assert_eq!((report.rows, report.cols), (12, 16));
    let written = read_output(&out);
    check_images(&written.train, &written.train_labels, 12, 16);
    check_images(&written.test, &written.test_labels, 12, 16);
    assert_eq!(std::fs::read(out.join("notes.txt")).unwrap(), b"mine");
}

#[test]
fn without_inversion_the_paper_stays_light() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    populate(&src, &[2, 2, 2]);
    let out = dir.path().join("out");
    let options = ImportOptions {
        invert: Invert::No,
        test_fraction: 0.0,
        ..ImportOptions::default()
    };
    import_folder(&src, &out, &options).unwrap();
    let written = read_output(&out);
    assert_eq!(written.test.count, 0);
    assert!(pixel(&written.train, 0, 0, 0) > 200);
}

#[test]
fn one_folder_is_split_by_seed() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    populate(&src, &[10, 7, 5]);
    let options = |seed| ImportOptions {
        test_fraction: 0.3,
        seed,
        ..ImportOptions::default()
    };
    let import = |name: &str, seed| {
        let out = dir.path().join(name);
        let report = import_folder(&src, &out, &options(seed)).unwrap();
        (out, report)
    };

    let (first, report) = import("first", 7);
    assert_eq!(report.layout, SourceLayout::Split);
    // round(n * 0.3) to test: 3 of 10, 2 of 7, 2 of 5 (1.5 rounds up).
    assert_eq!(
        counts_of(&report),
        vec![
            ("bar".to_string(), 0, 7, 3),
            ("circle".to_string(), 1, 5, 2),
            ("cross".to_string(), 2, 3, 2),
        ]
    );
    assert_eq!((report.train_images, report.test_images), (15, 7));
    let written = read_output(&first);
    assert_eq!(count_labels(&written.train_labels), [7, 5, 3]);
    assert_eq!(count_labels(&written.test_labels), [3, 2, 2]);
    check_images(&written.train, &written.train_labels, 28, 28);
    check_images(&written.test, &written.test_labels, 28, 28);

    let (again, _) = import("again", 7);
    for name in OUTPUTS {
        assert_eq!(
            std::fs::read(first.join(name)).unwrap(),
            std::fs::read(again.join(name)).unwrap(),
            "{name} differs for the same seed"
        );
    }

    let (other, _) = import("other", 8);
    let other = read_output(&other);
    assert_eq!(count_labels(&other.test_labels), [3, 2, 2]);
    assert_ne!(
        other.test.pixels, written.test.pixels,
        "another seed picks other test images"
    );
    // The same images overall, only split differently.
    let mut all: Vec<&[u8]> = written.train.pixels.chunks(784).collect();
    all.extend(written.test.pixels.chunks(784));
    let mut all_other: Vec<&[u8]> = other.train.pixels.chunks(784).collect();
    all_other.extend(other.test.pixels.chunks(784));
    all.sort();
    all_other.sort();
    assert_eq!(all, all_other);
}

#[test]
fn single_image_classes_go_to_training() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    populate(&src, &[1, 1, 4]);
    let out = dir.path().join("out");
    let options = ImportOptions {
        test_fraction: 0.5,
        ..ImportOptions::default()
    };
    let report = import_folder(&src, &out, &options).unwrap();
    let counts: Vec<_> = report.classes.iter().map(|c| (c.train, c.test)).collect();
    assert_eq!(counts, vec![(1, 0), (1, 0), (2, 2)]);

    // All classes with one image: an empty test set is still a valid IDX file.
    let src = dir.path().join("singles");
    populate(&src, &[1, 1, 1]);
    let report = import_folder(&src, &out, &options).unwrap();
    assert_eq!((report.train_images, report.test_images), (3, 0));
    let written = read_output(&out);
    assert_eq!((written.test.count, written.test_labels.len()), (0, 0));
    assert_eq!(count_labels(&written.train_labels), [1, 1, 1]);
}

#[test]
fn non_images_are_skipped_or_fatal_when_strict() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    populate(&src, &[3, 3, 3]);
    let fake = src.join("circle").join("x.png");
    std::fs::write(&fake, b"this is not a picture").unwrap();
    let out = dir.path().join("out");

    let report = import_folder(&src, &out, &ImportOptions::default()).unwrap();
    assert_eq!(report.skipped.len(), 1, "{:?}", report.skipped);
    assert_eq!(report.skipped[0].0, fake);
    assert!(
        report.skipped[0].1.contains("image"),
        "{}",
        report.skipped[0].1
    );
    assert_eq!(report.train_images + report.test_images, 9);

    let strict_out = dir.path().join("strict");
    let options = ImportOptions {
        strict: true,
        ..ImportOptions::default()
    };
    let message = import_error(&src, &strict_out, &options);
    assert!(message.contains("x.png"), "{message}");
}

/// A FIFO, a link to a device and a link to nothing among the pictures: none is opened (a
/// FIFO would block), each is listed as skipped with what it is, and `--strict` fails on them.
#[test]
fn fifos_devices_and_dangling_links_are_listed_as_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    populate(&src, &[3, 3, 3]);
    let fifo = src.join("circle").join("a-fifo.png");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
    let device = src.join("bar").join("a-device.png");
    std::os::unix::fs::symlink("/dev/null", &device).unwrap();
    let dangling = src.join("cross").join("a-dangling-link.png");
    std::os::unix::fs::symlink(dir.path().join("gone.png"), &dangling).unwrap();

    let report = import_folder(&src, &dir.path().join("out"), &ImportOptions::default()).unwrap();
    let mut skipped = report.skipped.clone();
    skipped.sort();
    assert_eq!(
        skipped,
        [
            (device, "not a regular file (a device)".to_string()),
            (fifo, "not a regular file (a FIFO)".to_string()),
            (dangling, "a link to nothing".to_string()),
        ]
    );
    assert_eq!(report.train_images + report.test_images, 9);

    let options = ImportOptions {
        strict: true,
        ..ImportOptions::default()
    };
    let message = import_error(&src, &dir.path().join("strict"), &options);
    assert!(message.contains("a-"), "{message}");
    assert!(message.contains("not a regular file") || message.contains("link to nothing"));
}

#[test]
fn bad_sources_are_clear_errors_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let defaults = ImportOptions::default();
    let src = |name: &str| -> PathBuf { dir.path().join(name) };

    let message = import_error(&src("missing"), &out, &defaults);
    assert!(message.contains("does not exist"), "{message}");

    std::fs::create_dir_all(src("flat")).unwrap();
    save(&src("flat"), "bar", 0);
    let message = import_error(&src("flat"), &out, &defaults);
    assert!(message.contains("no class folders"), "{message}");

    populate(&src("single"), &[3, 0, 0]);
    let message = import_error(&src("single"), &out, &defaults);
    assert!(message.contains("only one class"), "{message}");
    assert!(message.contains("bar"), "{message}");

    populate(&src("empty-class"), &[3, 3, 0]);
    std::fs::create_dir_all(src("empty-class").join("cross")).unwrap();
    let message = import_error(&src("empty-class"), &out, &defaults);
    assert!(
        message.contains("class \"cross\" has no images"),
        "{message}"
    );

    for class in CLASSES {
        let folder = src("no-images").join(class);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("readme.txt"), b"text").unwrap();
    }
    let message = import_error(&src("no-images"), &out, &defaults);
    assert!(message.contains("no images found"), "{message}");

    populate(&src("unpaired").join("train"), &[2, 2, 2]);
    populate(&src("unpaired").join("test"), &[2, 2, 0]);
    let message = import_error(&src("unpaired"), &out, &defaults);
    assert!(
        message.contains("class \"cross\" is in") && message.contains("but not in"),
        "{message}"
    );

    for class in 0..257 {
        std::fs::create_dir_all(src("many").join(format!("c{class:03}"))).unwrap();
    }
    let message = import_error(&src("many"), &out, &defaults);
    assert!(message.contains("257 class folders"), "{message}");

    populate(&src("good"), &[2, 2, 2]);
    let options = ImportOptions {
        test_fraction: 1.0,
        ..ImportOptions::default()
    };
    let message = import_error(&src("good"), &out, &options);
    assert!(message.contains("test fraction"), "{message}");
    let options = ImportOptions {
        size: (0, 28),
        ..ImportOptions::default()
    };
    let message = import_error(&src("good"), &out, &options);
    assert!(message.contains("image size 0x28"), "{message}");
}

#[test]
fn empty_training_class_is_an_error_even_with_test_images() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    populate(&src.join("train"), &[2, 2, 0]);
    std::fs::create_dir_all(src.join("train/cross")).unwrap();
    populate(&src.join("test"), &[1, 1, 1]);
    let out = dir.path().join("out");
    let message = import_error(&src, &out, &ImportOptions::default());
    assert!(
        message.contains("class \"cross\" has no images"),
        "{message}"
    );
    assert!(message.contains("train"), "{message}");
}

#[test]
fn images_are_stored_in_a_seeded_random_order_with_their_pipeline_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    // As PNG so the pixels are exactly predictable.
    for shape in CLASSES {
        std::fs::create_dir_all(src.join(shape)).unwrap();
        for variant in 0..6 {
            draw(shape, variant)
                .save(src.join(shape).join(format!("{shape}-{variant:02}.png")))
                .unwrap();
        }
    }
    let import = |seed: u64, name: &str| {
        let out = dir.path().join(name);
        let options = ImportOptions {
            test_fraction: 0.0,
            seed,
            ..ImportOptions::default()
        };
        import_folder(&src, &out, &options).unwrap();
        read_output(&out)
    };
    let written = import(42, "a");
    let pipeline = Pipeline {
        fit: Fit::Stretch,
        ..Pipeline::mnist(28, 28)
    };
    let mut expected: Vec<(u8, Vec<u8>)> = Vec::new();
    for (label, shape) in CLASSES.iter().enumerate() {
        for variant in 0..6 {
            let picture = image::DynamicImage::ImageLuma8(draw(shape, variant));
            expected.push((label as u8, pipeline.prepare(&picture).unwrap()));
        }
    }
    let mut stored: Vec<(u8, Vec<u8>)> = written
        .train_labels
        .iter()
        .zip(written.train.pixels.chunks(28 * 28))
        .map(|(&label, pixels)| (label, pixels.to_vec()))
        .collect();
    assert!(
        !written.train_labels.is_sorted(),
        "stored class by class: {:?}",
        written.train_labels
    );
    stored.sort();
    expected.sort();
    assert!(stored == expected, "each picture once, with its label");

    assert_eq!(import(42, "b").train_labels, written.train_labels);
    assert_ne!(import(7, "c").train_labels, written.train_labels);
    let info = DatasetInfo::read(&dir.path().join("a")).unwrap().unwrap();
    assert_eq!(info.pipeline, pipeline);
    assert_eq!(info.shuffle_seed, Some(42));
}

#[test]
fn output_inside_the_source_is_not_a_class() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    populate(&src, &[2, 2, 2]);
    let out = src.join("mnist");
    for _ in 0..2 {
        let report = import_folder(&src, &out, &ImportOptions::default()).unwrap();
        assert_eq!(report.classes.len(), 3);
    }
    populate(&src.join("layout-a/train"), &[2, 2, 2]);
    populate(&src.join("layout-a/test"), &[1, 1, 1]);
    let out = src.join("layout-a/out");
    for _ in 0..2 {
        let report = import_folder(&src.join("layout-a"), &out, &ImportOptions::default());
        assert_eq!(report.unwrap().layout, SourceLayout::TrainTest);
    }
}
