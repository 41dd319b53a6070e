//! A dense layer's affine map, `x · weight + bias`, as one burn operation whose matrix products
//! run on all threads.
//!
//! burn-flex multiplies matrices on one thread below 192³ multiply-adds, which leaves the
//! second dense layer of the default network (128 x 128 x 128) and everything after it serial,
//! and it copies every product's output once more to align it. Here each product is split into
//! blocks of rows, one `gemm` call per block, spread over the thread pool; the split depends on
//! the shapes only, so results do not depend on the thread count.

use std::mem::MaybeUninit;

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

use super::im2col::{add_assign, matmul, matmul_into, row_major, transposed};
use super::{HostTensors, has_fused_kernel, par_written};

/// Rows of a product per parallel task: the batch of 128 gives two tasks (each task packs the
/// whole other operand, so more of them cost more than they spread).
const ROWS_PER_TASK: usize = 64;
/// Rows of the weight gradient per parallel task.
const WEIGHT_ROWS_PER_TASK: usize = 128;

/// `x · weight + bias` for `x` `[batch, inputs]`, `weight` `[inputs, outputs]` (burn's `Linear`
/// layout) and `bias` `[outputs]`: the fused operation on the backends [`has_fused_kernel`]
/// names, [`linear_composed`] elsewhere. Differentiable with respect to all three.
pub fn linear(x: Tensor<2>, weight: Tensor<2>, bias: Tensor<1>) -> Tensor<2> {
    if has_fused_kernel(&x.device()) {
        Tensor::from_dispatch(<Dispatch as DenseOps>::linear(
            x.into_dispatch(),
            weight.into_dispatch(),
            bias.into_dispatch(),
        ))
    } else {
        linear_composed(x, weight, bias)
    }
}

/// [`linear`] made of burn's own operations, as burn's `Linear` computes it: what runs on
/// other backends, and the reference the fused operation is tested against.
pub fn linear_composed(x: Tensor<2>, weight: Tensor<2>, bias: Tensor<1>) -> Tensor<2> {
    x.matmul(weight) + bias.unsqueeze_dim(0)
}

/// The operation as burn dispatches it. These must be the backends [`has_fused_kernel`]
/// accepts.
#[backend_extension(Flex, NdArray, Autodiff)]
pub trait DenseOps: Backend {
    fn linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

impl DenseOps for Flex {
    fn linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        forward::<Self>(x, weight, bias)
    }
}

impl DenseOps for NdArray {
    fn linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        forward::<Self>(x, weight, bias)
    }
}

impl<B: HostTensors, C: CheckpointStrategy> DenseOps for Autodiff<B, C> {
    fn linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        match Dense
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let (x_node, weight_node) = (prep.checkpoint(&x), prep.checkpoint(&weight));
                let output = forward::<B>(
                    x.into_primitive(),
                    weight.into_primitive(),
                    bias.into_primitive(),
                );
                prep.finish((x_node, weight_node), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(forward::<B>(
                x.into_primitive(),
                weight.into_primitive(),
                bias.into_primitive(),
            )),
        }
    }
}

/// Sizes of one call: `x` is `batch x inputs`, `weight` `inputs x outputs`.
#[derive(Debug, Clone, Copy)]
struct DenseShape {
    batch: usize,
    inputs: usize,
    outputs: usize,
}

impl DenseShape {
    fn new(x: &[usize], weight: &[usize]) -> Self {
        assert!(
            x.len() == 2 && weight.len() == 2 && x[1] == weight[0],
            "linear: weights {weight:?} do not fit input {x:?}"
        );
        DenseShape {
            batch: x[0],
            inputs: x[1],
            outputs: weight[1],
        }
    }
}

fn forward<B: HostTensors>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
) -> FloatTensor<B> {
    let shape = DenseShape::new(&x.shape(), &weight.shape());
    let bias_dims = bias.shape();
    assert!(
        bias_dims[..] == [shape.outputs],
        "linear: bias {:?} does not fit {} outputs",
        &bias_dims[..],
        shape.outputs
    );
    let output = B::read_f32(x, |x| {
        B::read_f32(weight, |weight| {
            B::read_f32(bias, |bias| forward_f32(x, weight, bias, shape))
        })
    });
    B::from_f32(output, &[shape.batch, shape.outputs])
}

