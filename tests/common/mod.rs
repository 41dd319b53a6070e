#![allow(dead_code)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;

pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist")
}

/// The binary, run in `dir`, reading the shipped data, with two threads so tests that run
/// side by side do not oversubscribe the machine.
pub fn mnist_cnn(dir: &Path) -> Command {
    let mut command = Command::cargo_bin("mnist-cnn").expect("binary is built");
    command
        .current_dir(dir)
        .env_remove("MNIST_MIRROR")
        .env("MNIST_DATA_DIR", data_dir());
    command
}

pub fn read_json(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Files in `dir` whose names start with a dot or contain "tmp": leftovers of a failed write
/// (apart from `.lock`, the run directory's lock file, which stays).
pub fn temp_leftovers(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name != ".lock" && (name.starts_with('.') || name.contains("tmp")))
        .collect()
}

/// `mnist-cnn --json evaluate` in `dir`, with extra global arguments; asserts success and
/// returns the parsed result.
pub fn evaluate_json(dir: &Path, global_args: &[&str], model_dir: &str) -> serde_json::Value {
    let output = mnist_cnn(dir)
        .args(global_args)
        .args(["--json", "evaluate", "--model-dir", model_dir])
        .output()
        .expect("the binary runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("evaluate --json prints JSON")
}
