//! The training loop: mini-batch Adam on categorical cross-entropy, per-epoch validation,
//! history, plots and a checkpoint after every epoch so a run can be resumed.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::Bytes;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::backend::{self, BackendKind};
use crate::data::batch::{Batch, make_batch};
use crate::data::{Split, SplitKind};
use crate::error::{Error, Result};
use crate::fsutil::{read_json, write_atomically, write_json_atomically};
use crate::model::{
    Architecture, InputShape, Network, categorical_cross_entropy, log_probabilities,
};
use crate::plot::{Series, line_chart};

pub const MODEL_FILE: &str = "model.bpk";
pub const OPTIMIZER_FILE: &str = "optimizer.bpk";
pub const RUN_FILE: &str = "run.json";
pub const HISTORY_FILE: &str = "history.json";
pub const ACCURACY_PLOT: &str = "accuracy.png";
pub const LOSS_PLOT: &str = "loss.png";

/// Keras's Adam epsilon; burn's default (1e-5) is coarser.
const ADAM_EPSILON: f32 = 1e-7;
/// Validation runs without gradients, so larger batches are cheaper and change nothing.
const VALIDATION_BATCH: usize = 500;

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
        }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        let problem = if self.epochs == 0 {
            Some("--epochs must be at least 1".to_string())
        } else if self.batch_size == 0 {
            Some("--batch-size must be at least 1".to_string())
        } else if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            Some(format!(
                "--lr must be a positive number, got {}",
                self.learning_rate
            ))
        } else if !(0.0..1.0).contains(&self.validation_split) {
            Some(format!(
                "--validation-split must be in [0, 1), got {}",
                self.validation_split
            ))
        } else if self.steps_per_epoch == Some(0) {
            Some("--steps-per-epoch must be at least 1".to_string())
        } else if self.limit == Some(0) {
            Some("--limit must be at least 1".to_string())
        } else {
            None
        };
        problem.map_or(Ok(()), |message| Err(Error::InvalidArgument(message)))
    }

    /// Settings that must match for `--resume` to continue a run exactly.
    fn same_run_as(&self, other: &TrainConfig) -> bool {
        TrainConfig {
            epochs: other.epochs,
            backend: other.backend,
            ..self.clone()
        } == *other
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

/// `run.json`: what was trained, how, on what, and how long it took.
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
}

impl RunInfo {
    pub fn load(model_dir: &Path) -> Result<Self> {
        let path = model_dir.join(RUN_FILE);
        if !path.is_file() {
            return Err(Error::Model(format!(
                "no trained model in {} ({RUN_FILE} is missing); run `mnist-cnn train` first (or pass --model-dir)",
                model_dir.display()
            )));
        }
        read_json(&path)
    }

    /// The trained network from `model_dir`, on `device`.
    pub fn load_network(&self, model_dir: &Path, device: &Device) -> Result<Network> {
        Network::load(
            self.config.architecture,
            self.shape,
            &model_dir.join(MODEL_FILE),
            device,
        )
    }

    /// Refuses data the network was not trained for: another image size, labels beyond its
    /// classes, or other class names.
    pub fn check_data(&self, split: &Split, data_dir: &Path) -> Result<()> {
        let retrain = "train a model on this data with `mnist-cnn train --data-dir`";
        if (split.rows, split.cols) != (self.shape.rows, self.shape.cols) {
            return Err(Error::Model(format!(
                "the model was trained on {}x{} images but {} holds {}x{} images; {retrain}",
                self.shape.rows,
                self.shape.cols,
                data_dir.display(),
                split.rows,
                split.cols
            )));
        }
        if split.num_classes() > self.shape.classes {
            return Err(Error::Model(format!(
                "the model knows {} classes but the data in {} has {}; {retrain}",
                self.shape.classes,
                data_dir.display(),
                split.num_classes()
            )));
        }
        if let Some(names) = &split.class_names
            && *names != self.class_names
        {
            return Err(Error::Model(format!(
                "the model's classes ({}) differ from {}/classes.txt ({}); {retrain}",
                self.class_names.join(", "),
                data_dir.display(),
                names.join(", ")
            )));
        }
        Ok(())
    }
}

