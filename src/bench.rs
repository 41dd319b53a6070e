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
    pub batch_size: usize,
    pub images: usize,
    pub seconds: f64,
    pub images_per_second: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalThroughput {
    pub backend: BackendKind,
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
        batch_size,
        images: indices.len(),
        seconds,
        images_per_second: indices.len() as f64 / seconds,
    }
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
