//! Listing the runs of a folder, newest first, with what tells them apart; and drawing their
//! curves side by side. Damaged or foreign entries are listed with what is wrong with them.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::{LATEST, is_locked, latest_name};
use crate::backend::BackendKind;
use crate::error::{Error, Result};
use crate::fsutil::read_json;
use crate::model::Architecture;
use crate::plot::{RunCurves, runs_chart};
use crate::run::checkpoint::LOCK_FILE;
use crate::run::{EpochStats, RUN_FILE, RunInfo, TrainConfig};

/// One entry of a runs folder.
#[derive(Debug, Clone, Serialize)]
pub struct RunEntry {
    pub name: String,
    pub path: PathBuf,
    /// `latest` points at it.
    pub latest: bool,
    /// A training run holds its lock now.
    pub running: bool,
    /// What the run is, when its manifest could be read.
    pub summary: Option<RunSummary>,
    /// Why there is no summary: a damaged manifest, a folder without one, not a folder.
    pub problem: Option<String>,
    /// When it started (or was last changed), for the order of the list.
    #[serde(skip)]
    time: f64,
}

/// What `mnist-cnn runs` shows of a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Seconds since the Unix epoch.
    pub started_at: Option<f64>,
    /// `2025-06-01 12:30` (UTC).
    pub started: Option<String>,
    pub model: Architecture,
    /// `MNIST` for the canonical set, else the data folder's name.
    pub data: String,
    pub data_dir: PathBuf,
    pub completed_epochs: usize,
    pub epochs: usize,
    /// The training options that differ from the defaults, as flags of `train`.
    pub options: Vec<String>,
    pub best_val_accuracy: Option<f64>,
    pub best_val_epoch: Option<usize>,
    /// From `evaluate`'s `metrics.json` on the test split, when there is one.
    pub test_accuracy: Option<f64>,
    /// The test accuracy was measured before the run's last committed epoch.
    pub test_accuracy_stale: bool,
    pub train_seconds: f64,
    pub backend: BackendKind,
    pub threads: usize,
    pub restored_best_epoch: Option<usize>,
}

/// The parts of `metrics.json` the list shows.
#[derive(Deserialize)]
struct Metrics {
    split: String,
    accuracy: f64,
}

/// The entries of `root`, newest first: every folder and file but hidden ones and the
/// `latest` pointer (whose run is marked). A missing `root` has none.
pub fn list_runs(root: &Path) -> Vec<RunEntry> {
    let latest = latest_name(root);
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut runs: Vec<RunEntry> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_str()?.to_string();
            if name.starts_with('.') || (name == LATEST && latest.is_some()) {
                return None;
            }
            Some(describe(&entry.path(), name, latest.as_deref()))
        })
        .collect();
    runs.sort_by(|a, b| b.time.total_cmp(&a.time).then_with(|| b.name.cmp(&a.name)));
    runs
}

fn seconds(time: SystemTime) -> f64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn describe(path: &Path, name: String, latest: Option<&str>) -> RunEntry {
    let mut entry = RunEntry {
        latest: latest == Some(name.as_str()),
        running: false,
        summary: None,
        problem: None,
        time: modified(path).map_or(0.0, seconds),
        path: path.to_path_buf(),
        name,
    };
    if !path.is_dir() {
        entry.problem = Some(if path.exists() {
            "not a run folder".into()
        } else {
            "a link to nothing".into()
        });
        return entry;
    }
    entry.running = is_locked(path);
    if !path.join(RUN_FILE).exists() {
        entry.problem = Some(if entry.running {
            "training its first epoch".into()
        } else if path.join(LOCK_FILE).exists() {
            "stopped before its first epoch ended".into()
        } else {
            format!("not a run (no {RUN_FILE})")
        });
        return entry;
    }
    match RunInfo::load(path) {
        Ok(run) => {
            entry.time = run.started_at.unwrap_or(entry.time);
            entry.summary = Some(summarize(path, &run));
        }
        Err(error) => entry.problem = Some(format!("damaged: {error}")),
    }
    entry
}

