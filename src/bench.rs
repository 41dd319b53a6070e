//! Throughput measurement: training and evaluation images per second for each backend and batch
//! size on real MNIST, and a per-layer profile of one training step. [`run`] carries out a
//! whole [`Plan`]; the functions below it measure one configuration each.

mod floor;

pub use floor::{Floor, Flops, flops_per_image};

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::*;
use serde::Serialize;

use crate::backend::{self, BackendKind};
use crate::data::batch::make_batch;
use crate::data::{Split, SplitKind, load_split};
use crate::error::{Error, Result};
use crate::model::{Activation, Architecture, InputShape, Layer, Network, Op, log_probabilities};
use crate::run::RunInfo;
use crate::train::{Adam, train_step_alongside};

/// What to measure.
#[derive(Debug, Clone)]
pub struct Plan {
    pub architecture: Architecture,
    pub backends: Vec<BackendKind>,
    pub train_batch_sizes: Vec<usize>,
    pub eval_batch_sizes: Vec<usize>,
    /// Training images timed per configuration, after the warm-up steps.
    pub train_images: usize,
    /// Test images classified per evaluation configuration.
    pub eval_images: usize,
    /// Also time each CNN layer's forward and backward pass, at the first training batch size.
    pub profile: bool,
    /// Measure evaluation with the trained run in this directory instead of a fresh network.
    pub model_dir: Option<PathBuf>,
}

/// The largest batch a plan may measure.
pub const MAX_BATCH_SIZE: usize = 65_536;
/// The most training or evaluation images a plan may time per configuration (MNIST's training
/// set 166 times; IDX files hold at most as many).
pub const MAX_IMAGES: usize = 10_000_000;

impl Plan {
    fn validate(&self) -> Result<()> {
        let sizes = self.train_batch_sizes.iter().chain(&self.eval_batch_sizes);
        if sizes.clone().any(|&size| size == 0) || self.train_batch_sizes.is_empty() {
            return Err(Error::InvalidArgument(
                "batch sizes must be at least 1".into(),
            ));
        }
        if let Some(size) = sizes.clone().find(|&&size| size > MAX_BATCH_SIZE) {
            return Err(Error::InvalidArgument(format!(
                "batch size {size} is above the largest measured, {MAX_BATCH_SIZE}"
            )));
        }
        if self.train_images == 0 || self.eval_images == 0 {
            return Err(Error::InvalidArgument(
                "the numbers of training and evaluation images must be at least 1".into(),
            ));
        }
        if self.train_images.max(self.eval_images) > MAX_IMAGES {
            return Err(Error::InvalidArgument(format!(
                "at most {MAX_IMAGES} training or evaluation images are timed per configuration"
            )));
        }
        Ok(())
    }
}

/// Everything [`run`] measured; serialised as `bench --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model: Architecture,
    pub threads: usize,
    /// Loading both splits: decompressing, validating and checksumming them.
    pub load_seconds: f64,
    pub loaded_images: usize,
    pub peak_rss_mb: Option<f64>,
    pub training: Vec<Throughput>,
    pub evaluation: Vec<Throughput>,
    pub profile: Vec<LayerProfile>,
    /// How far the CPU's training is above what the machine could do (none without a CPU
    /// backend).
    pub floor: Option<Floor>,
}

/// The per-layer timings of one backend.
#[derive(Debug, Clone, Serialize)]
pub struct LayerProfile {
    pub backend: BackendKind,
    pub batch_size: usize,
    pub layers: Vec<LayerTiming>,
}

