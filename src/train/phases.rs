//! The phases of a training run, in the order [`train`](super::train) runs them: the checks
//! before anything is written ([`Plan`]), the manifest of a new run and its seeded network
//! ([`Trainer::fresh_state`]), resuming a committed one ([`Trainer::resume`]), then each epoch
//! ([`Trainer::epoch`]: its steps, validation, keeping the best weights, the commit) and, with
//! early stopping, the final commit of the best weights ([`Trainer::restore_best`]).

use std::path::Path;
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::Bytes;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::adam::Adam;
use super::step::train_step_alongside;
use super::step_log::StepLog;
use super::validation::{self, Selection};
use super::{
    EpochStats, TrainConfig, TrainEvent, VALIDATION_BATCH, augment, check_training_data,
    loss_and_accuracy, plot_history, schedule,
};
use crate::backend::{self, BackendKind};
use crate::data::batch::{batch_with_images, make_batch};
use crate::data::{Split, SplitKind};
use crate::error::{Error, Result};
use crate::model::{InputShape, Network};
use crate::run::checkpoint;
use crate::run::logs::histogram::{EpochHistograms, weight_histograms};
use crate::run::{BestEpoch, DataInfo, RunInfo, StepLoss, burn_version, now_unix};

/// What a run trains and validates on, checked before anything is written.
pub(super) struct Plan {
    shape: InputShape,
    /// The training and validation images, and the warnings about them.
    selection: Selection,
    /// Steps in each epoch.
    batches_in_epoch: usize,
}

impl Plan {
    /// Refuses settings and data no run can use, and chooses the images.
    pub(super) fn check(config: &TrainConfig, data: &Split, data_dir: &Path) -> Result<Self> {
        config.validate()?;
        check_training_data(data, data_dir)?;
        let shape = InputShape::of(data);
        shape.check(config.architecture)?;
        // On data in random order as Keras's `validation_split`: the last fraction of the
        // data, taken before shuffling. See `validation` for data that is not.
        let selection = validation::select(
            &data.labels,
            &data.class_names(),
            config.limit,
            config.validation_split,
            config.validation_from,
            config.seed,
        );
        let train_count = selection.train.len();
        if train_count == 0 {
            return Err(Error::InvalidArgument(format!(
                "no training images left: {} images with a validation split of {}",
                selection.validation.len(),
                config.validation_split
            )));
        }
        let all = train_count.div_ceil(config.batch_size);
        let batches_in_epoch = config.steps_per_epoch.map_or(all, |steps| steps.min(all));
        Ok(Plan {
            shape,
            selection,
            batches_in_epoch,
        })
    }
}

/// What stays the same through a run: its settings, data, devices and directory.
pub(super) struct Trainer<'a> {
    config: &'a TrainConfig,
    data: &'a Split,
    out_dir: &'a Path,
    plan: Plan,
    /// The backend `config.backend` started (`auto` resolved).
    backend: BackendKind,
    /// Where validation runs, without gradients.
    device: Device,
    /// Where training runs: `device` under autodiff.
    train_device: Device,
}

/// What a run carries from one epoch to the next.
pub(super) struct State {
    pub(super) network: Network,
    optimizer: Adam,
    /// The manifest as of the last committed epoch, or to be committed.
    pub(super) run: RunInfo,
}

/// One epoch's passes over its batches.
struct EpochPass {
    /// The network after the epoch's last step.
    network: Network,
    totals: RunningTotals,
    /// The training loss every `log_every_steps` steps, for the run's log.
    step_losses: Vec<StepLoss>,
    /// Time spent in the steps, without validation.
    seconds: f64,
}

impl<'a> Trainer<'a> {
    pub(super) fn new(
        config: &'a TrainConfig,
        data: &'a Split,
        out_dir: &'a Path,
        plan: Plan,
    ) -> Result<Self> {
        let backend = config.backend.start()?;
        let device = backend.device();
        let train_device = device.clone().autodiff();
        Ok(Trainer {
            config,
            data,
            out_dir,
            plan,
            backend,
            device,
            train_device,
        })
    }

    /// A new network and optimizer, seeded, and the manifest of a run that has trained no
    /// epoch yet.
    pub(super) fn fresh_state(&self, data_dir: &Path) -> State {
        let (config, data, plan) = (self.config, self.data, &self.plan);
        self.device.seed(config.seed);
        let network = Network::new(config.architecture, plan.shape, &self.train_device);
        let optimizer = Adam::new(&self.train_device);
        let run = RunInfo {
            // `auto` is recorded as the backend it picked.
            config: TrainConfig {
                backend: self.backend,
                ..config.clone()
            },
            shape: plan.shape,
            class_names: data.class_names(),
            parameters: network.num_params(),
            optimizer: "adam".into(),
            loss: "categorical_crossentropy".into(),
            threads: backend::current_threads(),
            data: DataInfo {
                dir: data_dir.to_path_buf(),
                canonical_mnist: data.is_canonical_mnist(SplitKind::Train),
                images_md5: data.checksums.images.clone(),
                labels_md5: data.checksums.labels.clone(),
                train_images: plan.selection.train.len(),
                validation_images: plan.selection.validation.len(),
            },
            completed_epochs: 0,
            train_seconds: 0.0,
            peak_rss_mb: None,
            burn_version: burn_version().into(),
            mnist_cnn_version: env!("CARGO_PKG_VERSION").into(),
            history: Vec::new(),
            checkpoint: None,
            pipeline: Some(data.pipeline),
            validation_from: Some(plan.selection.from),
            best: None,
            restored_best_epoch: None,
            started_at: Some(now_unix()),
            imported: None,
            weight_histograms: Vec::new(),
        };
        State {
            network,
            optimizer,
            run,
        }
    }

