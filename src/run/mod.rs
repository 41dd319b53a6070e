//! A training run on disk: what was trained, how and on what (`run.json`), its history, and the
//! weights of its last completed epoch. [`train`](crate::train) writes runs; `evaluate`,
//! `predict`, `bench`, `inspect` and `serve` read them through [`TrainedRun`].
//!
//! `run.json` is the run's manifest and the commit point of every checkpoint: it names the
//! weight and optimizer files of the epoch it describes, with their checksums, and is renamed
//! into place only after those files are complete (see [`checkpoint`]). A reader therefore sees
//! one consistent epoch, even while a training run is writing the next one.

pub mod catalog;
pub mod checkpoint;
pub mod config;
pub mod logs;
pub mod provenance;

use std::path::{Path, PathBuf};

use burn::prelude::Device;
use serde::{Deserialize, Serialize};

use crate::data::Split;
use crate::data::image::Invert;
use crate::data::pipeline::Pipeline;
use crate::error::{Error, Result};
use crate::fsutil::read_json;
use crate::model::{InputShape, Network};

pub use checkpoint::{FileDigest, RunLock};
pub use config::{LOG_EVERY_STEPS, LrSchedule, TrainConfig, ValidationFrom};
pub use provenance::Provenance;

/// The manifest: [`RunInfo`] as JSON.
pub const RUN_FILE: &str = "run.json";
/// The history of the committed epochs, as Keras's `History.history`, for people and plots.
pub const HISTORY_FILE: &str = "history.json";
/// The weights of the last committed epoch under a stable name, for use outside this tool.
pub const MODEL_FILE: &str = "model.bpk";
pub const ACCURACY_PLOT: &str = "accuracy.png";
pub const LOSS_PLOT: &str = "loss.png";

/// One line of the history, like Keras's `History.history` per epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    pub epoch: usize,
    pub loss: f64,
    pub accuracy: f64,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    pub seconds: f64,
    pub images_per_second: f64,
    /// The learning rate of the epoch's last step; absent in runs written before it was kept.
    #[serde(default)]
    pub learning_rate: Option<f64>,
    /// The training loss every `log_every_steps` steps (and at the epoch's last step).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub step_losses: Vec<StepLoss>,
}

/// The mean training loss of the steps up to `step` since the previous one logged; `step`
/// counts the run's steps from 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLoss {
    pub step: usize,
    pub loss: f64,
}

/// Where the training data came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataInfo {
    pub dir: PathBuf,
    pub canonical_mnist: bool,
    pub images_md5: String,
    pub labels_md5: String,
    pub train_images: usize,
    pub validation_images: usize,
}

impl DataInfo {
    /// What differs between two descriptions of the training data, apart from where it lies.
    fn same_content_as(&self, other: &DataInfo) -> bool {
        DataInfo {
            dir: other.dir.clone(),
            ..self.clone()
        } == *other
    }
}

/// `run.json`: what was trained, how, on what, how long it took, and which files hold the
/// weights of its last committed epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub config: TrainConfig,
    /// Image size and number of classes the network was built for.
    pub shape: InputShape,
    pub class_names: Vec<String>,
    pub parameters: usize,
    pub optimizer: String,
    pub loss: String,
    pub threads: usize,
    pub data: DataInfo,
    pub completed_epochs: usize,
    pub train_seconds: f64,
    /// Peak resident memory of the training process so far, in MiB (Linux only).
    pub peak_rss_mb: Option<f64>,
    pub burn_version: String,
    pub mnist_cnn_version: String,
    /// One entry per completed epoch.
    #[serde(default)]
    pub history: Vec<EpochStats>,
    /// The files of the committed epoch; absent in runs written before checkpoints had a
    /// manifest, whose weights are `model.bpk` unchecked.
    #[serde(default)]
    pub checkpoint: Option<checkpoint::CheckpointFiles>,
    /// How the training pictures were prepared (from the data set's `dataset.json`, else
    /// MNIST's); absent in runs written before pipelines were recorded.
    #[serde(default)]
    pub pipeline: Option<Pipeline>,
    /// How the validation images were chosen (`last` or `random`).
    #[serde(default)]
    pub validation_from: Option<ValidationFrom>,
    /// With early stopping: the epoch of the lowest validation loss so far and its weights.
    #[serde(default)]
    pub best: Option<BestEpoch>,
    /// With early stopping: the epoch whose weights the run ended with, once it has ended.
    #[serde(default)]
    pub restored_best_epoch: Option<usize>,
    /// When the run started, in seconds since the Unix epoch (UTC); absent in runs written
    /// before it was kept.
    #[serde(default)]
    pub started_at: Option<f64>,
    /// Histograms of the weights after each epoch, for TensorBoard.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weight_histograms: Vec<logs::histogram::EpochHistograms>,
    /// For a run made by `import-model`: the file its weights came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported: Option<Provenance>,
}