fn summarize(dir: &Path, run: &RunInfo) -> RunSummary {
    let best = run
        .history
        .iter()
        .filter_map(|e| e.val_accuracy.map(|a| (a, e.epoch)))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let metrics_path = dir.join(crate::evaluate::METRICS_FILE);
    let test = read_json::<Metrics>(&metrics_path)
        .ok()
        .filter(|m| m.split == "test");
    let stale = match (modified(&metrics_path), modified(&dir.join(RUN_FILE))) {
        (Some(metrics), Some(manifest)) => metrics < manifest,
        _ => false,
    };
    RunSummary {
        started_at: run.started_at,
        started: run.started_at.map(|t| {
            let time = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs_f64(t.max(0.0));
            chrono::DateTime::<chrono::Utc>::from(time)
                .format("%Y-%m-%d %H:%M")
                .to_string()
        }),
        model: run.config.architecture,
        data: if let Some(imported) = &run.imported {
            // A run made by `import-model` trained on nothing here: where it came from.
            format!("{} ({})", imported.file, imported.format)
        } else if run.data.canonical_mnist {
            "MNIST".into()
        } else {
            run.data.dir.file_name().map_or_else(
                || run.data.dir.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            )
        },
        data_dir: run.data.dir.clone(),
        completed_epochs: run.completed_epochs,
        epochs: run.config.epochs,
        options: differing_options(&run.config),
        best_val_accuracy: best.map(|b| b.0),
        best_val_epoch: best.map(|b| b.1),
        test_accuracy: test.as_ref().map(|m| m.accuracy),
        test_accuracy_stale: test.is_some() && stale,
        train_seconds: run.train_seconds,
        backend: run.config.backend,
        threads: run.threads,
        restored_best_epoch: run.restored_best_epoch,
    }
}

/// The options of `config` that differ from `train`'s defaults, as the flags that set them
/// (the epochs and the backend have columns of their own).
pub fn differing_options(config: &TrainConfig) -> Vec<String> {
    let defaults = TrainConfig::default();
    let mut options = Vec::new();
    let mut differ = |same: bool, flag: String| {
        if !same {
            options.push(flag);
        }
    };
    differ(
        config.architecture == defaults.architecture,
        format!("--model {}", config.architecture),
    );
    differ(
        config.batch_size == defaults.batch_size,
        format!("--batch-size {}", config.batch_size),
    );
    differ(
        config.learning_rate == defaults.learning_rate,
        format!("--lr {}", config.learning_rate),
    );
    differ(
        config.seed == defaults.seed,
        format!("--seed {}", config.seed),
    );
    differ(
        config.validation_split == defaults.validation_split,
        format!("--validation-split {}", config.validation_split),
    );
    differ(
        config.validation_from == defaults.validation_from,
        format!("--validation-from {}", serde_name(&config.validation_from)),
    );
    if let Some(steps) = config.steps_per_epoch {
        options.push(format!("--steps-per-epoch {steps}"));
    }
    if let Some(limit) = config.limit {
        options.push(format!("--limit {limit}"));
    }
    if config.augment {
        options.push("--augment".into());
    }
    if config.lr_schedule != defaults.lr_schedule {
        options.push(format!("--lr-schedule {}", serde_name(&config.lr_schedule)));
    }
    if let Some(patience) = config.early_stopping {
        options.push(format!("--early-stopping {patience}"));
    }
    if let Some(dir) = &config.init_from {
        options.push(format!("--init-from {}", dir.display()));
    }
    options
}

/// A value's name as the command line spells it (its serde name).
fn serde_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => String::from("?"),
    }
}

