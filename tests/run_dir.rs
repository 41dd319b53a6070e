//! A run directory under faults: kills in the middle of a checkpoint commit, two runs into
//! one directory, a diverging run, damaged manifests and unusable output paths.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{mnist_cnn, read_json};
use mnist_cnn::backend::BackendKind;
use mnist_cnn::run::TrainedRun;
use predicates::prelude::*;

/// A small run: 2 epochs of 3 steps on one thread, no validation.
const TRAIN: [&str; 11] = [
    "--threads",
    "1",
    "train",
    "--limit",
    "600",
    "--steps-per-epoch",
    "3",
    "--batch-size",
    "32",
    "--validation-split",
    "0",
];

/// Files (in write order) that one checkpoint commit puts in place: the epoch's weights, its
/// optimizer state, the manifest, history.json, the model.bpk link, history.csv and the
/// TensorBoard event file.
const WRITES_PER_COMMIT: usize = 7;

/// (epoch, loss, accuracy) per epoch, as the CSV writes them and as TensorBoard keeps them.
type Logged = (Vec<(usize, f64, f64)>, Vec<(usize, f32, f32)>);

/// Per epoch, what history.csv and the TensorBoard event file of `run` say, checked to be
/// whole and without repeated epochs.
fn logged_epochs(run: &Path) -> Logged {
    use mnist_cnn::run::logs::{self, tensorboard};
    let csv = std::fs::read_to_string(run.join(logs::CSV_FILE)).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("epoch,accuracy,loss,lr"), "{csv}");
    let rows: Vec<(usize, f64, f64)> = lines
        .map(|line| {
            let cells: Vec<&str> = line.split(',').collect();
            assert_eq!(cells.len(), 4, "{line}");
            // Keras counts epochs from 0.
            let epoch = cells[0].parse::<usize>().unwrap() + 1;
            (epoch, cells[2].parse().unwrap(), cells[1].parse().unwrap())
        })
        .collect();
    let info = mnist_cnn::run::RunInfo::load(run).unwrap();
    let events = tensorboard::read(&run.join(logs::training_events_file(&info)), 1 << 30).unwrap();
    let scalar = |tag: &str| -> Vec<(usize, f32)> {
        events
            .iter()
            .flat_map(|e| e.values().iter().map(move |v| (e.step as usize, v)))
            .filter(|(_, v)| v.tag == tag)
            .map(|(step, v)| (step, v.as_scalar().unwrap()))
            .collect()
    };
    let (loss, accuracy) = (scalar("epoch/loss"), scalar("epoch/accuracy"));
    assert_eq!(loss.len(), accuracy.len());
    let scalars: Vec<(usize, f32, f32)> = loss
        .iter()
        .zip(&accuracy)
        .map(|(&(epoch, loss), &(step, accuracy))| {
            assert_eq!(epoch, step);
            (epoch, loss, accuracy)
        })
        .collect();
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.0, i + 1, "the CSV has each epoch once, in order: {csv}");
    }
    for (i, scalar) in scalars.iter().enumerate() {
        assert_eq!(scalar.0, i + 1, "the events have each epoch once, in order");
    }
    (rows, scalars)
}

/// history.csv and the event file say exactly what history.json says.
fn assert_logs_match_history(run: &Path) {
    let history = mnist_cnn::run::checkpoint::read_history(run).unwrap();
    let (rows, scalars) = logged_epochs(run);
    let expected: Vec<(usize, f64, f64)> = history
        .iter()
        .map(|e| (e.epoch, e.loss, e.accuracy))
        .collect();
    assert_eq!(rows, expected, "{}: history.csv", run.display());
    let as_f32: Vec<(usize, f32, f32)> = expected
        .iter()
        .map(|&(epoch, loss, accuracy)| (epoch, loss as f32, accuracy as f32))
        .collect();
    assert_eq!(scalars, as_f32, "{}: the event file", run.display());
}

