//! One's own pictures, as a new user brings them: a folder of ten classes imported and trained
//! with the defaults, the validation and limit guards, one pipeline for import and predict,
//! colour pictures, and the training options for small data sets.

mod common;

use std::path::Path;

use common::{evaluate_json, mnist_cnn, read_json};
use image::{DynamicImage, Rgb, RgbImage, Rgba, RgbaImage};
use mnist_cnn::data::batch::{images_tensor, single_image_tensor};
use mnist_cnn::data::idx::{IdxImages, encode_images, encode_labels};
use mnist_cnn::data::{SplitKind, load_split};
use mnist_cnn::run::RunInfo;
use predicates::prelude::*;

const SIDE: u32 = 36;

/// A dark shape of class `class` (0..10) on light paper, moved, resized and thickened a little
/// by `variant`. Every third picture is RGBA with transparent paper, as canvas exports are.
fn shape_picture(class: usize, variant: usize) -> DynamicImage {
    let jitter = |k: usize| (variant / k % 5) as f64 - 2.0;
    let (cx, cy) = (SIDE as f64 / 2.0 + jitter(1), SIDE as f64 / 2.0 + jitter(5));
    let radius = 10.0 + (variant / 25 % 4) as f64;
    let width = 1.5 + (variant / 7 % 2) as f64;
    let ink = |x: f64, y: f64| -> bool {
        let (dx, dy) = (x - cx, y - cy);
        let inside = dx.abs() <= radius && dy.abs() <= radius;
        let distance = (dx * dx + dy * dy).sqrt();
        inside
            && match class {
                0 => dy.abs() <= width,                        // horizontal bar
                1 => dx.abs() <= width,                        // vertical bar
                2 => (dx - dy).abs() <= width * 1.4,           // diagonal \
                3 => (dx + dy).abs() <= width * 1.4,           // diagonal /
                4 => (distance - radius * 0.8).abs() <= width, // ring
                5 => distance <= radius * 0.6,                 // disk
                6 => dx.abs() <= width || dy.abs() <= width,   // plus
                7 => (dx - dy).abs() <= width * 1.4 || (dx + dy).abs() <= width * 1.4, // x
                8 => radius - dx.abs().max(dy.abs()) <= width, // square outline
                _ => dy >= radius * 0.3 && dy <= radius * 0.3 + 2.0 * width, // low bar
            }
    };
    if variant.is_multiple_of(3) {
        DynamicImage::ImageRgba8(RgbaImage::from_fn(SIDE, SIDE, |x, y| {
            if ink(f64::from(x), f64::from(y)) {
                Rgba([10, 10, 30, 255])
            } else {
                Rgba([0, 0, 0, 0])
            }
        }))
    } else {
        DynamicImage::ImageRgb8(RgbImage::from_fn(SIDE, SIDE, |x, y| {
            if ink(f64::from(x), f64::from(y)) {
                Rgb([20, 20, 20])
            } else {
                Rgb([240, 235, 225])
            }
        }))
    }
}

/// `dir/<class>/<n>.png` for ten classes of `per_class` pictures.
fn ten_class_folder(dir: &Path, per_class: usize) {
    for class in 0..10 {
        let folder = dir.join(format!("shape-{class}"));
        std::fs::create_dir_all(&folder).unwrap();
        for variant in 0..per_class {
            shape_picture(class, variant)
                .save(folder.join(format!("{variant:03}.png")))
                .unwrap();
        }
    }
}

