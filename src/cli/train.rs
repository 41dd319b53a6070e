//! `train`: its flags, the model summary it prints, and its progress display.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use mnist_cnn::backend::BackendKind;
use mnist_cnn::choice::Choice;
use mnist_cnn::data::{self, SplitKind};
use mnist_cnn::model::{Architecture, InputShape, Network};
use mnist_cnn::run::catalog;
use mnist_cnn::run::logs::CSV_FILE;
use mnist_cnn::run::{ACCURACY_PLOT, HISTORY_FILE, LOSS_PLOT, MODEL_FILE, RUN_FILE};
use mnist_cnn::train::{
    self, EpochStats, LrSchedule, TrainConfig, TrainEvent, ValidationFrom, Warning, WarningKind,
};

use super::{Session, counted, values};

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Passes over the training data
    #[arg(long, default_value_t = 10, value_parser = values::positive)]
    pub epochs: usize,
    /// Images per gradient step (the tutorial's 128; 256 trains about 6% faster per epoch on a
    /// 2-core CPU, see BENCHMARKS.md)
    #[arg(long, default_value_t = 128, value_parser = values::positive)]
    pub batch_size: usize,
    /// Adam learning rate
    #[arg(long, default_value_t = 1e-3, value_parser = values::positive_number)]
    pub lr: f64,
    /// Seed for weight initialisation and shuffling
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Fraction of the training images held out for validation (0 disables)
    #[arg(long, default_value_t = 0.1, value_parser = values::fraction)]
    pub validation_split: f64,
    /// Which images validate: auto takes the last fraction as Keras does when it holds the
    /// same classes as the rest (data in random order, as MNIST), else a seeded stratified pick
    #[arg(long, value_parser = values::choice::<ValidationFrom>(), default_value = ValidationFrom::Auto.name())]
    pub validation_from: ValidationFrom,
    /// Stop each epoch after this many batches, like Keras's steps_per_epoch
    #[arg(long, value_name = "N", value_parser = values::positive)]
    pub steps_per_epoch: Option<usize>,
    /// Use only N training images, for quick runs: the first N, or a seeded stratified sample
    /// when the first N miss some classes
    #[arg(long, value_name = "N", value_parser = values::positive)]
    pub limit: Option<usize>,
    /// Shift each training image by a few pixels and rotate it a little, randomly (seeded)
    #[arg(long)]
    pub augment: bool,
    /// How the learning rate changes over the run
    #[arg(long, value_parser = values::choice::<LrSchedule>(), default_value = LrSchedule::Constant.name())]
    pub lr_schedule: LrSchedule,
    /// Stop when the validation loss has not improved for PATIENCE epochs, ending with the
    /// weights of the best epoch
    #[arg(long, value_name = "PATIENCE", value_parser = values::positive)]
    pub early_stopping: Option<usize>,
    /// Directory for the model, history, logs, plots and checkpoint; a run already there is
    /// refused without --resume or --overwrite [default: a new folder runs/<UTC time>[-NAME];
    /// with --resume, the run runs/latest points at]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// A name for the new run's folder, after its time: runs/<UTC time>-NAME
    #[arg(long, value_name = "NAME", conflicts_with = "out", value_parser = values::run_name)]
    pub name: Option<String>,
    /// Continue the run in --out (or runs/latest) from its last completed epoch
    #[arg(long)]
    pub resume: bool,
    /// Replace the run in --out: its files are removed before the new run starts
    #[arg(long, conflicts_with = "resume", requires = "out")]
    pub overwrite: bool,
    /// Log the training loss (run.json, TensorBoard) as its mean over every N steps
    #[arg(long, value_name = "N", default_value_t = mnist_cnn::run::LOG_EVERY_STEPS, value_parser = values::positive)]
    pub log_every_steps: usize,
    /// Start from the weights of the run in DIR (trained, or made by import-model) instead of
    /// fresh ones, with a fresh optimizer
    #[arg(long, value_name = "DIR", conflicts_with = "resume")]
    pub init_from: Option<PathBuf>,
    /// The network to train
    #[arg(long, value_parser = values::choice::<Architecture>(), default_value = Architecture::Cnn.name())]
    pub model: Architecture,
    /// Backend of burn to train on (wgpu and cuda need the cargo feature of that name)
    #[arg(long, value_parser = values::choice::<BackendKind>(), default_value = BackendKind::Flex.name())]
    pub backend: BackendKind,
}

