//! Helpers shared by the integration tests: the binary and its data, data files (`data`),
//! HTTP mirrors on 127.0.0.1 (`http`), and the small training runs the tests start from.
// Each test file uses a part of them.
#![allow(dead_code)]

pub mod data;
pub mod http;
pub mod serve;

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

/// Global flags and `train` arguments of a run of about a second: one thread, the first 600
/// images, 3 steps of 32 images per epoch. Add `--epochs` and `--out`.
pub const QUICK_TRAIN: [&str; 9] = [
    "--threads",
    "1",
    "train",
    "--limit",
    "600",
    "--steps-per-epoch",
    "3",
    "--batch-size",
    "32",
];

/// The arguments that train a small model into `out` on one thread (one epoch of 2 steps
/// over 256 images): a model to evaluate, predict with, or damage.
pub fn small_model_args(out: &str) -> [&str; 11] {
    [
        "--threads",
        "1",
        "train",
        "--limit",
        "256",
        "--steps-per-epoch",
        "2",
        "--epochs",
        "1",
        "--out",
        out,
    ]
}

/// The names in `dir`, sorted.
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
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

/// Runs the binary in `dir` to its end, without `MNIST_DATA_DIR`; returns its exit code (None
/// when a signal ended it), its stderr, and its peak resident memory in MB, as `wait4` reports
/// it for that one child.
pub fn run_measured(dir: &Path, args: &[&str]) -> (Option<i32>, String, f64) {
    run_measured_for(dir, args, None)
}

/// [`run_measured`], killing the binary (SIGKILL) once it has run for `limit`.
// The child is reaped by `wait4` (for its resource usage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
pub fn run_measured_for(
    dir: &Path,
    args: &[&str],
    limit: Option<std::time::Duration>,
) -> (Option<i32>, String, f64) {
    use std::process::Stdio;
    let binary = assert_cmd::cargo::cargo_bin("mnist-cnn");
    let child = std::process::Command::new(binary)
        .current_dir(dir)
        .env_remove("MNIST_MIRROR")
        .env_remove("MNIST_DATA_DIR")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let pid = child.id() as libc::pid_t;
    let mut stderr = child.stderr.expect("stderr is piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let started = std::time::Instant::now();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: pid is our own child, not yet reaped; both out-pointers are valid.
        let waited = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if waited == pid {
            break;
        }
        assert_eq!(waited, 0, "wait4");
        if limit.is_some_and(|limit| started.elapsed() >= limit) {
            // SAFETY: signalling our own child, which is not reaped yet, so the pid is its.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    // ru_maxrss is in KiB on Linux.
    let stderr = reader.join().expect("stderr reader");
    (code, stderr, usage.ru_maxrss as f64 / 1024.0)
}