/// Each task's rows start as the bias, then take their product with the weights.
fn forward_f32(x: &[f32], weight: &[f32], bias: &[f32], shape: DenseShape) -> Vec<f32> {
    let DenseShape {
        inputs, outputs, ..
    } = shape;
    let task = |index: usize, output: &mut [MaybeUninit<f32>]| {
        for row in output.chunks_exact_mut(outputs) {
            row.write_copy_of_slice(bias);
        }
        // SAFETY: every row of the chunk now holds the bias (the chunk is whole rows).
        let output = unsafe { output.assume_init_mut() };
        let rows = output.len() / outputs;
        matmul(
            [rows, outputs, inputs],
            (output, row_major(outputs)),
            (&x[index * ROWS_PER_TASK * inputs..], row_major(inputs)),
            (weight, row_major(outputs)),
        );
    };
    // SAFETY: `task` writes the bias into each row of its chunk of whole rows first.
    unsafe { par_written(shape.batch * outputs, ROWS_PER_TASK * outputs, task) }
}

#[derive(Debug)]
struct Dense;

impl<B: HostTensors> Backward<B, 3> for Dense {
    /// The input and weight nodes.
    type State = (NodeId, NodeId);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [x_parent, weight_parent, bias_parent] = ops.parents;
        let output_grad = grads.consume::<B>(&ops.node);
        let (x, weight) = ops.state;
        let x: FloatTensor<B> = checkpointer.retrieve_node_output(x);
        let weight: FloatTensor<B> = checkpointer.retrieve_node_output(weight);
        let shape = DenseShape::new(&x.shape(), &weight.shape());
        let needed = (x_parent.is_some(), weight_parent.is_some());
        let computed = B::read_f32(x, |x| {
            B::read_f32(weight, |weight| {
                B::read_f32(output_grad, |output_grad| {
                    backward_f32(x, weight, output_grad, shape, needed)
                })
            })
        });
        if let (Some(parent), Some(grad)) = (x_parent, computed.input) {
            grads.register::<B>(parent.id, B::from_f32(grad, &[shape.batch, shape.inputs]));
        }
        if let (Some(parent), Some(grad)) = (weight_parent, computed.weight) {
            grads.register::<B>(parent.id, B::from_f32(grad, &[shape.inputs, shape.outputs]));
        }
        if let Some(parent) = bias_parent {
            grads.register::<B>(parent.id, B::from_f32(computed.bias, &[shape.outputs]));
        }
    }
}

struct DenseGradients {
    input: Option<Vec<f32>>,
    weight: Option<Vec<f32>>,
    bias: Vec<f32>,
}

