//! Command-line parsing and dispatch: each subcommand calls into the library and prints.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::backend::{self, BackendKind};
use crate::bench;
use crate::data::download::{self, DownloadOptions, FileOutcome};
use crate::data::image::{Invert, load_digit};
use crate::data::import::{ImportOptions, import_folder};
use crate::data::{self, SplitKind};
use crate::evaluate::{self, MISTAKES_SHOWN};
use crate::fsutil::write_json_atomically;
use crate::model::{Architecture, InputShape, Network};
use crate::plot::{HeatmapOptions, heatmap, terminal_preview};
use crate::predict::{ClassProbability, top_classes};
use crate::train::{self, EpochStats, RunInfo, TrainConfig, TrainEvent};

const DEFAULT_DATA_DIR: &str = "data/mnist";

/// Download, inspect, train and evaluate the classic MNIST CNN, natively with burn on the CPU.
#[derive(Debug, Parser)]
#[command(name = "mnist-cnn", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOptions,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalOptions {
    /// Directory holding the four MNIST IDX files (gzipped or raw) [default: data/mnist]
    #[arg(long, global = true, env = "MNIST_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Print nothing but errors (and the JSON result with --json)
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Print a machine-readable JSON result on stdout instead of the human summary
    #[arg(long, global = true)]
    pub json: bool,
    /// Number of CPU threads for tensor work [default: all cores]
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch the four gzipped MNIST files from mirrors and verify their checksums
    Download(DownloadArgs),
    /// Draw one image as a heatmap PNG and print its label
    Heatmap(HeatmapArgs),
    /// Train the network, saving weights, history and accuracy/loss plots
    Train(TrainArgs),
    /// Test-set loss and accuracy, per-class metrics and a confusion matrix
    Evaluate(EvaluateArgs),
    /// Classify your own digit pictures, or an image of the data set
    Predict(PredictArgs),
    /// Measure training and evaluation speed per backend and batch size on real MNIST
    Bench(BenchArgs),
    /// Turn folders of labelled images into an IDX data set that every command can use
    Import(ImportArgs),
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Folder with train/<class>/* and test/<class>/*, or just <class>/*
    #[arg(value_name = "SRC")]
    pub source: PathBuf,
    /// Directory to write the four IDX files and classes.txt to
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Image size as WIDTHxHEIGHT (or one number for square images)
    #[arg(long, default_value = "28x28", value_parser = parse_size)]
    pub size: (u32, u32),
    /// Invert pictures so the subject is light on dark, as in MNIST
    #[arg(long, value_enum, default_value_t = Invert::Auto)]
    pub invert: Invert,
    /// Fraction of each class held out as the test split, for a single <class>/* tree
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
    /// Seed for the train/test split of a single <class>/* tree
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Fail on the first unreadable or non-image file instead of skipping it
    #[arg(long)]
    pub strict: bool,
}

fn parse_size(text: &str) -> std::result::Result<(u32, u32), String> {
    let parse = |part: &str| {
        part.trim()
            .parse::<u32>()
            .map_err(|_| format!("`{text}` is not a size like 28x28"))
    };
    match text.split_once(['x', 'X']) {
        Some((width, height)) => Ok((parse(width)?, parse(height)?)),
        None => parse(text).map(|side| (side, side)),
    }
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Backends to measure, comma-separated
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [BackendKind::Flex])]
    pub backends: Vec<BackendKind>,
    /// Training batch sizes to measure, comma-separated
    #[arg(long, value_delimiter = ',', default_values_t = [64, 128, 256])]
    pub batch_sizes: Vec<usize>,
    /// Evaluation batch sizes to measure, comma-separated
    #[arg(long, value_delimiter = ',', default_values_t = [100, 500, 1000])]
    pub eval_batch_sizes: Vec<usize>,
    /// Training images timed per configuration, after two warm-up steps
    #[arg(long, default_value_t = 6400)]
    pub train_images: usize,
    /// Test images classified per evaluation configuration
    #[arg(long, default_value_t = 10_000)]
    pub eval_images: usize,
    /// Also time the forward and backward pass of each CNN layer (at the first batch size)
    #[arg(long)]
    pub profile: bool,
    /// The network to measure
    #[arg(long, value_enum, default_value_t = ArchitectureArg::Cnn)]
    pub model: ArchitectureArg,
    /// Measure evaluation with the trained model in this directory (from `train`) instead of a
    /// freshly initialized one
    #[arg(long, value_name = "DIR")]
    pub model_dir: Option<PathBuf>,
    /// Also write the results as JSON to this file
    #[arg(long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Also print the results as rows of BENCHMARKS.md's table per device (see benches/gpu.sh)
    #[arg(long)]
    pub markdown: bool,
}

#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// Mirror to fetch from, a base URL or a local directory; repeat to give several, tried in order
    #[arg(
        long = "mirror",
        value_name = "URL",
        env = "MNIST_MIRROR",
        value_delimiter = ','
    )]
    pub mirrors: Vec<String>,
    /// Fetch again even when a verified file is already present
    #[arg(long)]
    pub force: bool,
    /// Seconds to wait for a mirror before trying the next one
    #[arg(long, default_value_t = 60, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct HeatmapArgs {
    /// Which image to draw (0-based)
    #[arg(long, default_value_t = 1210)]
    pub index: usize,
    /// Which split the index refers to
    #[arg(long, value_enum, default_value_t = SplitKind::Train)]
    pub split: SplitKind,
    /// Where to write the PNG [default: heatmap-<split>-<index>.png]
    #[arg(long, short, value_name = "PATH")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Passes over the training data
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Images per gradient step (128 trains fastest per epoch on a 2-core CPU; see BENCHMARKS.md)
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Adam learning rate
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Seed for weight initialisation and shuffling
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Fraction of the training images held out for validation (0 disables)
    #[arg(long, default_value_t = 0.1)]
    pub validation_split: f64,
    /// Stop each epoch after this many batches, like Keras's steps_per_epoch
    #[arg(long, value_name = "N")]
    pub steps_per_epoch: Option<usize>,
    /// Use only the first N training images, for quick runs
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Directory for the model, history, plots and checkpoint
    #[arg(long, default_value = "runs/latest", value_name = "DIR")]
    pub out: PathBuf,
    /// Continue the run in --out from its last completed epoch
    #[arg(long)]
    pub resume: bool,
    /// The network to train
    #[arg(long, value_enum, default_value_t = ArchitectureArg::Cnn)]
    pub model: ArchitectureArg,
    /// Backend of burn to compute on (wgpu and cuda need the cargo feature of that name)
    #[arg(long, value_enum, default_value_t = BackendKind::Flex)]
    pub backend: BackendKind,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ArchitectureArg {
    /// The seed's CNN: two 3x3 convolutions with max pooling, then three dense layers
    Cnn,
    /// Fully connected: Flatten-Dense128-Dense128-Dense10
    Mlp,
}

impl From<ArchitectureArg> for Architecture {
    fn from(arg: ArchitectureArg) -> Self {
        match arg {
            ArchitectureArg::Cnn => Architecture::Cnn,
            ArchitectureArg::Mlp => Architecture::Mlp,
        }
    }
}

#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// Directory of a trained model (as written by `train --out`)
    #[arg(long, default_value = "runs/latest", value_name = "DIR")]
    pub model_dir: PathBuf,
    /// Which split to evaluate on
    #[arg(long, value_enum, default_value_t = SplitKind::Test)]
    pub split: SplitKind,
    /// Images per inference batch
    #[arg(long, default_value_t = 500)]
    pub batch_size: usize,
    /// Backend of burn to compute on (wgpu and cuda need the cargo feature of that name)
    #[arg(long, value_enum, default_value_t = BackendKind::Flex)]
    pub backend: BackendKind,
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// PNG or JPEG pictures of single digits, any size
    #[arg(
        value_name = "IMAGE",
        required_unless_present = "index",
        conflicts_with = "index"
    )]
    pub images: Vec<PathBuf>,
    /// Predict this image of the data set instead
    #[arg(long)]
    pub index: Option<usize>,
    /// Split for --index
    #[arg(long, value_enum, default_value_t = SplitKind::Test)]
    pub split: SplitKind,
    /// Directory of a trained model (as written by `train --out`)
    #[arg(long, default_value = "runs/latest", value_name = "DIR")]
    pub model_dir: PathBuf,
    /// Invert pictures so the digit is light on dark, as in MNIST
    #[arg(long, value_enum, default_value_t = Invert::Auto)]
    pub invert: Invert,
    /// How many classes to list per image
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=10))]
    pub top: u8,
    /// Backend of burn to compute on (wgpu and cuda need the cargo feature of that name)
    #[arg(long, value_enum, default_value_t = BackendKind::Flex)]
    pub backend: BackendKind,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    backend::set_threads(cli.global.threads.map(Into::into))?;
    // `download` fills the directory it is given or the local default; the other commands
    // also fall back to the data shipped with the sources.
    let data_dir = match (&cli.command, cli.global.data_dir.clone()) {
        (_, Some(given)) => given,
        (Command::Download(_), None) => PathBuf::from(DEFAULT_DATA_DIR),
        (_, None) => default_data_dir(),
    };
    let session = Session {
        data_dir,
        quiet: cli.global.quiet,
        json: cli.global.json,
    };
    backend::on_compute_pool(|| match cli.command {
        Command::Download(args) => run_download(&session, args),
        Command::Heatmap(args) => run_heatmap(&session, args),
        Command::Train(args) => run_train(&session, args),
        Command::Evaluate(args) => run_evaluate(&session, args),
        Command::Predict(args) => run_predict(&session, args),
        Command::Bench(args) => run_bench(&session, args),
        Command::Import(args) => run_import(&session, args),
    })
}

/// "1 thread", "2 threads".
fn counted(count: usize, noun: &str) -> String {
    format!("{count} {noun}{}", if count == 1 { "" } else { "s" })
}

struct Session {
    data_dir: PathBuf,
    quiet: bool,
    json: bool,
}

impl Session {
    /// Whether to print the human summary on stdout.
    fn human(&self) -> bool {
        !self.quiet && !self.json
    }

    fn show_progress(&self) -> bool {
        !self.quiet && std::io::stderr().is_terminal()
    }

    fn print_json(&self, value: &serde_json::Value) -> Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        }
        Ok(())
    }
}

/// The default data directory is relative to where the tool runs; a checkout run from
/// elsewhere falls back to the data shipped beside its sources.
fn default_data_dir() -> PathBuf {
    let local = PathBuf::from(DEFAULT_DATA_DIR);
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_DATA_DIR);
    if !local.is_dir() && shipped.is_dir() {
        shipped
    } else {
        local
    }
}

fn run_download(session: &Session, args: DownloadArgs) -> Result<()> {
    let mut options = DownloadOptions {
        force: args.force,
        show_progress: session.show_progress(),
        timeout: Duration::from_secs(args.timeout),
        ..DownloadOptions::default()
    };
    if !args.mirrors.is_empty() {
        options.mirrors = args.mirrors;
    }
    let reports = download::download(&session.data_dir, &options)?;
    if session.human() {
        println!("MNIST files in {}:", session.data_dir.display());
        for report in &reports {
            let status = match &report.outcome {
                FileOutcome::AlreadyVerified => "already present, verified".to_string(),
                FileOutcome::Fetched { mirror } => format!("fetched from {mirror}, verified"),
            };
            println!("  {:<28} {:>10} bytes  {status}", report.name, report.bytes);
        }
    }
    session.print_json(&json!({ "data_dir": session.data_dir, "files": reports }))
}

fn run_heatmap(session: &Session, args: HeatmapArgs) -> Result<()> {
    let split = data::load_split(&session.data_dir, args.split)?;
    let pixels = split.checked_image(args.index, args.split)?;
    let label = split.labels[args.index];
    let label_name = &split.class_names()[label as usize];
    let output = args
        .output
        .unwrap_or_else(|| PathBuf::from(format!("heatmap-{}-{}.png", args.split, args.index)));
    let values: Vec<f64> = pixels.iter().map(|&p| f64::from(p)).collect();
    let options = HeatmapOptions::new(
        format!("{} image {} (label {label_name})", args.split, args.index),
        (0.0, 255.0),
    );
    heatmap(&output, &values, split.rows, split.cols, &options)?;
    if session.human() {
        println!("{label_name}");
        println!("{}", terminal_preview(pixels, split.rows, split.cols));
        println!("wrote {}", output.display());
    }
    session.print_json(&json!({
        "split": args.split,
        "index": args.index,
        "label": label,
        "class_name": label_name,
        "output": output,
    }))
}

fn run_train(session: &Session, args: TrainArgs) -> Result<()> {
    let config = TrainConfig {
        architecture: args.model.into(),
        backend: args.backend,
        epochs: args.epochs,
        batch_size: args.batch_size,
        learning_rate: args.lr,
        seed: args.seed,
        validation_split: args.validation_split,
        steps_per_epoch: args.steps_per_epoch,
        limit: args.limit,
    };
    config.validate()?;
    let training_data = data::load_split(&session.data_dir, SplitKind::Train)?;
    let shape = InputShape::of(&training_data);
    shape.check(config.architecture)?;
    if session.human() {
        print!("{}", summary_table(config.architecture, shape));
        if !training_data.is_canonical_mnist(SplitKind::Train) {
            println!(
                "note: the data in {} is not the canonical MNIST set: {} images of {}x{} pixels, {} classes",
                session.data_dir.display(),
                training_data.len(),
                shape.rows,
                shape.cols,
                shape.classes
            );
        }
    }
    let mut progress = TrainProgress::new(session.show_progress(), !session.quiet);
    let outcome = train::train(
        &config,
        &training_data,
        &session.data_dir,
        &args.out,
        args.resume,
        &mut |event| progress.handle(event),
    )?;
    let last = outcome.history.last();
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
            "wrote {}/{{{},{},{},{},{},{}}}",
            args.out.display(),
            train::MODEL_FILE,
            train::OPTIMIZER_FILE,
            train::RUN_FILE,
            train::HISTORY_FILE,
            train::ACCURACY_PLOT,
            train::LOSS_PLOT
        );
        println!(
            "next: mnist-cnn evaluate --model-dir {}",
            args.out.display()
        );
    }
    session.print_json(&json!({
        "out": args.out,
        "run": outcome.run,
        "history": outcome.history,
    }))
}

fn validation_suffix(stats: &EpochStats) -> String {
    match (stats.val_loss, stats.val_accuracy) {
        (Some(loss), Some(accuracy)) => {
            format!(" - val_loss: {loss:.4} - val_accuracy: {accuracy:.4}")
        }
        _ => String::new(),
    }
}

/// Keras's `model.summary()`.
fn summary_table(architecture: Architecture, shape: InputShape) -> String {
    let layers = architecture.summary(shape);
    let total: usize = layers.iter().map(|l| l.2).sum();
    let mut out = format!(
        "Model: \"{architecture}\"\n{:<34}{:<22}{:>10}\n",
        "Layer (type)", "Output Shape", "Param #"
    );
    for (name, shape, params) in layers {
        out += &format!("{name:<34}{shape:<22}{params:>10}\n");
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
}

impl TrainProgress {
    fn new(interactive: bool, lines: bool) -> Self {
        Self {
            bar: None,
            interactive,
            lines,
            epochs: 0,
        }
    }

    fn handle(&mut self, event: TrainEvent) {
        match event {
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

fn run_evaluate(session: &Session, args: EvaluateArgs) -> Result<()> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let run = RunInfo::load(&args.model_dir)?;
    let device = args.backend.start()?.device();
    let network = run.load_network(&args.model_dir, &device)?;
    let split = data::load_split(&session.data_dir, args.split)?;
    run.check_data(&split, &session.data_dir)?;
    let evaluation = evaluate::evaluate(
        &network,
        &split,
        args.split,
        &run.class_names,
        args.batch_size,
        &device,
    );
    evaluation
        .write_reports(&args.model_dir, &split)
        .context("writing the evaluation reports")?;
    if session.human() {
        println!(
            "{} images of the {} split, {:.0} images/s",
            evaluation.images, args.split, evaluation.images_per_second
        );
        println!(
            "[{:.4}, {:.4}]  (loss, accuracy)",
            evaluation.loss, evaluation.accuracy
        );
        println!();
        print!("{}", evaluation.report_table());
        println!();
        print!("{}", evaluation.confusion_table());
        println!();
        println!(
            "wrote {}/{{{},{},{}}}",
            args.model_dir.display(),
            evaluate::METRICS_FILE,
            evaluate::CONFUSION_PLOT,
            evaluate::MISCLASSIFIED_PLOT
        );
    }
    let mut summary = serde_json::to_value(&evaluation)?;
    if let Some(mistakes) = summary.get_mut("mistakes").and_then(|m| m.as_array_mut()) {
        mistakes.truncate(MISTAKES_SHOWN);
    }
    session.print_json(&summary)
}

fn run_predict(session: &Session, args: PredictArgs) -> Result<()> {
    let run = RunInfo::load(&args.model_dir)?;
    let device = args.backend.start()?.device();
    let network = run.load_network(&args.model_dir, &device)?;
    let mut results = Vec::new();
    if let Some(index) = args.index {
        let split = data::load_split(&session.data_dir, args.split)?;
        run.check_data(&split, &session.data_dir)?;
        let pixels = split.checked_image(index, args.split)?;
        let top = top_classes(
            &network,
            &run.class_names,
            pixels,
            split.rows,
            split.cols,
            args.top.into(),
            &device,
        );
        if session.human() {
            println!(
                "{} image {index} (label {}): {}",
                args.split,
                run.class_names[split.labels[index] as usize],
                describe(&top)
            );
        }
        results.push(json!({
            "split": args.split, "index": index, "label": split.labels[index], "top": top,
        }));
    }
    for path in &args.images {
        let (rows, cols) = (run.shape.rows, run.shape.cols);
        let pixels = load_digit(path, args.invert, rows, cols)?;
        let top = top_classes(
            &network,
            &run.class_names,
            &pixels,
            rows,
            cols,
            args.top.into(),
            &device,
        );
        if session.human() {
            println!("{}: {}", path.display(), describe(&top));
        }
        results.push(json!({ "image": path, "top": top }));
    }
    session.print_json(&json!({ "predictions": results }))
}

fn run_import(session: &Session, args: ImportArgs) -> Result<()> {
    let options = ImportOptions {
        size: args.size,
        invert: args.invert,
        test_fraction: args.test_fraction,
        seed: args.seed,
        strict: args.strict,
    };
    let report = import_folder(&args.source, &args.out, &options)?;
    if session.human() {
        println!(
            "imported {} classes ({}) into {}: {} training and {} test images of {}x{} pixels",
            report.classes.len(),
            report.layout,
            args.out.display(),
            report.train_images,
            report.test_images,
            report.cols,
            report.rows
        );
        println!(
            "{:>6} {:<24} {:>8} {:>8}",
            "label", "class", "train", "test"
        );
        for class in &report.classes {
            println!(
                "{:>6} {:<24} {:>8} {:>8}",
                class.label, class.class, class.train, class.test
            );
        }
        if !report.skipped.is_empty() {
            println!(
                "skipped {} files that are not readable images:",
                report.skipped.len()
            );
            for (path, reason) in &report.skipped {
                println!("  {}: {reason}", path.display());
            }
        }
        println!("next: mnist-cnn --data-dir {} train", args.out.display());
    }
    session.print_json(&serde_json::to_value(&report)?)
}

fn run_bench(session: &Session, args: BenchArgs) -> Result<()> {
    if args.batch_sizes.contains(&0) || args.eval_batch_sizes.contains(&0) {
        bail!("batch sizes must be at least 1");
    }
    if args.train_images == 0 || args.eval_images == 0 {
        bail!("--train-images and --eval-images must be at least 1");
    }
    let architecture: Architecture = args.model.into();
    let loading = std::time::Instant::now();
    let train_split = data::load_split(&session.data_dir, SplitKind::Train)?;
    let test_split = data::load_split(&session.data_dir, SplitKind::Test)?;
    let load_seconds = loading.elapsed().as_secs_f64();
    let trained = match &args.model_dir {
        Some(dir) => {
            let run = RunInfo::load(dir)?;
            run.check_data(&test_split, &session.data_dir)?;
            Some((dir, run))
        }
        None => None,
    };
    let backends = args
        .backends
        .iter()
        .map(|backend| backend.start())
        .collect::<crate::Result<Vec<_>>>()?;
    let threads = backend::current_threads();
    let say = |line: String| {
        if session.human() {
            println!("{line}");
        }
    };
    say(format!(
        "loaded {} images (gunzip, validate, checksum) in {:.0} ms",
        train_split.len() + test_split.len(),
        load_seconds * 1000.0
    ));
    say(format!(
        "{architecture} on {}; training {} images per configuration",
        counted(threads, "thread"),
        args.train_images
    ));
    for backend in backends.iter().filter(|backend| !backend.is_cpu()) {
        say(format!("{backend} runs on {}", backend.describe()));
    }
    say(format!(
        "{:<8} {:>6} {:>12} {:>16}",
        "backend", "batch", "train img/s", "s/epoch (54k)"
    ));
    let mut training = Vec::new();
    for &backend in &backends {
        for &batch_size in &args.batch_sizes {
            let result = bench::train_throughput(
                architecture,
                backend,
                &train_split,
                batch_size,
                args.train_images,
            );
            say(format!(
                "{:<8} {:>6} {:>12.0} {:>16.1}",
                backend.name(),
                batch_size,
                result.images_per_second,
                bench::EPOCH_IMAGES / result.images_per_second
            ));
            training.push(result);
        }
    }
    say(format!(
        "\n{:<8} {:>6} {:>12}",
        "backend", "batch", "eval img/s"
    ));
    let mut evaluation = Vec::new();
    for &backend in &backends {
        let device = backend.device();
        device.seed(42);
        let network = match &trained {
            Some((dir, run)) => run.load_network(dir, &device)?,
            None => Network::new(architecture, InputShape::of(&train_split), &device),
        };
        for &batch_size in &args.eval_batch_sizes {
            let result = bench::eval_throughput(
                &network,
                backend,
                &test_split,
                batch_size,
                args.eval_images,
            );
            say(format!(
                "{:<8} {:>6} {:>12.0}",
                backend.name(),
                batch_size,
                result.images_per_second
            ));
            evaluation.push(result);
        }
    }
    let mut profile = Vec::new();
    if args.profile {
        let batch_size = args.batch_sizes[0];
        for &backend in &backends {
            say(format!(
                "\nper-layer time, {backend}, batch {batch_size} (ms per batch)\n{:<30} {:>10} {:>10}",
                "layer", "forward", "backward"
            ));
            let layers = bench::layer_profile(backend, &train_split, batch_size, 10);
            for layer in &layers {
                say(format!(
                    "{:<30} {:>10.2} {:>10.2}",
                    layer.layer, layer.forward_ms, layer.backward_ms
                ));
            }
            profile.push(json!({ "backend": backend, "batch_size": batch_size, "layers": layers }));
        }
    }
    let result = json!({
        "model": architecture,
        "threads": threads,
        "load_seconds": load_seconds,
        "peak_rss_mb": backend::peak_rss_mb(),
        "training": training,
        "evaluation": evaluation,
        "profile": profile,
    });
    if let Some(path) = &args.output {
        write_json_atomically(path, &result)?;
        say(format!("wrote {}", path.display()));
    }
    if args.markdown && !session.json {
        println!("{}", bench::MARKDOWN_HEADER);
        for row in bench::markdown_rows(&training, &evaluation) {
            println!("{row}");
        }
    }
    session.print_json(&result)
}

fn describe(top: &[ClassProbability]) -> String {
    top.iter()
        .map(|c| format!("{} ({:.1}%)", c.name, c.probability * 100.0))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_flag_has_help() {
        fn check(command: &clap::Command) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" {
                    assert!(
                        arg.get_help().is_some(),
                        "{} --{id} has no help",
                        command.get_name()
                    );
                }
            }
            command.get_subcommands().for_each(check);
        }
        check(&Cli::command());
    }
}