    /// What the user should know about the images chosen, before trusting the run.
    pub(super) fn warnings(&self) -> &[validation::Warning] {
        &self.plan.selection.warnings
    }

    /// Continues from the last checkpoint committed in the output directory, which must have
    /// been written by a run of the same settings and data as `state` describes.
    pub(super) fn resume(&self, state: &mut State) -> Result<()> {
        let resumed = checkpoint::load_for_resume(self.out_dir, &state.run, &self.train_device)?;
        state.network = resumed.network;
        state.optimizer = Adam::new(&self.train_device)
            .load_bytes(Bytes::from_bytes_vec(resumed.optimizer_state))
            .map_err(|e| {
                Error::corrupt(
                    &resumed.optimizer_path,
                    format!("not an optimizer state ({e})"),
                )
            })?;
        let run = &mut state.run;
        run.history = resumed.run.history;
        run.train_seconds = resumed.run.train_seconds;
        run.completed_epochs = run.history.len();
        run.checkpoint = resumed.run.checkpoint;
        run.best = resumed.run.best;
        run.restored_best_epoch = resumed.run.restored_best_epoch;
        run.weight_histograms = resumed.run.weight_histograms;
        run.config.init_from = resumed.run.config.init_from;
        // (Runs written before the start was kept: about when their first epoch began.)
        run.started_at = resumed
            .run
            .started_at
            .or(run.started_at.map(|now| now - run.train_seconds));
        // Finishes a commit that a kill interrupted, and removes files it wrote uncommitted.
        checkpoint::write_derived(self.out_dir, run, &[])?;
        plot_history(self.out_dir, &run.history)
    }

    /// Starts from the weights of the run in `dir` instead of fresh ones (the optimizer stays
    /// fresh).
    pub(super) fn init_from(&self, state: &mut State, dir: &Path) -> Result<()> {
        state.network = super::init::network_from_run(
            dir,
            self.config.architecture,
            self.plan.shape,
            &self.train_device,
        )?;
        Ok(())
    }

    /// Trains epoch `epoch` (0-based), validates, keeps the weights if they are the best so
    /// far, and commits the epoch.
    pub(super) fn epoch(
        &self,
        mut state: State,
        epoch: usize,
        observer: &mut dyn FnMut(TrainEvent),
    ) -> Result<State> {
        observer(TrainEvent::EpochStarted {
            epoch: epoch + 1,
            epochs: self.config.epochs,
            batches: self.plan.batches_in_epoch,
        });
        let started = Instant::now();
        let pass = self.pass(
            state.network,
            &mut state.optimizer,
            epoch,
            started,
            observer,
        )?;
        state.network = pass.network;
        let (val_loss, val_accuracy) = match self.validate(&state.network, observer) {
            Some((loss, accuracy)) => (Some(loss), Some(accuracy)),
            None => (None, None),
        };
        let stats = EpochStats {
            epoch: epoch + 1,
            loss: pass.totals.mean_loss(),
            accuracy: pass.totals.accuracy(),
            val_loss,
            val_accuracy,
            seconds: started.elapsed().as_secs_f64(),
            images_per_second: pass.totals.images as f64 / pass.seconds,
            learning_rate: Some(schedule::learning_rate(
                self.config.lr_schedule,
                self.config.learning_rate,
                epoch,
                self.plan.batches_in_epoch.saturating_sub(1),
                self.config.epochs,
                self.plan.batches_in_epoch,
            )),
            step_losses: pass.step_losses,
        };
        let run = &mut state.run;
        run.history.push(stats.clone());
        run.completed_epochs = run.history.len();
        run.train_seconds += started.elapsed().as_secs_f64();
        run.peak_rss_mb = backend::peak_rss_mb();
        self.keep_if_best(&state.network, run, &stats)?;
        run.weight_histograms.push(EpochHistograms {
            epoch: stats.epoch,
            parameters: weight_histograms(&state.network),
        });
        self.commit(&mut state)?;
        plot_history(self.out_dir, &state.run.history)?;
        observer(TrainEvent::EpochFinished(&stats));
        Ok(state)
    }

