//! 3x3 convolution, stride 1, zero "same" padding, with bias: both of the network's convolutions.
//!
//! burn-flex runs the 16->32 convolution's backward through its generic conv3d and
//! conv_transpose3d paths (~45% of a training step) and its forward through per-tile
//! allocations. Here each image is unfolded once into an im2col buffer and every product is one
//! `gemm` call: output = W · col, weight gradient += G · colᵀ, input gradient = col2im(Wᵀ · G).
//! Images are split into fixed chunks, so the weight-gradient sum (and with it training) is the
//! same whatever the thread count.

// burn-ndarray is deprecated upstream; the product keeps it selectable, so its types are named here.
#![allow(deprecated)]

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::{ConvOptions, ModuleOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Autodiff, Backend, Dispatch, Flex, NdArray, TensorMetadata, backend_extension,
};
use burn::tensor::{DType, Tensor, TensorData};
use rayon::prelude::*;

use super::contiguous_f32;

/// Images per parallel task: enough work to amortise a task, few enough to balance two to
/// sixteen threads on a batch of 128.
const IMAGES_PER_TASK: usize = 4;

/// `[batch, channels, height, width]` convolved with `[filters, channels, 3, 3]` weights plus a
/// `[filters]` bias, zero-padded to keep the height and width; on any backend, differentiable.
pub fn conv3x3_same(input: Tensor<4>, weight: Tensor<4>, bias: Tensor<1>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as ConvOps>::conv3x3_same(
        input.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
    ))
}

/// The operation as burn dispatches it to each backend.
#[backend_extension(Flex, NdArray, Autodiff)]
pub trait ConvOps: Backend {
    fn conv3x3_same(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

/// Gradients of the convolution's three inputs; the image's only when it is being trained through.
pub struct ConvGradients<B: Backend> {
    input: Option<FloatTensor<B>>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
}

/// Forward and backward kernels per concrete backend. By default, burn's convolution.
pub trait ConvKernels: Backend {
    fn conv3x3_same_forward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::conv2d(x, weight, Some(bias), same_padding())
    }

    fn conv3x3_same_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        input_grad_needed: bool,
    ) -> ConvGradients<Self> {
        burns_backward::<Self>(x, weight, bias, output_grad, input_grad_needed)
    }
}

fn same_padding() -> ConvOptions<2> {
    ConvOptions::new([1, 1], [1, 1], [1, 1], 1)
}

fn burns_backward<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
    output_grad: FloatTensor<B>,
    input_grad_needed: bool,
) -> ConvGradients<B> {
    let input = input_grad_needed.then(|| {
        B::conv2d_x_backward(
            x.clone(),
            weight.clone(),
            output_grad.clone(),
            same_padding(),
        )
    });
    ConvGradients {
        input,
        weight: B::conv2d_weight_backward(x.clone(), weight, output_grad.clone(), same_padding()),
        bias: B::conv2d_bias_backward(x, bias, output_grad),
    }
}

impl ConvKernels for NdArray {}

impl ConvKernels for Flex {
    fn conv3x3_same_forward(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
        if !all_f32(&[&x, &weight, &bias]) {
            return Self::conv2d(x, weight, Some(bias), same_padding());
        }
        let (x, weight, bias) = (
            x.to_contiguous(),
            weight.to_contiguous(),
            bias.to_contiguous(),
        );
        let shape = ConvShape::of(&x, &weight);
        let output = forward_f32(
            contiguous_f32(&x),
            contiguous_f32(&weight),
            contiguous_f32(&bias),
            shape,
        );
        flex_tensor(output, shape.output_dims())
    }

    fn conv3x3_same_backward(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        output_grad: FlexTensor,
        input_grad_needed: bool,
    ) -> ConvGradients<Self> {
        if !all_f32(&[&x, &weight, &output_grad]) {
            return burns_backward::<Self>(x, weight, bias, output_grad, input_grad_needed);
        }
        let (x, weight, output_grad) = (
            x.to_contiguous(),
            weight.to_contiguous(),
            output_grad.to_contiguous(),
        );
        let shape = ConvShape::of(&x, &weight);
        let grads = backward_f32(
            contiguous_f32(&x),
            contiguous_f32(&weight),
            contiguous_f32(&output_grad),
            shape,
            input_grad_needed,
        );
        ConvGradients {
            input: grads
                .input
                .map(|input| flex_tensor(input, shape.input_dims())),
            weight: flex_tensor(grads.weight, shape.weight_dims()),
            bias: flex_tensor(grads.bias, [shape.filters]),
        }
    }
}

fn all_f32(tensors: &[&FlexTensor]) -> bool {
    tensors.iter().all(|tensor| tensor.dtype() == DType::F32)
}

fn flex_tensor<const D: usize>(values: Vec<f32>, dims: [usize; D]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, dims))
}