/// `dx = dy · weightᵀ` by blocks of the batch's rows, `dweight = xᵀ · dy` by blocks of the
/// inputs, and `dbias` the sum of `dy`'s rows.
fn backward_f32(
    x: &[f32],
    weight: &[f32],
    output_grad: &[f32],
    shape: DenseShape,
    (input_needed, weight_needed): (bool, bool),
) -> DenseGradients {
    let DenseShape {
        batch,
        inputs,
        outputs,
    } = shape;
    let input = input_needed.then(|| {
        let task = |index: usize, grad: &mut [MaybeUninit<f32>]| {
            let rows = grad.len() / inputs;
            matmul_into(
                [rows, inputs, outputs],
                (grad, row_major(inputs)),
                (
                    &output_grad[index * ROWS_PER_TASK * outputs..],
                    row_major(outputs),
                ),
                (weight, transposed(outputs)),
            );
        };
        // SAFETY: `matmul_into` writes all of its chunk of whole rows.
        unsafe { par_written(batch * inputs, ROWS_PER_TASK * inputs, task) }
    });
    let weight = weight_needed.then(|| {
        let task = |index: usize, grad: &mut [MaybeUninit<f32>]| {
            let rows = grad.len() / outputs;
            // Rows `first..` of xᵀ are columns `first..` of x.
            let first = index * WEIGHT_ROWS_PER_TASK;
            matmul_into(
                [rows, outputs, batch],
                (grad, row_major(outputs)),
                (&x[first..], transposed(inputs)),
                (output_grad, row_major(outputs)),
            );
        };
        // SAFETY: `matmul_into` writes all of its chunk of whole rows.
        unsafe { par_written(inputs * outputs, WEIGHT_ROWS_PER_TASK * outputs, task) }
    });
    let mut bias = vec![0f32; outputs];
    for row in output_grad.chunks_exact(outputs.max(1)) {
        add_assign(&mut bias, row);
    }
    DenseGradients {
        input,
        weight,
        bias,
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Distribution;

    use super::*;
    use crate::backend::BackendKind;
    use crate::kernels::test_util::{assert_close, on_threads, values};

    /// Values and the three gradients against burn's own operations, on both CPU backends:
    /// batches and input counts that are not multiples of the task size (the last block is
    /// short), a single row, and an input that needs no gradient.
    #[test]
    fn the_fused_layer_matches_burns_operations_and_their_gradients() {
        for backend in [BackendKind::Flex, BackendKind::Ndarray] {
            for (batch, inputs, outputs, input_grad) in [
                (77, 300, 19, true),
                (1, 40, 10, true),
                (128, 33, 128, false),
            ] {
                let device = backend.device().autodiff();
                device.seed(5);
                let random = |dims: [usize; 2]| {
                    Tensor::<2>::random(dims, Distribution::Normal(0.0, 1.0), &device)
                };
                let x = random([batch, inputs]);
                let weight = random([inputs, outputs]).require_grad();
                let bias = Tensor::<1>::random([outputs], Distribution::Normal(0.0, 1.0), &device)
                    .require_grad();
                let output_weights = random([batch, outputs]);
                let run = |layer: fn(Tensor<2>, Tensor<2>, Tensor<1>) -> Tensor<2>| {
                    let leaf = if input_grad {
                        x.clone().require_grad()
                    } else {
                        x.clone()
                    };
                    let output = layer(leaf.clone(), weight.clone(), bias.clone());
                    let grads = (output.clone() * output_weights.clone()).sum().backward();
                    (
                        values(output),
                        leaf.grad(&grads).map(values),
                        values(weight.grad(&grads).expect("a weight gradient")),
                        values(bias.grad(&grads).expect("a bias gradient")),
                    )
                };
                let (fused, composed) = (run(linear), run(linear_composed));
                let case = format!("{backend}, {batch}x{inputs}x{outputs}");
                assert_close(&fused.0, &composed.0, &format!("output ({case})"));
                assert_eq!(fused.1.is_some(), input_grad, "{case}");
                if let (Some(ours), Some(burns)) = (&fused.1, &composed.1) {
                    assert_close(ours, burns, &format!("input gradient ({case})"));
                }
                assert_close(&fused.2, &composed.2, &format!("weight gradient ({case})"));
                assert_close(&fused.3, &composed.3, &format!("bias gradient ({case})"));
            }
        }
    }

    /// The split into tasks depends on the shapes only: the same product on one thread and on
    /// four gives the same bits.
    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let (batch, inputs, outputs) = (100, 90, 50);
        let x: Vec<f32> = (0..batch * inputs)
            .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let w: Vec<f32> = (0..inputs * outputs)
            .map(|i| ((i * 53) % 97) as f32 / 48.0 - 1.0)
            .collect();
        let b: Vec<f32> = (0..outputs).map(|i| i as f32 / 10.0).collect();
        let shape = DenseShape {
            batch,
            inputs,
            outputs,
        };
        let run = |threads: usize| {
            on_threads(threads, || {
                let output = forward_f32(&x, &w, &b, shape);
                let grads = backward_f32(&x, &w, &output, shape, (true, true));
                (output, grads.input, grads.weight, grads.bias)
            })
        };
        assert!(run(1) == run(4));
    }
}
