//! One feature block of the network as a single differentiable operation:
//! `relu(max_pool_2x2(conv3x3_same(x) + bias))`, identical to the three layers in sequence
//! (ReLU and max commute, so it is applied to the pooled quarter of the values).

use std::cell::RefCell;
use std::sync::Arc;

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Autodiff, Backend, Dispatch, Flex, NdArray, TensorMetadata, backend_extension,
};
use burn::tensor::Tensor;
use multiversion::multiversion;
use rayon::prelude::*;

use super::HostTensors;
use super::im2col::{add_assign, col2im_add, im2col, matmul, row_major, transposed};
use super::window::{CLAMPED, pool_relu_row, unpool_row};

/// Images per parallel task: enough work to amortise a task, few enough to balance two to
/// sixteen threads on a batch of 128. Fixed, so that the weight-gradient sum (and with it
/// training) is the same whatever the thread count.
const IMAGES_PER_TASK: usize = 4;

/// `relu(max_pool_2x2(conv2d(input, weight, bias)))` for a `[batch, channels, height, width]`
/// input, `[filters, channels, 3, 3]` weights and zero "same" padding; pooling has stride 2 and
/// drops an odd last row or column. Returns `[batch, filters, height / 2, width / 2]`. Runs on
/// any backend and is differentiable with respect to all three inputs.
pub fn conv3x3_pool_relu(input: Tensor<4>, weight: Tensor<4>, bias: Tensor<1>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as ConvBlockOps>::conv3x3_pool_relu(
        input.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
    ))
}

/// The operation as burn dispatches it to each backend.
#[backend_extension(Flex, NdArray, Autodiff)]
pub trait ConvBlockOps: Backend {
    fn conv3x3_pool_relu(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

impl ConvBlockOps for Flex {
    fn conv3x3_pool_relu(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        forward::<Self>(x, weight, bias).0
    }
}

impl ConvBlockOps for NdArray {
    fn conv3x3_pool_relu(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        forward::<Self>(x, weight, bias).0
    }
}

impl<B: HostTensors, C: CheckpointStrategy> ConvBlockOps for Autodiff<B, C> {
    fn conv3x3_pool_relu(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        match ConvBlock
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let (x_node, weight_node) = (prep.checkpoint(&x), prep.checkpoint(&weight));
                let (output, winners) = forward::<B>(
                    x.into_primitive(),
                    weight.into_primitive(),
                    bias.into_primitive(),
                );
                prep.finish((x_node, weight_node, Arc::new(winners)), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(
                forward::<B>(
                    x.into_primitive(),
                    weight.into_primitive(),
                    bias.into_primitive(),
                )
                .0,
            ),
        }
    }
}

/// The block's output and, for every output value, which of its 2x2 window won (0-3 in
/// row-major order, or [`CLAMPED`]).
fn forward<B: HostTensors>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
) -> (FloatTensor<B>, Vec<u8>) {
    let shape = BlockShape::new(&x.shape(), &weight.shape());
    let (output, winners) = B::read_f32(x, |x| {
        B::read_f32(weight, |weight| {
            B::read_f32(bias, |bias| forward_f32(x, weight, bias, shape))
        })
    });
    (B::from_f32(output, &shape.output_dims()), winners)
}

#[derive(Debug)]
struct ConvBlock;

impl<B: HostTensors> Backward<B, 3> for ConvBlock {
    /// The input and weight nodes, and the winning window positions of the forward pass.
    type State = (NodeId, NodeId, Arc<Vec<u8>>);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [x_parent, weight_parent, bias_parent] = ops.parents;
        let output_grad = grads.consume::<B>(&ops.node);
        let (x, weight, winners) = ops.state;
        let x: FloatTensor<B> = checkpointer.retrieve_node_output(x);
        let weight: FloatTensor<B> = checkpointer.retrieve_node_output(weight);
        let shape = BlockShape::new(&x.shape(), &weight.shape());
        let computed = B::read_f32(x, |x| {
            B::read_f32(weight, |weight| {
                B::read_f32(output_grad, |output_grad| {
                    backward_f32(x, weight, &winners, output_grad, shape, x_parent.is_some())
                })
            })
        });
        if let (Some(parent), Some(input_grad)) = (x_parent, computed.input) {
            grads.register::<B>(parent.id, B::from_f32(input_grad, &shape.input_dims()));
        }
        if let Some(parent) = weight_parent {
            grads.register::<B>(
                parent.id,
                B::from_f32(computed.weight, &shape.weight_dims()),
            );
        }
        if let Some(parent) = bias_parent {
            grads.register::<B>(parent.id, B::from_f32(computed.bias, &[shape.filters]));
        }
    }
}

