//! One feature block of the network as a single differentiable operation:
//! `relu(max_pool_2x2(conv3x3_same(x) + bias))`, identical to the three layers in sequence
//! (ReLU and max commute, so it is applied to the pooled quarter of the values).

use std::cell::RefCell;
use std::sync::Arc;
use std::thread::LocalKey;

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::{ConvOptions, MaxPoolOptions};
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Autodiff, Backend, Dispatch, Flex, NdArray, TensorMetadata, backend_extension,
};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::module::{conv2d, max_pool2d};
use rayon::prelude::*;

use super::im2col::{add_assign, im2col, matmul, row_major};
use super::simd::simd_versions;
use super::window::{CLAMPED, pool_relu_planes};
use super::{HostTensors, has_fused_kernel};

/// Images per parallel task: enough work to amortise a task, few enough to balance two to
/// sixteen threads on a batch of 128. It depends on the shape only, so that the weight-gradient
/// sum (and with it training) is the same whatever the thread count.
const IMAGES_PER_TASK: usize = 4;

/// A task's forward scratch matrices stay within this many bytes when one image allows it, so
/// large images of your own do not multiply memory use by the task size.
const TASK_SCRATCH_BYTES: usize = 8 << 20;

/// `relu(max_pool_2x2(conv2d(input, weight, bias)))` for a `[batch, channels, height, width]`
/// input, `[filters, channels, 3, 3]` weights and zero "same" padding; pooling has stride 2 and
/// drops an odd last row or column. Returns `[batch, filters, height / 2, width / 2]`. Runs on
/// any backend and is differentiable with respect to all three inputs: as the fused kernel where
/// [`has_fused_kernel`] says the input's backend has it, as [`conv3x3_pool_relu_composed`]
/// elsewhere.
pub fn conv3x3_pool_relu(input: Tensor<4>, weight: Tensor<4>, bias: Tensor<1>) -> Tensor<4> {
    if has_fused_kernel(&input.device()) {
        conv3x3_pool_relu_fused(input, weight, bias)
    } else {
        conv3x3_pool_relu_composed(input, weight, bias)
    }
}

/// [`conv3x3_pool_relu`] made of burn's own `conv2d`, `max_pool2d` and `relu`, for every
/// backend: what runs where there is no fused kernel, and the reference the kernel is tested
/// against.
pub fn conv3x3_pool_relu_composed(
    input: Tensor<4>,
    weight: Tensor<4>,
    bias: Tensor<1>,
) -> Tensor<4> {
    let same = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
    let conv = conv2d(input, weight, Some(bias), same);
    let [batch, filters, height, width] = conv.dims();
    if height < 2 || width < 2 {
        // Nothing to pool, and burn-ndarray's max_pool2d panics on a side shorter than its
        // window: the empty result, still connected to the inputs for autodiff.
        return conv.slice([0..batch, 0..filters, 0..height / 2, 0..width / 2]);
    }
    // Stride 2, floor mode: an odd last row or column is dropped, as in the kernel.
    relu(max_pool2d(conv, MaxPoolOptions::new([2, 2])))
}

/// The hand-written kernel; only for backends [`has_fused_kernel`] accepts (the dispatch panics
/// on any other).
fn conv3x3_pool_relu_fused(input: Tensor<4>, weight: Tensor<4>, bias: Tensor<1>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as ConvBlockOps>::conv3x3_pool_relu(
        input.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
    ))
}

/// The operation as burn dispatches it to each backend. These must be the backends
/// [`has_fused_kernel`] accepts.
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
        forward::<Self>(x, weight, bias, false).0
    }
}

impl ConvBlockOps for NdArray {
    fn conv3x3_pool_relu(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        forward::<Self>(x, weight, bias, false).0
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
                    true,
                );
                prep.finish((x_node, weight_node, Arc::new(winners)), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(
                forward::<B>(
                    x.into_primitive(),
                    weight.into_primitive(),
                    bias.into_primitive(),
                    false,
                )
                .0,
            ),
        }
    }
}