/// The history without its timings, and what the weights compute for 20 test images.
fn fingerprint(run: &Path) -> (Vec<serde_json::Value>, Vec<f32>) {
    let history = read_json(&run.join("history.json"))
        .as_array()
        .unwrap()
        .iter()
        .map(|epoch| {
            let mut epoch = epoch.clone();
            let object = epoch.as_object_mut().unwrap();
            object.remove("seconds");
            object.remove("images_per_second");
            epoch
        })
        .collect();
    let device = BackendKind::Flex.device();
    let trained = TrainedRun::open(run, &device).unwrap();
    let test =
        mnist_cnn::data::load_split(&common::data_dir(), mnist_cnn::data::SplitKind::Test).unwrap();
    let indices: Vec<usize> = (0..20).collect();
    let outputs =
        mnist_cnn::model::log_probabilities(&trained.network, &test, &indices, 20, &device).values;
    (history, outputs)
}

#[test]
fn a_kill_between_any_two_writes_of_a_commit_leaves_one_whole_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    mnist_cnn(dir.path())
        .args(TRAIN)
        .args(["--epochs", "2", "--out", "straight"])
        .assert()
        .success();
    let expected = fingerprint(&dir.path().join("straight"));
    assert_logs_match_history(&dir.path().join("straight"));
    let (straight_rows, straight_scalars) = logged_epochs(&dir.path().join("straight"));
    // Stop the process after each write of epoch 2's commit, as kill -9 would.
    for write in 1..=WRITES_PER_COMMIT {
        let name = format!("killed-{write}");
        let run = dir.path().join(&name);
        let crash_after = WRITES_PER_COMMIT + write;
        mnist_cnn(dir.path())
            .env("MNIST_CNN_CRASH_AFTER_WRITE", crash_after.to_string())
            .args(TRAIN)
            .args(["--epochs", "2", "--out", &name])
            .assert()
            .failure();
        // Whatever is on disk is one consistent checkpoint: epoch 1 until the manifest (the
        // third write) is in place, epoch 2 from then on.
        let info = mnist_cnn::run::RunInfo::load(&run).unwrap();
        let committed = if write >= 3 { 2 } else { 1 };
        assert_eq!(
            info.completed_epochs, committed,
            "killed after write {write}"
        );
        TrainedRun::open(&run, &BackendKind::Flex.device())
            .unwrap_or_else(|e| panic!("killed after write {write}: {e}"));
        // The logs may lag the manifest, but hold whole epochs: the first, or both.
        let (rows, scalars) = logged_epochs(&run);
        let logged_both = usize::from(write >= 6) + 1;
        assert_eq!(
            rows[..],
            straight_rows[..logged_both],
            "killed after write {write}"
        );
        assert_eq!(
            scalars.len(),
            if write >= 7 { 2 } else { 1 },
            "killed after write {write}"
        );
        assert_eq!(scalars[..], straight_scalars[..scalars.len()]);
        // Resuming ends exactly where the uninterrupted run did.
        mnist_cnn(dir.path())
            .args(TRAIN)
            .args(["--epochs", "2", "--out", &name, "--resume"])
            .assert()
            .success();
        assert_eq!(
            fingerprint(&run),
            expected,
            "resumed after a kill after write {write}"
        );
        assert_logs_match_history(&run);
        let leftovers: Vec<String> = std::fs::read_dir(&run)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("model-epoch") || name.starts_with("optimizer-epoch"))
            .collect();
        assert!(leftovers.len() <= 4, "old epochs are swept: {leftovers:?}");
    }
}

