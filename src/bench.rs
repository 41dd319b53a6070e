//! Throughput measurement: training and evaluation images per second for each backend and batch
//! size on real MNIST, and a per-layer profile of one training step.

use std::time::Instant;

use burn::prelude::*;
use serde::Serialize;

use crate::backend::BackendKind;
use crate::data::Split;
use crate::data::batch::make_batch;
use crate::model::{Architecture, InputShape, Network, log_probabilities};
use crate::train::{adam, train_step};

/// Steps run before timing starts, so one-off allocations and thread start-up are excluded.
const WARMUP_STEPS: usize = 2;

#[derive(Debug, Clone, Serialize)]
pub struct TrainThroughput {
    pub backend: BackendKind,
    /// What the backend ran on: the GPU's name and graphics API, or the CPU thread count.
    pub device: String,
    pub batch_size: usize,
    pub images: usize,
    pub seconds: f64,
    pub images_per_second: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalThroughput {
    pub backend: BackendKind,
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
) -> TrainThroughput {
    let device = backend.device().autodiff();
    device.seed(42);
    let shape = InputShape::of(data);
    let mut network = Network::new(architecture, shape, &device);
    let mut optimizer = adam();
    let steps = images.div_ceil(batch_size).max(1);
    let batches = (0..WARMUP_STEPS + steps).map(|step| {
        let start = (step * batch_size) % data.len().saturating_sub(batch_size).max(1);
        (start..start + batch_size).collect::<Vec<usize>>()
    });
    let mut started = Instant::now();
    for (step, indices) in batches.enumerate() {
        if step == WARMUP_STEPS {
            started = Instant::now();
        }
        let batch = make_batch(data, &indices, shape.classes, &device);
        network = train_step(network, &mut optimizer, 1e-3, batch).0;
    }
    let seconds = started.elapsed().as_secs_f64();
    let images = steps * batch_size;
    TrainThroughput {
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
) -> EvalThroughput {
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
    EvalThroughput {
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

/// The header of BENCHMARKS.md's table of measurements per device, which
/// [`markdown_rows`] fills: one row per backend, batch size and measurement.
pub const MARKDOWN_HEADER: &str = "| backend | device | measured | batch | img/s | s/epoch (54k) |\n\
                                   |---|---|---|---:|---:|---:|";

/// The measurements as rows of the table that [`MARKDOWN_HEADER`] starts.
pub fn markdown_rows(training: &[TrainThroughput], evaluation: &[EvalThroughput]) -> Vec<String> {
    let row = |backend: BackendKind, device: &str, what: &str, batch: usize, rate: f64, epoch: &str| {
        format!(
            "| {backend} | {} | {what} | {batch} | {} | {epoch} |",
            device.replace('|', "/"),
            thousands(rate)
        )
    };
    let trained = training.iter().map(|t| {
        let epoch = format!("{:.1}", EPOCH_IMAGES / t.images_per_second);
        row(t.backend, &t.device, "train", t.batch_size, t.images_per_second, &epoch)
    });
    let evaluated = evaluation
        .iter()
        .map(|e| row(e.backend, &e.device, "eval", e.batch_size, e.images_per_second, ""));
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

/// Forward and backward time of one layer of the CNN, per batch.
#[derive(Debug, Clone, Serialize)]
pub struct LayerTiming {
    pub layer: String,
    pub forward_ms: f64,
    pub backward_ms: f64,
}

/// Times each layer of a fresh CNN on a batch of real images: the forward pass with its input
/// tracked for gradients, and the backward pass from the sum of its output.
pub fn layer_profile(
    backend: BackendKind,
    data: &Split,
    batch_size: usize,
    repetitions: usize,
) -> Vec<LayerTiming> {
    let device = backend.device().autodiff();
    device.seed(42);
    let shape = InputShape::of(data);
    let Network::Cnn(cnn) = Network::new(Architecture::Cnn, shape, &device) else {
        unreachable!("asked for a CNN")
    };
    let indices: Vec<usize> = (0..batch_size.min(data.len())).collect();
    let images = make_batch(data, &indices, shape.classes, &device).images;
    let mut timings = Vec::new();
    let mut activation = images;
    for (name, layer) in cnn.feature_layers() {
        let (timing, output) = time_layer(name, activation, repetitions, &device, &*layer);
        timings.push(timing);
        activation = output;
    }
    let mut flat: Tensor<2> = activation.flatten(1, 3);
    for (name, layer) in cnn.dense_layers() {
        let (timing, output) = time_layer(name, flat, repetitions, &device, &*layer);
        timings.push(timing);
        flat = output;
    }
    timings
}

fn time_layer<const D: usize, const E: usize>(
    name: &str,
    input: Tensor<D>,
    repetitions: usize,
    device: &Device,
    layer: &dyn Fn(Tensor<D>) -> Tensor<E>,
) -> (LayerTiming, Tensor<E>) {
    let input = input.detach();
    let repetitions = repetitions.max(1);
    let (mut forward, mut backward) = (0.0, 0.0);
    // Round 0 warms up and is not counted.
    for round in 0..=repetitions {
        let started = Instant::now();
        let output = layer(input.clone().require_grad());
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
            layer: name.to_string(),
            forward_ms: per_run_ms(forward),
            backward_ms: per_run_ms(backward),
        },
        layer(input).detach(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_rows_fill_the_header() {
        let training = [TrainThroughput {
            backend: BackendKind::Wgpu,
            device: "NVIDIA GeForce RTX 4090 (Vulkan)".into(),
            batch_size: 128,
            images: 6400,
            seconds: 0.1,
            images_per_second: 64_000.0,
        }];
        let evaluation = [EvalThroughput {
            backend: BackendKind::Flex,
            device: "2 threads".into(),
            batch_size: 500,
            images: 10_000,
            seconds: 0.18,
            images_per_second: 55_555.6,
        }];
        let rows = markdown_rows(&training, &evaluation);
        assert_eq!(
            rows,
            [
                "| wgpu | NVIDIA GeForce RTX 4090 (Vulkan) | train | 128 | 64,000 | 0.8 |",
                "| flex | 2 threads | eval | 500 | 55,556 |  |",
            ]
        );
        let columns = |line: &str| line.matches('|').count();
        for line in MARKDOWN_HEADER.lines().chain(rows.iter().map(String::as_str)) {
            assert_eq!(columns(line), 7, "{line}");
        }
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
    }
}
