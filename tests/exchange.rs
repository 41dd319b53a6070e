//! `import-model` and `export`, against files Keras itself wrote (tests/fixtures/keras, made by
//! benches/reference/keras_fixtures.py with Keras 3 and TensorFlow): an imported model gives
//! Keras's own loss, accuracy and probabilities; the three Keras formats give the same run; a
//! model of another architecture or a damaged file is refused in one line; safetensors go out
//! and back in bit for bit; ONNX is written with standard operators; training goes on from an
//! imported model. ONNX Runtime and numpy read the exports in `.ci/exchange`.

mod common;

use std::path::{Path, PathBuf};

use mnist_cnn::backend::BackendKind;
use mnist_cnn::data::{SplitKind, load_split};
use mnist_cnn::model::log_probabilities;
use mnist_cnn::run::TrainedRun;
use serde_json::Value;

use common::{mnist_cnn, read_json};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keras")
        .join(name)
}

/// `import-model FILE --out DIR` with extra arguments, in `dir`; asserts success.
fn import(dir: &Path, file: &Path, out: &str, extra: &[&str]) -> Value {
    let output = mnist_cnn(dir)
        .args(["--json", "import-model"])
        .arg(file)
        .args(["--out", out])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The one-line error of a command that must fail with status 1.
fn failure(dir: &Path, args: &[&str]) -> String {
    let output = mnist_cnn(dir).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

fn export(dir: &Path, model_dir: &str, format: &str, output: &str) -> Vec<u8> {
    let status = mnist_cnn(dir)
        .args([
            "--quiet",
            "export",
            "--model-dir",
            model_dir,
            "--format",
            format,
            "-o",
            output,
        ])
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    std::fs::read(dir.join(output)).unwrap()
}

/// Every test image's probabilities under the run in `dir`, as `evaluate` computes them.
fn test_probabilities(dir: &Path) -> Vec<Vec<f32>> {
    let device = BackendKind::Flex.device();
    let run = TrainedRun::open(dir, &device).unwrap();
    let split = load_split(&common::data_dir(), SplitKind::Test).unwrap();
    let indices: Vec<usize> = (0..split.len()).collect();
    let scores = log_probabilities(&run.network, &split, &indices, 500, &device);
    scores
        .rows()
        .map(|row| row.iter().map(|v| v.exp()).collect())
        .collect()
}

fn argmax(row: &[f64]) -> usize {
    (0..row.len())
        .max_by(|&a, &b| row[a].total_cmp(&row[b]))
        .unwrap()
}

/// `evaluate` gives Keras's loss and accuracy, the first 100 images Keras's probabilities, and
/// all 10,000 Keras's class (bar a few ties of float rounding).
fn assert_matches_keras(dir: &Path, run: &str, reference: &str) {
    let keras = read_json(&fixture(reference));
    let evaluation = common::evaluate_json(dir, &[], run);
    let (loss, accuracy) = (
        evaluation["loss"].as_f64().unwrap(),
        evaluation["accuracy"].as_f64().unwrap(),
    );
    let (keras_loss, keras_accuracy) = (
        keras["evaluate"][0].as_f64().unwrap(),
        keras["evaluate"][1].as_f64().unwrap(),
    );
    assert!(
        (loss - keras_loss).abs() < 1e-4,
        "loss {loss}, Keras {keras_loss}"
    );
    assert!(
        (accuracy - keras_accuracy).abs() < 0.0002,
        "accuracy {accuracy}, Keras {keras_accuracy}"
    );
    let ours = test_probabilities(&dir.join(run));
    let mut largest = 0f64;
    for (row, theirs) in ours.iter().zip(keras["probabilities"].as_array().unwrap()) {
        for (p, q) in row.iter().zip(theirs.as_array().unwrap()) {
            largest = largest.max((f64::from(*p) - q.as_f64().unwrap()).abs());
        }
    }
    assert!(largest < 1e-4, "probabilities differ by {largest}");
    let predicted = keras["predicted"].as_array().unwrap();
    let same = ours
        .iter()
        .zip(predicted)
        .filter(|(row, class)| {
            let row: Vec<f64> = row.iter().map(|&p| f64::from(p)).collect();
            argmax(&row) as u64 == class.as_u64().unwrap()
        })
        .count();
    assert!(same >= 9_995, "the same class on {same} of 10000 images");
}

#[test]
fn an_imported_keras_cnn_gives_keras_s_loss_accuracy_and_probabilities() {
    let dir = tempfile::tempdir().unwrap();
    let result = import(dir.path(), &fixture("cnn.keras"), "cnn", &[]);
    let imported = &result["run"]["imported"];
    assert_eq!(imported["file"], "cnn.keras");
    assert_eq!(imported["format"], "keras");
    assert_eq!(imported["pixel_scale"], 1.0);
    assert_eq!(imported["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(imported["written_by"], "Keras 3.15.1");
    let run = read_json(&dir.path().join("cnn/run.json"));
    assert_eq!(run["imported"], *imported);
    assert_eq!(run["config"]["architecture"], "cnn");
    assert_eq!(run["parameters"], 223_434);
    assert_matches_keras(dir.path(), "cnn", "cnn.json");
    // An ordinary run: the other commands read it unchanged.
    for args in [
        vec!["predict", "--index", "0", "--model-dir", "cnn"],
        vec![
            "inspect",
            "--index",
            "0",
            "--model-dir",
            "cnn",
            "--out",
            "layers",
        ],
        vec![
            "bench",
            "--model-dir",
            "cnn",
            "--batch-sizes",
            "32",
            "--train-images",
            "64",
            "--eval-batch-sizes",
            "100",
            "--eval-images",
            "200",
        ],
    ] {
        let output = mnist_cnn(dir.path())
            .args(["--quiet"])
            .args(&args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // A second import into the same directory would replace a run: refused.
    let error = failure(
        dir.path(),
        &[
            "import-model",
            fixture("cnn.h5").to_str().unwrap(),
            "--out",
            "cnn",
        ],
    );
    assert!(error.contains("already holds a run"), "{error}");
}

#[test]
fn the_three_keras_formats_give_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    import(dir.path(), &fixture("cnn.keras"), "keras", &[]);
    import(dir.path(), &fixture("cnn.h5"), "h5", &[]);
    import(
        dir.path(),
        &fixture("cnn.weights.h5"),
        "weights",
        &["--model", "cnn"],
    );
    let formats: Vec<Value> = ["keras", "h5", "weights"]
        .iter()
        .map(|run| read_json(&dir.path().join(run).join("run.json"))["imported"]["format"].clone())
        .collect();
    assert_eq!(formats, ["keras", "keras-h5", "keras-weights"]);
    // The same safetensors bytes: the same tensors, names, shapes and metadata.
    let reference = export(dir.path(), "keras", "safetensors", "keras.safetensors");
    assert_eq!(
        export(dir.path(), "h5", "safetensors", "h5.safetensors"),
        reference
    );
    assert_eq!(
        export(dir.path(), "weights", "safetensors", "w.safetensors"),
        reference
    );
    // A file of weights alone needs its architecture named.
    let error = failure(
        dir.path(),
        &[
            "import-model",
            fixture("cnn.weights.h5").to_str().unwrap(),
            "--out",
            "x",
        ],
    );
    assert!(
        error.contains("does not say its architecture") && error.contains("--model"),
        "{error}"
    );
    assert!(!dir.path().join("x/run.json").exists());
}

#[test]
fn the_mlp_behind_a_rescaling_layer_and_its_weights_alone() {
    let dir = tempfile::tempdir().unwrap();
    let result = import(dir.path(), &fixture("mlp.keras"), "mlp", &[]);
    assert_eq!(result["run"]["config"]["architecture"], "mlp");
    let rescaling = &result["run"]["imported"]["rescaling"];
    assert!(
        (rescaling["scale"].as_f64().unwrap() - 1.0 / 255.0).abs() < 1e-12,
        "{rescaling}"
    );
    assert_matches_keras(dir.path(), "mlp", "mlp.json");
    // The same weights without the Rescaling layer: the scale is said on the command line.
    import(
        dir.path(),
        &fixture("mlp.weights.h5"),
        "weights",
        &["--model", "mlp", "--pixel-scale", "1/255"],
    );
    assert_eq!(
        export(dir.path(), "weights", "safetensors", "w.safetensors"),
        export(dir.path(), "mlp", "safetensors", "m.safetensors")
    );
    let error = failure(
        dir.path(),
        &[
            "import-model",
            fixture("mlp.keras").to_str().unwrap(),
            "--out",
            "x",
            "--model",
            "cnn",
        ],
    );
    assert!(
        error.contains("holds a mlp model, not a cnn; pass --model mlp"),
        "{error}"
    );
    let output = mnist_cnn(dir.path())
        .args(["import-model", "x", "--out", "y", "--pixel-scale", "0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "a usage error");
}

#[test]
fn a_model_of_another_architecture_is_refused_naming_the_first_layer_that_differs() {
    let dir = tempfile::tempdir().unwrap();
    let error = failure(
        dir.path(),
        &[
            "import-model",
            fixture("other.keras").to_str().unwrap(),
            "--out",
            "other",
        ],
    );
    assert!(
        error.contains("is not a model this tool can run"),
        "{error}"
    );
    assert!(
        error.contains(r#"layer 1 (conv2d) is Conv2D(8, (5, 5), padding="valid", activation="relu"), where the tool's cnn has Conv2D(16, (3, 3), padding="same", activation="relu")"#),
        "{error}"
    );
    assert!(!dir.path().join("other/run.json").exists());
}

#[test]
fn safetensors_go_out_with_pytorch_names_and_come_back_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    import(dir.path(), &fixture("cnn.keras"), "cnn", &[]);
    let bytes = export(dir.path(), "cnn", "safetensors", "cnn.safetensors");
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<(String, Vec<usize>)> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, view.shape().to_vec()))
        .collect();
    names.sort();
    let expected: Vec<(String, Vec<usize>)> = [
        ("conv1.bias", vec![16]),
        ("conv1.weight", vec![16, 1, 3, 3]),
        ("conv2.bias", vec![32]),
        ("conv2.weight", vec![32, 16, 3, 3]),
        ("dense1.bias", vec![128]),
        ("dense1.weight", vec![128, 1568]),
        ("dense2.bias", vec![128]),
        ("dense2.weight", vec![128, 128]),
        ("output.bias", vec![10]),
        ("output.weight", vec![10, 128]),
    ]
    .into_iter()
    .map(|(n, d)| (n.to_string(), d))
    .collect();
    assert_eq!(names, expected);
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let metadata = metadata.metadata().clone().unwrap();
    assert_eq!(metadata["pixel_scale"], "1/255");
    assert_eq!(metadata["architecture"], "cnn");
    assert_eq!(metadata["input_shape"], "[1, 28, 28]");
    assert_eq!(
        metadata["class_names"],
        r#"["0","1","2","3","4","5","6","7","8","9"]"#
    );
    // Back in: the same weights, so the same file and the same probabilities, bit for bit.
    let result = import(dir.path(), &dir.path().join("cnn.safetensors"), "back", &[]);
    assert_eq!(result["run"]["imported"]["format"], "safetensors");
    assert_eq!(
        export(dir.path(), "back", "safetensors", "back.safetensors"),
        bytes
    );
    let (first, second) = (
        test_probabilities(&dir.path().join("cnn")),
        test_probabilities(&dir.path().join("back")),
    );
    assert!(first == second, "the round trip changed the probabilities");
}

#[test]
fn onnx_is_written_with_standard_operators_a_dynamic_batch_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    import(dir.path(), &fixture("cnn.keras"), "cnn", &[]);
    import(dir.path(), &fixture("mlp.keras"), "mlp", &[]);
    let cnn =
        mnist_cnn::exchange::onnx::summary(&export(dir.path(), "cnn", "onnx", "cnn.onnx")).unwrap();
    assert_eq!(cnn.opset, 17);
    assert_eq!(
        cnn.operators,
        [
            "Div", "Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool", "Flatten", "Gemm", "Relu",
            "Gemm", "Relu", "Gemm", "Softmax"
        ]
    );
    assert_eq!(cnn.input, ["N", "1", "28", "28"]);
    assert_eq!(cnn.output, ["N", "10"]);
    let meta = |key: &str| {
        cnn.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        meta("class_names").as_deref(),
        Some(r#"["0","1","2","3","4","5","6","7","8","9"]"#)
    );
    let mnist = mnist_cnn::data::pipeline::Pipeline::mnist(28, 28);
    assert_eq!(meta("pipeline"), Some(mnist.name()));
    let mlp =
        mnist_cnn::exchange::onnx::summary(&export(dir.path(), "mlp", "onnx", "mlp.onnx")).unwrap();
    assert_eq!(
        mlp.operators,
        [
            "Div", "Flatten", "Gemm", "Relu", "Gemm", "Relu", "Gemm", "Softmax"
        ]
    );
    let error = failure(
        dir.path(),
        &[
            "export",
            "--model-dir",
            "nothing",
            "--format",
            "onnx",
            "-o",
            "x.onnx",
        ],
    );
    assert!(error.contains("no trained model"), "{error}");
    assert!(!dir.path().join("x.onnx").exists());
}

#[test]
fn training_from_an_imported_model_goes_on_from_its_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    import(dir.path(), &fixture("cnn.keras"), "keras", &[]);
    let train = |extra: &[&str]| {
        mnist_cnn(dir.path())
            .args([
                "--json",
                "train",
                "--epochs",
                "1",
                "--limit",
                "1000",
                "--steps-per-epoch",
                "4",
                "--batch-size",
                "64",
                "--validation-split",
                "0",
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let output = train(&["--init-from", "keras", "--out", "tuned"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    let accuracy = result["history"][0]["accuracy"].as_f64().unwrap();
    // Keras's model is at 96% on the test set; fresh weights start at chance (10%).
    assert!(accuracy > 0.9, "accuracy {accuracy} in the first steps");
    assert_eq!(result["run"]["config"]["init_from"], "keras");
    let fresh = train(&["--out", "fresh"]);
    let fresh: Value = serde_json::from_slice(&fresh.stdout).unwrap();
    assert!(fresh["history"][0]["accuracy"].as_f64().unwrap() < 0.6);
    let error = failure(
        dir.path(),
        &[
            "train",
            "--model",
            "mlp",
            "--init-from",
            "keras",
            "--out",
            "m",
            "--epochs",
            "1",
            "--limit",
            "100",
        ],
    );
    assert!(
        error.contains("it holds a cnn model, and this run trains a mlp"),
        "{error}"
    );
    assert_eq!(
        train(&["--init-from", "keras", "--resume", "--out", "tuned"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn damaged_and_lying_model_files_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let keras = std::fs::read(fixture("cnn.keras")).unwrap();
    std::fs::write(path("empty.keras"), b"").unwrap();
    std::fs::write(path("text.keras"), b"hello, I am not a model").unwrap();
    std::fs::write(path("truncated.keras"), &keras[..keras.len() / 2]).unwrap();
    std::fs::write(
        path("truncated.h5"),
        &std::fs::read(fixture("cnn.h5")).unwrap()[..300_000],
    )
    .unwrap();
    let mut bad_safetensors = 1000u64.to_le_bytes().to_vec();
    bad_safetensors.extend(b"{\"x\": 1}");
    std::fs::write(path("bad.safetensors"), bad_safetensors).unwrap();
    std::fs::create_dir(path("folder.keras")).unwrap();
    // A .keras whose weights' size fields claim 3 GB.
    std::fs::write(
        path("lying.keras"),
        claim_size(&keras, "model.weights.h5", 3_000_000_000),
    )
    .unwrap();
    // A .keras whose config takes 32x32 images: the weights' shapes do not fit.
    std::fs::write(
        path("shape.keras"),
        with_config(&keras, |c| {
            c.replace("[null, 28, 28, 1]", "[null, 32, 32, 1]")
        }),
    )
    .unwrap();
    std::fs::write(
        path("json.keras"),
        with_config(&keras, |c| c[..100].to_string()),
    )
    .unwrap();
    let cases: Vec<(PathBuf, &[&str], &str)> = vec![
        (path("empty.keras"), &[], "not a Keras model"),
        (path("text.keras"), &[], "not a Keras model"),
        (path("truncated.keras"), &[], "not a readable .keras"),
        (path("truncated.h5"), &[], "truncated.h5: "),
        (path("bad.safetensors"), &[], "safetensors"),
        (path("folder.keras"), &[], "not a regular file"),
        (path("missing.keras"), &[], "missing.keras"),
        (path("lying.keras"), &[], "declares 3000000000 bytes"),
        (path("shape.keras"), &[], "the model needs [2048, 128]"),
        (path("json.keras"), &[], "not JSON"),
        (
            fixture("hostile/missing.weights.h5"),
            &["--model", "cnn"],
            "no weights at layers/conv2d/vars/1",
        ),
        (
            fixture("hostile/shape.weights.h5"),
            &["--model", "cnn"],
            "have the shape [17], the model needs [16]",
        ),
        (
            fixture("hostile/float64.weights.h5"),
            &["--model", "cnn"],
            "cannot be read",
        ),
        (
            fixture("hostile/lying.h5"),
            &[],
            "more than the file can hold",
        ),
    ];
    for (index, (file, extra, expected)) in cases.iter().enumerate() {
        let out = format!("out{index}");
        let mut args = vec!["import-model", file.to_str().unwrap(), "--out", &out];
        args.extend(extra.iter());
        let error = failure(dir.path(), &args);
        assert!(error.contains(expected), "{}: {error}", file.display());
        assert!(!path(&out).join("run.json").exists());
    }
    // The lying file declares a gigabyte of weights; reading it costs no more than the binary.
    let (code, stderr, peak_mb) = common::run_measured(
        dir.path(),
        &[
            "import-model",
            fixture("hostile/lying.h5").to_str().unwrap(),
            "--out",
            "lying",
        ],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(peak_mb < 200.0, "peak memory {peak_mb} MB");
}

/// `keras` (a .keras zip) with the uncompressed size of `name` in its local and central headers
/// set to `size`.
fn claim_size(keras: &[u8], name: &str, size: u32) -> Vec<u8> {
    let mut bytes = keras.to_vec();
    let mut at = 0;
    while at + 46 < bytes.len() {
        let signature = &bytes[at..at + 4];
        let (header, name_at, sizes_at) = match signature {
            b"PK\x03\x04" => (30, 26, 18),
            b"PK\x01\x02" => (46, 28, 20),
            _ => {
                at += 1;
                continue;
            }
        };
        let name_len = u16::from_le_bytes([bytes[at + name_at], bytes[at + name_at + 1]]) as usize;
        if &bytes[at + header..at + header + name_len] == name.as_bytes() {
            bytes[at + sizes_at + 4..at + sizes_at + 8].copy_from_slice(&size.to_le_bytes());
        }
        at += 4;
    }
    bytes
}

/// `keras` with its config.json replaced by `change(config.json)`.
fn with_config(keras: &[u8], change: impl Fn(&str) -> String) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(keras)).unwrap();
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for index in 0..archive.len() {
        let mut file = archive.by_index(index).unwrap();
        let name = file.name().unwrap().to_string();
        let mut contents = Vec::new();
        file.read_to_end(&mut contents).unwrap();
        if name == "config.json" {
            contents = change(&String::from_utf8(contents).unwrap()).into_bytes();
        }
        out.start_file(
            name,
            zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored),
        )
        .unwrap();
        out.write_all(&contents).unwrap();
    }
    out.finish().unwrap().into_inner()
}
