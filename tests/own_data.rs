//! Training on data sets other than MNIST: generated IDX files and folders of drawn pictures.

mod common;

use std::path::Path;

use common::data::write_idx_pair;
use common::{evaluate_json, mnist_cnn, read_json};
use mnist_cnn::data::idx::IdxImages;
use predicates::prelude::*;

const SIDE: usize = 12;
const CLASSES: [&str; 3] = ["horizontal", "vertical", "diagonal"];

/// A bright stroke of class `label` at a position and brightness varied by `seed`, on a dark
/// background with a little noise: easy to separate, impossible to memorise pixel by pixel.
fn stroke(label: u8, seed: usize) -> Vec<u8> {
    let mut pixels = vec![0u8; SIDE * SIDE];
    let offset = 2 + seed % 8;
    let brightness = 180 + (seed * 37 % 70) as u8;
    for i in 1..SIDE - 1 {
        let (row, col) = match label {
            0 => (offset, i),
            1 => (i, offset),
            _ => (i, (i + seed) % SIDE),
        };
        pixels[row * SIDE + col] = brightness;
    }
    for (i, pixel) in pixels.iter_mut().enumerate() {
        *pixel = pixel.saturating_add(((i * 7919 + seed * 104_729) % 23) as u8);
    }
    pixels
}

fn write_idx_data_set(dir: &Path, train: usize, test: usize) {
    for (prefix, count, salt) in [("train", train, 0), ("t10k", test, 100_000)] {
        let labels: Vec<u8> = (0..count).map(|i| (i % 3) as u8).collect();
        let pixels: Vec<u8> = labels
            .iter()
            .enumerate()
            .flat_map(|(i, &label)| stroke(label, i + salt))
            .collect();
        let images = IdxImages::gray(count, SIDE, SIDE, pixels);
        write_idx_pair(dir, prefix, &images, &labels, true);
    }
    std::fs::write(dir.join("classes.txt"), CLASSES.join("\n") + "\n").unwrap();
}

#[test]
fn idx_data_set_with_three_classes_of_12x12_images_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    write_idx_data_set(&dir.path().join("strokes"), 900, 300);
    mnist_cnn(dir.path())
        .args([
            "--data-dir",
            "strokes",
            "train",
            "--epochs",
            "3",
            "--batch-size",
            "32",
        ])
        .args(["--out", "run"])
        .assert()
        .success()
        .stdout(predicate::str::contains("not the canonical MNIST set"))
        .stdout(predicate::str::contains("(None, 3, 3, 32)"));
    let info = read_json(&dir.path().join("run/run.json"));
    assert_eq!(info["shape"]["rows"], 12);
    assert_eq!(info["shape"]["classes"], 3);
    assert_eq!(info["class_names"][2], "diagonal");
    assert_eq!(info["data"]["canonical_mnist"], false);

    let metrics = evaluate_json(dir.path(), &["--data-dir", "strokes"], "run");
    let accuracy = metrics["accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.9, "chance is 0.33; got {accuracy}");
    assert_eq!(metrics["per_class"][1]["name"], "vertical");
    assert_eq!(metrics["confusion"].as_array().unwrap().len(), 3);

    mnist_cnn(dir.path())
        .args([
            "--data-dir",
            "strokes",
            "predict",
            "--model-dir",
            "run",
            "--index",
            "1",
        ])
        .assert()
        .success()
        .stdout(predicate::str::starts_with(
            "test image 1 (label vertical): vertical (",
        ));
    mnist_cnn(dir.path())
        .args([
            "--data-dir",
            "strokes",
            "heatmap",
            "--index",
            "2",
            "-o",
            "h.png",
        ])
        .assert()
        .success()
        .stdout(predicate::str::starts_with("diagonal\n"));

    // The MNIST-trained view of the world does not fit this model, and vice versa.
    mnist_cnn(dir.path())
        .args(["evaluate", "--model-dir", "run"])
        .env("MNIST_DATA_DIR", common::data_dir())
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "the model was trained on 12x12 images but",
        ))
        .stderr(predicate::str::contains("28x28 images"));
}

