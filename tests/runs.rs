//! One folder per run: `runs/<time>[-name]`, `runs/latest`, run names wherever a model folder
//! is asked for, `mnist-cnn runs` (table, JSON, compare, rm), existing runs refused, and the
//! run picker's API in `serve`. Damaged logs and foreign entries break nothing.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::serve::{Killed, serve_process};
use common::{data_dir, mnist_cnn, read_json};
use predicates::prelude::*;
use serde_json::Value;

/// A small run: 1 epoch of 3 steps on one thread, validating on 60 images.
fn train() -> Vec<&'static str> {
    [&common::QUICK_TRAIN[..], &["-q"]].concat()
}

fn runs_json(dir: &Path) -> Value {
    let output = mnist_cnn(dir).args(["--json", "runs"]).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The names of the readable runs, newest first, and which one `latest` points at.
fn run_names(dir: &Path) -> (Vec<String>, Option<String>) {
    let listed = runs_json(dir);
    let runs = listed["runs"].as_array().unwrap();
    let names = runs
        .iter()
        .filter(|r| !r["summary"].is_null())
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    let latest = runs
        .iter()
        .find(|r| r["latest"] == true)
        .map(|r| r["name"].as_str().unwrap().to_string());
    (names, latest)
}

#[test]
fn two_trainings_in_a_row_leave_two_runs_that_every_command_finds_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    mnist_cnn(dir)
        .args(train())
        .args(["--epochs", "1"])
        .assert()
        .success();
    mnist_cnn(dir)
        .args(train())
        .args(["--epochs", "2", "--lr", "0.002", "--name", "faster"])
        .assert()
        .success();
    let (names, latest) = run_names(dir);
    assert_eq!(names.len(), 2, "{names:?}");
    let (second, first) = (names[0].clone(), names[1].clone());
    assert!(second.ends_with("-faster"), "newest first: {names:?}");
    assert_eq!(latest.as_deref(), Some(second.as_str()));
    assert!(first.len() == "20250601-123005".len() && first.as_bytes()[8] == b'-');
    let latest_link = std::fs::read_link(dir.join("runs/latest")).unwrap();
    assert_eq!(latest_link, Path::new(&second));

    // The table: both runs, the options that differ, the latest marked.
    let table = mnist_cnn(dir).arg("runs").output().unwrap();
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.starts_with("  name "), "{table}");
    let line = |name: &str| {
        table
            .lines()
            // The name column exactly: a second run in the same second has the first's name
            // as a prefix.
            .find(|l| l.split_whitespace().any(|word| word == name))
            .unwrap()
            .to_string()
    };
    assert!(line(&second).starts_with("* "), "{table}");
    assert!(line(&second).contains("2/2"), "{table}");
    assert!(line(&second).contains("--lr 0.002"), "{table}");
    assert!(
        line(&first).contains("1/1") && !line(&first).contains("--lr"),
        "{table}"
    );

    // Commands default to the latest run, and take a bare run name.
    mnist_cnn(dir).args(["evaluate"]).assert().success();
    assert!(
        dir.join("runs")
            .join(&second)
            .join("metrics.json")
            .is_file()
    );
    mnist_cnn(dir)
        .args(["evaluate", "--model-dir", &first])
        .assert()
        .success();
    assert!(dir.join("runs").join(&first).join("metrics.json").is_file());
    mnist_cnn(dir)
        .args(["predict", "--index", "0", "--model-dir", &first])
        .assert()
        .success()
        .stdout(predicate::str::starts_with("test image 0"));
    let listed = runs_json(dir);
    for run in listed["runs"].as_array().unwrap() {
        let accuracy = run["summary"]["test_accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&accuracy), "{run}");
    }

    // Compare draws both, with a legend; a missing run is an error.
    mnist_cnn(dir)
        .args(["runs", "compare", &first, &second, "-o", "compare.png"])
        .assert()
        .success();
    let picture = image::open(dir.join("compare.png")).unwrap();
    assert_eq!((picture.width(), picture.height()), (1600, 560));
    mnist_cnn(dir)
        .args(["runs", "compare", &first, "nothing", "-o", "x.png"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("nothing"));
    mnist_cnn(dir)
        .args(["runs", "compare", &first, "-o", "x.jpg"])
        .assert()
        .code(2);

    // --resume without --out continues the latest run, in its folder.
    mnist_cnn(dir)
        .args(train())
        .args(["--epochs", "3", "--lr", "0.002", "--resume"])
        .assert()
        .success();
    let info = read_json(&dir.join("runs").join(&second).join("run.json"));
    assert_eq!(info["completed_epochs"], 3);
    assert_eq!(run_names(dir).0.len(), 2);

    // rm: the run goes, and latest moves to the newest left.
    mnist_cnn(dir)
        .args(["runs", "rm", &second])
        .assert()
        .success();
    assert_eq!(run_names(dir), (vec![first.clone()], Some(first.clone())));
    mnist_cnn(dir)
        .args(["runs", "rm", "../src"])
        .assert()
        .code(1);
    mnist_cnn(dir)
        .args(["runs", "rm", &first])
        .assert()
        .success();
    assert!(!dir.join("runs/latest").exists());
    mnist_cnn(dir)
        .arg("runs")
        .assert()
        .success()
        .stdout(predicate::str::starts_with("no runs in runs"));
}

#[test]
fn an_existing_run_is_only_continued_or_replaced_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    mnist_cnn(dir)
        .args(train())
        .args(["--epochs", "1", "--out", "mine"])
        .assert()
        .success();
    mnist_cnn(dir)
        .args(["evaluate", "--model-dir", "mine"])
        .assert()
        .success();
    let before = std::fs::read(dir.join("mine/run.json")).unwrap();
    let refused = mnist_cnn(dir)
        .args(train())
        .args(["--epochs", "1", "--out", "mine"])
        .assert()
        .code(1)
        .get_output()
        .stderr
        .clone();
    let refused = String::from_utf8(refused).unwrap();
    assert_eq!(refused.lines().count(), 1, "{refused}");
    assert!(refused.starts_with("error: mine already holds a run"));
    assert!(refused.contains("--resume") && refused.contains("--overwrite"));
    assert_eq!(std::fs::read(dir.join("mine/run.json")).unwrap(), before);

    // --overwrite starts afresh: the old evaluation and event files go with the old run.
    std::thread::sleep(Duration::from_millis(1100));
    mnist_cnn(dir)
        .args(train())
        .args([
            "--epochs",
            "1",
            "--out",
            "mine",
            "--overwrite",
            "--seed",
            "7",
        ])
        .assert()
        .success();
    let info = read_json(&dir.join("mine/run.json"));
    assert_eq!(info["config"]["seed"], 7);
    assert!(!dir.join("mine/metrics.json").exists());
    let events: Vec<String> = std::fs::read_dir(dir.join("mine"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("tfevents"))
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    // An explicit folder of runs/ becomes the latest run too.
    mnist_cnn(dir)
        .args(train())
        .args(["--epochs", "1", "--out", "runs/named"])
        .assert()
        .success();
    assert_eq!(run_names(dir).1.as_deref(), Some("named"));

    for args in [
        vec!["--out", "x", "--name", "y"],
        vec!["--name", "a/b"],
        vec!["--overwrite"],
        vec!["--out", "x", "--overwrite", "--resume"],
    ] {
        mnist_cnn(dir).args(train()).args(&args).assert().code(2);
    }
}

#[test]
fn a_run_of_an_older_version_in_runs_latest_is_moved_aside_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    // Older versions trained into the folder runs/latest itself.
    mnist_cnn(dir)
        .args(train())
        .args(["--epochs", "1", "--out", "runs/latest"])
        .assert()
        .success();
    let old = std::fs::read(dir.join("runs/latest/run.json")).unwrap();
    // (Without -q, which would keep the note quiet.)
    mnist_cnn(dir)
        .args(common::QUICK_TRAIN)
        .args(["--epochs", "1"])
        .assert()
        .success()
        .stderr(predicate::str::contains("note: moved the run of an older"));
    let (names, latest) = run_names(dir);
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(latest.as_deref(), Some(names[0].as_str()));
    assert_eq!(
        std::fs::read(dir.join("runs").join(&names[1]).join("run.json")).unwrap(),
        old
    );
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(60), "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_run_being_trained_is_not_removed() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let training = Command::new(env!("CARGO_BIN_EXE_mnist-cnn"))
        .current_dir(dir)
        .env("MNIST_DATA_DIR", data_dir())
        .args(train())
        .args(["--epochs", "100000", "--name", "busy"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let training = Killed(training);
    wait_for("the run never committed an epoch", || {
        run_names(dir).0.len() == 1
    });
    let listed = runs_json(dir);
    let run = &listed["runs"][0];
    assert_eq!(run["running"], true, "{listed}");
    let name = run["name"].as_str().unwrap().to_string();
    mnist_cnn(dir)
        .args(["runs", "rm", &name])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("another training run is writing"));
    assert!(dir.join("runs").join(&name).join("run.json").is_file());
    drop(training);
    mnist_cnn(dir)
        .args(["runs", "rm", &name])
        .assert()
        .success();
    assert!(!dir.join("runs").join(&name).exists());
}

#[test]
fn damaged_logs_and_foreign_entries_break_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    mnist_cnn(dir)
        .args(train())
        .args(["--epochs", "1", "--out", "runs/good"])
        .assert()
        .success();
    let good = dir.join("runs/good");
    let events = std::fs::read_dir(&good)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("tfevents"))
        .unwrap();
    std::fs::write(&events, b"\x00\x01 not an event file").unwrap();
    std::fs::write(good.join("history.csv"), b"\xff\xfe garbage,,,\n").unwrap();
    mnist_cnn(dir).arg("evaluate").assert().success();
    mnist_cnn(dir)
        .args(["predict", "--index", "1", "--model-dir", "good"])
        .assert()
        .success();
    // Foreign and damaged entries beside it are listed and marked, the run still shown.
    std::fs::create_dir_all(dir.join("runs/damaged")).unwrap();
    std::fs::write(dir.join("runs/damaged/run.json"), b"{\"config\":").unwrap();
    std::fs::create_dir_all(dir.join("runs/photos")).unwrap();
    std::fs::write(dir.join("runs/notes.txt"), b"hello").unwrap();
    let table = mnist_cnn(dir).arg("runs").assert().success();
    let table = String::from_utf8(table.get_output().stdout.clone()).unwrap();
    let line = |name: &str| {
        let found = table.lines().find(|l| l.starts_with(name));
        found
            .unwrap_or_else(|| panic!("{name}: {table}"))
            .to_string()
    };
    assert!(line("* good ").contains("1/1"), "{table}");
    assert!(line("  damaged ").contains(" (damaged: "), "{table}");
    assert!(
        line("  photos ").ends_with(" (not a run (no run.json))"),
        "{table}"
    );
    assert!(
        line("  notes.txt ").ends_with(" (not a run folder)"),
        "{table}"
    );
    // The next commit rewrites both logs whole.
    mnist_cnn(dir)
        .args(train())
        .args(["--epochs", "2", "--out", "runs/good", "--resume"])
        .assert()
        .success();
    let csv = std::fs::read_to_string(good.join("history.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    let info = mnist_cnn::run::RunInfo::load(&good).unwrap();
    let file = good.join(mnist_cnn::run::logs::training_events_file(&info));
    assert_eq!(
        mnist_cnn::run::logs::tensorboard::read(&file, 1 << 30)
            .unwrap()
            .len(),
        // The version, per epoch its step loss, scalars and histograms.
        1 + 2 * 3
    );
    // serve, on a run whose logs are damaged, serves.
    std::fs::write(good.join("history.csv"), b"").unwrap();
    let server = Server::start(dir, "good");
    let (status, history) = server.get("/api/history");
    assert_eq!(status, 200);
    assert_eq!(history["completed_epochs"], 2);
}

/// `mnist-cnn serve --port 0` in `dir`, with the address it prints.
struct Server {
    _child: Killed,
    url: String,
}

impl Server {
    fn start(dir: &Path, model_dir: &str) -> Server {
        let (child, address) = serve_process(dir, Path::new(model_dir));
        let url = address.trim_end_matches('/').to_string();
        Server { _child: child, url }
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let response = reqwest::blocking::Client::new()
            .get(format!("{}{path}", self.url))
            .timeout(Duration::from_secs(30))
            .send()
            .unwrap();
        let status = response.status().as_u16();
        let bytes = response.bytes().unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }
}

#[test]
fn the_page_lists_the_runs_beside_the_served_one_and_follows_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    mnist_cnn(dir)
        .args(train())
        .args(["--epochs", "1", "--name", "first"])
        .assert()
        .success();
    mnist_cnn(dir)
        .args(train())
        .args(["--epochs", "2", "--name", "second"])
        .assert()
        .success();
    let (names, _) = run_names(dir);
    let server = Server::start(dir, "runs/latest");
    let (status, listed) = server.get("/api/runs");
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["current"], names[0].as_str());
    let listed_names: Vec<&str> = listed["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed_names, names);
    let (status, other) = server.get(&format!("/api/runs/{}/history", names[1]));
    assert_eq!(status, 200, "{other}");
    assert_eq!(other["history"].as_array().unwrap().len(), 1);
    assert_eq!(other["name"], names[1].as_str());
    for bad in [".hidden", "nothing-here", "latest%2F..%2F..", "a%2Fb"] {
        let (status, answer) = server.get(&format!("/api/runs/{bad}/history"));
        assert!(status == 400 || status == 404, "{bad}: {status} {answer}");
        assert!(answer["error"].is_string());
    }
    // A new run: once its first epoch is committed, latest points at it and the page follows.
    mnist_cnn(dir)
        .args(train())
        .args(["--epochs", "1", "--name", "third", "--lr", "0.003"])
        .assert()
        .success();
    wait_for("the page did not follow the new run", || {
        server.get("/api/history").1["epochs"] == 1
    });
    let (_, listed) = server.get("/api/runs");
    assert_eq!(listed["runs"].as_array().unwrap().len(), 3);
    assert!(
        listed["current"].as_str().unwrap().ends_with("-third"),
        "{listed}"
    );
}

#[test]
fn a_run_that_fails_before_its_first_epoch_leaves_no_folder_and_latest_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    mnist_cnn(dir)
        .args(train())
        .args(["--epochs", "1", "--name", "good"])
        .assert()
        .success();
    let (names, latest) = run_names(dir);
    mnist_cnn(dir)
        .args(train())
        .args(["--epochs", "1", "--lr", "1e308", "--name", "diverges"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("training diverged"));
    assert_eq!(run_names(dir), (names.clone(), latest));
    let folders: Vec<String> = std::fs::read_dir(dir.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != "latest")
        .collect();
    assert_eq!(folders, names);
}