/// Progress of [`run`], in the order the measurements are made.
pub enum Event<'a> {
    Loaded {
        seconds: f64,
        images: usize,
    },
    /// Measuring starts, on these backends (`auto` resolved).
    TrainingStarted {
        backends: &'a [BackendKind],
    },
    Training(&'a Throughput),
    /// The machine's floor for an epoch, after the CPU's training was measured.
    Floor(&'a Floor),
    EvaluationStarted,
    Evaluation(&'a Throughput),
    Profile(&'a LayerProfile),
}

/// Loads the data from `data_dir` and measures everything `plan` asks for.
pub fn run(plan: &Plan, data_dir: &Path, observer: &mut dyn FnMut(Event)) -> Result<Report> {
    plan.validate()?;
    let loading = Instant::now();
    let train_split = load_split(data_dir, SplitKind::Train)?;
    let test_split = load_split(data_dir, SplitKind::Test)?;
    let load_seconds = loading.elapsed().as_secs_f64();
    let loaded_images = train_split.len() + test_split.len();
    if let Some(size) = plan
        .train_batch_sizes
        .iter()
        .find(|&&size| size > train_split.len())
    {
        return Err(Error::InvalidArgument(format!(
            "a training batch of {size} images is larger than the {} training images",
            train_split.len()
        )));
    }
    observer(Event::Loaded {
        seconds: load_seconds,
        images: loaded_images,
    });
    let trained = match &plan.model_dir {
        Some(dir) => {
            let run = RunInfo::load(dir)?;
            run.check_data(&test_split, data_dir)?;
            Some((dir, run))
        }
        None => None,
    };
    // Every backend starts (or says why not) before anything is measured; `auto` is measured
    // as the backend it picks.
    let backends = plan
        .backends
        .iter()
        .map(|backend| backend.start())
        .collect::<Result<Vec<_>>>()?;
    observer(Event::TrainingStarted {
        backends: &backends,
    });
    let mut training = Vec::new();
    for &backend in &backends {
        for &batch_size in &plan.train_batch_sizes {
            let result = train_throughput(
                plan.architecture,
                backend,
                &train_split,
                batch_size,
                plan.train_images,
            );
            observer(Event::Training(&result));
            training.push(result);
        }
    }
    let floor = floor_of(plan, &train_split, &training);
    if let Some(floor) = &floor {
        observer(Event::Floor(floor));
    }
    observer(Event::EvaluationStarted);
    let mut evaluation = Vec::new();
    for &backend in &backends {
        let device = backend.device();
        device.seed(42);
        let network = match &trained {
            Some((dir, run)) => run.load_network(dir, &device)?,
            None => Network::new(plan.architecture, InputShape::of(&train_split), &device),
        };
        for &batch_size in &plan.eval_batch_sizes {
            let result =
                eval_throughput(&network, backend, &test_split, batch_size, plan.eval_images);
            observer(Event::Evaluation(&result));
            evaluation.push(result);
        }
    }
    let mut profile = Vec::new();
    if plan.profile {
        let batch_size = plan.train_batch_sizes[0];
        for &backend in &backends {
            let layers = layer_profile(plan.architecture, backend, &train_split, batch_size, 10);
            let result = LayerProfile {
                backend,
                batch_size,
                layers,
            };
            observer(Event::Profile(&result));
            profile.push(result);
        }
    }
    Ok(Report {
        model: plan.architecture,
        threads: backend::current_threads(),
        load_seconds,
        loaded_images,
        peak_rss_mb: backend::peak_rss_mb(),
        training,
        evaluation,
        profile,
        floor,
    })
}

/// The floor of the CPU's training: batch 128 if it was measured, else the first batch size.
fn floor_of(plan: &Plan, data: &Split, training: &[Throughput]) -> Option<Floor> {
    let cpu = || training.iter().filter(|t| t.backend.is_cpu());
    let measured = cpu()
        .find(|t| t.batch_size == 128)
        .or_else(|| cpu().next())?;
    let shape = InputShape::of(data);
    let network = Network::new(plan.architecture, shape, &measured.backend.device());
    let flops = flops_per_image(&network, shape);
    let gemm = crate::kernels::gemm_peak_gflops(5);
    Some(Floor::new(
        flops,
        gemm,
        backend::current_threads(),
        measured,
    ))
}

/// Steps run before timing starts, so one-off allocations and thread start-up are excluded.
const WARMUP_STEPS: usize = 2;

/// Images per second of one backend at one batch size, training or evaluating.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub backend: BackendKind,
    /// What the backend ran on: the GPU's name and graphics API, or the CPU thread count.
    pub device: String,
    pub batch_size: usize,
    pub images: usize,
    pub seconds: f64,
    pub images_per_second: f64,
}

/// Trains for `images` images (after warm-up) in batches of `batch_size`, timing the steps.
pub fn train_throughput(
    architecture: Architecture,
    backend: BackendKind,
    data: &Split,
    batch_size: usize,
    images: usize,
) -> Throughput {
    let device = backend.device().autodiff();
    device.seed(42);
    let shape = InputShape::of(data);
    let mut network = Network::new(architecture, shape, &device);
    let mut optimizer = Adam::new(&device);
    let steps = images.div_ceil(batch_size).max(1);
    let total_steps = WARMUP_STEPS + steps;
    // Each step's images are listed when it is assembled, so memory holds one batch's list
    // whatever `images` is. A batch larger than the data takes images from its start again.
    let assemble = |step: usize| {
        (step < total_steps).then(|| {
            let start = (step * batch_size) % data.len().saturating_sub(batch_size).max(1);
            let indices: Vec<usize> = (start..start + batch_size)
                .map(|index| index % data.len().max(1))
                .collect();
            make_batch(data, &indices, shape.classes, &device)
        })
    };
    // As in training: each step assembles the next batch while the optimizer updates.
    let mut next = assemble(0);
    let mut started = Instant::now();
    for step in 0..total_steps {
        if step == WARMUP_STEPS {
            started = Instant::now();
        }
        let batch = next.take().expect("each step assembles the next batch");
        let stepped =
            train_step_alongside(network, &mut optimizer, 1e-3, batch, || assemble(step + 1));
        (network, next) = (stepped.network, stepped.alongside);
    }
    let seconds = started.elapsed().as_secs_f64();
    let images = steps * batch_size;
    Throughput {
        backend,
        device: backend.describe(),
        batch_size,
        images,
        seconds,
        images_per_second: images as f64 / seconds,
    }
}

/// Classifies the first `images` images of `data` in batches of `batch_size`.
pub fn eval_throughput(
    network: &Network,
    backend: BackendKind,
    data: &Split,
    batch_size: usize,
    images: usize,
) -> Throughput {
    let device = backend.device();
    let indices: Vec<usize> = (0..images.min(data.len())).collect();
    // Warm-up on one batch.
    log_probabilities(
        network,
        data,
        &indices[..batch_size.min(indices.len())],
        batch_size,
        &device,
    );
    let started = Instant::now();
    log_probabilities(network, data, &indices, batch_size, &device);
    let seconds = started.elapsed().as_secs_f64();
    Throughput {
        backend,
        device: backend.describe(),
        batch_size,
        images: indices.len(),
        seconds,
        images_per_second: indices.len() as f64 / seconds,
    }
}

/// Images in one training epoch with Keras's default 10% validation split.
pub const EPOCH_IMAGES: f64 = 54_000.0;

/// The header of BENCHMARKS.md's table of measurements per device, which [`markdown_rows`]
/// fills: one row per backend, measurement and batch size.
pub const MARKDOWN_HEADER: &str = "| backend | device | measured | batch | img/s | s/epoch (54k) |\n\
                                   |---|---|---|---:|---:|---:|";

/// The report's measurements as rows of the table that [`MARKDOWN_HEADER`] starts.
pub fn markdown_rows(report: &Report) -> Vec<String> {
    let row = |t: &Throughput, measured: &str, epoch: String| {
        format!(
            "| {} | {} | {measured} | {} | {} | {epoch} |",
            t.backend,
            t.device.replace('|', "/"),
            t.batch_size,
            thousands(t.images_per_second)
        )
    };
    let trained = report.training.iter().map(|t| {
        let epoch = format!("{:.1}", EPOCH_IMAGES / t.images_per_second);
        row(t, "train", epoch)
    });
    let evaluated = report
        .evaluation
        .iter()
        .map(|e| row(e, "eval", String::new()));
    trained.chain(evaluated).collect()
}

/// 19287.4 as "19,287".
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

/// Forward and backward time of one layer, per batch.
#[derive(Debug, Clone, Serialize)]
pub struct LayerTiming {
    pub layer: String,
    pub forward_ms: f64,
    pub backward_ms: f64,
}

/// Times each layer of a fresh network of `architecture` ([`Network::layers`]) on a batch of
/// real images: the forward pass with its input tracked for gradients (except the images, as
/// in training, so the first layer computes no input gradient), and the backward pass from the
/// sum of its output. Flatten, which only reshapes, is run but not listed.
pub fn layer_profile(
    architecture: Architecture,
    backend: BackendKind,
    data: &Split,
    batch_size: usize,
    repetitions: usize,
) -> Vec<LayerTiming> {
    let device = backend.device().autodiff();
    device.seed(42);
    let shape = InputShape::of(data);
    let network = Network::new(architecture, shape, &device);
    let indices: Vec<usize> = (0..batch_size.min(data.len())).collect();
    let images = make_batch(data, &indices, shape.classes, &device).images;
    let mut timings = Vec::new();
    let mut activation = Activation::Maps(images);
    for (index, layer) in network.layers().iter().enumerate() {
        if matches!(layer.op, Op::Flatten) {
            activation = layer.forward(activation);
            continue;
        }
        // As in training: the images need no gradient, the layers after them do.
        let input_grad = index > 0;
        let (timing, output) = time_layer(layer, activation, input_grad, repetitions, &device);
        timings.push(timing);
        activation = output;
    }
    timings
}

fn time_layer(
    layer: &Layer,
    input: Activation,
    input_grad: bool,
    repetitions: usize,
    device: &Device,
) -> (LayerTiming, Activation) {
    let input = input.detach();
    let repetitions = repetitions.max(1);
    let (mut forward, mut backward) = (0.0, 0.0);
    // Round 0 warms up and is not counted.
    for round in 0..=repetitions {
        let started = Instant::now();
        let output = layer.forward(if input_grad {
            input.clone().require_grad()
        } else {
            input.clone()
        });
        let _ = device.sync();
        let forward_seconds = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let _gradients = output.sum().backward();
        let _ = device.sync();
        if round > 0 {
            forward += forward_seconds;
            backward += started.elapsed().as_secs_f64();
        }
    }
    let per_run_ms = |total: f64| total * 1000.0 / repetitions as f64;
    (
        LayerTiming {
            layer: layer.label(),
            forward_ms: per_run_ms(forward),
            backward_ms: per_run_ms(backward),
        },
        layer.forward(input).detach(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_rows_fill_the_header() {
        let throughput = |backend, device: &str, batch_size, images_per_second| Throughput {
            backend,
            device: device.into(),
            batch_size,
            images: 6400,
            seconds: 6400.0 / images_per_second,
            images_per_second,
        };
        let report = Report {
            model: Architecture::Cnn,
            threads: 2,
            load_seconds: 0.2,
            loaded_images: 70_000,
            peak_rss_mb: None,
            training: vec![throughput(
                BackendKind::Wgpu,
                "NVIDIA GeForce RTX 4090 (Vulkan)",
                128,
                64_000.0,
            )],
            evaluation: vec![throughput(BackendKind::Flex, "2 threads", 500, 55_555.6)],
            profile: Vec::new(),
            floor: None,
        };
        let rows = markdown_rows(&report);
        assert_eq!(
            rows,
            [
                "| wgpu | NVIDIA GeForce RTX 4090 (Vulkan) | train | 128 | 64,000 | 0.8 |",
                "| flex | 2 threads | eval | 500 | 55,556 |  |",
            ]
        );
        for line in MARKDOWN_HEADER
            .lines()
            .chain(rows.iter().map(String::as_str))
        {
            assert_eq!(line.matches('|').count(), 7, "{line}");
        }
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
    }
}