#[test]
fn model_for_other_classes_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_idx_data_set(&dir.path().join("a"), 60, 30);
    mnist_cnn(dir.path())
        .args([
            "-q",
            "--data-dir",
            "a",
            "train",
            "--epochs",
            "1",
            "--out",
            "run",
        ])
        .assert()
        .success();
    write_idx_data_set(&dir.path().join("b"), 60, 30);
    std::fs::write(dir.path().join("b/classes.txt"), "h\nv\nd\n").unwrap();
    mnist_cnn(dir.path())
        .args(["--data-dir", "b", "evaluate", "--model-dir", "run"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "the model's classes (horizontal, vertical, diagonal) differ",
        ));
}

/// Dark strokes on light paper, as a person would draw them, at 40x30 pixels.
fn draw_picture(label: u8, seed: usize) -> image::GrayImage {
    image::GrayImage::from_fn(40, 30, |x, y| {
        let (x, y) = (x as usize, y as usize);
        let offset = 5 + seed % 20;
        let on_stroke = match label {
            0 => y.abs_diff(offset % 26 + 2) <= 1 && (4..36).contains(&x),
            1 => x.abs_diff(offset + 5) <= 1 && (3..27).contains(&y),
            _ => (x as i64 - y as i64 - (seed % 10) as i64).abs() <= 1,
        };
        image::Luma([if on_stroke { 20 } else { 235 }])
    })
}

#[test]
fn folders_of_pictures_import_train_evaluate_predict() {
    let dir = tempfile::tempdir().unwrap();
    for (label, class) in CLASSES.iter().enumerate() {
        for split in ["train", "test"] {
            let folder = dir.path().join("pictures").join(split).join(class);
            std::fs::create_dir_all(&folder).unwrap();
            let count = if split == "train" { 150 } else { 40 };
            for i in 0..count {
                let seed = i + if split == "test" { 1000 } else { 0 };
                draw_picture(label as u8, seed)
                    .save(folder.join(format!("{i}.png")))
                    .unwrap();
            }
        }
    }
    std::fs::write(
        dir.path().join("pictures/train/vertical/notes.png"),
        "not a picture",
    )
    .unwrap();
    mnist_cnn(dir.path())
        .args(["import", "pictures", "--out", "imported", "--size", "16"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "imported 3 classes (train/test folders) into imported: 450 training and 120 test images of 16x16 pixels",
        ))
        .stdout(predicate::str::contains("skipped 1 files"))
        .stdout(predicate::str::contains("notes.png"));
    mnist_cnn(dir.path())
        .args([
            "-q",
            "--data-dir",
            "imported",
            "train",
            "--epochs",
            "4",
            "--batch-size",
            "32",
        ])
        .args(["--out", "run"])
        .assert()
        .success();
    let metrics = evaluate_json(dir.path(), &["--data-dir", "imported"], "run");
    let accuracy = metrics["accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.85, "chance is 0.33; got {accuracy}");

    draw_picture(1, 7)
        .save(dir.path().join("mine.png"))
        .unwrap();
    mnist_cnn(dir.path())
        .args([
            "--data-dir",
            "imported",
            "predict",
            "--model-dir",
            "run",
            "mine.png",
        ])
        .assert()
        .success()
        .stdout(predicate::str::starts_with("mine.png: vertical ("));
}

#[test]
fn import_of_a_single_class_fails_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("pictures/only");
    std::fs::create_dir_all(&folder).unwrap();
    draw_picture(0, 1).save(folder.join("a.png")).unwrap();
    mnist_cnn(dir.path())
        .args(["import", "pictures", "--out", "imported"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("class"));
    let written: Vec<_> = std::fs::read_dir(dir.path().join("imported"))
        .map(|entries| entries.filter_map(|e| e.ok()).collect())
        .unwrap_or_default();
    assert!(written.is_empty(), "{written:?}");
}

#[test]
fn bad_import_size_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    mnist_cnn(dir.path())
        .args(["import", "pictures", "--out", "x", "--size", "big"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not a size like 28x28"));
}