/// Sizes of one call.
#[derive(Debug, Clone, Copy)]
struct BlockShape {
    batch: usize,
    channels: usize,
    height: usize,
    width: usize,
    filters: usize,
}

impl BlockShape {
    fn new(x: &[usize], weight: &[usize]) -> Self {
        assert!(
            x.len() == 4 && weight.len() == 4 && weight[1] == x[1] && weight[2..] == [3, 3],
            "conv3x3_pool_relu: weights {weight:?} do not fit input {x:?}"
        );
        BlockShape {
            batch: x[0],
            channels: x[1],
            height: x[2],
            width: x[3],
            filters: weight[0],
        }
    }

    fn plane(&self) -> usize {
        self.height * self.width
    }

    /// Rows of the im2col matrix: one per input channel and kernel tap.
    fn taps(&self) -> usize {
        self.channels * 9
    }

    fn image_len(&self) -> usize {
        self.channels * self.plane()
    }

    fn pooled_plane(&self) -> usize {
        (self.height / 2) * (self.width / 2)
    }

    fn output_image_len(&self) -> usize {
        self.filters * self.pooled_plane()
    }

    fn input_dims(&self) -> [usize; 4] {
        [self.batch, self.channels, self.height, self.width]
    }

    fn output_dims(&self) -> [usize; 4] {
        [self.batch, self.filters, self.height / 2, self.width / 2]
    }

    fn weight_dims(&self) -> [usize; 4] {
        [self.filters, self.channels, 3, 3]
    }
}

/// Per-task scratch matrices, with the task's images side by side (column
/// `image * plane + pixel`) so that each product is one gemm call for all of them.
struct Scratch<'a> {
    /// The images unfolded: `taps x columns`.
    col: &'a mut [f32],
    /// Their convolution outputs, or the gradient of those: `filters x columns`.
    conv: &'a mut [f32],
    /// The gradient of `col`, when the input gradient is wanted.
    col_grad: &'a mut [f32],
    columns: usize,
}

thread_local! {
    /// Each thread's scratch buffers, kept between calls: allocating and zeroing them per
    /// task cost ~5% of a training step. Every use overwrites what it reads.
    static BUFFERS: RefCell<[Vec<f32>; 3]> = const { RefCell::new([Vec::new(), Vec::new(), Vec::new()]) };
}

