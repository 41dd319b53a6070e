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

use super::simd::{self, SimdLevel};
use super::{HostTensors, has_fused_kernel};
use backward::backward_f32;
use forward::forward_f32;

/// Images per parallel task: enough work to amortise a task, few enough to balance two to
/// sixteen threads on a batch of 128. It depends on the shape only, so that the weight-gradient
/// sum (and with it training) is the same whatever the thread count.
const IMAGES_PER_TASK: usize = 4;

/// Input channels from which the forward pass takes Winograd's algorithm (with AVX-512 or
/// AVX2): its products take 2.25x fewer multiplications than im2col's, but its transforms cost
/// per channel as much as im2col itself. A single channel (the first layer) takes the direct path
/// instead ([`direct`]); 2 to 7 channels take im2col.
const WINOGRAD_MIN_CHANNELS: usize = 8;

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
/// which of its 2x2 window won (0-3 in row-major order, or `window::CLAMPED`).
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

    /// How the forward pass convolves: with AVX-512 or AVX2, [`WINOGRAD_MIN_CHANNELS`] or more
    /// by Winograd's F(2x2, 3x3) and a single channel (the first layer) by the direct kernel
    /// of [`direct`]; 2 to 7 channels, every block at the scalar level, and everything when
    /// `MNIST_CNN_CONV=im2col` (for measuring the others against it), by im2col and `gemm`.
    /// Both vector paths measured faster than im2col on the network's blocks, at both levels.
    fn forward_path(&self) -> ForwardPath {
        if super::conv_env_forces_im2col() || simd::level() < SimdLevel::Avx2 {
            ForwardPath::Im2col
        } else if self.channels >= WINOGRAD_MIN_CHANNELS {
            ForwardPath::Winograd
        } else if self.channels == 1 {
            ForwardPath::Direct
        } else {
            ForwardPath::Im2col
        }
    }

    /// [`IMAGES_PER_TASK`], or fewer (at least one) for images whose unfolded matrix and
    /// convolution output would not fit [`TASK_SCRATCH_BYTES`] that many times.
    fn images_per_task(&self) -> usize {
        let scratch_per_image = (self.taps() + self.filters) * self.plane() * size_of::<f32>();
        (TASK_SCRATCH_BYTES / scratch_per_image.max(1)).clamp(1, IMAGES_PER_TASK)
    }
}

/// See [`BlockShape::forward_path`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ForwardPath {
    Winograd,
    /// [`direct`]: one channel only.
    Direct,
    Im2col,
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

mod backward;
mod direct;
mod forward;
mod pixel_major;
mod single_channel;
#[cfg(test)]
mod tests;
mod visit16;
