//! 2x2/stride-2 max pooling: burn-flex's generic pooling (a 3-D kernel with per-window range
//! checks, then an index cast) profiled at ~25% of a training step and ~48% of evaluation. This
//! kernel reads each window once and writes the maximum and its position; the backward pass is
//! burn's own `max_pool2d_with_indices_backward`, which consumes those positions.

// burn-ndarray is deprecated upstream; the product keeps it selectable, so its types are named here.
#![allow(deprecated)]

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::ModuleOps;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{
    Autodiff, Backend, Dispatch, Flex, NdArray, TensorMetadata, backend_extension,
    get_or_init_device_settings,
};
use burn::tensor::{DType, Tensor, TensorData};
use rayon::prelude::*;

use super::contiguous_f32;

const KERNEL: [usize; 2] = [2, 2];
const STRIDE: [usize; 2] = [2, 2];
const PADDING: [usize; 2] = [0, 0];
const DILATION: [usize; 2] = [1, 1];

/// 2x2 max pooling with stride 2 (odd last rows and columns dropped) of `[batch, channels,
/// height, width]`, on any backend, differentiable.
pub fn max_pool_2x2(input: Tensor<4>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as PoolOps>::max_pool_2x2(input.into_dispatch()))
}

/// The operation as burn dispatches it to each backend.
#[backend_extension(Flex, NdArray, Autodiff)]
pub trait PoolOps: Backend {
    fn max_pool_2x2(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// The forward kernel with argmax positions, per concrete backend. By default, burn's pooling.
pub trait PoolKernels: Backend {
    fn max_pool_2x2_with_indices(x: FloatTensor<Self>) -> (FloatTensor<Self>, IntTensor<Self>) {
        burns_pooling_with_indices::<Self>(x)
    }
}

fn burns_pooling_with_indices<B: Backend>(x: FloatTensor<B>) -> (FloatTensor<B>, IntTensor<B>) {
    let int_dtype = get_or_init_device_settings::<B>(&x.device()).int_dtype;
    let pooled = B::max_pool2d_with_indices(x, KERNEL, STRIDE, PADDING, DILATION, false, int_dtype);
    (pooled.output, pooled.indices)
}

impl PoolKernels for NdArray {}

impl PoolKernels for Flex {
    fn max_pool_2x2_with_indices(x: FlexTensor) -> (FlexTensor, FlexTensor) {
        if x.dtype() != DType::F32 {
            return burns_pooling_with_indices::<Self>(x);
        }
        let x = x.to_contiguous();
        let shape = x.shape();
        let (batch, channels, height, width) = (shape[0], shape[1], shape[2], shape[3]);
        let (pooled, positions) =
            max_pool_2x2_f32(contiguous_f32(&x), batch * channels, height, width);
        let out_shape = [batch, channels, height / 2, width / 2];
        (
            FlexTensor::from_data(TensorData::new(pooled, out_shape)),
            FlexTensor::from_data(TensorData::new(positions, out_shape)),
        )
    }
}

impl PoolOps for NdArray {
    fn max_pool_2x2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::max_pool2d(x, KERNEL, STRIDE, PADDING, DILATION, false)
    }
}

impl PoolOps for Flex {
    fn max_pool_2x2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::max_pool_2x2_with_indices(x).0
    }
}

impl<B: Backend + PoolKernels, C: CheckpointStrategy> PoolOps for Autodiff<B, C> {
    fn max_pool_2x2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match MaxPool2x2
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let input = prep.checkpoint(&x);
                let (output, positions) = B::max_pool_2x2_with_indices(x.into_primitive());
                prep.finish((input, positions), output)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::max_pool_2x2_with_indices(x.into_primitive()).0)
            }
        }
    }
}

#[derive(Debug)]
struct MaxPool2x2;

impl<B: Backend> Backward<B, 1> for MaxPool2x2 {
    type State = (NodeId, IntTensor<B>);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [parent] = ops.parents;
        let output_grad = grads.consume::<B>(&ops.node);
        let (input, positions) = ops.state;
        let input = checkpointer.retrieve_node_output(input);
        if let Some(parent) = parent {
            let input_grad = B::max_pool2d_with_indices_backward(
                input,
                KERNEL,
                STRIDE,
                PADDING,
                DILATION,
                false,
                output_grad,
                positions,
            );
            grads.register::<B>(parent.id, input_grad.x_grad);
        }
    }
}

/// Max and position (row-major within its plane, the first on ties, NaN wins) of every 2x2
/// window of `planes` contiguous `height` x `width` planes.
fn max_pool_2x2_f32(
    input: &[f32],
    planes: usize,
    height: usize,
    width: usize,
) -> (Vec<f32>, Vec<i32>) {
    let (out_height, out_width) = (height / 2, width / 2);
    let out_plane = out_height * out_width;
    let mut pooled = vec![0f32; planes * out_plane];
    let mut positions = vec![0i32; planes * out_plane];
    if out_plane == 0 {
        return (pooled, positions);
    }
    pooled
        .par_chunks_mut(out_plane)
        .zip(positions.par_chunks_mut(out_plane))
        .enumerate()
        // Enough planes per task that thread hand-offs stay cheap next to the work.
        .with_min_len((4096 / out_plane).max(1))
        .for_each(|(plane, (pooled, positions))| {
            let source = &input[plane * height * width..(plane + 1) * height * width];
            for out_row in 0..out_height {
                let top = 2 * out_row * width;
                for out_col in 0..out_width {
                    let first = top + 2 * out_col;
                    let mut best = first;
                    for candidate in [first + 1, first + width, first + width + 1] {
                        let value = source[candidate];
                        if value > source[best] || value.is_nan() && !source[best].is_nan() {
                            best = candidate;
                        }
                    }
                    pooled[out_row * out_width + out_col] = source[best];
                    positions[out_row * out_width + out_col] = best as i32;
                }
            }
        });
    (pooled, positions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_first_maximum_and_lets_nan_win() {
        // One 2x4 plane: windows [1, 3; 3, 0] and [NaN, 2; 9, 9].
        let plane = [1.0, 3.0, f32::NAN, 2.0, 3.0, 0.0, 9.0, 9.0];
        let (pooled, positions) = max_pool_2x2_f32(&plane, 1, 2, 4);
        assert_eq!(pooled[0], 3.0);
        assert_eq!(positions, vec![1, 2], "first of the tied 3s; the NaN");
        assert!(pooled[1].is_nan());
    }

    #[test]
    fn odd_last_row_and_column_are_dropped() {
        let plane: Vec<f32> = (0..15).map(|v| v as f32).collect(); // 3 rows x 5 columns
        let (pooled, positions) = max_pool_2x2_f32(&plane, 1, 3, 5);
        assert_eq!(pooled, vec![6.0, 8.0]);
        assert_eq!(positions, vec![6, 8]);
    }
}