#[test]
fn ten_class_folder_trained_with_the_defaults_validates_and_tests_well() {
    let dir = tempfile::tempdir().unwrap();
    ten_class_folder(&dir.path().join("pictures"), 100);
    mnist_cnn(dir.path())
        .args([
            "import",
            "pictures",
            "--out",
            "mine",
            "--test-fraction",
            "0.2",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("stored in random order (seed 42)"));
    let train = load_split(&dir.path().join("mine"), SplitKind::Train).unwrap();
    assert!(!train.labels.is_sorted(), "stored class by class");

    let output = mnist_cnn(dir.path())
        .args(["--json", "--data-dir", "mine", "train", "--out", "run"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let history = result["history"].as_array().unwrap();
    assert_eq!(history.len(), 10, "the defaults: 10 epochs");
    for epoch in history {
        let accuracy = epoch["val_accuracy"].as_f64().unwrap();
        assert!(accuracy > 0.3, "chance is 0.1: {epoch}");
    }
    assert_eq!(result["run"]["validation_from"], "last");
    assert_eq!(result["run"]["data"]["validation_images"], 80);
    let metrics = evaluate_json(dir.path(), &["--data-dir", "mine"], "run");
    let accuracy = metrics["accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.9, "test accuracy {accuracy}");
}

/// Ten classes of 12x12 strokes stored class by class, as an older import wrote them.
fn sorted_idx_data_set(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (prefix, per_class) in [("train", 30), ("t10k", 5)] {
        let labels: Vec<u8> = (0..10u8)
            .flat_map(|c| std::iter::repeat_n(c, per_class))
            .collect();
        let pixels: Vec<u8> = labels
            .iter()
            .enumerate()
            .flat_map(|(i, &label)| {
                (0..144).map(move |p| {
                    if p % 12 == label as usize + 1 {
                        200
                    } else {
                        (i % 7) as u8
                    }
                })
            })
            .collect();
        let images = IdxImages::gray(labels.len(), 12, 12, pixels);
        std::fs::write(
            dir.join(format!("{prefix}-images-idx3-ubyte")),
            encode_images(&images),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("{prefix}-labels-idx1-ubyte")),
            encode_labels(&labels),
        )
        .unwrap();
    }
}

#[test]
fn validation_and_limit_guards_on_data_sorted_by_class() {
    let dir = tempfile::tempdir().unwrap();
    sorted_idx_data_set(&dir.path().join("sorted"));
    let train = |extra: &[&str], out: &str| {
        mnist_cnn(dir.path())
            .args(["--json", "--data-dir", "sorted", "train", "--epochs", "1"])
            .args(extra)
            .args(["--out", out])
            .assert()
            .success()
    };
    // auto: the last 10% is class 9 alone, so a stratified pick validates instead.
    let assert = train(&[], "auto");
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(
        stderr.contains("warning: the last 10% of the training images holds class \"9\" while"),
        "{stderr}"
    );
    assert!(stderr.contains("--validation-from last"), "{stderr}");
    let run = read_json(&dir.path().join("auto/run.json"));
    assert_eq!(run["validation_from"], "random");
    assert_eq!(run["data"]["validation_images"], 30);

    // last, asked for: Keras's choice, with the classes named and the fix.
    let assert = train(&["--validation-from", "last"], "last");
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(
        stderr.contains("the validation images hold no classes \"0\", \"1\", \"2\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("the training images hold no class \"9\", which the model can never learn"),
        "{stderr}"
    );
    assert!(stderr.contains("(--validation-from random)"), "{stderr}");

    // --limit: the first 60 are classes 0 and 1 only; a stratified sample keeps all ten.
    let assert = train(&["--limit", "60", "--validation-split", "0"], "limited");
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(
        stderr.contains("the first 60 training images hold no classes \"2\""),
        "{stderr}"
    );
    let run = read_json(&dir.path().join("limited/run.json"));
    assert_eq!(run["data"]["train_images"], 60);

    // The shipped MNIST is in random order: no warning, Keras's last 10%.
    let assert = mnist_cnn(dir.path())
        .args(["--json", "train", "--epochs", "1", "--limit", "2000"])
        .args(["--steps-per-epoch", "2", "--out", "mnist"])
        .assert()
        .success();
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(!stderr.contains("warning"), "{stderr}");
    assert_eq!(
        read_json(&dir.path().join("mnist/run.json"))["validation_from"],
        "last"
    );
}

#[test]
fn predict_prepares_training_pictures_exactly_as_import_did() {
    let dir = tempfile::tempdir().unwrap();
    let pictures = dir.path().join("pictures");
    ten_class_folder(&pictures, 4);
    for (fit, size) in [("stretch", "20x16"), ("digit", "28")] {
        let data = dir.path().join(fit);
        mnist_cnn(dir.path())
            .args(["import", "pictures", "--test-fraction", "0", "--size", size])
            .args(["--fit", fit, "--out"])
            .arg(&data)
            .assert()
            .success();
        let out = dir.path().join(format!("run-{fit}"));
        mnist_cnn(dir.path())
            .args(["-q", "--data-dir"])
            .arg(&data)
            .args(["train", "--epochs", "1", "--out"])
            .arg(&out)
            .assert()
            .success();
        let run = RunInfo::load(&out).unwrap();
        let pipeline = run.pipeline();
        assert_eq!(format!("{:?}", pipeline.fit).to_lowercase(), fit);
        let split = load_split(&data, SplitKind::Train).unwrap();
        let mut stored: Vec<&[u8]> = (0..split.len()).map(|i| split.image(i)).collect();
        let mut predicted: Vec<Vec<u8>> = Vec::new();
        for class in 0..10 {
            for variant in 0..4 {
                let path = pictures.join(format!("shape-{class}/{variant:03}.png"));
                predicted.push(pipeline.load(&path).unwrap());
            }
        }
        stored.sort();
        predicted.sort();
        assert!(
            stored
                .iter()
                .zip(&predicted)
                .all(|(a, b)| *a == b.as_slice()),
            "{fit}: predict's inputs differ from the training images"
        );
        // Through the command line: the input `predict --show` draws is a training image.
        let picture = pictures.join("shape-7/002.png");
        mnist_cnn(dir.path())
            .args(["-q", "--data-dir"])
            .arg(&data)
            .args(["predict", "--show", "--model-dir"])
            .arg(&out)
            .arg(&picture)
            .assert()
            .success();
        let shown = image::open(dir.path().join("002-input.png"))
            .unwrap()
            .to_luma8();
        let scale = 280 / split.rows.max(split.cols) as u32;
        let seen: Vec<u8> = (0..split.rows as u32)
            .flat_map(|r| (0..split.cols as u32).map(move |c| (r, c)))
            .map(|(r, c)| shown.get_pixel(2 + c * scale, 2 + r * scale).0[0])
            .collect();
        assert_eq!(seen, pipeline.load(&picture).unwrap());
        assert!(
            stored.contains(&seen.as_slice()),
            "{fit}: not a training image"
        );
        // And the tensor the network gets is the one it was trained on.
        let device = mnist_cnn::backend::BackendKind::Flex.device();
        let trained = images_tensor(&split, &[0], &device).into_data();
        let shape = run.shape;
        let single = single_image_tensor(split.image(0), shape.rows, shape.cols, 1, &device);
        assert_eq!(trained, single.into_data());
    }
}

/// A red, green or blue blob on a dark background; the class is the colour alone.
fn colour_picture(class: usize, variant: usize) -> RgbImage {
    let (cx, cy) = (10.0 + (variant % 7) as f64, 10.0 + (variant / 7 % 7) as f64);
    let radius = 4.0 + (variant % 3) as f64;
    let shade = 170 + (variant * 13 % 80) as u8;
    RgbImage::from_fn(26, 26, |x, y| {
        let d = ((f64::from(x) - cx).powi(2) + (f64::from(y) - cy).powi(2)).sqrt();
        if d > radius {
            return Rgb([15, 15, 15]);
        }
        let mut pixel = [40u8; 3];
        pixel[class] = shade;
        // Same brightness for every class, so grayscale could not tell them apart.
        Rgb(pixel)
    })
}

#[test]
fn colour_pictures_import_train_evaluate_predict() {
    let dir = tempfile::tempdir().unwrap();
    for (class, name) in ["red", "green", "blue"].iter().enumerate() {
        for split in ["train", "test"] {
            let folder = dir.path().join("pictures").join(split).join(name);
            std::fs::create_dir_all(&folder).unwrap();
            let count = if split == "train" { 120 } else { 30 };
            for i in 0..count {
                let variant = i + if split == "test" { 500 } else { 0 };
                colour_picture(class, variant)
                    .save(folder.join(format!("{i}.png")))
                    .unwrap();
            }
        }
    }
    mnist_cnn(dir.path())
        .args([
            "import", "pictures", "--out", "colour", "--color", "--size", "16",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("stretch 16x16 colour"));
    let split = load_split(&dir.path().join("colour"), SplitKind::Train).unwrap();
    assert_eq!((split.channels, split.rows, split.cols), (3, 16, 16));
    mnist_cnn(dir.path())
        .args([
            "--data-dir",
            "colour",
            "train",
            "--epochs",
            "6",
            "--batch-size",
            "32",
        ])
        .args(["--out", "run"])
        .assert()
        .success()
        .stdout(predicate::str::contains("conv2d (Conv2D, ReLU)"));
    let run = read_json(&dir.path().join("run/run.json"));
    assert_eq!(run["shape"]["channels"], 3);
    assert_eq!(run["pipeline"]["color"], true);
    let metrics = evaluate_json(dir.path(), &["--data-dir", "colour"], "run");
    let accuracy = metrics["accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.9, "chance is 0.33; got {accuracy}");

    colour_picture(1, 1234)
        .save(dir.path().join("mine.png"))
        .unwrap();
    mnist_cnn(dir.path())
        .args([
            "--data-dir",
            "colour",
            "predict",
            "--model-dir",
            "run",
            "--show",
        ])
        .arg("mine.png")
        .assert()
        .success()
        .stdout(predicate::str::starts_with("mine.png: green ("))
        .stdout(predicate::str::contains("written to mine-input.png"));
    let shown = image::open(dir.path().join("mine-input.png"))
        .unwrap()
        .to_rgb8();
    let greenest = shown.pixels().map(|p| p.0[1] as i32 - p.0[0] as i32).max();
    assert!(greenest > Some(100), "the input is drawn in colour");

    mnist_cnn(dir.path())
        .args([
            "--data-dir",
            "colour",
            "heatmap",
            "--index",
            "0",
            "-o",
            "h.png",
        ])
        .assert()
        .success();
    let drawn = image::open(dir.path().join("h.png")).unwrap().to_rgb8();
    let colourful = drawn
        .pixels()
        .any(|p| p.0.iter().max().unwrap() - p.0.iter().min().unwrap() > 100);
    assert!(colourful, "a colour image is drawn as a picture");

    // A grayscale model's data is refused, and the other way round.
    mnist_cnn(dir.path())
        .args(["evaluate", "--model-dir", "run"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("trained on 16x16 images"));
}

/// The history of a 2-epoch run on 1500 MNIST images with `extra` flags.
fn history(dir: &Path, out: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    mnist_cnn(dir)
        .args(["-q", "train", "--limit", "1500", "--batch-size", "64"])
        .args(extra)
        .args(["--out", out])
        .assert()
        .success();
    read_json(&dir.join(out).join("history.json"))
        .as_array()
        .unwrap()
        .clone()
}

fn losses(history: &[serde_json::Value]) -> Vec<f64> {
    history
        .iter()
        .map(|e| e["loss"].as_f64().unwrap())
        .collect()
}

#[test]
fn training_options_change_what_they_should_and_are_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let plain = history(path, "plain", &["--epochs", "2"]);
    let augmented = history(path, "aug", &["--epochs", "2", "--augment"]);
    let again = history(path, "aug-again", &["--epochs", "2", "--augment"]);
    assert_ne!(
        losses(&plain),
        losses(&augmented),
        "augmentation changes the images"
    );
    assert_eq!(
        losses(&augmented),
        losses(&again),
        "the same seed, the same run"
    );
    assert!(
        losses(&augmented)[0] > losses(&plain)[0],
        "shifted and rotated images are harder to fit"
    );

    // Resumed halfway, the augmented run ends exactly where the uninterrupted one did.
    history(path, "aug-resumed", &["--epochs", "1", "--augment"]);
    mnist_cnn(path)
        .args([
            "-q",
            "train",
            "--limit",
            "1500",
            "--batch-size",
            "64",
            "--epochs",
            "2",
        ])
        .args(["--augment", "--resume", "--out", "aug-resumed"])
        .assert()
        .success();
    let resumed = read_json(&path.join("aug-resumed/history.json"));
    assert_eq!(losses(resumed.as_array().unwrap()), losses(&augmented));

    let cosine = history(
        path,
        "cosine",
        &["--epochs", "2", "--lr-schedule", "cosine"],
    );
    assert_ne!(
        losses(&cosine)[0],
        losses(&plain)[0],
        "the first epoch already runs at falling rates"
    );
    let step = history(path, "step", &["--epochs", "2", "--lr-schedule", "step"]);
    assert_eq!(
        losses(&step)[0],
        losses(&plain)[0],
        "the first half at the full rate"
    );
    assert_ne!(losses(&step)[1], losses(&plain)[1], "then a tenth of it");
    // A schedule spans the run's epochs, so resuming with other epochs is refused.
    mnist_cnn(path)
        .args([
            "train",
            "--limit",
            "1500",
            "--batch-size",
            "64",
            "--epochs",
            "3",
        ])
        .args(["--lr-schedule", "step", "--resume", "--out", "step"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "epochs (part of the learning-rate schedule)",
        ));

    // Early stopping with a high rate: the validation loss stops falling soon.
    let stopped = history(
        path,
        "early",
        &["--epochs", "25", "--lr", "0.01", "--early-stopping", "2"],
    );
    assert!(stopped.len() < 25, "stopped after {} epochs", stopped.len());
    let val_losses: Vec<f64> = stopped
        .iter()
        .map(|e| e["val_loss"].as_f64().unwrap())
        .collect();
    let best = (0..val_losses.len())
        .min_by(|&a, &b| val_losses[a].total_cmp(&val_losses[b]))
        .unwrap()
        + 1;
    assert_eq!(stopped.len(), best + 2, "two epochs without improvement");
    let run = read_json(&path.join("early/run.json"));
    assert_eq!(run["restored_best_epoch"], best);
    let model = std::fs::read(path.join("early/model.bpk")).unwrap();
    let best_file = run["best"]["model"]["file"].as_str().unwrap();
    assert_eq!(best_file, format!("best-model-epoch-{best}.bpk"));
    let kept = std::fs::read(path.join("early").join(best_file)).unwrap();
    assert!(model == kept, "the run ends with the best epoch's weights");

    mnist_cnn(path)
        .args(["train", "--early-stopping", "0"])
        .assert()
        .code(2);
    mnist_cnn(path)
        .args(["train", "--early-stopping", "2", "--validation-split", "0"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("needs a validation split"));
}