/// Runs `work` with scratch matrices for `images` images on this thread's buffers.
fn with_scratch<R>(
    shape: BlockShape,
    images: usize,
    with_col_grad: bool,
    work: impl FnOnce(Scratch<'_>) -> R,
) -> R {
    let columns = images * shape.plane();
    let lens = [
        shape.taps() * columns,
        shape.filters * columns,
        if with_col_grad {
            shape.taps() * columns
        } else {
            0
        },
    ];
    BUFFERS.with_borrow_mut(|buffers| {
        for (buffer, &len) in buffers.iter_mut().zip(&lens) {
            if buffer.len() < len {
                buffer.resize(len, 0.0);
            }
        }
        let [col, conv, col_grad] = buffers;
        work(Scratch {
            col: &mut col[..lens[0]],
            conv: &mut conv[..lens[1]],
            col_grad: &mut col_grad[..lens[2]],
            columns,
        })
    })
}

fn image_of<T>(batch: &[T], image: usize, image_len: usize) -> &[T] {
    &batch[image * image_len..(image + 1) * image_len]
}

fn forward_f32(x: &[f32], weight: &[f32], bias: &[f32], shape: BlockShape) -> (Vec<f32>, Vec<u8>) {
    let (plane, output_len) = (shape.plane(), shape.output_image_len());
    let mut output = vec![0f32; shape.batch * output_len];
    let mut winners = vec![CLAMPED; output.len()];
    if output.is_empty() {
        return (output, winners);
    }
    output
        .par_chunks_mut(IMAGES_PER_TASK * output_len)
        .zip(winners.par_chunks_mut(IMAGES_PER_TASK * output_len))
        .enumerate()
        .for_each(|(task, (outputs, winners))| {
            let images = outputs.len() / output_len;
            with_scratch(shape, images, false, |scratch| {
                let columns = scratch.columns;
                for image in 0..images {
                    let pixels = image_of(x, task * IMAGES_PER_TASK + image, shape.image_len());
                    let col = &mut scratch.col[image * plane..];
                    im2col(pixels, shape.height, shape.width, col, columns);
                }
                for (filter_row, &filter_bias) in scratch.conv.chunks_mut(columns).zip(bias) {
                    filter_row.fill(filter_bias);
                }
                // conv (filters x columns) += weight (filters x taps) · col (taps x columns)
                matmul(
                    [shape.filters, columns, shape.taps()],
                    (scratch.conv, row_major(columns)),
                    true,
                    (weight, row_major(shape.taps())),
                    (scratch.col, row_major(columns)),
                );
                let images = outputs
                    .chunks_mut(output_len)
                    .zip(winners.chunks_mut(output_len));
                for (image, (output, winners)) in images.enumerate() {
                    let conv = &scratch.conv[image * plane..];
                    pool_relu(conv, columns, shape, output, winners);
                }
            })
        });
    (output, winners)
}

/// Max-pools one image's convolution output (filter rows `row_stride` apart) and clamps it at
/// zero, recording which window position won.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn pool_relu(
    conv: &[f32],
    row_stride: usize,
    shape: BlockShape,
    output: &mut [f32],
    winners: &mut [u8],
) {
    let (width, pooled_width) = (shape.width, shape.width / 2);
    let filters = output
        .chunks_mut(shape.pooled_plane())
        .zip(winners.chunks_mut(shape.pooled_plane()));
    for (filter, (output, winners)) in filters.enumerate() {
        let plane = &conv[filter * row_stride..][..shape.plane()];
        let rows = output
            .chunks_mut(pooled_width)
            .zip(winners.chunks_mut(pooled_width));
        for (pooled_y, (output, winners)) in rows.enumerate() {
            let top = &plane[2 * pooled_y * width..][..width];
            let bottom = &plane[(2 * pooled_y + 1) * width..][..width];
            pool_relu_row(top, bottom, output, winners);
        }
    }
}

struct GradientsF32 {
    input: Option<Vec<f32>>,
    weight: Vec<f32>,
    bias: Vec<f32>,
}