pub(crate) fn run_train(session: &Session, args: TrainArgs) -> Result<()> {
    let config = TrainConfig {
        architecture: args.model,
        backend: args.backend,
        epochs: args.epochs,
        batch_size: args.batch_size,
        learning_rate: args.lr,
        seed: args.seed,
        validation_split: args.validation_split,
        steps_per_epoch: args.steps_per_epoch,
        limit: args.limit,
        validation_from: args.validation_from,
        augment: args.augment,
        lr_schedule: args.lr_schedule,
        early_stopping: args.early_stopping,
        log_every_steps: args.log_every_steps,
        init_from: args
            .init_from
            .map(|dir| mnist_cnn::run::catalog::find_run_dir(&dir)),
    };
    config.validate()?;
    let training_data = data::load_split(&session.data_dir, SplitKind::Train)?;
    let target = catalog::train_target(
        args.out.as_deref(),
        args.name.as_deref(),
        args.resume,
        args.overwrite,
    )?;
    let out = target.dir.clone();
    if target.replaced && !session.quiet {
        eprintln!("replacing the run in {}", out.display());
    }
    let mut progress = TrainProgress::new(session.show_progress(), !session.quiet);
    let mut marked = false;
    let outcome = train::train(
        &config,
        &training_data,
        &session.data_dir,
        &out,
        args.resume,
        &mut |event| match event {
            TrainEvent::EpochFinished(_) if !marked => {
                marked = true;
                mark_latest(&out, session.quiet);
                progress.handle(event);
            }
            TrainEvent::Started { run, network } if session.human() => {
                print!("{}", summary_table(network, run.shape));
                if !run.data.canonical_mnist {
                    println!(
                        "note: the data in {} is not the canonical MNIST set: {} images of {}x{} pixels, {} classes",
                        session.data_dir.display(),
                        training_data.len(),
                        run.shape.rows,
                        run.shape.cols,
                        run.shape.classes
                    );
                }
            }
            event => progress.handle(event),
        },
    );
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(error) => {
            if target.created {
                catalog::discard_unstarted(&out);
            }
            return Err(error.into());
        }
    };
    let last = outcome.run.history.last();
    if let Some(epoch) = outcome.run.restored_best_epoch
        && session.human()
    {
        println!(
            "early stopping: the model has the weights of epoch {epoch}, the lowest validation loss"
        );
    }
    if session.human() {
        if let Some(last) = last {
            println!(
                "trained {} in {:.1}s on {} ({}): loss {:.4}, accuracy {:.4}{}",
                counted(outcome.run.completed_epochs, "epoch"),
                outcome.run.train_seconds,
                outcome.run.config.backend,
                outcome.run.config.backend.describe(),
                last.loss,
                last.accuracy,
                validation_suffix(last),
            );
        }
        println!(
            "wrote {}/{{{},{},{},{},{},{}, TensorBoard events}}",
            out.display(),
            MODEL_FILE,
            RUN_FILE,
            HISTORY_FILE,
            CSV_FILE,
            ACCURACY_PLOT,
            LOSS_PLOT
        );
        if catalog::latest_name(Path::new(catalog::RUNS_DIR))
            .is_some_and(|name| Path::new(catalog::RUNS_DIR).join(name) == out)
        {
            println!("next: mnist-cnn evaluate");
        } else {
            println!("next: mnist-cnn evaluate --model-dir {}", out.display());
        }
    }
    session.print_json(&json!({
        "out": out,
        "run": outcome.run,
        "history": outcome.run.history,
        "warnings": progress.warnings,
    }))
}

/// Points `runs/latest` at the run once its first epoch is committed (a run that fails before
/// leaves it where it was). Training goes on if that fails.
fn mark_latest(out: &Path, quiet: bool) {
    match catalog::mark_latest(out) {
        Ok(Some(moved)) if !quiet => eprintln!(
            "note: moved the run of an older mnist-cnn from {}/{} to {}",
            catalog::RUNS_DIR,
            catalog::LATEST,
            moved.display()
        ),
        Ok(_) => {}
        Err(error) => eprintln!(
            "warning: {}/{} not updated: {error}",
            catalog::RUNS_DIR,
            catalog::LATEST
        ),
    }
}

