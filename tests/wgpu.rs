//! burn's wgpu backend, end to end: `cargo test --release --features wgpu --test wgpu`.
//!
//! Without a GPU, Mesa's lavapipe (a Vulkan driver that computes on the CPU, Debian's
//! `mesa-vulkan-drivers`) runs these for real; `.ci/wgpu` installs it and runs them.
#![cfg(feature = "wgpu")]

mod common;

use std::path::Path;

use common::mnist_cnn;
use mnist_cnn::backend::BackendKind;
use mnist_cnn::data::{SplitKind, load_split};
use mnist_cnn::model::log_probabilities;
use mnist_cnn::run::TrainedRun;
use mnist_cnn::train::{TrainConfig, train};

/// Test images compared image by image between backends.
const COMPARED: usize = 1000;

#[test]
fn wgpu_starts_and_names_its_adapter() {
    assert_eq!(BackendKind::Wgpu.start().unwrap(), BackendKind::Wgpu);
    let device = BackendKind::Wgpu.describe();
    eprintln!("wgpu runs on {device}");
    assert!(device.contains('('), "name (graphics API): {device}");
    // `auto` takes a hardware adapter, and leaves a software one (lavapipe) to flex.
    let auto = BackendKind::Auto.start().unwrap();
    if device.contains("software") {
        assert_eq!(auto, BackendKind::Flex);
    } else {
        assert_ne!(auto, BackendKind::Flex);
    }
}