/// The epoch with the lowest validation loss, and the file its weights were kept in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestEpoch {
    pub epoch: usize,
    pub val_loss: f64,
    pub model: FileDigest,
}

impl RunInfo {
    /// Reads `model_dir/run.json`.
    pub fn load(model_dir: &Path) -> Result<Self> {
        let path = model_dir.join(RUN_FILE);
        if !path.is_file() {
            return Err(Error::NoRun {
                dir: model_dir.to_path_buf(),
            });
        }
        let run: RunInfo = read_json(&path)?;
        run.check_consistent(&path)?;
        Ok(run)
    }

    /// Refuses a manifest that contradicts itself, as a hand-edited or damaged one may.
    fn check_consistent(&self, path: &Path) -> Result<()> {
        let classes = self.shape.classes;
        if self.class_names.len() != classes {
            return Err(Error::corrupt(
                path,
                format!(
                    "names {} classes but the model has {classes} outputs",
                    self.class_names.len()
                ),
            ));
        }
        if self.checkpoint.is_some() && self.history.len() != self.completed_epochs {
            return Err(Error::corrupt(
                path,
                format!(
                    "{} epochs in its history but {} completed",
                    self.history.len(),
                    self.completed_epochs
                ),
            ));
        }
        self.shape.check(self.config.architecture).map_err(|e| {
            Error::corrupt(path, format!("describes a network that cannot exist ({e})"))
        })
    }

    /// How to prepare a new picture for this model: the pipeline its training data was made
    /// with; MNIST's for runs that recorded none.
    pub fn pipeline(&self) -> Pipeline {
        self.pipeline.unwrap_or(Pipeline {
            color: self.shape.channels == 3,
            ..Pipeline::mnist(self.shape.rows, self.shape.cols)
        })
    }

    /// The pipeline that prepares a new picture for this model, as every command and the web
    /// server use it: the model's own ([`RunInfo::pipeline`]), with `invert` in place of its
    /// inversion when given. Refused when it would not make the model's input.
    pub fn picture_pipeline(&self, invert: Option<Invert>) -> Result<Pipeline> {
        let mut pipeline = self.pipeline();
        if let Some(invert) = invert {
            pipeline.invert = invert;
        }
        let shape = self.shape;
        if pipeline.channels() != shape.channels
            || (pipeline.height as usize, pipeline.width as usize) != (shape.rows, shape.cols)
        {
            return Err(Error::DataMismatch(format!(
                "the model's picture pipeline ({}) does not make its {}x{} input of {} channel{}",
                pipeline.name(),
                shape.cols,
                shape.rows,
                shape.channels,
                if shape.channels == 1 { "" } else { "s" }
            )));
        }
        Ok(pipeline)
    }

    /// The trained network from `model_dir`, on `device`, after checking its file against the
    /// checksum this manifest recorded.
    pub fn load_network(&self, model_dir: &Path, device: &Device) -> Result<Network> {
        let (path, bytes) = match &self.checkpoint {
            Some(files) => {
                let path = model_dir.join(&files.model.file);
                (path.clone(), files.model.read_verified(&path)?)
            }
            None => {
                let path = model_dir.join(MODEL_FILE);
                let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
                (path, bytes)
            }
        };
        Network::from_bytes(self.config.architecture, self.shape, bytes, &path, device)
    }

