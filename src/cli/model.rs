//! Commands that use a network: `evaluate`, `predict` and `bench`.

use std::collections::HashSet;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;

use mnist_cnn::backend::BackendKind;
use mnist_cnn::bench::{self, Plan};
use mnist_cnn::data::image::Invert;
use mnist_cnn::data::{self, SplitKind};
use mnist_cnn::evaluate::{self, MISTAKES_SHOWN};
use mnist_cnn::fsutil::write_json_atomically;
use mnist_cnn::model::{Architecture, InputShape};
use mnist_cnn::plot::picture::{brightness, input_picture, is_input_picture};
use mnist_cnn::plot::terminal_preview;
use mnist_cnn::predict::{ClassProbability, top_classes};
use mnist_cnn::run::logs::{self, EvaluationLog};
use mnist_cnn::run::{TrainedRun, catalog};

use super::{Session, counted, values};

#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// Directory of a trained model (as written by `train`), or the name of a run in runs/
    #[arg(long, default_value = "runs/latest", value_name = "DIR")]
    pub model_dir: PathBuf,
    /// Which split to evaluate on
    #[arg(long, value_parser = values::choice::<SplitKind>(), default_value = SplitKind::Test.name())]
    pub split: SplitKind,
    /// Images per inference batch
    #[arg(long, default_value_t = 500, value_parser = values::positive)]
    pub batch_size: usize,
    /// Backend of burn to evaluate on (wgpu and cuda need the cargo feature of that name)
    #[arg(long, value_parser = values::choice::<BackendKind>(), default_value = BackendKind::Flex.name())]
    pub backend: BackendKind,
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// PNG or JPEG pictures, any size; each is prepared as the model's training pictures were
    /// (its pipeline, from run.json)
    #[arg(
        value_name = "IMAGE",
        required_unless_present = "index",
        conflicts_with = "index"
    )]
    pub images: Vec<PathBuf>,
    /// Predict this image of the data set instead (several: comma-separated, or the flag
    /// repeated)
    #[arg(long, value_delimiter = ',')]
    pub index: Vec<usize>,
    /// Split for --index
    #[arg(long, value_parser = values::choice::<SplitKind>(), default_value = SplitKind::Test.name())]
    pub split: SplitKind,
    /// Directory of a trained model (as written by `train`), or the name of a run in runs/
    #[arg(long, default_value = "runs/latest", value_name = "DIR")]
    pub model_dir: PathBuf,
    /// Invert pictures so the subject is light on dark [default: as the model's pipeline does]
    #[arg(long, value_parser = values::choice::<Invert>())]
    pub invert: Option<Invert>,
    /// Show the input the model actually sees: a preview in the terminal and a PNG in the
    /// current directory (STEM-input.png for a picture STEM.jpg; input-SPLIT-INDEX.png for
    /// --index; STEM-input-2.png and on where a file of yours or another picture has the name)
    #[arg(long)]
    pub show: bool,
    /// How many classes to list per image
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=10))]
    pub top: u8,
    /// Backend of burn to predict on (wgpu and cuda need the cargo feature of that name)
    #[arg(long, value_parser = values::choice::<BackendKind>(), default_value = BackendKind::Flex.name())]
    pub backend: BackendKind,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Backends to measure, comma-separated (wgpu and cuda need the cargo feature of that name)
    #[arg(long, value_parser = values::choice::<BackendKind>(), value_delimiter = ',', default_value = BackendKind::Flex.name())]
    pub backends: Vec<BackendKind>,
    /// Training batch sizes to measure, comma-separated (at most 65536)
    #[arg(long, value_delimiter = ',', default_values_t = [64, 128, 256], value_parser = values::bench_batch_size)]
    pub batch_sizes: Vec<usize>,
    /// Evaluation batch sizes to measure, comma-separated (at most 65536)
    #[arg(long, value_delimiter = ',', default_values_t = [100, 500, 1000], value_parser = values::bench_batch_size)]
    pub eval_batch_sizes: Vec<usize>,
    /// Training images timed per configuration, after two warm-up steps (at most 10 million)
    #[arg(long, default_value_t = 6400, value_parser = values::bench_images)]
    pub train_images: usize,
    /// Test images classified per evaluation configuration (at most 10 million)
    #[arg(long, default_value_t = 10_000, value_parser = values::bench_images)]
    pub eval_images: usize,
    /// Also time the forward and backward pass of each layer of the network (at the first
    /// batch size)
    #[arg(long)]
    pub profile: bool,
    /// The network to measure
    #[arg(long, value_parser = values::choice::<Architecture>(), default_value = Architecture::Cnn.name())]
    pub model: Architecture,
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

