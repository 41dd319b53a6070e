//! The training loop: mini-batch Adam on categorical cross-entropy, per-epoch validation, and
//! a committed checkpoint after every epoch (see [`crate::run::checkpoint`]) so that a run can
//! be resumed exactly, or read by other commands while it trains.
//!
//! [`train`] runs a run's phases (`phases`: the checks, a new or resumed state, each epoch, the
//! restore of the best weights) one after the other; one gradient step is `step`, the
//! optimizer `adam`.
//!
//! The options that help on small data sets live beside it: which images validate
//! ([`validation`]), augmentation ([`augment`]) and the learning-rate schedule ([`schedule`]).
//! Each is a function of the seed, epoch and step only, so a resumed run stays bit-identical.

pub mod adam;
pub mod augment;
mod init;
mod phases;
pub mod schedule;
mod step;
mod step_log;
pub mod validation;

use std::path::Path;

use burn::prelude::*;

use crate::data::Split;
use crate::error::{Error, Result};
use crate::model::{Network, argmax, log_probabilities};
use crate::plot::{Series, line_chart};
use crate::run::checkpoint::{self, RunLock};
use crate::run::{ACCURACY_PLOT, LOSS_PLOT, RunInfo};

pub use adam::Adam;
pub use schedule::LrSchedule;
pub use step::{Step, train_step, train_step_alongside};
pub use validation::{ValidationFrom, Warning, WarningKind};

pub use crate::run::{EpochStats, TrainConfig};

/// Validation runs without gradients, so larger batches are cheaper and change nothing.
const VALIDATION_BATCH: usize = 500;

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
    let plan = phases::Plan::check(config, data, data_dir)?;
    // Before any work: an unusable or busy output directory fails now, not after an epoch.
    let _lock = RunLock::acquire(out_dir)?;
    let trainer = phases::Trainer::new(config, data, out_dir, plan)?;
    let mut state = trainer.fresh_state(data_dir);
    if resume {
        trainer.resume(&mut state)?;
        observer(TrainEvent::Resumed {
            completed_epochs: state.run.completed_epochs,
        });
    } else {
        checkpoint::remove_uncommitted(out_dir)?;
        // `--init-from`: another run's weights; a resumed run has its own checkpoint.
        if let Some(dir) = &config.init_from {
            trainer.init_from(&mut state, dir)?;
        }
    }
    // Once the run has started: a run refused above needs no advice on its data.
    for warning in trainer.warnings() {
        observer(TrainEvent::Warning(warning));
    }
    observer(TrainEvent::Started {
        run: &state.run,
        network: &state.network,
    });
    for epoch in state.run.completed_epochs..config.epochs {
        if phases::should_stop(config, &state.run) {
            break;
        }
        state = trainer.epoch(state, epoch, observer)?;
    }
    trainer.restore_best(&mut state, observer)?;
    Ok(TrainOutcome {
        network: state.network.valid(),
        run: state.run,
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
