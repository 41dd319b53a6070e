//! The real binary, end to end, on the shipped MNIST data.

mod common;

use common::{mnist_cnn, read_json, temp_leftovers};
use std::time::Duration;

use predicates::prelude::*;

#[test]
fn heatmap_of_training_image_1210_prints_5_and_writes_a_png() {
    let dir = tempfile::tempdir().unwrap();
    mnist_cnn(dir.path())
        .args(["heatmap", "--index", "1210"])
        .assert()
        .success()
        .stdout(predicate::str::starts_with("5\n"))
        .stdout(predicate::str::contains("heatmap-train-1210.png"));
    let png = image::open(dir.path().join("heatmap-train-1210.png")).unwrap();
    // 28 square cells of 20 pixels on the longer side, plus title, ticks and colour bar.
    assert!(png.width() > 560 && png.width() < 1000, "{}", png.width());
    assert!(
        png.height() > 560 && png.height() < 1000,
        "{}",
        png.height()
    );
    let colours: std::collections::HashSet<[u8; 3]> = png.to_rgb8().pixels().map(|p| p.0).collect();
    assert!(colours.len() > 20, "a colour map, not a blank image");
}

#[test]
fn heatmap_json_reports_label_and_output() {
    let dir = tempfile::tempdir().unwrap();
    let output = mnist_cnn(dir.path())
        .args([
            "--json",
            "heatmap",
            "--split",
            "test",
            "--index",
            "0",
            "-o",
            "first.png",
        ])
        .output()
        .unwrap();
    assert!(output.status.success());
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["label"], 7, "the first test image is a 7");
    assert_eq!(result["split"], "test");
    assert!(dir.path().join("first.png").is_file());
}

#[test]
fn heatmap_index_out_of_range_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    mnist_cnn(dir.path())
        .args(["heatmap", "--split", "test", "--index", "10000"])
        .assert()
        .code(1)
        .stdout("")
        .stderr(predicate::eq(
            "error: index 10000 is out of range: the test split has 10000 images (valid: 0..=9999)\n",
        ));
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
}

#[test]
fn missing_data_dir_explains_what_to_run() {
    let dir = tempfile::tempdir().unwrap();
    mnist_cnn(dir.path())
        .args(["--data-dir", "nowhere", "heatmap"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("mnist-cnn download"))
        .stderr(predicate::str::contains("panicked").not());
}

#[test]
fn corrupt_data_file_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(
        data.join("train-images-idx3-ubyte.gz"),
        b"\x1f\x8bnot gzip at all",
    )
    .unwrap();
    std::fs::write(
        data.join("train-labels-idx1-ubyte"),
        b"\0\0\x08\x01\0\0\0\0",
    )
    .unwrap();
    let assert = mnist_cnn(dir.path())
        .args(["--data-dir", "data", "heatmap", "--index", "0"])
        .assert()
        .code(1);
    let stderr = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("train-images-idx3-ubyte.gz: corrupt gzip data"),
        "{stderr}"
    );
}

#[test]
fn bad_flags_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["train", "--backend", "tpu"],
        vec!["train", "--epochs", "many"],
        vec!["heatmap", "--split", "validation"],
        vec!["--threads", "0", "heatmap"],
        vec!["frobnicate"],
    ] {
        mnist_cnn(dir.path())
            .args(&args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains("error:"));
    }
}

#[test]
fn out_of_range_values_are_usage_errors_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    for (args, flag) in [
        (vec!["train", "--lr=-1"], "--lr"),
        (vec!["train", "--lr", "inf"], "--lr"),
        (vec!["train", "--batch-size", "0"], "--batch-size"),
        (vec!["train", "--epochs", "0"], "--epochs"),
        (
            vec!["train", "--validation-split", "1.5"],
            "--validation-split",
        ),
        (vec!["train", "--limit", "0"], "--limit"),
        (vec!["evaluate", "--batch-size", "0"], "--batch-size"),
        (vec!["--threads", "0", "train"], "--threads"),
        (vec!["--threads", "100000", "train"], "--threads"),
        (vec!["bench", "--batch-sizes", "64,0"], "--batch-sizes"),
        (
            vec!["bench", "--batch-sizes", "18446744073709551615"],
            "--batch-sizes",
        ),
        (
            vec!["bench", "--eval-batch-sizes", "100,70000"],
            "--eval-batch-sizes",
        ),
        (
            vec!["bench", "--train-images", "1000000000"],
            "--train-images",
        ),
        (
            vec!["bench", "--train-images", "18446744073709551615"],
            "--train-images",
        ),
        (vec!["bench", "--eval-images", "10000001"], "--eval-images"),
        (
            vec!["download", "--timeout", "9223372036854775807"],
            "--timeout",
        ),
        (
            vec!["import", "src", "--out", "x", "--test-fraction", "1"],
            "--test-fraction",
        ),
    ] {
        mnist_cnn(dir.path())
            .args(&args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains("invalid value"))
            .stderr(predicate::str::contains(flag))
            .stderr(predicate::str::contains("panicked").not());
    }
    assert!(!dir.path().join("runs").exists(), "nothing written");
}