/// Draws the accuracy and loss curves of `runs` (name and history) into `path`.
pub fn compare_chart(path: &Path, runs: &[(String, Vec<EpochStats>)]) -> Result<()> {
    if let Some((name, _)) = runs.iter().find(|(_, history)| history.is_empty()) {
        return Err(Error::InvalidArgument(format!(
            "the run {name} has no finished epoch to draw"
        )));
    }
    let curves: Vec<RunCurves> = runs
        .iter()
        .map(|(name, history)| {
            let curve = |value: fn(&EpochStats) -> Option<f64>| -> Vec<(f64, f64)> {
                history
                    .iter()
                    .filter_map(|e| value(e).map(|v| (e.epoch as f64, v)))
                    .collect()
            };
            RunCurves {
                name: name.clone(),
                accuracy: curve(|e| Some(e.accuracy)),
                val_accuracy: curve(|e| e.val_accuracy),
                loss: curve(|e| Some(e.loss)),
                val_loss: curve(|e| e.val_loss),
            }
        })
        .collect();
    runs_chart(path, &curves)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{LrSchedule, ValidationFrom};

    #[test]
    fn options_read_as_the_flags_that_set_them() {
        assert!(differing_options(&TrainConfig::default()).is_empty());
        let config = TrainConfig {
            batch_size: 256,
            learning_rate: 5e-4,
            validation_from: ValidationFrom::Random,
            lr_schedule: LrSchedule::Cosine,
            augment: true,
            limit: Some(600),
            epochs: 3,
            init_from: Some(PathBuf::from("runs/keras")),
            ..TrainConfig::default()
        };
        assert_eq!(
            differing_options(&config),
            [
                "--batch-size 256",
                "--lr 0.0005",
                "--validation-from random",
                "--limit 600",
                "--augment",
                "--lr-schedule cosine",
                "--init-from runs/keras"
            ]
        );
    }

    #[test]
    fn an_imported_run_names_the_file_it_came_from() {
        let root = tempfile::tempdir().unwrap();
        let mut run = crate::run::tests::sample_run();
        run.imported = Some(crate::run::Provenance {
            file: "cnn.keras".into(),
            format: "keras".into(),
            sha256: "0".repeat(64),
            pixel_scale: 1.0,
            rescaling: None,
            written_by: None,
        });
        std::fs::create_dir(root.path().join("keras")).unwrap();
        crate::fsutil::write_json_atomically(&root.path().join("keras").join(RUN_FILE), &run)
            .unwrap();
        let entries = list_runs(root.path());
        assert_eq!(
            entries[0].summary.as_ref().unwrap().data,
            "cnn.keras (keras)"
        );
    }

    #[test]
    fn damaged_and_foreign_entries_are_listed_and_marked() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let mut run = crate::run::tests::sample_run();
        run.started_at = Some(2000.0);
        std::fs::create_dir(root.join("good")).unwrap();
        crate::fsutil::write_json_atomically(&root.join("good").join(RUN_FILE), &run).unwrap();
        run.started_at = Some(1000.0);
        std::fs::create_dir(root.join("older")).unwrap();
        crate::fsutil::write_json_atomically(&root.join("older").join(RUN_FILE), &run).unwrap();
        std::fs::create_dir(root.join("damaged")).unwrap();
        std::fs::write(root.join("damaged").join(RUN_FILE), b"{\"config\": ").unwrap();
        std::fs::create_dir(root.join("stopped")).unwrap();
        std::fs::write(root.join("stopped").join(LOCK_FILE), b"").unwrap();
        std::fs::create_dir(root.join("photos")).unwrap();
        std::fs::write(root.join("notes.txt"), b"hello").unwrap();
        std::fs::write(root.join(".hidden"), b"").unwrap();
        super::super::point_latest(root, "good").unwrap();
        let entries = list_runs(root);
        let find = |name: &str| entries.iter().find(|e| e.name == name).unwrap();
        assert_eq!(entries.len(), 6, "{entries:?}");
        assert!(find("good").latest && find("good").summary.is_some());
        let runs: Vec<&str> = entries
            .iter()
            .filter(|e| e.summary.is_some())
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(runs, ["good", "older"], "newest first");
        assert_eq!(find("older").summary.as_ref().unwrap().data, "MNIST");
        let problem = |name: &str| find(name).problem.clone().unwrap();
        assert!(
            problem("damaged").starts_with("damaged: "),
            "{}",
            problem("damaged")
        );
        assert_eq!(problem("stopped"), "stopped before its first epoch ended");
        assert_eq!(problem("photos"), "not a run (no run.json)");
        assert_eq!(problem("notes.txt"), "not a run folder");
        assert_eq!(find("good").summary.as_ref().unwrap().data, "MNIST");
        assert!(list_runs(&root.join("nothing")).is_empty());
    }
}
