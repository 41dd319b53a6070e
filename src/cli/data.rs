//! Data commands: `download`, `heatmap` and `import`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use indicatif::{ProgressBar, ProgressStyle};
use mnist_cnn::choice::Choice;
use mnist_cnn::data::download::{self, DownloadEvent, DownloadOptions, FileOutcome};
use mnist_cnn::data::image::Invert;
use mnist_cnn::data::import::{ImportOptions, import_folder};
use mnist_cnn::data::pipeline::Fit;
use mnist_cnn::data::{self, SplitKind};
use mnist_cnn::plot::picture::{brightness, input_picture};
use mnist_cnn::plot::{HeatmapOptions, heatmap, terminal_preview};

use super::{Session, values};

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
    /// Seconds to wait for a mirror to connect, answer or send more data before retrying it
    #[arg(long, default_value_t = 60, value_name = "SECONDS", value_parser = values::timeout_seconds)]
    pub timeout: u64,
    /// Seconds one file may take from one mirror, start to finish, before the next is tried
    #[arg(long, default_value_t = 1800, value_name = "SECONDS", value_parser = values::timeout_seconds)]
    pub deadline: u64,
    /// Bytes per second below which (over a minute) a mirror is given up for the next; 0 never
    #[arg(long, default_value_t = 1024, value_name = "BYTES")]
    pub min_rate: u64,
}

#[derive(Debug, Args)]
pub struct HeatmapArgs {
    /// Which image to draw (0-based)
    #[arg(long, default_value_t = 1210)]
    pub index: usize,
    /// Which split the index refers to
    #[arg(long, value_parser = values::choice::<SplitKind>(), default_value = SplitKind::Train.name())]
    pub split: SplitKind,
    /// Where to write the PNG (the name must end in .png) [default: heatmap-<split>-<index>.png]
    #[arg(long, short, value_name = "PATH", value_parser = values::png_path)]
    pub output: Option<PathBuf>,
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
    #[arg(long, default_value = "28x28", value_parser = values::image_size)]
    pub size: (u32, u32),
    /// Invert pictures so the subject is light on dark, as in MNIST
    #[arg(long, value_parser = values::choice::<Invert>(), default_value = Invert::Auto.name())]
    pub invert: Invert,
    /// Keep the pictures' colour (red, green, blue) instead of making them grayscale
    #[arg(long)]
    pub color: bool,
    /// How each picture is brought to --size
    #[arg(long, value_parser = values::choice::<Fit>(), default_value = Fit::Stretch.name())]
    pub fit: Fit,
    /// Fraction of each class held out as the test split, for a single <class>/* tree
    #[arg(long, default_value_t = 0.2, value_parser = values::fraction)]
    pub test_fraction: f64,
    /// Seed for the train/test split of a single <class>/* tree and for the random order both
    /// splits are stored in (recorded in dataset.json)
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Fail on the first unreadable or non-image file instead of skipping it
    #[arg(long)]
    pub strict: bool,
}

pub(crate) fn run_download(session: &Session, args: DownloadArgs) -> Result<()> {
    let mut options = DownloadOptions {
        force: args.force,
        timeout: Duration::from_secs(args.timeout),
        deadline: Duration::from_secs(args.deadline),
        min_rate: args.min_rate,
        ..DownloadOptions::default()
    };
    if !args.mirrors.is_empty() {
        options.mirrors = args.mirrors;
    }
    let mut progress = DownloadProgress { bar: None };
    let show = session.show_progress();
    let reports = download::download_observed(&session.data_dir, &options, &mut |event| {
        if show {
            progress.handle(event);
        }
    })?;
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

/// The download's progress on stderr: a byte bar per file, and a note per retry and per
/// failed mirror.
struct DownloadProgress {
    bar: Option<ProgressBar>,
}

impl DownloadProgress {
    fn handle(&mut self, event: DownloadEvent) {
        match event {
            DownloadEvent::Started { file, total } => {
                let (bar, template) = match total {
                    Some(total) => (
                        ProgressBar::new(total),
                        "{msg:>26} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                    ),
                    None => (
                        ProgressBar::new_spinner(),
                        "{msg:>26} {spinner} {bytes} {bytes_per_sec}",
                    ),
                };
                bar.set_style(
                    ProgressStyle::with_template(template)
                        .expect("valid template")
                        .progress_chars("=> "),
                );
                bar.set_message(file.to_string());
                self.bar = Some(bar);
            }
            DownloadEvent::Received { bytes, .. } => {
                if let Some(bar) = &self.bar {
                    bar.inc(bytes);
                }
            }
            DownloadEvent::Finished { .. } => {
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
            }
            DownloadEvent::Retrying {
                file,
                mirror,
                reason,
                wait,
            } => eprintln!("{file}: {mirror}: {reason}; retrying in {wait:?}"),
            DownloadEvent::MirrorFailed {
                file,
                mirror,
                reason,
            } => eprintln!("{file}: {mirror} failed: {reason}"),
        }
    }
}

pub(crate) fn run_heatmap(session: &Session, args: HeatmapArgs) -> Result<()> {
    let split = data::load_split(&session.data_dir, args.split)?;
    let pixels = split.checked_image(args.index, args.split)?;
    let label = split.labels[args.index];
    let class_names = split.class_names();
    let label_name = &class_names[label as usize];
    let output = args
        .output
        .unwrap_or_else(|| PathBuf::from(format!("heatmap-{}-{}.png", args.split, args.index)));
    if split.channels == 1 {
        let values: Vec<f64> = pixels.iter().map(|&p| f64::from(p)).collect();
        let options = HeatmapOptions::new(
            format!("{} image {} (label {label_name})", args.split, args.index),
            (0.0, 255.0),
        );
        heatmap(&output, &values, split.rows, split.cols, &options)?;
    } else {
        // A heatmap has one value a cell; colour images are drawn as the pictures they are.
        input_picture(&output, pixels, split.rows, split.cols, split.channels)?;
    }
    if session.human() {
        println!("{label_name}");
        let preview = brightness(pixels, split.channels);
        println!("{}", terminal_preview(&preview, split.rows, split.cols));
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

pub(crate) fn run_import(session: &Session, args: ImportArgs) -> Result<()> {
    let options = ImportOptions {
        size: args.size,
        invert: args.invert,
        color: args.color,
        fit: args.fit,
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
            "pipeline: {}; stored in random order (seed {})",
            report.pipeline.name(),
            report.shuffle_seed
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