fn backward_f32(
    x: &[f32],
    weight: &[f32],
    winners: &[u8],
    output_grad: &[f32],
    shape: BlockShape,
    input_grad_needed: bool,
) -> GradientsF32 {
    let (plane, taps, filters) = (shape.plane(), shape.taps(), shape.filters);
    let (image_len, output_len) = (shape.image_len(), shape.output_image_len());
    let tasks = shape.batch.div_ceil(IMAGES_PER_TASK);
    let mut input_grad = input_grad_needed.then(|| vec![0f32; shape.batch * image_len]);
    let input_grad_chunks: Vec<Option<&mut [f32]>> = match input_grad.as_mut() {
        Some(grad) if !grad.is_empty() => grad
            .chunks_mut(IMAGES_PER_TASK * image_len)
            .map(Some)
            .collect(),
        _ => (0..tasks).map(|_| None).collect(),
    };
    // Each task returns its images' share of the weight and bias gradients, summed below in
    // task order so the result does not depend on scheduling.
    let partial_sums: Vec<(Vec<f32>, Vec<f32>)> = input_grad_chunks
        .into_par_iter()
        .enumerate()
        .map(|(task, input_grads)| {
            let first = task * IMAGES_PER_TASK;
            let images = IMAGES_PER_TASK.min(shape.batch - first);
            with_scratch(shape, images, input_grads.is_some(), |scratch| {
                let columns = scratch.columns;
                let mut bias_grad = vec![0f32; filters];
                for image in 0..images {
                    unpool(
                        image_of(output_grad, first + image, output_len),
                        image_of(winners, first + image, output_len),
                        shape,
                        (&mut scratch.conv[image * plane..], columns),
                        &mut bias_grad,
                    );
                    let pixels = image_of(x, first + image, image_len);
                    let col = &mut scratch.col[image * plane..];
                    im2col(pixels, shape.height, shape.width, col, columns);
                }
                let mut weight_grad = vec![0f32; filters * taps];
                // weight_grad (filters x taps) = conv_grad (filters x columns) · colᵀ (columns x taps)
                matmul(
                    [filters, taps, columns],
                    (&mut weight_grad, row_major(taps)),
                    false,
                    (scratch.conv, row_major(columns)),
                    (scratch.col, transposed(columns)),
                );
                if let Some(input_grads) = input_grads {
                    // col_grad (taps x columns) = weightᵀ (taps x filters) · conv_grad (filters x columns)
                    matmul(
                        [taps, columns, filters],
                        (scratch.col_grad, row_major(columns)),
                        false,
                        (weight, transposed(taps)),
                        (scratch.conv, row_major(columns)),
                    );
                    for (image, image_grad) in input_grads.chunks_mut(image_len).enumerate() {
                        let col_grad = &mut scratch.col_grad[image * plane..];
                        col2im_add(col_grad, shape.height, shape.width, columns, image_grad);
                    }
                }
                (weight_grad, bias_grad)
            })
        })
        .collect();
    let mut weight_grad = vec![0f32; filters * taps];
    let mut bias_grad = vec![0f32; filters];
    for (task_weight_grad, task_bias_grad) in partial_sums {
        add_assign(&mut weight_grad, &task_weight_grad);
        add_assign(&mut bias_grad, &task_bias_grad);
    }
    GradientsF32 {
        input: input_grad,
        weight: weight_grad,
        bias: bias_grad,
    }
}