    /// The steps of epoch `epoch` (started at `started`), over the training images in an
    /// order seeded by the epoch.
    fn pass(
        &self,
        mut network: Network,
        optimizer: &mut Adam,
        epoch: usize,
        started: Instant,
        observer: &mut dyn FnMut(TrainEvent),
    ) -> Result<EpochPass> {
        let (config, data, shape) = (self.config, self.data, self.plan.shape);
        let train_indices = &self.plan.selection.train;
        let batches_in_epoch = self.plan.batches_in_epoch;
        let mut order: Vec<usize> = (0..train_indices.len()).collect();
        // Seeded per epoch, so a resumed run shuffles exactly as an uninterrupted one.
        order.shuffle(&mut StdRng::seed_from_u64(
            config.seed ^ (epoch as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        ));
        let order: Vec<usize> = order.into_iter().map(|i| train_indices[i]).collect();
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
                let images = Tensor::from_data(TensorData::new(values, dims), &self.train_device);
                batch_with_images(data, indices, shape.classes, images, &self.train_device)
            } else {
                make_batch(data, indices, shape.classes, &self.train_device)
            })
        };
        let mut totals = RunningTotals::default();
        let mut step_log = StepLog::new(config.log_every_steps, epoch * batches_in_epoch);
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
            let step = train_step_alongside(network, optimizer, learning_rate, batch, || {
                assemble(batch_index + 1)
            });
            next = step.alongside;
            if !step.loss.is_finite() {
                // The weights are no longer usable; the last committed checkpoint stays as it is.
                return Err(Error::Diverged {
                    epoch: epoch + 1,
                    step: batch_index + 1,
                    loss: step.loss,
                });
            }
            network = step.network;
            totals.add(indices.len(), f64::from(step.loss), step.correct);
            step_log.add(indices.len(), f64::from(step.loss));
            observer(TrainEvent::BatchFinished {
                batch: batch_index + 1,
                batches: batches_in_epoch,
                loss: totals.mean_loss(),
                accuracy: totals.accuracy(),
                images_per_second: totals.images as f64 / started.elapsed().as_secs_f64(),
            });
        }
        Ok(EpochPass {
            network,
            totals,
            step_losses: step_log.finish(),
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// The validation loss and accuracy of `network`, if the run validates.
    fn validate(
        &self,
        network: &Network,
        observer: &mut dyn FnMut(TrainEvent),
    ) -> Option<(f64, f64)> {
        let indices = &self.plan.selection.validation;
        if indices.is_empty() {
            return None;
        }
        observer(TrainEvent::Validating);
        Some(loss_and_accuracy(
            &network.valid(),
            self.data,
            indices,
            VALIDATION_BATCH,
            &self.device,
        ))
    }

    /// With early stopping: keeps `network`'s weights if `stats` has the lowest validation loss
    /// so far, and records them in `run` (committed with the epoch).
    fn keep_if_best(&self, network: &Network, run: &mut RunInfo, stats: &EpochStats) -> Result<()> {
        if self.config.early_stopping.is_some()
            && let Some(val_loss) = stats.val_loss
            && run
                .best
                .as_ref()
                .is_none_or(|best| val_loss < best.val_loss)
        {
            // Written before the manifest that names it, like the checkpoint's files.
            let model = checkpoint::keep_best(self.out_dir, network, stats.epoch)?;
            run.best = Some(BestEpoch {
                epoch: stats.epoch,
                val_loss,
                model,
            });
        }
        Ok(())
    }

    /// Commits the state as the checkpoint of `state.run.completed_epochs` epochs.
    fn commit(&self, state: &mut State) -> Result<()> {
        let optimizer_state = state.optimizer.to_bytes().map_err(|e| Error::Serialize {
            what: "optimizer state",
            reason: e.to_string(),
        })?;
        checkpoint::commit(
            self.out_dir,
            &state.network,
            &optimizer_state,
            &mut state.run,
        )
    }

    /// Early stopping ends with the best epoch's weights, as Keras's `restore_best_weights`:
    /// the file they were kept in becomes the checkpoint's weights, in a commit of its own.
    pub(super) fn restore_best(
        &self,
        state: &mut State,
        observer: &mut dyn FnMut(TrainEvent),
    ) -> Result<()> {
        let config = self.config;
        let Some(best) = state.run.best.clone() else {
            return Ok(());
        };
        if config.early_stopping.is_none() || state.run.restored_best_epoch.is_some() {
            return Ok(());
        }
        if should_stop(config, &state.run) {
            observer(TrainEvent::StoppedEarly {
                epoch: state.run.completed_epochs,
                best_epoch: best.epoch,
            });
        }
        if best.epoch != state.run.completed_epochs {
            let path = self.out_dir.join(&best.model.file);
            let bytes = best.model.read_verified(&path)?;
            state.network = Network::from_bytes(
                config.architecture,
                self.plan.shape,
                bytes,
                &path,
                &self.train_device,
            )?;
        }
        state.run.restored_best_epoch = Some(best.epoch);
        checkpoint::commit_kept_weights(self.out_dir, best.model, &mut state.run)
    }
}

/// Whether early stopping has ended the run: the validation loss has not improved for
/// `patience` epochs since the best one.
pub(super) fn should_stop(config: &TrainConfig, run: &RunInfo) -> bool {
    match (config.early_stopping, &run.best) {
        (Some(patience), Some(best)) => run.completed_epochs >= best.epoch + patience,
        _ => false,
    }
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