/// `evaluate --json` of the model in `dir/run` on `backend`.
fn evaluate(dir: &Path, backend: &str) -> serde_json::Value {
    let output = mnist_cnn(dir)
        .args([
            "--json",
            "evaluate",
            "--model-dir",
            "run",
            "--backend",
            backend,
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "evaluate on {backend}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The binary trains the CNN on wgpu (through burn's own conv2d, max_pool2d and ReLU), and
/// the model it writes evaluates the same on flex (through the hand-written kernels).
#[test]
fn cnn_trains_on_wgpu_and_evaluates_the_same_on_flex() {
    let dir = tempfile::tempdir().unwrap();
    let output = mnist_cnn(dir.path())
        .args(["--json", "train", "--backend", "wgpu", "--out", "run"])
        .args(["--epochs", "2", "--limit", "1280", "--batch-size", "64"])
        .args(["--validation-split", "0"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["run"]["config"]["backend"], "wgpu");
    let losses: Vec<f64> = result["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|epoch| epoch["loss"].as_f64().unwrap())
        .collect();
    eprintln!("losses on wgpu: {losses:?}");
    assert!(
        losses[1] < losses[0] * 0.8,
        "the loss decreases: {losses:?}"
    );

    let on_wgpu = evaluate(dir.path(), "wgpu");
    let on_flex = evaluate(dir.path(), "flex");
    let number = |value: &serde_json::Value, key: &str| value[key].as_f64().unwrap();
    eprintln!(
        "wgpu: loss {} accuracy {}; flex: loss {} accuracy {}",
        number(&on_wgpu, "loss"),
        number(&on_wgpu, "accuracy"),
        number(&on_flex, "loss"),
        number(&on_flex, "accuracy")
    );
    assert!(number(&on_flex, "accuracy") > 0.8, "{on_flex}");
    assert!((number(&on_wgpu, "loss") - number(&on_flex, "loss")).abs() < 1e-4);
    // At most a near tie or two of 10,000 images may fall the other way.
    assert!((number(&on_wgpu, "accuracy") - number(&on_flex, "accuracy")).abs() <= 2e-4);
}

/// The other direction, image by image: a model trained on flex gives the same
/// log-probabilities on wgpu.
#[test]
fn cnn_trained_on_flex_gives_the_same_probabilities_on_wgpu() {
    let data = load_split(&common::data_dir(), SplitKind::Train).unwrap();
    let out = tempfile::tempdir().unwrap();
    let config = TrainConfig {
        epochs: 1,
        limit: Some(2000),
        batch_size: 64,
        validation_split: 0.0,
        ..TrainConfig::default()
    };
    train(
        &config,
        &data,
        &common::data_dir(),
        out.path(),
        false,
        &mut |_| {},
    )
    .unwrap();
    let test = load_split(&common::data_dir(), SplitKind::Test).unwrap();
    let indices: Vec<usize> = (0..COMPARED).collect();
    let scores = |backend: BackendKind| {
        let device = backend.start().unwrap().device();
        let run = TrainedRun::open(out.path(), &device).unwrap();
        log_probabilities(&run.network, &test, &indices, 250, &device).values
    };
    let (flex, wgpu) = (scores(BackendKind::Flex), scores(BackendKind::Wgpu));
    assert_eq!(flex.len(), wgpu.len());
    let worst = flex
        .iter()
        .zip(&wgpu)
        .map(|(a, b)| (a - b).abs() / (1.0 + a.abs()))
        .fold(0.0f32, f32::max);
    eprintln!("largest difference of a log-probability, flex vs wgpu: {worst:e}");
    assert!(worst < 1e-4, "{worst}");
}

/// A directory holding `run`, a CNN that `train` wrote on flex (1 epoch, 1,024 images), shared
/// by the tests that compare what other commands show on wgpu and on flex.
fn trained_on_flex() -> &'static tempfile::TempDir {
    static TRAINED: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    TRAINED.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let trained = mnist_cnn(dir.path())
            .args([
                "--json", "train", "--out", "run", "--epochs", "1", "--limit", "1024",
            ])
            .output()
            .unwrap();
        assert!(
            trained.status.success(),
            "{}",
            String::from_utf8_lossy(&trained.stderr)
        );
        dir
    })
}

/// `inspect --backend wgpu` runs every layer on wgpu and shows the numbers flex shows.
#[test]
fn inspect_runs_on_wgpu_with_the_numbers_of_flex() {
    let dir = trained_on_flex();
    let inspect = |backend: &str| {
        let output = mnist_cnn(dir.path())
            .args(["--json", "inspect", "--split", "test", "--index", "0"])
            .args(["--model-dir", "run", "--backend", backend])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "inspect on {backend}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        printed["inspection"].clone()
    };
    let (on_wgpu, on_flex) = (inspect("wgpu"), inspect("flex"));
    let layers = |inspection: &serde_json::Value| inspection["layers"].as_array().unwrap().len();
    assert_eq!(layers(&on_wgpu), layers(&on_flex));
    let probabilities = |inspection: &serde_json::Value| -> Vec<f64> {
        inspection["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_f64().unwrap())
            .collect()
    };
    for (a, b) in probabilities(&on_wgpu).iter().zip(probabilities(&on_flex)) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}

/// The server on wgpu (`serve --backend wgpu`) answers a picture with flex's probabilities.
#[test]
fn serve_predicts_on_wgpu_as_on_flex() {
    use mnist_cnn::serve::{ServeOptions, Server};

    let dir = trained_on_flex();
    // Test image 0 (a 7) as a PNG, dark on light as a user's picture would be.
    let test = load_split(&common::data_dir(), SplitKind::Test).unwrap();
    let pixels: Vec<u8> = test.image(0).iter().map(|&p| 255 - p).collect();
    let picture = image::GrayImage::from_raw(28, 28, pixels).unwrap();
    let mut png = Vec::new();
    picture
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let probabilities = |backend: BackendKind| -> Vec<(u64, f64)> {
        let server = Server::start(ServeOptions {
            model_dir: dir.path().join("run"),
            data_dir: common::data_dir(),
            host: "127.0.0.1".parse().unwrap(),
            port: 0,
            collect: None,
            backend,
            allowed_hosts: Vec::new(),
            limits: Default::default(),
        })
        .unwrap();
        let client = reqwest::blocking::Client::new();
        let info = client
            .get(format!("http://{}/api/info", server.address()))
            .send()
            .unwrap();
        let info: serde_json::Value = serde_json::from_slice(&info.bytes().unwrap()).unwrap();
        assert_eq!(info["backend"]["name"], backend.name(), "{info}");
        let response = client
            .post(format!("http://{}/api/predict?top=10", server.address()))
            .header("Content-Type", "image/png")
            .body(png.clone())
            .send()
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{backend}");
        let served: serde_json::Value = serde_json::from_slice(&response.bytes().unwrap()).unwrap();
        let mut top: Vec<(u64, f64)> = served["predictions"][0]["top"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["class"].as_u64().unwrap(),
                    c["probability"].as_f64().unwrap(),
                )
            })
            .collect();
        top.sort_by_key(|&(class, _)| class);
        top
    };
    let (on_wgpu, on_flex) = (
        probabilities(BackendKind::Wgpu),
        probabilities(BackendKind::Flex),
    );
    assert_eq!(on_wgpu.len(), 10);
    for ((class, a), (_, b)) in on_wgpu.iter().zip(&on_flex) {
        assert!(
            (a - b).abs() < 1e-5,
            "class {class}: {a} on wgpu, {b} on flex"
        );
    }
}