impl ConvOps for NdArray {
    fn conv3x3_same(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::conv3x3_same_forward(x, weight, bias)
    }
}

impl ConvOps for Flex {
    fn conv3x3_same(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
        Self::conv3x3_same_forward(x, weight, bias)
    }
}

impl<B: Backend + ConvKernels, C: CheckpointStrategy> ConvOps for Autodiff<B, C> {
    fn conv3x3_same(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        match Conv3x3Same
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = (
                    prep.checkpoint(&x),
                    prep.checkpoint(&weight),
                    prep.checkpoint(&bias),
                );
                let output = B::conv3x3_same_forward(
                    x.into_primitive(),
                    weight.into_primitive(),
                    bias.into_primitive(),
                );
                prep.finish(state, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::conv3x3_same_forward(
                x.into_primitive(),
                weight.into_primitive(),
                bias.into_primitive(),
            )),
        }
    }
}

#[derive(Debug)]
struct Conv3x3Same;

impl<B: Backend + ConvKernels> Backward<B, 3> for Conv3x3Same {
    type State = (NodeId, NodeId, NodeId);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [x_parent, weight_parent, bias_parent] = ops.parents;
        let output_grad = grads.consume::<B>(&ops.node);
        let (x, weight, bias) = ops.state;
        let x = checkpointer.retrieve_node_output(x);
        let weight = checkpointer.retrieve_node_output(weight);
        let bias = checkpointer.retrieve_node_output(bias);
        let computed = B::conv3x3_same_backward(x, weight, bias, output_grad, x_parent.is_some());
        if let (Some(parent), Some(input_grad)) = (x_parent, computed.input) {
            grads.register::<B>(parent.id, input_grad);
        }
        if let Some(parent) = weight_parent {
            grads.register::<B>(parent.id, computed.weight);
        }
        if let Some(parent) = bias_parent {
            grads.register::<B>(parent.id, computed.bias);
        }
    }
}

/// Sizes of one convolution call.
#[derive(Debug, Clone, Copy)]
struct ConvShape {
    batch: usize,
    channels: usize,
    height: usize,
    width: usize,
    filters: usize,
}