#[test]
fn evaluate_without_a_model_says_to_train_first() {
    let dir = tempfile::tempdir().unwrap();
    mnist_cnn(dir.path())
        .args(["evaluate", "--model-dir", "missing"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("run `mnist-cnn train` first"));
}

#[test]
fn train_evaluate_predict_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    mnist_cnn(dir.path())
        .args(["train", "--epochs", "2", "--limit", "3000", "--out", "run"])
        .assert()
        .success()
        .stdout(predicate::str::contains("Total params: 223434"))
        .stderr(predicate::str::contains("Epoch 2/2"));
    for file in [
        "model.bpk",
        "model-epoch-2.bpk",
        "optimizer-epoch-2.bpk",
        "run.json",
        "history.json",
        "accuracy.png",
        "loss.png",
    ] {
        assert!(run.join(file).is_file(), "{file} written");
    }
    // Epoch 1's files are kept for one more epoch, for readers of the previous manifest.
    assert!(run.join("model-epoch-1.bpk").is_file());
    assert!(
        temp_leftovers(&run).is_empty(),
        "{:?}",
        temp_leftovers(&run)
    );
    let history = read_json(&run.join("history.json"));
    let epochs = history.as_array().unwrap();
    assert_eq!(epochs.len(), 2);
    assert!(epochs[1]["loss"].as_f64().unwrap() < epochs[0]["loss"].as_f64().unwrap());
    assert!(epochs[1]["val_accuracy"].as_f64().unwrap() > 0.8);
    let info = read_json(&run.join("run.json"));
    assert_eq!(info["parameters"], 223434);
    assert_eq!(info["data"]["train_images"], 2700);
    assert_eq!(info["data"]["validation_images"], 300);
    assert_eq!(info["data"]["canonical_mnist"], true);
    assert_eq!(info["checkpoint"]["epoch"], 2);
    assert_eq!(info["checkpoint"]["model"]["file"], "model-epoch-2.bpk");
    assert_eq!(info["history"].as_array().unwrap().len(), 2);

    let metrics = common::evaluate_json(dir.path(), &[], "run");
    assert_eq!(metrics["images"], 10000);
    assert!(
        metrics["accuracy"].as_f64().unwrap() > 0.85,
        "{}",
        metrics["accuracy"]
    );
    for file in ["metrics.json", "confusion_matrix.png", "misclassified.png"] {
        assert!(run.join(file).is_file(), "{file} written");
    }
    let confusion = &read_json(&run.join("metrics.json"))["confusion"];
    let total: u64 = confusion
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap())
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total, 10000);

    // `bench` measures the trained model's evaluation speed when given its directory.
    let bench = mnist_cnn(dir.path())
        .args([
            "--json",
            "bench",
            "--model-dir",
            "run",
            "--batch-sizes",
            "16",
            "--train-images",
            "16",
            "--eval-batch-sizes",
            "50",
            "--eval-images",
            "200",
        ])
        .assert()
        .success();
    let bench: serde_json::Value = serde_json::from_slice(&bench.get_output().stdout).unwrap();
    assert_eq!(bench["evaluation"][0]["images"], 200);
    assert!(
        bench["evaluation"][0]["images_per_second"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert_eq!(bench["training"][0]["batch_size"], 16);
    // The floor: the CNN's arithmetic per image, the machine's matrix-product speed, and the
    // measured epoch as a multiple of the time they imply.
    let floor = &bench["floor"];
    assert_eq!(floor["flops"]["forward"], 2_468_864.0);
    assert_eq!(floor["batch_size"], 16);
    let (epoch, least) = (
        floor["epoch_seconds"].as_f64().unwrap(),
        floor["floor_epoch_seconds"].as_f64().unwrap(),
    );
    assert!(floor["gemm_gflops"].as_f64().unwrap() > 0.0);
    assert!(
        (floor["times_floor"].as_f64().unwrap() - epoch / least).abs() < 1e-9,
        "{floor}"
    );
    mnist_cnn(dir.path())
        .args(["bench", "--model-dir", "no-such-run"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no trained model in no-such-run"));

    // Test image 0 is a 7; a digit drawn on white paper at another size must be read too.
    mnist_cnn(dir.path())
        .args(["predict", "--model-dir", "run", "--index", "0"])
        .assert()
        .success()
        .stdout(predicate::str::starts_with("test image 0 (label 7): 7 ("));
    let seven =
        mnist_cnn::data::load_split(&common::data_dir(), mnist_cnn::data::SplitKind::Test).unwrap();
    let paper = image::GrayImage::from_fn(112, 112, |x, y| {
        let pixel = seven.image(0)[(y as usize / 4) * 28 + x as usize / 4];
        image::Luma([255 - pixel])
    });
    paper.save(dir.path().join("seven.png")).unwrap();
    mnist_cnn(dir.path())
        .args(["predict", "--model-dir", "run", "seven.png"])
        .assert()
        .success()
        .stdout(predicate::str::starts_with("seven.png: 7 ("));
    std::fs::write(dir.path().join("junk.png"), b"not a picture").unwrap();
    mnist_cnn(dir.path())
        .args(["predict", "--model-dir", "run", "junk.png"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "junk.png: cannot read as an image",
        ));
}

#[test]
fn corrupt_model_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    mnist_cnn(dir.path())
        .args([
            "-q", "train", "--epochs", "1", "--limit", "256", "--out", "run",
        ])
        .assert()
        .success()
        .stdout("");
    // Weights changed after they were committed: refused by their checksum.
    let weights = run.join("model-epoch-1.bpk");
    let mut bytes = std::fs::read(&weights).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&weights, &bytes).unwrap();
    mnist_cnn(dir.path())
        .args(["evaluate", "--model-dir", "run"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "model-epoch-1.bpk: does not match the checksum in run.json",
        ))
        .stderr(predicate::str::contains("panicked").not());
    // An MLP's weights under a run.json that says CNN: the wrong architecture.
    mnist_cnn(dir.path())
        .args([
            "-q", "train", "--model", "mlp", "--epochs", "1", "--limit", "256", "--out", "mlp",
        ])
        .assert()
        .success();
    // A manifest that names them, with their checksum, as if they were the run's.
    std::fs::copy(
        dir.path().join("mlp/model-epoch-1.bpk"),
        run.join("mlp-weights.bpk"),
    )
    .unwrap();
    let mut info = read_json(&run.join("run.json"));
    info["checkpoint"]["model"] =
        read_json(&dir.path().join("mlp/run.json"))["checkpoint"]["model"].clone();
    info["checkpoint"]["model"]["file"] = "mlp-weights.bpk".into();
    std::fs::write(run.join("run.json"), info.to_string()).unwrap();
    mnist_cnn(dir.path())
        .args(["evaluate", "--model-dir", "run"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("as a cnn model"))
        .stderr(predicate::str::contains("panicked").not());
}

#[test]
fn resume_continues_exactly_where_an_interrupted_run_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let common_args = common::QUICK_TRAIN;
    mnist_cnn(dir.path())
        .args(common_args)
        .args(["--epochs", "3", "--out", "straight"])
        .assert()
        .success();
    mnist_cnn(dir.path())
        .args(common_args)
        .args(["--epochs", "1", "--out", "resumed"])
        .assert()
        .success();
    mnist_cnn(dir.path())
        .args(common_args)
        .args(["--epochs", "3", "--out", "resumed", "--resume"])
        .assert()
        .success()
        .stderr(predicate::str::contains("resuming after epoch 1"));
    let dir_path = |name: &str| dir.path().join(name).join("history.json");
    let load = |name: &str| -> Vec<serde_json::Value> {
        read_json(&dir_path(name))
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let mut e = e.clone();
                let object = e.as_object_mut().unwrap();
                object.remove("seconds");
                object.remove("images_per_second");
                e
            })
            .collect()
    };
    assert_eq!(load("straight"), load("resumed"));
    // The files differ in parameter ids, so compare what the weights compute.
    let test =
        mnist_cnn::data::load_split(&common::data_dir(), mnist_cnn::data::SplitKind::Test).unwrap();
    let device = mnist_cnn::backend::BackendKind::Flex.device();
    let outputs = |name: &str| {
        let network = mnist_cnn::run::TrainedRun::open(&dir.path().join(name), &device)
            .unwrap()
            .network;
        let indices: Vec<usize> = (0..50).collect();
        mnist_cnn::model::log_probabilities(&network, &test, &indices, 50, &device).values
    };
    assert_eq!(
        outputs("straight"),
        outputs("resumed"),
        "resumed weights are identical"
    );
}