/// Routes one image's output gradient back through ReLU and pooling: each value goes to its
/// window's winner in `conv_grad` (filter rows `row_stride` apart; every other entry becomes
/// zero) and into its filter's bias gradient.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn unpool(
    output_grad: &[f32],
    winners: &[u8],
    shape: BlockShape,
    (conv_grad, row_stride): (&mut [f32], usize),
    bias_grad: &mut [f32],
) {
    let (width, pooled_width) = (shape.width, shape.width / 2);
    let filters = output_grad
        .chunks(shape.pooled_plane())
        .zip(winners.chunks(shape.pooled_plane()))
        .zip(bias_grad);
    for (filter, ((output_grad, winners), bias_grad)) in filters.enumerate() {
        let plane = &mut conv_grad[filter * row_stride..][..shape.plane()];
        if shape.height % 2 == 1 || width % 2 == 1 {
            // The dropped last row or column is not written below.
            plane.fill(0.0);
        }
        let rows = output_grad
            .chunks(pooled_width)
            .zip(winners.chunks(pooled_width));
        for (pooled_y, (output_grad, winners)) in rows.enumerate() {
            let (top, bottom) = plane[2 * pooled_y * width..][..2 * width].split_at_mut(width);
            unpool_row(output_grad, winners, top, bottom);
        }
        // Summed in 16 lanes so that the loop vectorizes (a single running sum cannot be
        // reordered).
        let mut lanes = [0f32; 16];
        for (grads, winners) in output_grad.chunks(16).zip(winners.chunks(16)) {
            for ((lane, &grad), &winner) in lanes.iter_mut().zip(grads).zip(winners) {
                *lane += if winner == CLAMPED { 0.0 } else { grad };
            }
        }
        *bias_grad += lanes.iter().sum::<f32>();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendKind;
    use burn::backend::ops::ConvOptions;
    use burn::nn::pool::MaxPool2dConfig;
    use burn::tensor::Distribution;
    use burn::tensor::activation::relu;
    use burn::tensor::module::conv2d;

    fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
        tensor.into_data().try_into_vec::<f32>().unwrap()
    }

    fn assert_close(ours: &[f32], burns: &[f32], what: &str) {
        assert_eq!(ours.len(), burns.len(), "{what}");
        for (index, (a, b)) in ours.iter().zip(burns).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                "{what}[{index}]: {a} vs {b}"
            );
        }
    }

    fn burns_block(input: Tensor<4>, weight: Tensor<4>, bias: Tensor<1>) -> Tensor<4> {
        let same = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
        let pool = MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init();
        relu(pool.forward(conv2d(input, weight, Some(bias), same)))
    }

    /// Values and all three gradients against burn's own conv2d, max_pool2d and relu, on both
    /// backends: a batch that is not a multiple of the task size, odd sides (the last row and
    /// column are dropped), and an input that is not trained through (the first layer).
    #[test]
    fn matches_burns_layers_and_their_gradients() {
        for backend in [BackendKind::Flex, BackendKind::Ndarray] {
            for (channels, train_input) in [(3, true), (1, false)] {
                let device = backend.device().autodiff();
                device.seed(3);
                let random = |dims: [usize; 4]| {
                    Tensor::<4>::random(dims, Distribution::Normal(0.0, 1.0), &device)
                };
                // A blank first image makes every window tie at the bias, as MNIST's background
                // does; burn and the kernel both pass the gradient to the first of equals.
                let input = random([5, channels, 7, 9]).slice_assign(
                    [0..1, 0..channels, 0..7, 0..9],
                    Tensor::zeros([1, channels, 7, 9], &device),
                );
                let weight = random([4, channels, 3, 3]).require_grad();
                let bias = Tensor::<1>::random([4], Distribution::Normal(0.0, 1.0), &device)
                    .require_grad();
                let output_weights = random([5, 4, 3, 4]);
                let run = |block: &dyn Fn(Tensor<4>) -> Tensor<4>| {
                    let leaf = input.clone().detach();
                    let leaf = if train_input {
                        leaf.require_grad()
                    } else {
                        leaf
                    };
                    let output = block(leaf.clone());
                    let grads = (output.clone() * output_weights.clone()).sum().backward();
                    (
                        values(output),
                        leaf.grad(&grads).map(values),
                        values(weight.grad(&grads).unwrap()),
                        values(bias.grad(&grads).unwrap()),
                    )
                };
                let ours = run(&|x| conv3x3_pool_relu(x, weight.clone(), bias.clone()));
                let burns = run(&|x| burns_block(x, weight.clone(), bias.clone()));
                let case = format!("{backend}, {channels} channels");
                assert_close(&ours.0, &burns.0, &format!("output ({case})"));
                assert!(ours.0.contains(&0.0), "ReLU clamped something ({case})");
                assert_eq!(ours.1.is_some(), train_input, "{case}");
                if let (Some(ours), Some(burns)) = (&ours.1, &burns.1) {
                    assert_close(ours, burns, &format!("input gradient ({case})"));
                }
                assert_close(&ours.2, &burns.2, &format!("weight gradient ({case})"));
                assert_close(&ours.3, &burns.3, &format!("bias gradient ({case})"));
            }
        }
    }

    #[test]
    fn inference_matches_burns_layers() {
        for backend in [BackendKind::Flex, BackendKind::Ndarray] {
            let device = backend.device();
            device.seed(4);
            let input = Tensor::<4>::random([3, 2, 6, 5], Distribution::Default, &device);
            let weight = Tensor::<4>::random([5, 2, 3, 3], Distribution::Normal(0.0, 1.0), &device);
            let bias = Tensor::<1>::random([5], Distribution::Normal(0.0, 1.0), &device);
            let ours = conv3x3_pool_relu(input.clone(), weight.clone(), bias.clone());
            assert_eq!(ours.dims(), [3, 5, 3, 2]);
            assert_close(
                &values(ours),
                &values(burns_block(input, weight, bias)),
                &backend.to_string(),
            );
        }
    }

    #[test]
    fn unpool_routes_gradients_to_winners_and_skips_clamped_values() {
        // One filter, a 2x4 image pooled to 1x2: the first window's winner is its bottom-right
        // value, the second window was clamped by ReLU.
        let shape = BlockShape::new(&[1, 1, 2, 4], &[1, 1, 3, 3]);
        let mut conv_grad = vec![7.0; 8];
        let mut bias_grad = vec![0.5];
        unpool(
            &[2.0, 5.0],
            &[3, CLAMPED],
            shape,
            (&mut conv_grad, 8),
            &mut bias_grad,
        );
        assert_eq!(conv_grad, [0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0]);
        assert_eq!(bias_grad, [2.5]);
    }
}