#[test]
fn a_second_run_into_the_same_directory_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let binary = assert_cmd::cargo::cargo_bin("mnist-cnn");
    let mut first = std::process::Command::new(&binary)
        .current_dir(dir.path())
        .env("MNIST_DATA_DIR", common::data_dir())
        .args(TRAIN)
        .args(["--epochs", "100000", "--out", "busy", "-q"])
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !dir.path().join("busy/run.json").is_file() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the first run never committed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = mnist_cnn(dir.path())
        .args(TRAIN)
        .args(["--epochs", "1", "--out", "busy"])
        .timeout(Duration::from_secs(30))
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "another training run is writing to busy",
        ));
    // Readers are not locked out, and see a whole checkpoint.
    TrainedRun::open(&dir.path().join("busy"), &BackendKind::Flex.device()).unwrap();
    first.kill().unwrap();
    first.wait().unwrap();
    drop(second);
    // Once the first run is gone its lock is too; its run is only replaced when asked to.
    mnist_cnn(dir.path())
        .args(TRAIN)
        .args(["--epochs", "1", "--out", "busy", "-q"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("busy already holds a trained run"))
        .stderr(predicate::str::contains("--resume"))
        .stderr(predicate::str::contains("--overwrite"));
    mnist_cnn(dir.path())
        .args(TRAIN)
        .args(["--epochs", "1", "--out", "busy", "-q", "--overwrite"])
        .assert()
        .success();
}

#[test]
fn a_diverging_run_stops_and_commits_nothing_broken() {
    let dir = tempfile::tempdir().unwrap();
    mnist_cnn(dir.path())
        .args(TRAIN)
        .args(["--epochs", "1", "--lr", "1e308", "--out", "diverged"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "training diverged at epoch 1, step ",
        ))
        .stderr(predicate::str::contains("try a lower --lr"));
    let run = dir.path().join("diverged");
    assert!(!run.join("run.json").exists());
    assert!(!run.join("model.bpk").exists());
    // A diverging resumed run keeps the good checkpoint it started from (its manifest is
    // edited to the diverging learning rate, so that resuming is allowed).
    mnist_cnn(dir.path())
        .args(TRAIN)
        .args(["--epochs", "1", "--out", "good", "-q"])
        .assert()
        .success();
    let mut info = read_json(&dir.path().join("good/run.json"));
    info["config"]["learning_rate"] = 1e308.into();
    std::fs::write(dir.path().join("good/run.json"), info.to_string()).unwrap();
    mnist_cnn(dir.path())
        .args(TRAIN)
        .args([
            "--epochs", "2", "--lr", "1e308", "--out", "good", "--resume",
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("training diverged at epoch 2"));
    assert_eq!(
        read_json(&dir.path().join("good/run.json"))["completed_epochs"],
        1
    );
    TrainedRun::open(&dir.path().join("good"), &BackendKind::Flex.device()).unwrap();
}

#[test]
fn damaged_manifests_and_bad_output_paths_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    mnist_cnn(dir.path())
        .args(TRAIN)
        .args(["--epochs", "1", "--out", "run", "-q"])
        .assert()
        .success();
    let manifest = dir.path().join("run/run.json");
    let good = std::fs::read(&manifest).unwrap();
    let mut info = read_json(&manifest);
    info["class_names"] = serde_json::json!(["a", "b", "c"]);
    std::fs::write(&manifest, info.to_string()).unwrap();
    for args in [
        vec!["evaluate", "--model-dir", "run"],
        vec!["predict", "--model-dir", "run", "--index", "0"],
    ] {
        mnist_cnn(dir.path())
            .args(&args)
            .assert()
            .code(1)
            .stderr(predicate::str::contains(
                "run.json: names 3 classes but the model has 10 outputs",
            ))
            .stderr(predicate::str::contains("panicked").not());
    }
    // A manifest that is not JSON is called corrupt, not missing.
    std::fs::write(&manifest, &good[..good.len() / 2]).unwrap();
    mnist_cnn(dir.path())
        .args(TRAIN)
        .args(["--epochs", "2", "--out", "run", "--resume"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "run.json: not the JSON this tool wrote",
        ));
    // An --out that cannot be a directory fails before any training.
    std::fs::write(dir.path().join("a-file"), b"").unwrap();
    for out in ["a-file", "a-file/below"] {
        mnist_cnn(dir.path())
            .args(TRAIN)
            .args(["--epochs", "1", "--out", out])
            .timeout(Duration::from_secs(20))
            .assert()
            .code(1)
            .stderr(predicate::str::starts_with("error: a-file"))
            .stderr(predicate::str::contains("Epoch 1/").not());
    }
}
