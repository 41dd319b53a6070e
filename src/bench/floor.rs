//! How close training comes to what the machine could do: the arithmetic the kernels do per
//! training image, read off the network's layers, against the machine's measured f32 matrix
//! product speed on the same threads. Their quotient is the floor of an epoch's time, and the
//! measured epoch a multiple of it.

use serde::Serialize;

use super::{EPOCH_IMAGES, Throughput};
use crate::model::{InputShape, Network, Op};

/// The arithmetic of one training image, in FLOP (a multiply-add counts two).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Flops {
    /// Every convolution and dense product of the forward pass.
    pub forward: f64,
    /// The gradients the backward pass computes: each layer's weights, and its input when a
    /// layer with weights comes before it. A convolution block's gradient flows only through
    /// the winners of its 2x2 pooling, so it costs a quarter of its forward product per
    /// gradient.
    pub backward: f64,
}

impl Flops {
    pub fn total(&self) -> f64 {
        self.forward + self.backward
    }
}

/// The FLOP of training on one image of `shape` with `network`. Biases, ReLU, pooling and the
/// loss are left out: they are memory work, not arithmetic.
pub fn flops_per_image(network: &Network, shape: InputShape) -> Flops {
    let mut dims = vec![shape.channels, shape.rows, shape.cols];
    let (mut forward, mut backward) = (0.0, 0.0);
    let mut input_has_gradient = false;
    for layer in network.layers() {
        match layer.op {
            Op::ConvBlock(conv) => {
                let [filters, inputs, kh, kw] = conv.weight.dims();
                let (rows, cols) = (dims[1], dims[2]);
                let per_position = 2.0 * (kh * kw * inputs * filters) as f64;
                let winners = ((rows / 2) * (cols / 2)) as f64;
                forward += per_position * (rows * cols) as f64;
                let gradients = if input_has_gradient { 2.0 } else { 1.0 };
                backward += gradients * per_position * winners;
                dims = vec![filters, rows / 2, cols / 2];
                input_has_gradient = true;
            }
            Op::Flatten => dims = vec![dims.iter().product()],
            Op::Dense(dense, _) => {
                let [inputs, outputs] = dense.weight.dims();
                let product = 2.0 * (inputs * outputs) as f64;
                forward += product;
                backward += if input_has_gradient { 2.0 } else { 1.0 } * product;
                dims = vec![outputs];
                input_has_gradient = true;
            }
        }
    }
    Flops { forward, backward }
}

/// The floor of an epoch on this machine, and how far the measured training is above it.
#[derive(Debug, Clone, Serialize)]
pub struct Floor {
    /// FLOP per training image.
    pub flops: Flops,
    /// The measured f32 matrix-product speed on the pool's threads.
    pub gemm_gflops: f64,
    pub threads: usize,
    /// Seconds for an epoch of [`EPOCH_IMAGES`] images at that speed.
    pub floor_epoch_seconds: f64,
    /// The training measurement compared: batch 128 if measured, else the first, on the CPU.
    pub batch_size: usize,
    /// Its seconds per epoch of [`EPOCH_IMAGES`] images.
    pub epoch_seconds: f64,
    /// `epoch_seconds / floor_epoch_seconds`.
    pub times_floor: f64,
}

impl Floor {
    /// The floor for `flops` at `gemm_gflops`, against `measured` training.
    pub fn new(flops: Flops, gemm_gflops: f64, threads: usize, measured: &Throughput) -> Self {
        let floor_epoch_seconds = EPOCH_IMAGES * flops.total() / (gemm_gflops * 1e9);
        let epoch_seconds = EPOCH_IMAGES / measured.images_per_second;
        Self {
            flops,
            gemm_gflops,
            threads,
            floor_epoch_seconds,
            batch_size: measured.batch_size,
            epoch_seconds,
            times_floor: epoch_seconds / floor_epoch_seconds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendKind;
    use crate::model::Architecture;

    #[test]
    fn the_tutorials_cnn_does_2_47_mflop_forward_and_1_83_backward() {
        let device = burn::prelude::Device::flex();
        let cnn = Network::new(Architecture::Cnn, InputShape::MNIST, &device);
        let flops = flops_per_image(&cnn, InputShape::MNIST);
        // conv 1->16 on 28x28, conv 16->32 on 14x14, dense 1568->128->128->10.
        let forward = 2 * (9 * 16 * 784 + 9 * 16 * 32 * 196 + 1568 * 128 + 128 * 128 + 128 * 10);
        assert_eq!(flops.forward, forward as f64);
        assert_eq!(flops.forward, 2_468_864.0);
        // The first block's weights only (the images need no gradient), at its 196 winners;
        // weights and input of the second at its 49; weights and input of every dense layer.
        let backward =
            2 * (9 * 16 * 196 + 2 * 9 * 16 * 32 * 49) + 2 * 2 * (1568 * 128 + 128 * 128 + 128 * 10);
        assert_eq!(flops.backward, backward as f64);
        assert_eq!(flops.backward, 1_833_088.0);

        let mlp = Network::new(Architecture::Mlp, InputShape::MNIST, &device);
        let flops = flops_per_image(&mlp, InputShape::MNIST);
        assert_eq!(
            flops.forward,
            2.0 * (784.0 * 128.0 + 128.0 * 128.0 + 1280.0)
        );
        assert_eq!(
            flops.backward,
            2.0 * (784.0 * 128.0) + 4.0 * (128.0 * 128.0 + 1280.0)
        );
    }

    #[test]
    fn the_floor_is_the_epochs_arithmetic_at_the_gemm_speed() {
        let flops = Flops {
            forward: 3e6,
            backward: 2e6,
        };
        let measured = Throughput {
            backend: BackendKind::Flex,
            device: "2 threads".into(),
            batch_size: 128,
            images: 6400,
            seconds: 0.4,
            images_per_second: 16_000.0,
        };
        let floor = Floor::new(flops, 100.0, 2, &measured);
        assert!((floor.floor_epoch_seconds - EPOCH_IMAGES * 5e6 / 1e11).abs() < 1e-12);
        assert!((floor.epoch_seconds - EPOCH_IMAGES / 16_000.0).abs() < 1e-12);
        assert!(
            (floor.times_floor - floor.epoch_seconds / floor.floor_epoch_seconds).abs() < 1e-12
        );
    }

    #[test]
    fn the_gemm_peak_is_measured_on_every_thread() {
        let peak = crate::kernels::gemm_peak_gflops(1);
        // Any CPU this runs on does more than half a GFLOP/s and less than a petaflop.
        assert!(peak.is_finite() && (0.5..1e6).contains(&peak), "{peak}");
    }
}
