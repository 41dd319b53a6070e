//! The training loop: mini-batch Adam on categorical cross-entropy, per-epoch validation, and
//! a committed checkpoint after every epoch (see [`crate::run::checkpoint`]) so that a run can
//! be resumed exactly, or read by other commands while it trains.
//!
//! The options that help on small data sets live beside it: which images validate
//! ([`validation`]), augmentation ([`augment`]) and the learning-rate schedule ([`schedule`]).
//! Each is a function of the seed, epoch and step only, so a resumed run stays bit-identical.

pub mod adam;
pub mod augment;
mod init;
pub mod schedule;
mod step;
pub mod validation;

use std::path::Path;
use std::time::Instant;

use burn::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::backend;
use crate::data::batch::{batch_with_images, make_batch};
use crate::data::{Split, SplitKind};
use crate::error::{Error, Result};
use crate::fsutil::write_atomically;
use crate::model::{InputShape, Network, argmax, log_probabilities};
use crate::plot::{Series, line_chart};
use crate::run::checkpoint::{self, CheckpointFiles, FileDigest, RunLock};
use crate::run::{ACCURACY_PLOT, BestEpoch, DataInfo, LOSS_PLOT, RunInfo, burn_version};

pub use adam::Adam;
pub use schedule::LrSchedule;
pub use step::{train_step, train_step_alongside};
pub use validation::{ValidationFrom, Warning, WarningKind};

pub use crate::run::{EpochStats, TrainConfig};

/// Validation runs without gradients, so larger batches are cheaper and change nothing.
const VALIDATION_BATCH: usize = 500;
/// With early stopping: the weights of the epoch with the lowest validation loss so far.
pub const BEST_MODEL_FILE: &str = "best-model.bpk";

/// What the loop reports while it runs, for progress display.
#[derive(Debug, Clone)]
pub enum TrainEvent<'a> {
    /// The output directory is locked and any checkpoint to resume from is loaded; training
    /// starts with this network.
    Started {
        run: &'a RunInfo,
        network: &'a Network,
    },
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
    /// Something about the data or settings the user should know; training goes on.
    Warning(&'a Warning),
    /// Early stopping ended the run: the validation loss has not improved since `best_epoch`,
    /// whose weights the run ends with.
    StoppedEarly {
        epoch: usize,
        best_epoch: usize,
    },
}

pub struct TrainOutcome {
    pub network: Network,
    /// The run as committed after the last epoch; its `history` has every epoch.
    pub run: RunInfo,
}

/// Refuses a training split that has no images, or whose labels (without `classes.txt`) imply
/// classes that have no images, as a stray label does; `data_dir` names it in the message.
pub fn check_training_data(data: &Split, data_dir: &Path) -> Result<()> {
    if data.is_empty() {
        return Err(Error::EmptyData {
            dir: data_dir.to_path_buf(),
            split: "train",
        });
    }
    data.check_classes_populated(data_dir)
}

