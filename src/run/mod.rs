//! A training run on disk: what was trained, how and on what (`run.json`), its history, and the
//! weights of its last completed epoch. [`train`](crate::train) writes runs; `evaluate`,
//! `predict`, `bench`, `inspect` and `serve` read them through [`TrainedRun`].
//!
//! `run.json` is the run's manifest and the commit point of every checkpoint: it names the
//! weight and optimizer files of the epoch it describes, with their checksums, and is renamed
//! into place only after those files are complete (see [`checkpoint`]). A reader therefore sees
//! one consistent epoch, even while a training run is writing the next one.

pub mod checkpoint;
pub mod provenance;

use std::path::{Path, PathBuf};

use burn::prelude::Device;
use serde::{Deserialize, Serialize};

use crate::backend::BackendKind;
use crate::data::Split;
use crate::data::pipeline::Pipeline;
use crate::error::{Error, Result};
use crate::fsutil::read_json;
use crate::model::{Architecture, InputShape, Network};
use crate::train::schedule::LrSchedule;
use crate::train::validation::ValidationFrom;

pub use checkpoint::{FileDigest, RunLock};
pub use provenance::Provenance;

/// The manifest: [`RunInfo`] as JSON.
pub const RUN_FILE: &str = "run.json";
/// The history of the committed epochs, as Keras's `History.history`, for people and plots.
pub const HISTORY_FILE: &str = "history.json";
/// The weights of the last committed epoch under a stable name, for use outside this tool.
pub const MODEL_FILE: &str = "model.bpk";
pub const ACCURACY_PLOT: &str = "accuracy.png";
pub const LOSS_PLOT: &str = "loss.png";

/// Everything that determines a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub architecture: Architecture,
    pub backend: BackendKind,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub seed: u64,
    pub validation_split: f64,
    pub steps_per_epoch: Option<usize>,
    pub limit: Option<usize>,
    /// Where the validation images come from; runs written before it have none (auto).
    #[serde(default)]
    pub validation_from: ValidationFrom,
    /// Random shifts and small rotations of the training images, seeded.
    #[serde(default)]
    pub augment: bool,
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    /// Stop when the validation loss has not improved for this many epochs, and end with the
    /// weights of the best epoch.
    #[serde(default)]
    pub early_stopping: Option<usize>,
    /// The run whose weights training started from, instead of fresh ones (with a fresh
    /// optimizer). Not compared on resume: a resumed run starts from its own checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<PathBuf>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            architecture: Architecture::Cnn,
            backend: BackendKind::Flex,
            epochs: 10,
            batch_size: 128,
            learning_rate: 1e-3,
            seed: 42,
            validation_split: 0.1,
            steps_per_epoch: None,
            limit: None,
            validation_from: ValidationFrom::Auto,
            augment: false,
            lr_schedule: LrSchedule::Constant,
            early_stopping: None,
            init_from: None,
        }
    }
}

impl TrainConfig {
    /// Refuses values no run can use. The command line checks the same ranges when it parses.
    pub fn validate(&self) -> Result<()> {
        let problem = if self.epochs == 0 {
            Some("epochs must be at least 1".to_string())
        } else if self.batch_size == 0 {
            Some("the batch size must be at least 1".to_string())
        } else if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            Some(format!(
                "the learning rate must be a positive number, got {}",
                self.learning_rate
            ))
        } else if !(0.0..1.0).contains(&self.validation_split) {
            Some(format!(
                "the validation split must be in [0, 1), got {}",
                self.validation_split
            ))
        } else if self.steps_per_epoch == Some(0) {
            Some("steps per epoch must be at least 1".to_string())
        } else if self.limit == Some(0) {
            Some("the image limit must be at least 1".to_string())
        } else if self.early_stopping == Some(0) {
            Some("the early-stopping patience must be at least 1 epoch".to_string())
        } else if self.early_stopping.is_some() && self.validation_split == 0.0 {
            Some(
                "early stopping watches the validation loss, so it needs a validation split above 0"
                    .to_string(),
            )
        } else {
            None
        };
        problem.map_or(Ok(()), |message| Err(Error::InvalidArgument(message)))
    }

    /// The settings that differ from `other`'s, apart from those a resumed run may change
    /// (the number of epochs and the backend); empty when a run can continue exactly.
    pub fn differences_from(&self, other: &TrainConfig) -> Vec<&'static str> {
        let mut differences = Vec::new();
        let mut differ = |name, same: bool| {
            if !same {
                differences.push(name);
            }
        };
        differ("model", self.architecture == other.architecture);
        differ("batch size", self.batch_size == other.batch_size);
        differ("learning rate", self.learning_rate == other.learning_rate);
        differ("seed", self.seed == other.seed);
        differ(
            "validation split",
            self.validation_split == other.validation_split,
        );
        differ(
            "steps per epoch",
            self.steps_per_epoch == other.steps_per_epoch,
        );
        differ("limit", self.limit == other.limit);
        differ(
            "validation source",
            self.validation_from == other.validation_from,
        );
        differ("augmentation", self.augment == other.augment);
        differ(
            "learning-rate schedule",
            self.lr_schedule == other.lr_schedule,
        );
        // A schedule spreads over all the epochs, so their number is part of it; so it is of
        // a run that ends with its best epoch's weights.
        differ(
            "epochs (part of the learning-rate schedule)",
            self.lr_schedule == LrSchedule::Constant || self.epochs == other.epochs,
        );
        differ(
            "epochs (a run with early stopping ends with its best weights)",
            self.early_stopping.is_none() || self.epochs == other.epochs,
        );
        differ(
            "early stopping",
            self.early_stopping == other.early_stopping,
        );
        differences
    }
}

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
mod tests {
    use super::*;

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

    #[test]
    fn resume_differences_name_each_setting() {
        let base = TrainConfig::default();
        let other = TrainConfig {
            batch_size: 64,
            seed: 7,
            epochs: 3,
            ..base.clone()
        };
        assert_eq!(base.differences_from(&other), vec!["batch size", "seed"]);
        assert!(base.differences_from(&base.clone()).is_empty());
    }
}