pub(crate) fn run_evaluate(session: &Session, mut args: EvaluateArgs) -> Result<()> {
    args.model_dir = catalog::find_run_dir(&args.model_dir);
    let device = args.backend.start()?.device();
    let run = TrainedRun::open(&args.model_dir, &device)?;
    let split = data::load_split(&session.data_dir, args.split)?;
    run.info.check_data(&split, &session.data_dir)?;
    let evaluation = evaluate::evaluate(
        &run.network,
        &split,
        args.split,
        &run.info.class_names,
        args.batch_size,
        &device,
    );
    // The metrics are printed even when the reports cannot be written (a read-only run).
    let mut written = match evaluation.write_reports(&args.model_dir, &split) {
        Ok(written) => written,
        Err(error) => {
            // `{:#}` adds the cause (e.g. "Permission denied") to the path the error names.
            eprintln!(
                "warning: the evaluation reports were not written into {}: {:#}",
                args.model_dir.display(),
                anyhow::Error::from(error)
            );
            Vec::new()
        }
    };
    // TensorBoard's copy of the reports, when they were written.
    let log = (!written.is_empty()).then(|| EvaluationLog {
        split: args.split.to_string(),
        loss: evaluation.loss,
        accuracy: evaluation.accuracy,
        pictures: written
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "png"))
            .cloned()
            .collect(),
    });
    match log.map(|log| logs::write_evaluation(&args.model_dir, &run.info, &log)) {
        Some(Ok(path)) => written.push(path),
        Some(Err(error)) => {
            eprintln!("warning: no TensorBoard events for this evaluation: {error:#}")
        }
        None => {}
    }
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
        for path in &written {
            println!("wrote {}", path.display());
        }
    }
    let mut summary = serde_json::to_value(&evaluation)?;
    if let Some(mistakes) = summary.get_mut("mistakes").and_then(|m| m.as_array_mut()) {
        mistakes.truncate(MISTAKES_SHOWN);
    }
    session.print_json(&summary)
}

pub(crate) fn run_predict(session: &Session, mut args: PredictArgs) -> Result<()> {
    args.model_dir = catalog::find_run_dir(&args.model_dir);
    let device = args.backend.start()?.device();
    let run = TrainedRun::open(&args.model_dir, &device)?;
    let (info, network) = (&run.info, &run.network);
    let shape = info.shape;
    let top = usize::from(args.top);
    let mut results = Vec::new();
    // The input PNGs of --show written so far: two pictures named alike get two files.
    let mut written = HashSet::new();
    if !args.index.is_empty() {
        let split = data::load_split(&session.data_dir, args.split)?;
        info.check_data(&split, &session.data_dir)?;
        for &index in &args.index {
            let pixels = split.checked_image(index, args.split)?;
            let ranked = top_classes(network, &info.class_names, pixels, shape, top, &device);
            let label = split.labels[index];
            if session.human() {
                println!(
                    "{} image {index} (label {}): {}",
                    args.split,
                    info.class_names[usize::from(label)],
                    describe(&ranked)
                );
            }
            let shown = if args.show {
                let path = png_name(&format!("input-{}-{index}", args.split), &mut written);
                Some(show_input(session, &path, pixels, shape)?)
            } else {
                None
            };
            let mut item = json!({
                "split": args.split, "index": index, "label": label, "top": ranked,
            });
            if let Some(shown) = shown {
                item["input_png"] = json!(shown);
            }
            results.push(item);
        }
    }
    let pipeline = info.picture_pipeline(args.invert).with_context(|| {
        args.model_dir
            .join(mnist_cnn::run::RUN_FILE)
            .display()
            .to_string()
    })?;
    // Each picture gets its answer or its error; one unreadable picture does not hide the rest.
    let mut failures = 0;
    for path in &args.images {
        match pipeline.load(path) {
            Ok(pixels) => {
                let ranked = top_classes(network, &info.class_names, &pixels, shape, top, &device);
                if session.human() {
                    println!("{}: {}", path.display(), describe(&ranked));
                }
                let shown = if args.show {
                    let name = png_name(&input_png_stem(path), &mut written);
                    Some(show_input(session, &name, &pixels, shape)?)
                } else {
                    None
                };
                let mut item = json!({ "image": path, "top": ranked });
                // Only with --show, so that the answer is the same as `POST /api/predict`'s.
                if let Some(shown) = shown {
                    item["input_png"] = json!(shown);
                }
                results.push(item);
            }
            Err(error) => {
                failures += 1;
                if !session.quiet {
                    eprintln!("error: {error}");
                }
                results.push(json!({ "image": path, "error": error.to_string() }));
            }
        }
    }
    session.print_json(&json!({ "predictions": results }))?;
    if failures > 0 {
        bail!(
            "{failures} of {} could not be classified",
            counted(args.images.len(), "picture")
        );
    }
    Ok(())
}

/// `some/folder/photo.jpg` -> `photo-input`, for a PNG in the current directory, not beside
/// the picture, where a later import would take it for a training picture.
fn input_png_stem(picture: &std::path::Path) -> String {
    let stem = picture
        .file_stem()
        .map_or_else(|| "picture".into(), |s| s.to_string_lossy().into_owned());
    format!("{stem}-input")
}