fn validation_suffix(stats: &EpochStats) -> String {
    match (stats.val_loss, stats.val_accuracy) {
        (Some(loss), Some(accuracy)) => {
            format!(" - val_loss: {loss:.4} - val_accuracy: {accuracy:.4}")
        }
        _ => String::new(),
    }
}

/// Keras's `model.summary()`, read off the network.
fn summary_table(network: &Network, shape: InputShape) -> String {
    let architecture = network.architecture();
    let layers = network.summary(shape);
    let total: usize = layers.iter().map(|layer| layer.parameters).sum();
    let mut out = format!(
        "Model: \"{architecture}\"\n{:<34}{:<22}{:>10}\n",
        "Layer (type)", "Output Shape", "Param #"
    );
    for layer in &layers {
        out += &format!(
            "{:<34}{:<22}{:>10}\n",
            layer.name,
            layer.output_shape(),
            layer.parameters
        );
    }
    out += &format!("Total params: {total}\n");
    out
}

/// A progress bar per epoch on a terminal, otherwise one Keras-style line per epoch.
struct TrainProgress {
    bar: Option<ProgressBar>,
    interactive: bool,
    lines: bool,
    epochs: usize,
    warnings: Vec<Warning>,
}

impl TrainProgress {
    fn new(interactive: bool, lines: bool) -> Self {
        Self {
            bar: None,
            interactive,
            lines,
            epochs: 0,
            warnings: Vec::new(),
        }
    }

    fn handle(&mut self, event: TrainEvent) {
        match event {
            TrainEvent::Started { .. } => {}
            TrainEvent::Resumed { completed_epochs } => {
                if self.lines {
                    eprintln!("resuming after epoch {completed_epochs}");
                }
            }
            TrainEvent::EpochStarted {
                epoch,
                epochs,
                batches,
            } => {
                self.epochs = epochs;
                if self.interactive {
                    let bar = ProgressBar::new(batches as u64).with_style(
                        ProgressStyle::with_template(
                            "Epoch {prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}",
                        )
                        .expect("valid template")
                        .progress_chars("=> "),
                    );
                    bar.set_prefix(format!("{epoch}/{epochs}"));
                    self.bar = Some(bar);
                }
            }
            TrainEvent::BatchFinished {
                batch,
                loss,
                accuracy,
                images_per_second,
                ..
            } => {
                if let Some(bar) = &self.bar {
                    bar.set_position(batch as u64);
                    bar.set_message(format!(
                        "loss: {loss:.4} - accuracy: {accuracy:.4} - {images_per_second:.0} img/s"
                    ));
                }
            }
            TrainEvent::Validating => {
                if let Some(bar) = &self.bar {
                    bar.set_message("validating");
                }
            }
            TrainEvent::Warning(warning) => {
                // Always shown: a warning is why a run's numbers may not mean what they seem.
                let hint = match warning.kind {
                    WarningKind::ValidationClasses => " (--validation-from random)",
                    WarningKind::ValidationResampled => {
                        " (--validation-from last keeps Keras's choice)"
                    }
                    WarningKind::LimitClasses => "",
                };
                eprintln!("warning: {}{hint}", warning.message);
                self.warnings.push(warning.clone());
            }
            TrainEvent::StoppedEarly { epoch, best_epoch } => {
                if self.lines {
                    eprintln!(
                        "early stopping after epoch {epoch}: no better validation loss since epoch {best_epoch}"
                    );
                }
            }
            TrainEvent::EpochFinished(stats) => {
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
                if self.lines {
                    eprintln!(
                        "Epoch {}/{} - {:.1}s - {:.0} img/s - loss: {:.4} - accuracy: {:.4}{}",
                        stats.epoch,
                        self.epochs,
                        stats.seconds,
                        stats.images_per_second,
                        stats.loss,
                        stats.accuracy,
                        validation_suffix(stats)
                    );
                }
            }
        }
    }
}