/// What the loop reports while it runs, for progress display.
#[derive(Debug, Clone)]
pub enum TrainEvent<'a> {
    Resumed {
        completed_epochs: usize,
    },
    EpochStarted {
        epoch: usize,
        epochs: usize,
        batches: usize,
    },
    BatchFinished {
        batch: usize,
        batches: usize,
        loss: f64,
        accuracy: f64,
        images_per_second: f64,
    },
    Validating,
    EpochFinished(&'a EpochStats),
}

pub struct TrainOutcome {
    pub network: Network,
    pub history: Vec<EpochStats>,
    pub run: RunInfo,
}

/// Trains on `data` (the full training split; `config.limit` and the validation split are
/// taken from it) and keeps `out_dir` up to date after every epoch.
pub fn train(
    config: &TrainConfig,
    data: &Split,
    data_dir: &Path,
    out_dir: &Path,
    resume: bool,
    observer: &mut dyn FnMut(TrainEvent),
) -> Result<TrainOutcome> {
    config.validate()?;
    let shape = InputShape::of(data);
    shape.check(config.architecture)?;
    let canonical_mnist = data.is_canonical_mnist(SplitKind::Train);
    let used = config.limit.unwrap_or(data.len()).min(data.len());
    let validation_count = (used as f64 * config.validation_split).round() as usize;
    let train_count = used - validation_count;
    if train_count == 0 {
        return Err(Error::InvalidArgument(format!(
            "no training images left: {used} images with --validation-split {}",
            config.validation_split
        )));
    }
    // As Keras's `validation_split`: the last fraction of the data, taken before shuffling.
    let validation_indices: Vec<usize> = (train_count..used).collect();

    // `auto` is recorded as the backend it picked.
    let backend = config.backend.start()?;
    let device = backend.device();
    let train_device = device.clone().autodiff();
    device.seed(config.seed);
    let mut network = Network::new(config.architecture, shape, &train_device);
    let mut optimizer = adam();
    let mut history = Vec::new();
    let mut run = RunInfo {
        config: TrainConfig {
            backend,
            ..config.clone()
        },
        shape,
        class_names: data.class_names(),
        parameters: network.num_params(),
        optimizer: "adam".into(),
        loss: "categorical_crossentropy".into(),
        threads: backend::current_threads(),
        data: DataInfo {
            dir: data_dir.to_path_buf(),
            canonical_mnist,
            images_md5: data.checksums[0].clone(),
            labels_md5: data.checksums[1].clone(),
            train_images: train_count,
            validation_images: validation_count,
        },
        completed_epochs: 0,
        train_seconds: 0.0,
        peak_rss_mb: None,
        burn_version: BURN_VERSION.into(),
        mnist_cnn_version: env!("CARGO_PKG_VERSION").into(),
    };

    if resume {
        let checkpoint = Checkpoint::load(out_dir, &run, &train_device)?;
        network = checkpoint.network;
        optimizer = checkpoint.optimizer;
        history = checkpoint.history;
        run.train_seconds = checkpoint.train_seconds;
        run.completed_epochs = history.len();
        observer(TrainEvent::Resumed {
            completed_epochs: history.len(),
        });
    }

    let batches_in_epoch = {
        let all = train_count.div_ceil(config.batch_size);
        config.steps_per_epoch.map_or(all, |steps| steps.min(all))
    };
    for epoch in history.len()..config.epochs {
        observer(TrainEvent::EpochStarted {
            epoch: epoch + 1,
            epochs: config.epochs,
            batches: batches_in_epoch,
        });
        let started = Instant::now();
        let mut order: Vec<usize> = (0..train_count).collect();
        // Seeded per epoch, so a resumed run shuffles exactly as an uninterrupted one.
        order.shuffle(&mut StdRng::seed_from_u64(
            config.seed ^ (epoch as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        ));
        let mut totals = RunningTotals::default();
        for (batch_index, indices) in order
            .chunks(config.batch_size)
            .take(batches_in_epoch)
            .enumerate()
        {
            let batch = make_batch(data, indices, shape.classes, &train_device);
            let (stepped, loss_value, correct) =
                train_step(network, &mut optimizer, config.learning_rate, batch);
            network = stepped;
            totals.add(indices.len(), f64::from(loss_value), correct);
            observer(TrainEvent::BatchFinished {
                batch: batch_index + 1,
                batches: batches_in_epoch,
                loss: totals.mean_loss(),
                accuracy: totals.accuracy(),
                images_per_second: totals.images as f64 / started.elapsed().as_secs_f64(),
            });
        }
        let train_seconds = started.elapsed().as_secs_f64();
        let (val_loss, val_accuracy) = if validation_indices.is_empty() {
            (None, None)
        } else {
            observer(TrainEvent::Validating);
            let (loss, accuracy) = loss_and_accuracy(
                &network.valid(),
                data,
                &validation_indices,
                VALIDATION_BATCH,
                &device,
            );
            (Some(loss), Some(accuracy))
        };
        let stats = EpochStats {
            epoch: epoch + 1,
            loss: totals.mean_loss(),
            accuracy: totals.accuracy(),
            val_loss,
            val_accuracy,
            seconds: started.elapsed().as_secs_f64(),
            images_per_second: totals.images as f64 / train_seconds,
        };
        history.push(stats);
        run.completed_epochs = history.len();
        run.train_seconds += started.elapsed().as_secs_f64();
        run.peak_rss_mb = backend::peak_rss_mb();
        save_checkpoint(out_dir, &network, &optimizer, &history, &run)?;
        observer(TrainEvent::EpochFinished(
            history.last().expect("just pushed"),
        ));
    }

    Ok(TrainOutcome {
        network: network.valid(),
        history,
        run,
    })
}

pub const BURN_VERSION: &str = "0.22.1";

/// The Adam optimizer as configured for every run.
pub fn adam() -> ModuleOptimizer {
    AdamConfig::new().with_epsilon(ADAM_EPSILON).init()
}

/// One gradient step on `batch`: returns the updated network, the batch's mean loss and how
/// many of its images were classified correctly before the update.
pub fn train_step(
    network: Network,
    optimizer: &mut ModuleOptimizer,
    learning_rate: f64,
    batch: Batch,
) -> (Network, f32, usize) {
    let logits = network.forward(batch.images);
    let loss = categorical_cross_entropy(logits.clone(), batch.one_hot);
    let loss_value: f32 = loss.clone().into_scalar();
    let correct = count_correct(logits, &batch.labels);
    let gradients = GradientsParams::from_grads(loss.backward(), &network);
    (
        optimizer.step(learning_rate, network, gradients),
        loss_value,
        correct,
    )
}

/// Mean categorical cross-entropy and accuracy over `indices`, without gradients.
pub fn loss_and_accuracy(
    network: &Network,
    data: &Split,
    indices: &[usize],
    batch_size: usize,
    device: &Device,
) -> (f64, f64) {
    let scores = log_probabilities(network, data, indices, batch_size, device);
    let mut loss = 0.0f64;
    let mut correct = 0usize;
    for (row, &index) in scores.rows().zip(indices) {
        let label = data.labels[index] as usize;
        loss -= f64::from(row[label]);
        correct += usize::from(argmax(row) == label);
    }
    let count = indices.len().max(1) as f64;
    (loss / count, correct as f64 / count)
}

pub fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 { (i, v) } else { best }
        })
        .0
}