/// `stem.png`, else `stem-2.png`, `stem-3.png`, ...: the first name this run has not written
/// (`written`) that is free or holds an input picture an earlier `--show` wrote. A file of the
/// user's is never overwritten.
fn png_name(stem: &str, written: &mut HashSet<PathBuf>) -> PathBuf {
    let free = |path: &PathBuf| {
        !written.contains(path)
            && match std::fs::symlink_metadata(path) {
                Err(e) => e.kind() == std::io::ErrorKind::NotFound,
                Ok(metadata) => metadata.is_file() && is_input_picture(path),
            }
    };
    let path = (1u64..)
        .map(|n| match n {
            1 => PathBuf::from(format!("{stem}.png")),
            n => PathBuf::from(format!("{stem}-{n}.png")),
        })
        .find(free)
        .expect("some name is free");
    written.insert(path.clone());
    path
}

/// Writes the network's input as a PNG and previews it in the terminal; returns the PNG's path.
fn show_input(
    session: &Session,
    path: &std::path::Path,
    pixels: &[u8],
    shape: InputShape,
) -> Result<PathBuf> {
    input_picture(path, pixels, shape.rows, shape.cols, shape.channels)?;
    if session.human() {
        let preview = brightness(pixels, shape.channels);
        println!("{}", terminal_preview(&preview, shape.rows, shape.cols));
        println!(
            "the model's input ({}x{}) written to {}",
            shape.cols,
            shape.rows,
            path.display()
        );
    }
    Ok(path.to_path_buf())
}

pub(crate) fn run_bench(session: &Session, args: BenchArgs) -> Result<()> {
    let plan = Plan {
        architecture: args.model,
        backends: args.backends,
        train_batch_sizes: args.batch_sizes,
        eval_batch_sizes: args.eval_batch_sizes,
        train_images: args.train_images,
        eval_images: args.eval_images,
        profile: args.profile,
        model_dir: args.model_dir.map(|dir| catalog::find_run_dir(&dir)),
    };
    let say = |line: String| {
        if session.human() {
            println!("{line}");
        }
    };
    let report = bench::run(&plan, &session.data_dir, &mut |event| match event {
        bench::Event::Loaded { seconds, images } => say(format!(
            "loaded {images} images (gunzip, validate, checksum) in {:.0} ms",
            seconds * 1000.0
        )),
        bench::Event::TrainingStarted { backends } => {
            say(format!(
                "{} on {}; training {} images per configuration",
                plan.architecture,
                counted(mnist_cnn::backend::current_threads(), "thread"),
                plan.train_images
            ));
            for backend in backends.iter().filter(|backend| !backend.is_cpu()) {
                say(format!("{backend} runs on {}", backend.describe()));
            }
            say(format!(
                "{:<8} {:>6} {:>12} {:>16}",
                "backend", "batch", "train img/s", "s/epoch (54k)"
            ));
        }
        bench::Event::Training(result) => say(format!(
            "{:<8} {:>6} {:>12.0} {:>16.1}",
            result.backend.name(),
            result.batch_size,
            result.images_per_second,
            bench::EPOCH_IMAGES / result.images_per_second
        )),
        bench::Event::Floor(floor) => {
            say(format!(
                "\nfloor: training does {:.2} MFLOP per image (forward {:.2}, backward {:.2})",
                floor.flops.total() / 1e6,
                floor.flops.forward / 1e6,
                floor.flops.backward / 1e6,
            ));
            say(format!(
                "       f32 matrix product: {:.0} GFLOP/s on {}, so at least {:.2} s per epoch \
                 of {:.0}k images",
                floor.gemm_gflops,
                counted(floor.threads, "thread"),
                floor.floor_epoch_seconds,
                bench::EPOCH_IMAGES / 1000.0,
            ));
            say(format!(
                "       measured at batch {}: {:.2} s per epoch, {:.2}x the floor",
                floor.batch_size, floor.epoch_seconds, floor.times_floor
            ));
        }
        bench::Event::EvaluationStarted => say(format!(
            "\n{:<8} {:>6} {:>12}",
            "backend", "batch", "eval img/s"
        )),
        bench::Event::Evaluation(result) => say(format!(
            "{:<8} {:>6} {:>12.0}",
            result.backend.name(),
            result.batch_size,
            result.images_per_second
        )),
        bench::Event::Profile(profile) => {
            say(format!(
                "\nper-layer time, {}, batch {} (ms per batch)\n{:<30} {:>10} {:>10}",
                profile.backend, profile.batch_size, "layer", "forward", "backward"
            ));
            for layer in &profile.layers {
                say(format!(
                    "{:<30} {:>10.2} {:>10.2}",
                    layer.layer, layer.forward_ms, layer.backward_ms
                ));
            }
        }
    })?;
    if let Some(path) = &args.output {
        write_json_atomically(path, &report)?;
        say(format!("wrote {}", path.display()));
    }
    if args.markdown && !session.json {
        println!("{}", bench::MARKDOWN_HEADER);
        for row in bench::markdown_rows(&report) {
            println!("{row}");
        }
    }
    session.print_json(&report)
}

fn describe(top: &[ClassProbability]) -> String {
    top.iter()
        .map(|c| format!("{} ({:.1}%)", c.name, c.probability * 100.0))
        .collect::<Vec<_>>()
        .join(", ")
}
