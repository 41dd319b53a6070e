//! A run directory under faults: kills in the middle of a checkpoint commit, two runs into
//! one directory, a diverging run, damaged manifests and unusable output paths.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{mnist_cnn, read_json};
use mnist_cnn::backend::BackendKind;
use mnist_cnn::run::TrainedRun;
use predicates::prelude::*;

/// A quick run on one thread without validation (add `--epochs` and `--out`).
fn train_args() -> Vec<&'static str> {
    [&common::QUICK_TRAIN[..], &["--validation-split", "0"]].concat()
}

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

/// The history without its timings, as written in `history.json`.
fn fingerprint_history(run: &Path) -> Vec<serde_json::Value> {
    read_json(&run.join("history.json"))
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
        .collect()
}

/// The history without its timings, and what the weights compute for 20 test images.
fn fingerprint(run: &Path) -> (Vec<serde_json::Value>, Vec<f32>) {
    let history = fingerprint_history(run);
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
        .args(train_args())
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
            .args(train_args())
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
            .args(train_args())
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

/// A run that stops early and ends with an earlier epoch's weights: 2 epochs (the first the
/// best), then the restore commit.
fn early_stopping() -> Vec<&'static str> {
    let flags = [
        "--validation-split",
        "0.2",
        "--early-stopping",
        "1",
        "--lr",
        "0.02",
    ];
    [&common::QUICK_TRAIN[..], &flags, &["--epochs", "6"]].concat()
}

/// Kills the run after each of its writes in turn, the restore of the best weights included:
/// every kill leaves a run that `evaluate` and `predict` open, and that `--resume` finishes
/// exactly as the uninterrupted run did.
#[test]
fn a_kill_after_any_write_of_an_early_stopping_run_and_its_restore_leaves_a_whole_run() {
    let dir = tempfile::tempdir().unwrap();
    mnist_cnn(dir.path())
        .args(early_stopping())
        .args(["--out", "straight", "-q"])
        .assert()
        .success();
    let straight = dir.path().join("straight");
    let expected = fingerprint(&straight);
    let info = mnist_cnn::run::RunInfo::load(&straight).unwrap();
    let (epochs, best) = (info.completed_epochs, info.restored_best_epoch);
    // The scenario must restore an earlier epoch, or the restore commit has nothing to do.
    assert!(
        best.is_some_and(|best| best < epochs),
        "best epoch {best:?} of {epochs}: the restore rewrites nothing"
    );
    let mut kills = 0;
    for write in 1.. {
        let name = format!("killed-{write}");
        let run = dir.path().join(&name);
        let killed = mnist_cnn(dir.path())
            .env("MNIST_CNN_CRASH_AFTER_WRITE", write.to_string())
            .args(early_stopping())
            .args(["--out", &name, "-q"])
            .output()
            .unwrap();
        if killed.status.success() {
            break;
        }
        kills += 1;
        assert!(write < 100, "the run never finished");
        let at = format!("killed after write {write}");
        // The manifest names a whole checkpoint: the readers open it. Before the first commit
        // there is none, and the run starts afresh.
        let committed = run.join("run.json").is_file();
        if committed {
            let info = mnist_cnn::run::RunInfo::load(&run).unwrap_or_else(|e| panic!("{at}: {e}"));
            TrainedRun::open(&run, &BackendKind::Flex.device())
                .unwrap_or_else(|e| panic!("{at}: {e}"));
            if info.completed_epochs == epochs {
                for args in [
                    vec!["evaluate", "--model-dir", &name],
                    vec!["predict", "--model-dir", &name, "--index", "0"],
                ] {
                    mnist_cnn(dir.path())
                        .args(["-q"])
                        .args(&args)
                        .assert()
                        .success();
                }
            }
        }
        mnist_cnn(dir.path())
            .args(early_stopping())
            .args(["--out", &name, "-q"])
            .args(committed.then_some("--resume"))
            .assert()
            .success();
        assert_eq!(fingerprint(&run), expected, "{at}, then resumed");
        let resumed = mnist_cnn::run::RunInfo::load(&run).unwrap();
        assert_eq!(resumed.restored_best_epoch, best, "{at}, then resumed");
        assert_eq!(common::temp_leftovers(&run), Vec::<String>::new(), "{at}");
    }
    // Two epochs of 5 writes, the best weights once, the restore's manifest, history and link.
    assert!(kills >= 14, "only {kills} writes were interrupted");
}

/// Any float given on the command line survives `run.json` exactly: resuming with the same
/// flags is accepted, and a resumed run's history is the uninterrupted run's, bit for bit.
/// With the values of the report that found it, and random ones.
#[test]
fn random_float_flags_resume_exactly() {
    use rand::Rng;
    let mut rng = rand::rng();
    // Full 53-bit mantissas: such values need 17 significant digits.
    let random = (rng.random_range(1e-4..1e-3), rng.random_range(0.1..0.4));
    for (lr, split) in [(0.00039753676807578003, 0.39753676807578003), random] {
        float_flags_resume_exactly(lr, split);
    }
}