/// Trains on `data` (the full training split; `config.limit` and the validation split are
/// taken from it) and commits a checkpoint into `out_dir` after every epoch. `out_dir` is
/// locked for the whole run, so a second run into it fails at once.
pub fn train(
    config: &TrainConfig,
    data: &Split,
    data_dir: &Path,
    out_dir: &Path,
    resume: bool,
    observer: &mut dyn FnMut(TrainEvent),
) -> Result<TrainOutcome> {
    config.validate()?;
    check_training_data(data, data_dir)?;
    let shape = InputShape::of(data);
    shape.check(config.architecture)?;
    let canonical_mnist = data.is_canonical_mnist(SplitKind::Train);
    let class_names = data.class_names();
    // On data in random order as Keras's `validation_split`: the last fraction of the data,
    // taken before shuffling. See `validation` for data that is not.
    let selection = validation::select(
        &data.labels,
        &class_names,
        config.limit,
        config.validation_split,
        config.validation_from,
        config.seed,
    );
    let (train_indices, validation_indices) = (&selection.train, &selection.validation);
    let (train_count, validation_count) = (train_indices.len(), validation_indices.len());
    if train_count == 0 {
        return Err(Error::InvalidArgument(format!(
            "no training images left: {} images with a validation split of {}",
            train_count + validation_count,
            config.validation_split
        )));
    }
    // Before any work: an unusable or busy output directory fails now, not after an epoch.
    let _lock = RunLock::acquire(out_dir)?;

    // `auto` is recorded as the backend it picked.
    let backend_kind = config.backend.start()?;
    let device = backend_kind.device();
    let train_device = device.clone().autodiff();
    device.seed(config.seed);
    // `--init-from`: another run's weights; a resumed run loads its own checkpoint below.
    let mut network = match &config.init_from {
        Some(dir) if !resume => {
            init::network_from_run(dir, config.architecture, shape, &train_device)?
        }
        _ => Network::new(config.architecture, shape, &train_device),
    };
    let mut optimizer = Adam::new(&train_device);
    let mut run = RunInfo {
        config: TrainConfig {
            backend: backend_kind,
            ..config.clone()
        },
        shape,
        class_names,
        parameters: network.num_params(),
        optimizer: "adam".into(),
        loss: "categorical_crossentropy".into(),
        threads: backend::current_threads(),
        data: DataInfo {
            dir: data_dir.to_path_buf(),
            canonical_mnist,
            images_md5: data.checksums.images.clone(),
            labels_md5: data.checksums.labels.clone(),
            train_images: train_count,
            validation_images: validation_count,
        },
        completed_epochs: 0,
        train_seconds: 0.0,
        peak_rss_mb: None,
        burn_version: burn_version().into(),
        mnist_cnn_version: env!("CARGO_PKG_VERSION").into(),
        history: Vec::new(),
        checkpoint: None,
        pipeline: Some(data.pipeline),
        validation_from: Some(selection.from),
        best: None,
        restored_best_epoch: None,
        imported: None,
    };

    if resume {
        let resumed = checkpoint::load_for_resume(out_dir, &run, optimizer, &train_device)?;
        network = resumed.network;
        optimizer = resumed.optimizer;
        run.history = resumed.run.history;
        run.train_seconds = resumed.run.train_seconds;
        run.completed_epochs = run.history.len();
        run.checkpoint = resumed.run.checkpoint;
        run.best = resumed.run.best;
        run.restored_best_epoch = resumed.run.restored_best_epoch;
        run.config.init_from = resumed.run.config.init_from;
        // Finishes a commit that a kill interrupted, and removes files it wrote uncommitted.
        checkpoint::write_derived(out_dir, &run, &[])?;
        plot_history(out_dir, &run.history)?;
        observer(TrainEvent::Resumed {
            completed_epochs: run.completed_epochs,
        });
    } else {
        // Files a killed run wrote without committing them; the committed run stays readable
        // until this one commits its first epoch.
        let committed = RunInfo::load(out_dir)
            .ok()
            .and_then(|saved| saved.checkpoint);
        let keep: Vec<&str> = committed.iter().flat_map(CheckpointFiles::names).collect();
        checkpoint::remove_unreferenced(out_dir, &keep)?;
    }

    // Once the run has started: a run refused above needs no advice on its data.
    for warning in &selection.warnings {
        observer(TrainEvent::Warning(warning));
    }
    observer(TrainEvent::Started {
        run: &run,
        network: &network,
    });
    let batches_in_epoch = {
        let all = train_count.div_ceil(config.batch_size);
        config.steps_per_epoch.map_or(all, |steps| steps.min(all))
    };
    for epoch in run.completed_epochs..config.epochs {
        if should_stop(config, &run) {
            break;
        }
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
        let order: Vec<usize> = order.into_iter().map(|i| train_indices[i]).collect();
        let mut totals = RunningTotals::default();
        let batches: Vec<&[usize]> = order
            .chunks(config.batch_size)
            .take(batches_in_epoch)
            .collect();
        // The batch at `batch_index`, if the epoch has one there.
        let assemble = |batch_index: usize| {
            let indices: &[usize] = batches.get(batch_index)?;
            Some(if config.augment {
                let values =
                    augment::augmented_batch(data, indices, config.seed, epoch, batch_index);
                let dims = [indices.len(), shape.channels, shape.rows, shape.cols];
                let images = Tensor::from_data(TensorData::new(values, dims), &train_device);
                batch_with_images(data, indices, shape.classes, images, &train_device)
            } else {
                make_batch(data, indices, shape.classes, &train_device)
            })
        };
        // Each step assembles the next one's batch while its optimizer updates the weights.
        let mut next = assemble(0);
        for (batch_index, indices) in batches.iter().enumerate() {
            let batch = next.take().expect("each step assembles the next batch");
            let learning_rate = schedule::learning_rate(
                config.lr_schedule,
                config.learning_rate,
                epoch,
                batch_index,
                config.epochs,
                batches_in_epoch,
            );
            let (stepped, loss_value, correct, following) =
                train_step_alongside(network, &mut optimizer, learning_rate, batch, || {
                    assemble(batch_index + 1)
                });
            next = following;
            if !loss_value.is_finite() {
                // The weights are no longer usable; the last committed checkpoint stays as it is.
                return Err(Error::Diverged {
                    epoch: epoch + 1,
                    step: batch_index + 1,
                    loss: loss_value,
                });
            }
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
                validation_indices,
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
        run.history.push(stats.clone());
        run.completed_epochs = run.history.len();
        run.train_seconds += started.elapsed().as_secs_f64();
        run.peak_rss_mb = backend::peak_rss_mb();
        if config.early_stopping.is_some()
            && let Some(val_loss) = stats.val_loss
            && run
                .best
                .as_ref()
                .is_none_or(|best| val_loss < best.val_loss)
        {
            // Written before the manifest that names it, like the checkpoint's files.
            let bytes = network_bytes(&network)?;
            write_atomically(&out_dir.join(BEST_MODEL_FILE), &bytes)?;
            run.best = Some(BestEpoch {
                epoch: stats.epoch,
                val_loss,
                model: FileDigest::of(BEST_MODEL_FILE.to_string(), &bytes),
            });
        }
        checkpoint::commit(out_dir, &network, &optimizer, &mut run)?;
        plot_history(out_dir, &run.history)?;
        observer(TrainEvent::EpochFinished(&stats));
    }

    // Early stopping ends with the best epoch's weights, as Keras's `restore_best_weights`.
    if config.early_stopping.is_some()
        && run.restored_best_epoch.is_none()
        && let Some(best) = run.best.clone()
    {
        if should_stop(config, &run) {
            observer(TrainEvent::StoppedEarly {
                epoch: run.completed_epochs,
                best_epoch: best.epoch,
            });
        }
        if best.epoch != run.completed_epochs {
            let path = out_dir.join(&best.model.file);
            let bytes = best.model.read_verified(&path)?;
            network = Network::from_bytes(config.architecture, shape, bytes, &path, &train_device)?;
        }
        run.restored_best_epoch = Some(best.epoch);
        checkpoint::commit(out_dir, &network, &optimizer, &mut run)?;
    }

    Ok(TrainOutcome {
        network: network.valid(),
        run,
    })
}

/// Whether early stopping has ended the run: the validation loss has not improved for
/// `patience` epochs since the best one.
fn should_stop(config: &TrainConfig, run: &RunInfo) -> bool {
    match (config.early_stopping, &run.best) {
        (Some(patience), Some(best)) => run.completed_epochs >= best.epoch + patience,
        _ => false,
    }
}

fn network_bytes(network: &Network) -> Result<Vec<u8>> {
    use burn::module::Module;
    network
        .clone()
        .into_record()
        .into_bytes()
        .map(|bytes| bytes.to_vec())
        .map_err(|e| Error::Serialize {
            what: "model",
            reason: e.to_string(),
        })
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