    /// Refuses data the network was not trained for: another image size, labels beyond its
    /// classes, or other class names.
    pub fn check_data(&self, split: &Split, data_dir: &Path) -> Result<()> {
        if (split.rows, split.cols) != (self.shape.rows, self.shape.cols) {
            return Err(Error::DataMismatch(format!(
                "the model was trained on {}x{} images but {} holds {}x{} images",
                self.shape.rows,
                self.shape.cols,
                data_dir.display(),
                split.rows,
                split.cols
            )));
        }
        if split.channels != self.shape.channels {
            return Err(Error::DataMismatch(format!(
                "the model was trained on images of {} channels but {} holds images of {}",
                self.shape.channels,
                data_dir.display(),
                split.channels
            )));
        }
        if split.num_classes() > self.shape.classes {
            return Err(Error::DataMismatch(format!(
                "the model knows {} classes but the data in {} has {}",
                self.shape.classes,
                data_dir.display(),
                split.num_classes()
            )));
        }
        if let Some(names) = &split.named_classes
            && *names != self.class_names
        {
            return Err(Error::DataMismatch(format!(
                "the model's classes ({}) differ from {}/classes.txt ({})",
                self.class_names.join(", "),
                data_dir.display(),
                names.join(", ")
            )));
        }
        Ok(())
    }

    /// Why `self` (a saved run) cannot be continued by a run described by `fresh`, if it can't.
    pub fn resume_differences(&self, fresh: &RunInfo) -> Vec<&'static str> {
        let mut differences = self.config.differences_from(&fresh.config);
        if !self.data.same_content_as(&fresh.data) {
            differences.push("training data");
        }
        if self.shape != fresh.shape {
            differences.push("image size or classes");
        }
        differences
    }
}

/// A trained run opened for reading: its manifest and its network, from the same epoch.
pub struct TrainedRun {
    pub dir: PathBuf,
    pub info: RunInfo,
    pub network: Network,
}

impl TrainedRun {
    /// Opens the run in `dir`. A training run may commit a new epoch between reading the
    /// manifest and its weights; the files of the previous epoch are kept for a while for that
    /// reason, and in the rare case they are already gone the manifest is read again.
    pub fn open(dir: &Path, device: &Device) -> Result<Self> {
        let mut attempt = 0;
        loop {
            let info = RunInfo::load(dir)?;
            match info.load_network(dir, device) {
                Ok(network) => {
                    return Ok(Self {
                        dir: dir.to_path_buf(),
                        info,
                        network,
                    });
                }
                Err(error) => {
                    let committed_since = RunInfo::load(dir).is_ok_and(|now| now != info);
                    attempt += 1;
                    if !committed_since || attempt == 3 {
                        return Err(error);
                    }
                }
            }
        }
    }
}

/// Now, in seconds since the Unix epoch.
pub fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The version of burn this binary was built with, as resolved in Cargo.lock.
pub fn burn_version() -> &'static str {
    const LOCK: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock"));
    let mut lines = LOCK.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"burn\""
            && let Some(version) = lines
                .next()
                .and_then(|l| l.strip_prefix("version = \""))
                .and_then(|l| l.strip_suffix('"'))
        {
            return version;
        }
    }
    "unknown"
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A manifest with no epochs, for the tests of what is derived from one.
    pub(crate) fn sample_run() -> RunInfo {
        RunInfo {
            config: TrainConfig::default(),
            shape: crate::model::InputShape::MNIST,
            class_names: (0..10).map(|c| c.to_string()).collect(),
            parameters: 1,
            optimizer: "adam".into(),
            loss: "categorical_crossentropy".into(),
            threads: 1,
            data: DataInfo {
                dir: PathBuf::from("data/mnist"),
                canonical_mnist: true,
                images_md5: String::new(),
                labels_md5: String::new(),
                train_images: 54_000,
                validation_images: 6_000,
            },
            completed_epochs: 0,
            train_seconds: 0.0,
            peak_rss_mb: None,
            burn_version: burn_version().into(),
            mnist_cnn_version: "0.1.0".into(),
            history: Vec::new(),
            checkpoint: None,
            pipeline: None,
            validation_from: None,
            best: None,
            restored_best_epoch: None,
            started_at: None,
            weight_histograms: Vec::new(),
            imported: None,
        }
    }

    #[test]
    fn burn_version_is_the_locked_one() {
        let manifest = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"));
        let version = burn_version();
        assert_ne!(version, "unknown");
        assert!(
            manifest.contains(&format!("burn = {{ version = \"={version}\"")),
            "Cargo.toml pins burn {version}"
        );
    }
}