impl ConvShape {
    fn of(x: &FlexTensor, weight: &FlexTensor) -> Self {
        let (x, weight) = (x.shape(), weight.shape());
        assert!(
            weight[1] == x[1] && weight[2] == 3 && weight[3] == 3,
            "conv3x3_same: weights {weight:?} do not fit input {x:?}"
        );
        ConvShape {
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

    fn output_image_len(&self) -> usize {
        self.filters * self.plane()
    }

    fn input_dims(&self) -> [usize; 4] {
        [self.batch, self.channels, self.height, self.width]
    }

    fn output_dims(&self) -> [usize; 4] {
        [self.batch, self.filters, self.height, self.width]
    }

    fn weight_dims(&self) -> [usize; 4] {
        [self.filters, self.channels, 3, 3]
    }
}

fn forward_f32(x: &[f32], weight: &[f32], bias: &[f32], shape: ConvShape) -> Vec<f32> {
    let (plane, taps, filters) = (shape.plane(), shape.taps(), shape.filters);
    let mut output = vec![0f32; shape.batch * shape.output_image_len()];
    if output.is_empty() {
        return output;
    }
    output
        .par_chunks_mut(IMAGES_PER_TASK * shape.output_image_len())
        .enumerate()
        .for_each(|(task, outputs)| {
            let mut col = vec![0f32; taps * plane];
            for (offset, output) in outputs.chunks_mut(shape.output_image_len()).enumerate() {
                let image = task * IMAGES_PER_TASK + offset;
                im2col(image_of(x, image, shape.image_len()), shape, &mut col);
                for (filter_plane, &filter_bias) in output.chunks_mut(plane).zip(bias) {
                    filter_plane.fill(filter_bias);
                }
                // output (filters x plane) += weight (filters x taps) · col (taps x plane)
                matmul(
                    [filters, plane, taps],
                    (output, row_major(plane)),
                    true,
                    (weight, row_major(taps)),
                    (&col, row_major(plane)),
                );
            }
        });
    output
}

struct GradientsF32 {
    input: Option<Vec<f32>>,
    weight: Vec<f32>,
    bias: Vec<f32>,
}

fn backward_f32(
    x: &[f32],
    weight: &[f32],
    output_grad: &[f32],
    shape: ConvShape,
    input_grad_needed: bool,
) -> GradientsF32 {
    let (plane, taps, filters) = (shape.plane(), shape.taps(), shape.filters);
    let tasks = shape.batch.div_ceil(IMAGES_PER_TASK);
    let mut input_grad = input_grad_needed.then(|| vec![0f32; shape.batch * shape.image_len()]);
    let input_grad_chunks: Vec<Option<&mut [f32]>> = match input_grad.as_mut() {
        Some(grad) if !grad.is_empty() => grad
            .chunks_mut(IMAGES_PER_TASK * shape.image_len())
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
            let mut col = vec![0f32; taps * plane];
            let mut col_grad = vec![
                0f32;
                if input_grads.is_some() {
                    taps * plane
                } else {
                    0
                }
            ];
            let mut weight_grad = vec![0f32; filters * taps];
            let mut bias_grad = vec![0f32; filters];
            let first = task * IMAGES_PER_TASK;
            for image in first..(first + IMAGES_PER_TASK).min(shape.batch) {
                let grad = image_of(output_grad, image, shape.output_image_len());
                im2col(image_of(x, image, shape.image_len()), shape, &mut col);
                // weight_grad (filters x taps) += grad (filters x plane) · colᵀ (plane x taps)
                matmul(
                    [filters, taps, plane],
                    (&mut weight_grad, row_major(taps)),
                    true,
                    (grad, row_major(plane)),
                    (&col, transposed(plane)),
                );
                for (sum, filter_grad) in bias_grad.iter_mut().zip(grad.chunks(plane)) {
                    *sum += filter_grad.iter().sum::<f32>();
                }
                if let Some(input_grads) = input_grads.as_deref_mut() {
                    // col_grad (taps x plane) = weightᵀ (taps x filters) · grad (filters x plane)
                    matmul(
                        [taps, plane, filters],
                        (&mut col_grad, row_major(plane)),
                        false,
                        (weight, transposed(taps)),
                        (grad, row_major(plane)),
                    );
                    let image_grad = &mut input_grads[(image - first) * shape.image_len()..]
                        [..shape.image_len()];
                    col2im_add(&col_grad, shape, image_grad);
                }
            }
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
        weight: weight_grad,
        bias: bias_grad,
    }
}

fn image_of(batch: &[f32], image: usize, image_len: usize) -> &[f32] {
    &batch[image * image_len..(image + 1) * image_len]
}

fn add_assign(sum: &mut [f32], term: &[f32]) {
    for (sum, term) in sum.iter_mut().zip(term) {
        *sum += term;
    }
}

/// Unfolds one image into `col`: row `(channel, ky, kx)` is the channel's plane shifted by
/// `(ky - 1, kx - 1)`, with zeros where the shift leaves the image.
fn im2col(image: &[f32], shape: ConvShape, col: &mut [f32]) {
    let (height, width, plane) = (shape.height, shape.width, shape.plane());
    for (channel, source) in image.chunks(plane).enumerate() {
        for tap in 0..9 {
            let (ky, kx) = (tap / 3, tap % 3);
            let row = &mut col[(channel * 9 + tap) * plane..][..plane];
            for (y, destination) in row.chunks_mut(width).enumerate() {
                match (y + ky)
                    .checked_sub(1)
                    .filter(|&source_y| source_y < height)
                {
                    Some(source_y) => shifted_copy(
                        &source[source_y * width..(source_y + 1) * width],
                        kx,
                        destination,
                    ),
                    None => destination.fill(0.0),
                }
            }
        }
    }
}

/// `destination[x] = source[x + kx - 1]`, zero where that is outside the row.
fn shifted_copy(source: &[f32], kx: usize, destination: &mut [f32]) {
    let width = destination.len();
    match kx {
        0 => {
            destination[0] = 0.0;
            destination[1..].copy_from_slice(&source[..width - 1]);
        }
        1 => destination.copy_from_slice(source),
        _ => {
            destination[..width - 1].copy_from_slice(&source[1..]);
            destination[width - 1] = 0.0;
        }
    }
}

/// The adjoint of [`im2col`]: adds each row of `col_grad` back into `image_grad` at its shift.
fn col2im_add(col_grad: &[f32], shape: ConvShape, image_grad: &mut [f32]) {
    let (height, width, plane) = (shape.height, shape.width, shape.plane());
    for (channel, target) in image_grad.chunks_mut(plane).enumerate() {
        for tap in 0..9 {
            let (ky, kx) = (tap / 3, tap % 3);
            let row = &col_grad[(channel * 9 + tap) * plane..][..plane];
            for (y, source) in row.chunks(width).enumerate() {
                if let Some(target_y) = (y + ky).checked_sub(1).filter(|&ty| ty < height) {
                    shifted_add(
                        source,
                        kx,
                        &mut target[target_y * width..(target_y + 1) * width],
                    );
                }
            }
        }
    }
}

/// `target[x + kx - 1] += source[x]` wherever that is inside the row.
fn shifted_add(source: &[f32], kx: usize, target: &mut [f32]) {
    let width = target.len();
    match kx {
        0 => add_assign(&mut target[..width - 1], &source[1..]),
        1 => add_assign(target, source),
        _ => add_assign(&mut target[1..], &source[..width - 1]),
    }
}

/// Element strides of a matrix view.
#[derive(Clone, Copy)]
struct Strides {
    row: usize,
    column: usize,
}

fn row_major(columns: usize) -> Strides {
    Strides {
        row: columns,
        column: 1,
    }
}

/// The transpose of a row-major matrix with `columns` columns.
fn transposed(columns: usize) -> Strides {
    Strides {
        row: 1,
        column: columns,
    }
}

fn spans(len: usize, rows: usize, columns: usize, strides: Strides) -> bool {
    rows == 0 || columns == 0 || (rows - 1) * strides.row + (columns - 1) * strides.column < len
}

/// `dst (m x n) = [dst +] lhs (m x k) · rhs (k x n)` on the calling thread (the callers already
/// spread images over threads).
fn matmul(
    [m, n, k]: [usize; 3],
    (dst, dst_strides): (&mut [f32], Strides),
    accumulate: bool,
    (lhs, lhs_strides): (&[f32], Strides),
    (rhs, rhs_strides): (&[f32], Strides),
) {
    assert!(
        spans(dst.len(), m, n, dst_strides)
            && spans(lhs.len(), m, k, lhs_strides)
            && spans(rhs.len(), k, n, rhs_strides),
        "matmul operands are smaller than their shapes"
    );
    // SAFETY: the assertion above keeps every index gemm computes from these shapes and strides
    // inside its slice, and `dst` is borrowed mutably, so it aliases neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_strides.column as isize,
            dst_strides.row as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_strides.column as isize,
            lhs_strides.row as isize,
            rhs.as_ptr(),
            rhs_strides.column as isize,
            rhs_strides.row as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendKind;
    use burn::tensor::Distribution;
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

    /// Values and all three gradients against burn's `conv2d`, on both backends, with a batch
    /// that is not a multiple of the task size and a non-square image.
    #[test]
    fn matches_burns_convolution_and_gradients() {
        for backend in [BackendKind::Flex, BackendKind::Ndarray] {
            for (channels, train_input) in [(3, true), (1, false)] {
                let device = backend.device().autodiff();
                device.seed(3);
                let random = |dims: [usize; 4]| {
                    Tensor::<4>::random(dims, Distribution::Normal(0.0, 1.0), &device)
                };
                let input = random([5, channels, 6, 7]);
                let weight = random([4, channels, 3, 3]).require_grad();
                let bias = Tensor::<1>::random([4], Distribution::Normal(0.0, 1.0), &device)
                    .require_grad();
                let output_weights = random([5, 4, 6, 7]);
                let run = |convolve: &dyn Fn(Tensor<4>) -> Tensor<4>| {
                    let leaf = input.clone().detach();
                    let leaf = if train_input {
                        leaf.require_grad()
                    } else {
                        leaf
                    };
                    let output = convolve(leaf.clone());
                    let grads = (output.clone() * output_weights.clone()).sum().backward();
                    let input_grad = leaf.grad(&grads).map(values);
                    (
                        values(output),
                        input_grad,
                        values(weight.grad(&grads).unwrap()),
                        values(bias.grad(&grads).unwrap()),
                    )
                };
                let ours = run(&|x| conv3x3_same(x, weight.clone(), bias.clone()));
                let burns = run(&|x| conv2d(x, weight.clone(), Some(bias.clone()), same_padding()));
                let case = format!("{backend}, {channels} channels");
                assert_close(&ours.0, &burns.0, &format!("output ({case})"));
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
    fn col2im_is_the_adjoint_of_im2col() {
        // <im2col(x), c> == <x, col2im(c)> for any x and c, borders included.
        let shape = ConvShape {
            batch: 1,
            channels: 2,
            height: 3,
            width: 4,
            filters: 1,
        };
        let image: Vec<f32> = (0..shape.image_len()).map(|v| (v as f32).sin()).collect();
        let col_values: Vec<f32> = (0..shape.taps() * shape.plane())
            .map(|v| (v as f32 * 0.7).cos())
            .collect();
        let mut col = vec![0f32; col_values.len()];
        im2col(&image, shape, &mut col);
        let mut image_grad = vec![0f32; image.len()];
        col2im_add(&col_values, shape, &mut image_grad);
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| a * b).sum::<f32>();
        assert!((dot(&col, &col_values) - dot(&image, &image_grad)).abs() < 1e-4);
        // The centre tap of channel 0 is the plane itself; the top-left tap starts with zeros.
        assert_eq!(&col[4 * 12..5 * 12], &image[..12]);
        assert_eq!(&col[..6], &[0.0, 0.0, 0.0, 0.0, 0.0, image[0]]);
    }
}