/// The block's output and, when `record_winners` (for a backward pass), for every output value
/// which of its 2x2 window won (0-3 in row-major order, or [`CLAMPED`]).
fn forward<B: HostTensors>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
    record_winners: bool,
) -> (FloatTensor<B>, Vec<u8>) {
    let shape = BlockShape::new(&x.shape(), &weight.shape());
    let (output, winners) = B::read_f32(x, |x| {
        B::read_f32(weight, |weight| {
            B::read_f32(bias, |bias| {
                forward_f32(x, weight, bias, shape, record_winners)
            })
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

    /// [`IMAGES_PER_TASK`], or fewer (at least one) for images whose unfolded matrix and
    /// convolution output would not fit [`TASK_SCRATCH_BYTES`] that many times.
    fn images_per_task(&self) -> usize {
        let scratch_per_image = (self.taps() + self.filters) * self.plane() * size_of::<f32>();
        (TASK_SCRATCH_BYTES / scratch_per_image.max(1)).clamp(1, IMAGES_PER_TASK)
    }
}

/// Per-task scratch matrices, with the task's images side by side (column
/// `image * plane + pixel`) so that each product is one gemm call for all of them.
struct Scratch<'a> {
    /// The images unfolded: `taps x columns`.
    col: &'a mut [f32],
    /// Their convolution outputs: `filters x columns`.
    conv: &'a mut [f32],
    columns: usize,
}

thread_local! {
    /// Each thread's scratch buffers, kept between calls: allocating and zeroing them per
    /// task cost ~5% of a training step. Every use overwrites what it reads.
    static BUFFERS: RefCell<[Vec<f32>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
}

/// Runs `work` with scratch matrices for `images` images on this thread's buffers.
fn with_scratch<R>(shape: BlockShape, images: usize, work: impl FnOnce(Scratch<'_>) -> R) -> R {
    let columns = images * shape.plane();
    let lens = [shape.taps() * columns, shape.filters * columns];
    with_thread_buffers(&BUFFERS, lens, |[col, conv]| {
        work(Scratch { col, conv, columns })
    })
}

/// Runs `work` on this thread's `buffers`, each grown to at least its length in `lens` and
/// handed over cut to it. Nothing is cleared: every user overwrites what it reads.
fn with_thread_buffers<const N: usize, R>(
    buffers: &'static LocalKey<RefCell<[Vec<f32>; N]>>,
    lens: [usize; N],
    work: impl FnOnce([&mut [f32]; N]) -> R,
) -> R {
    buffers.with_borrow_mut(|buffers| {
        let mut buffers = buffers.iter_mut().zip(lens).map(|(buffer, len)| {
            if buffer.len() < len {
                buffer.resize(len, 0.0);
            }
            &mut buffer[..len]
        });
        work(std::array::from_fn(|_| {
            buffers.next().expect("one buffer per length")
        }))
    })
}

fn image_of<T>(batch: &[T], image: usize, image_len: usize) -> &[T] {
    &batch[image * image_len..(image + 1) * image_len]
}

fn forward_f32(
    x: &[f32],
    weight: &[f32],
    bias: &[f32],
    shape: BlockShape,
    record_winners: bool,
) -> (Vec<f32>, Vec<u8>) {
    let (plane, output_len) = (shape.plane(), shape.output_image_len());
    let mut output = vec![0f32; shape.batch * output_len];
    let mut winners = vec![CLAMPED; if record_winners { output.len() } else { 0 }];
    if output.is_empty() {
        return (output, winners);
    }
    let images_per_task = shape.images_per_task();
    let task_len = images_per_task * output_len;
    let winner_chunks: Vec<Option<&mut [u8]>> = if record_winners {
        winners.chunks_mut(task_len).map(Some).collect()
    } else {
        (0..shape.batch.div_ceil(images_per_task))
            .map(|_| None)
            .collect()
    };
    output
        .par_chunks_mut(task_len)
        .zip(winner_chunks)
        .enumerate()
        .for_each(|(task, (outputs, winners))| {
            // Inference has no use for the winners: they go to a small buffer and are dropped.
            let mut discarded = Vec::new();
            let winners = match winners {
                Some(winners) => winners,
                None => {
                    discarded.resize(outputs.len(), CLAMPED);
                    &mut discarded
                }
            };
            let images = outputs.len() / output_len;
            with_scratch(shape, images, |scratch| {
                let (columns, sides) = (scratch.columns, [shape.height, shape.width]);
                let image_pixels =
                    |image| image_of(x, task * images_per_task + image, shape.image_len());
                for image in 0..images {
                    let col = &mut scratch.col[image * plane..];
                    im2col(image_pixels(image), shape.height, shape.width, col, columns);
                }
                for (filter_row, &filter_bias) in scratch.conv.chunks_mut(columns).zip(bias) {
                    filter_row.fill(filter_bias);
                }
                // conv (filters x columns) += weight (filters x taps) · col (taps x columns)
                matmul(
                    [shape.filters, columns, shape.taps()],
                    (scratch.conv, row_major(columns)),
                    (weight, row_major(shape.taps())),
                    (scratch.col, row_major(columns)),
                );
                let images = outputs
                    .chunks_mut(output_len)
                    .zip(winners.chunks_mut(output_len));
                for (image, (output, winners)) in images.enumerate() {
                    let conv = &scratch.conv[image * plane..];
                    pool_relu_planes(conv, columns, sides, output, winners);
                }
            })
        });
    (output, winners)
}

struct GradientsF32 {
    input: Option<Vec<f32>>,
    weight: Vec<f32>,
    bias: Vec<f32>,
}

/// The backward pass. Only the winning position of each window that ReLU let through has a
/// gradient (under a quarter of the convolution outputs), so rather than multiplying mostly-zero
/// matrices it visits those positions: each adds its gradient times the pixels under the kernel
/// to the filter's weight gradient, and times the filter's weights to the input gradient. With
/// the image stored pixel-major, each tap of either is one short vectorized loop over channels.
fn backward_f32(
    x: &[f32],
    weight: &[f32],
    winners: &[u8],
    output_grad: &[f32],
    shape: BlockShape,
    input_grad_needed: bool,
) -> GradientsF32 {
    let (image_len, output_len) = (shape.image_len(), shape.output_image_len());
    let (taps, filters) = (shape.taps(), shape.filters);
    let weight = tap_major(weight, filters, shape.channels);
    let images_per_task = shape.images_per_task();
    let tasks = shape.batch.div_ceil(images_per_task);
    let mut input_grad = input_grad_needed.then(|| vec![0f32; shape.batch * image_len]);
    let input_grad_chunks: Vec<Option<&mut [f32]>> = match input_grad.as_mut() {
        Some(grad) if !grad.is_empty() => grad
            .chunks_mut(images_per_task * image_len)
            .map(Some)
            .collect(),
        _ => (0..tasks).map(|_| None).collect(),
    };
    // Each task returns its images' share of the weight and bias gradients, summed below in
    // task order so the result does not depend on scheduling.
    let partial_sums: Vec<(Vec<f32>, Vec<f32>)> = input_grad_chunks
        .into_par_iter()
        .enumerate()
        .map(|(task, mut input_grads)| {
            let mut weight_grad = vec![0f32; filters * taps];
            let mut bias_grad = vec![0f32; filters];
            let first = task * images_per_task;
            with_pixel_scratch(shape, |scratch| {
                for image in first..(first + images_per_task).min(shape.batch) {
                    let image_grad = input_grads
                        .as_deref_mut()
                        .map(|grads| &mut grads[(image - first) * image_len..][..image_len]);
                    image_backward(
                        ImageGrads {
                            x: image_of(x, image, image_len),
                            winners: image_of(winners, image, output_len),
                            output_grad: image_of(output_grad, image, output_len),
                            weight: &weight,
                        },
                        shape,
                        scratch,
                        (&mut weight_grad, &mut bias_grad),
                        image_grad,
                    );
                }
            });
            (weight_grad, bias_grad)
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
        weight: channel_major(&weight_grad, filters, shape.channels),
        bias: bias_grad,
    }
}

/// `[filters, channels, 3, 3]` weights reordered to `[filters, 3, 3, channels]`, the order in
/// which the backward pass reads a pixel-major image under the kernel.
fn tap_major(weight: &[f32], filters: usize, channels: usize) -> Vec<f32> {
    let mut reordered = vec![0f32; weight.len()];
    for filter in 0..filters {
        for channel in 0..channels {
            for tap in 0..9 {
                reordered[(filter * 9 + tap) * channels + channel] =
                    weight[(filter * channels + channel) * 9 + tap];
            }
        }
    }
    reordered
}

/// The inverse of [`tap_major`].
fn channel_major(weight: &[f32], filters: usize, channels: usize) -> Vec<f32> {
    let mut reordered = vec![0f32; weight.len()];
    for filter in 0..filters {
        for channel in 0..channels {
            for tap in 0..9 {
                reordered[(filter * channels + channel) * 9 + tap] =
                    weight[(filter * 9 + tap) * channels + channel];
            }
        }
    }
    reordered
}

/// One image's share of a backward pass.
struct ImageGrads<'a> {
    x: &'a [f32],
    winners: &'a [u8],
    output_grad: &'a [f32],
    /// Tap-major weights (see [`tap_major`]).
    weight: &'a [f32],
}

/// Per-thread buffers of the backward pass: one image and its gradient, pixel-major
/// (`[pixel, channel]`, so that the channels under one kernel tap are contiguous) with a border
/// of zeros one pixel wide, so that no tap needs a bounds check.
struct PixelScratch<'a> {
    pixels: &'a mut [f32],
    pixels_grad: &'a mut [f32],
}

thread_local! {
    static PIXEL_BUFFERS: RefCell<[Vec<f32>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
}

fn with_pixel_scratch<R>(shape: BlockShape, work: impl FnOnce(&mut PixelScratch<'_>) -> R) -> R {
    let len = (shape.height + 2) * (shape.width + 2) * shape.channels;
    with_thread_buffers(&PIXEL_BUFFERS, [len; 2], |[pixels, pixels_grad]| {
        work(&mut PixelScratch {
            pixels,
            pixels_grad,
        })
    })
}

fn image_backward(
    image: ImageGrads<'_>,
    shape: BlockShape,
    scratch: &mut PixelScratch<'_>,
    grads: (&mut [f32], &mut [f32]),
    input_grad: Option<&mut [f32]>,
) {
    // The network's two channel counts get loops of constant length, which vectorize fully.
    match shape.channels {
        1 => image_backward_for::<1>(image, shape, scratch, grads, input_grad),
        16 => image_backward_for::<16>(image, shape, scratch, grads, input_grad),
        _ => image_backward_for::<0>(image, shape, scratch, grads, input_grad),
    }
}

simd_versions! {
    /// [`image_backward`] for `CHANNELS` channels, or any number when `CHANNELS` is 0.
    fn image_backward_for<const CHANNELS: usize>(
        image: ImageGrads<'_>,
        shape: BlockShape,
        scratch: &mut PixelScratch<'_>,
        grads: (&mut [f32], &mut [f32]),
        input_grad: Option<&mut [f32]>,
    ) = image_backward_with;
}

/// [`image_backward_for`], inlined into each of its versions.
#[inline(always)]
fn image_backward_with<const CHANNELS: usize>(
    image: ImageGrads<'_>,
    shape: BlockShape,
    scratch: &mut PixelScratch<'_>,
    (weight_grad, bias_grad): (&mut [f32], &mut [f32]),
    input_grad: Option<&mut [f32]>,
) {
    let channels = if CHANNELS == 0 {
        shape.channels
    } else {
        CHANNELS
    };
    let (padded_width, taps, pooled_width) = (shape.width + 2, shape.taps(), shape.width / 2);
    to_padded_pixel_major(image.x, shape, scratch.pixels);
    if input_grad.is_some() {
        scratch.pixels_grad.fill(0.0);
    }
    let filters = image
        .output_grad
        .chunks(shape.pooled_plane())
        .zip(image.winners.chunks(shape.pooled_plane()))
        .zip(weight_grad.chunks_mut(taps))
        .zip(image.weight.chunks(taps))
        .zip(bias_grad);
    for ((((output_grad, winners), filter_grad), filter), bias_grad) in filters {
        // The filter's weight gradient, kept in registers while its windows are visited.
        let mut filter_sums = [[0f32; CHANNELS]; 9];
        let rows = output_grad
            .chunks(pooled_width)
            .zip(winners.chunks(pooled_width));
        for (pooled_y, (output_grad, winners)) in rows.enumerate() {
            for (pooled_x, (&grad, &winner)) in output_grad.iter().zip(winners).enumerate() {
                if winner == CLAMPED {
                    continue;
                }
                *bias_grad += grad;
                let y = 2 * pooled_y + usize::from(winner / 2);
                let x = 2 * pooled_x + usize::from(winner % 2);
                // The kernel's three rows of three pixels, in the padded image.
                let corner = (y * padded_width + x) * channels;
                for kernel_row in 0..3 {
                    let start = corner + kernel_row * padded_width * channels;
                    let pixels = scratch.pixels[start..start + 3 * channels].chunks_exact(channels);
                    let taps = 3 * kernel_row..3 * kernel_row + 3;
                    if CHANNELS == 0 {
                        let sums = filter_grad[taps.start * channels..taps.end * channels]
                            .chunks_exact_mut(channels);
                        for (sums, pixel) in sums.zip(pixels) {
                            axpy::<0>(grad, pixel, sums);
                        }
                    } else {
                        for (sums, pixel) in filter_sums[taps.clone()].iter_mut().zip(pixels) {
                            axpy::<CHANNELS>(grad, pixel, sums);
                        }
                    }
                    if input_grad.is_some() {
                        let grads = scratch.pixels_grad[start..start + 3 * channels]
                            .chunks_exact_mut(channels);
                        let weights = filter[taps.start * channels..taps.end * channels]
                            .chunks_exact(channels);
                        for (grads, weights) in grads.zip(weights) {
                            axpy::<CHANNELS>(grad, weights, grads);
                        }
                    }
                }
            }
        }
        if CHANNELS > 0 {
            add_assign(filter_grad, filter_sums.as_flattened());
        }
    }
    if let Some(input_grad) = input_grad {
        add_from_padded_pixel_major(scratch.pixels_grad, shape, input_grad);
    }
}

/// `[channels, height, width]` reordered to `[height + 2, width + 2, channels]` with a zero
/// border.
fn to_padded_pixel_major(image: &[f32], shape: BlockShape, padded: &mut [f32]) {
    let (channels, width, plane) = (shape.channels, shape.width, shape.plane());
    padded.fill(0.0);
    for (channel, values) in image.chunks(plane).enumerate() {
        for (y, row) in values.chunks(width).enumerate() {
            let start = ((y + 1) * (width + 2) + 1) * channels + channel;
            for (x, &value) in row.iter().enumerate() {
                padded[start + x * channels] = value;
            }
        }
    }
}

/// Adds the inside of a [`to_padded_pixel_major`] layout back into `[channels, height, width]`.
fn add_from_padded_pixel_major(padded: &[f32], shape: BlockShape, image: &mut [f32]) {
    let (channels, width, plane) = (shape.channels, shape.width, shape.plane());
    for (channel, values) in image.chunks_mut(plane).enumerate() {
        for (y, row) in values.chunks_mut(width).enumerate() {
            let start = ((y + 1) * (width + 2) + 1) * channels + channel;
            for (x, value) in row.iter_mut().enumerate() {
                *value += padded[start + x * channels];
            }
        }
    }
}

/// `target += factor * source`, over `N` values (or any number when `N` is 0). Working on a
/// local copy of fixed length lets the compiler use whole vector registers.
#[inline(always)]
fn axpy<const N: usize>(factor: f32, source: &[f32], target: &mut [f32]) {
    if N == 0 {
        for (target, source) in target.iter_mut().zip(source) {
            *target += factor * source;
        }
        return;
    }
    let (Ok(source), Ok(target)) = (
        <&[f32; N]>::try_from(source),
        <&mut [f32; N]>::try_from(target),
    ) else {
        unreachable!("axpy over {N} values")
    };
    let mut sum = *target;
    for (sum, source) in sum.iter_mut().zip(source) {
        *sum += factor * source;
    }
    *target = sum;
}

#[cfg(test)]
mod tests;