#[test]
fn resume_without_a_run_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    mnist_cnn(dir.path())
        .args(["train", "--resume", "--out", "nothing-here"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "no trained model in nothing-here (run.json is missing); start a new run without --resume",
        ));
}

#[test]
#[cfg(not(feature = "wgpu"))]
fn a_gpu_backend_not_compiled_in_says_which_feature_to_build_with() {
    let dir = tempfile::tempdir().unwrap();
    mnist_cnn(dir.path())
        .args(["evaluate", "--backend", "wgpu"])
        .assert()
        .code(1)
        .stdout("")
        .stderr(predicate::eq(
            "error: the wgpu backend is not compiled into this build; rebuild with `cargo build --release --features wgpu`\n",
        ));
}

/// `predict --show` with two pictures of one name, in a folder holding a file of the user's
/// under the name it would write: each picture gets its own PNG, the user's file is left
/// alone, and a second run replaces only the PNGs the first one wrote.
#[test]
fn predict_show_gives_each_picture_its_own_png_and_keeps_the_users_files() {
    let dir = tempfile::tempdir().unwrap();
    mnist_cnn(dir.path())
        .args(common::small_model_args("run"))
        .assert()
        .success();
    // A vertical stroke and a horizontal one, dark on white.
    for (folder, vertical) in [("a", true), ("b", false)] {
        let picture = image::GrayImage::from_fn(28, 28, |x, y| {
            let (along, across) = if vertical { (y, x) } else { (x, y) };
            let ink = across == 14 && (4..24).contains(&along);
            image::Luma([if ink { 0 } else { 255 }])
        });
        std::fs::create_dir(dir.path().join(folder)).unwrap();
        picture
            .save(dir.path().join(folder).join("seven.png"))
            .unwrap();
    }
    std::fs::write(dir.path().join("seven-input.png"), b"the user's own").unwrap();
    let shown = |expected: [&str; 2]| {
        let output = mnist_cnn(dir.path())
            .args(["--json", "predict", "--model-dir", "run", "--show"])
            .args(["a/seven.png", "b/seven.png"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let names: Vec<&str> = result["predictions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["input_png"].as_str().unwrap())
            .collect();
        assert_eq!(names, expected);
    };
    shown(["seven-input-2.png", "seven-input-3.png"]);
    let (second, third) = (
        std::fs::read(dir.path().join("seven-input-2.png")).unwrap(),
        std::fs::read(dir.path().join("seven-input-3.png")).unwrap(),
    );
    assert!(second != third, "two pictures, two inputs");
    shown(["seven-input-2.png", "seven-input-3.png"]);
    assert_eq!(
        std::fs::read(dir.path().join("seven-input.png")).unwrap(),
        b"the user's own"
    );
    assert!(!dir.path().join("seven-input-4.png").exists());
}

/// `bench --train-images` at its largest allowed value lists each step's images when it runs
/// it, instead of all of them up front: memory stays that of one batch (before: 8.2 GB for a
/// billion images, 389 MB for these ten million; now 84 MB).
#[test]
fn a_bench_of_ten_million_images_keeps_its_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::data_dir();
    let (code, stderr, peak_mb) = common::run_measured_for(
        dir.path(),
        &[
            "--threads",
            "1",
            "--data-dir",
            data.to_str().unwrap(),
            "bench",
            "--train-images",
            "10000000",
            "--batch-sizes",
            "1",
        ],
        Some(Duration::from_secs(8)),
    );
    assert_eq!(code, None, "still measuring when killed: {stderr}");
    eprintln!("bench of 10 million images, batch 1: peak {peak_mb:.0} MB");
    assert!(peak_mb < 250.0, "peak {peak_mb:.0} MB");
}