fn count_correct(logits: Tensor<2>, labels: &[u8]) -> usize {
    let classes = logits.dims()[1];
    let values: Vec<f32> = logits
        .into_data()
        .try_into_vec::<f32>()
        .expect("logits of an f32 network are f32");
    values
        .chunks(classes)
        .zip(labels)
        .filter(|(row, label)| argmax(row) == **label as usize)
        .count()
}

#[derive(Default)]
struct RunningTotals {
    images: usize,
    loss_sum: f64,
    correct: usize,
}

impl RunningTotals {
    fn add(&mut self, images: usize, mean_loss: f64, correct: usize) {
        self.images += images;
        self.loss_sum += mean_loss * images as f64;
        self.correct += correct;
    }

    fn mean_loss(&self) -> f64 {
        self.loss_sum / self.images.max(1) as f64
    }

    fn accuracy(&self) -> f64 {
        self.correct as f64 / self.images.max(1) as f64
    }
}

/// Writes the weights, optimizer state, history, run description and plots, each atomically.
/// The history is written after the weights and optimizer: its length is the epoch they hold.
fn save_checkpoint(
    out_dir: &Path,
    network: &Network,
    optimizer: &ModuleOptimizer,
    history: &[EpochStats],
    run: &RunInfo,
) -> Result<()> {
    let model_bytes = network
        .clone()
        .into_record()
        .into_bytes()
        .map_err(|e| Error::Model(format!("cannot serialise the model: {e}")))?;
    write_atomically(&out_dir.join(MODEL_FILE), &model_bytes)?;
    let optimizer_bytes = optimizer
        .into_bytes()
        .map_err(|e| Error::Model(format!("cannot serialise the optimizer state: {e}")))?;
    write_atomically(&out_dir.join(OPTIMIZER_FILE), &optimizer_bytes)?;
    write_json_atomically(&out_dir.join(RUN_FILE), run)?;
    write_json_atomically(&out_dir.join(HISTORY_FILE), &history)?;
    plot_history(out_dir, history)
}