fn float_flags_resume_exactly(lr: f64, split: f64) {
    let dir = tempfile::tempdir().unwrap();
    let (lr_text, split_text) = (format!("{lr:?}"), format!("{split:?}"));
    let flags = |epochs: &'static str| {
        let mut args: Vec<String> = common::QUICK_TRAIN.iter().map(|s| s.to_string()).collect();
        args.extend(
            [
                "--validation-split",
                &split_text,
                "--lr",
                &lr_text,
                "--epochs",
                epochs,
            ]
            .map(String::from),
        );
        args
    };
    let values = format!("--lr {lr_text} --validation-split {split_text}");
    mnist_cnn(dir.path())
        .args(flags("2"))
        .args(["--out", "straight", "-q"])
        .assert()
        .success();
    let info = read_json(&dir.path().join("straight/run.json"));
    assert_eq!(
        info["config"]["learning_rate"].as_f64().map(f64::to_bits),
        Some(lr.to_bits()),
        "{values}"
    );
    assert_eq!(
        info["config"]["validation_split"]
            .as_f64()
            .map(f64::to_bits),
        Some(split.to_bits()),
        "{values}"
    );
    mnist_cnn(dir.path())
        .args(flags("1"))
        .args(["--out", "resumed", "-q"])
        .assert()
        .success();
    let resumed = mnist_cnn(dir.path())
        .args(flags("2"))
        .args(["--out", "resumed", "--resume", "-q"])
        .output()
        .unwrap();
    assert!(
        resumed.status.success(),
        "{values}: {}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let bits = |run: &str| -> Vec<Vec<Option<u64>>> {
        fingerprint_history(&dir.path().join(run))
            .iter()
            .map(|epoch| {
                ["loss", "accuracy", "val_loss", "val_accuracy"]
                    .iter()
                    .map(|key| epoch[key].as_f64().map(f64::to_bits))
                    .collect()
            })
            .collect()
    };
    assert_eq!(bits("resumed"), bits("straight"), "{values}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("resumed/history.json"))
            .unwrap()
            .lines()
            .filter(|line| !line.contains("second"))
            .collect::<Vec<_>>(),
        std::fs::read_to_string(dir.path().join("straight/history.json"))
            .unwrap()
            .lines()
            .filter(|line| !line.contains("second"))
            .collect::<Vec<_>>(),
        "{values}: history.json as written"
    );
}

/// Resuming a run that has finished trains nothing, changes nothing, and leaves nothing
/// behind: no temporary link to the weights, although `model.bpk` already is that link.
#[test]
fn resuming_a_finished_run_changes_nothing_and_leaves_no_temporaries() {
    let dir = tempfile::tempdir().unwrap();
    mnist_cnn(dir.path())
        .args(train_args())
        .args(["--epochs", "1", "--out", "done", "-q"])
        .assert()
        .success();
    let run = dir.path().join("done");
    let manifest = std::fs::read(run.join("run.json")).unwrap();
    let expected = fingerprint(&run);
    for _ in 0..2 {
        mnist_cnn(dir.path())
            .args(train_args())
            .args(["--epochs", "1", "--out", "done", "--resume", "-q"])
            .assert()
            .success();
        assert_eq!(common::temp_leftovers(&run), Vec::<String>::new());
        assert!(std::fs::read(run.join("run.json")).unwrap() == manifest);
        assert_eq!(fingerprint(&run), expected);
    }
}

#[test]
fn a_second_run_into_the_same_directory_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let binary = assert_cmd::cargo::cargo_bin("mnist-cnn");
    let mut first = std::process::Command::new(&binary)
        .current_dir(dir.path())
        .env("MNIST_DATA_DIR", common::data_dir())
        .args(train_args())
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
        .args(train_args())
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
        .args(train_args())
        .args(["--epochs", "1", "--out", "busy", "-q"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("busy already holds a run"))
        .stderr(predicate::str::contains("--resume"))
        .stderr(predicate::str::contains("--overwrite"));
    mnist_cnn(dir.path())
        .args(train_args())
        .args(["--epochs", "1", "--out", "busy", "-q", "--overwrite"])
        .assert()
        .success();
}

#[test]
fn a_diverging_run_stops_and_commits_nothing_broken() {
    let dir = tempfile::tempdir().unwrap();
    mnist_cnn(dir.path())
        .args(train_args())
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
        .args(train_args())
        .args(["--epochs", "1", "--out", "good", "-q"])
        .assert()
        .success();
    let mut info = read_json(&dir.path().join("good/run.json"));
    info["config"]["learning_rate"] = 1e308.into();
    std::fs::write(dir.path().join("good/run.json"), info.to_string()).unwrap();
    mnist_cnn(dir.path())
        .args(train_args())
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
        .args(train_args())
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
        .args(train_args())
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
            .args(train_args())
            .args(["--epochs", "1", "--out", out])
            .timeout(Duration::from_secs(20))
            .assert()
            .code(1)
            .stderr(predicate::str::starts_with("error: a-file"))
            .stderr(predicate::str::contains("Epoch 1/").not());
    }
}

/// A run directory that cannot be written (read-only; and, since root writes anyway, with a
/// folder where `metrics.json` goes): `evaluate` still prints its metrics, human and JSON,
/// warns that the reports were not written, and succeeds.
#[test]
fn evaluate_on_a_run_it_cannot_write_prints_the_metrics_and_warns() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    mnist_cnn(dir.path())
        .args(train_args())
        .args(["--epochs", "1", "--out", "run", "-q"])
        .assert()
        .success();
    let run = dir.path().join("run");
    std::fs::create_dir_all(run.join("metrics.json/in-the-way")).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o555)).unwrap();
    let json = mnist_cnn(dir.path())
        .args(["--json", "evaluate", "--model-dir", "run"])
        .output()
        .unwrap();
    let human = mnist_cnn(dir.path())
        .args(["evaluate", "--model-dir", "run"])
        .output()
        .unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
    for output in [&json, &human] {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        assert!(
            stderr.starts_with("warning: the evaluation reports were not written into run: "),
            "{stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    let metrics: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let accuracy = metrics["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&accuracy), "{metrics}");
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(human.contains("(loss, accuracy)"), "{human}");
    assert!(!human.contains("wrote "), "{human}");
    assert!(!run.join("confusion_matrix.png").exists());
}