/// `accuracy.png` and `loss.png`: training and validation curves per epoch.
pub fn plot_history(out_dir: &Path, history: &[EpochStats]) -> Result<()> {
    let curve = |name: &str, value: &dyn Fn(&EpochStats) -> Option<f64>| Series {
        name: name.to_string(),
        points: history
            .iter()
            .filter_map(|e| value(e).map(|v| (e.epoch as f64, v)))
            .collect(),
    };
    let with_validation = |train: Series, validation: Series| {
        if validation.points.is_empty() {
            vec![train]
        } else {
            vec![train, validation]
        }
    };
    line_chart(
        &out_dir.join(ACCURACY_PLOT),
        "Model accuracy",
        "epoch",
        "accuracy",
        &with_validation(
            curve("train", &|e| Some(e.accuracy)),
            curve("validation", &|e| e.val_accuracy),
        ),
    )?;
    line_chart(
        &out_dir.join(LOSS_PLOT),
        "Model loss",
        "epoch",
        "loss",
        &with_validation(
            curve("train", &|e| Some(e.loss)),
            curve("validation", &|e| e.val_loss),
        ),
    )
}

struct Checkpoint {
    network: Network,
    optimizer: ModuleOptimizer,
    history: Vec<EpochStats>,
    train_seconds: f64,
}

impl Checkpoint {
    fn load(out_dir: &Path, fresh: &RunInfo, device: &Device) -> Result<Self> {
        let saved = RunInfo::load(out_dir).map_err(|_| {
            Error::InvalidArgument(format!(
                "--resume: no run to resume in {}; start one without --resume",
                out_dir.display()
            ))
        })?;
        if !saved.config.same_run_as(&fresh.config)
            || saved.data != fresh.data
            || saved.shape != fresh.shape
        {
            return Err(Error::InvalidArgument(format!(
                "--resume: the run in {} was started with other settings or data; \
                 pass the same flags (apart from --epochs) or use another --out",
                out_dir.display()
            )));
        }
        let history: Vec<EpochStats> = read_json(&out_dir.join(HISTORY_FILE))?;
        let network = saved.load_network(out_dir, device)?;
        let optimizer_path = out_dir.join(OPTIMIZER_FILE);
        let optimizer_bytes =
            std::fs::read(&optimizer_path).map_err(|e| Error::io(&optimizer_path, e))?;
        let optimizer = adam()
            .from_bytes(Bytes::from_bytes_vec(optimizer_bytes))
            .map_err(|e| {
                Error::Model(format!(
                    "{}: corrupt optimizer state ({e})",
                    optimizer_path.display()
                ))
            })?;
        if history.len() != saved.completed_epochs {
            return Err(Error::Model(format!(
                "{}: checkpoint is inconsistent ({} epochs in history, {} in {RUN_FILE})",
                out_dir.display(),
                history.len(),
                saved.completed_epochs
            )));
        }
        Ok(Self {
            network,
            optimizer,
            history,
            train_seconds: saved.train_seconds,
        })
    }
}
