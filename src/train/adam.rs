//! The Adam optimizer of every run: Keras's settings, burn's state and record, and on the CPU
//! backends one fused pass per parameter ([`crate::kernels::adam_update`]) instead of burn's
//! dozen whole-tensor operations.
//!
//! The state is burn's own [`AdamState`], so an optimizer file reads the same whichever of the
//! two computed it, and the update is bit-identical to burn's `Adam` (tested): checkpoints
//! written before this optimizer existed resume exactly. Other backends (wgpu, cuda) step with
//! burn's `Adam` itself.

use burn::optim::{
    AdamConfig, AdamState, AdaptiveMomentumState, LearningRate, ModuleOptimizer, Optimizer,
};
use burn::tensor::{DType, Device, Tensor, TensorData};

use crate::kernels::{AdamStep, adam_update, has_fused_kernel};

/// Keras's Adam epsilon; burn's default (1e-5) is coarser.
pub const EPSILON: f32 = 1e-7;
pub const BETA_1: f32 = 0.9;
pub const BETA_2: f32 = 0.999;

/// The Adam optimizer as configured for every run, ready to step a whole network.
pub fn adam() -> ModuleOptimizer {
    ModuleOptimizer::from(FusedAdam {
        burn: burn_adam_config().build(),
    })
}

/// burn's configuration of the same optimizer: what runs off the CPU, and the reference the
/// fused pass is tested against.
pub fn burn_adam_config() -> AdamConfig {
    AdamConfig::new()
        .with_beta_1(BETA_1)
        .with_beta_2(BETA_2)
        .with_epsilon(EPSILON)
}

/// Adam with burn's state, stepping host-memory f32 parameters in one fused, parallel pass.
#[derive(Clone)]
struct FusedAdam {
    burn: burn::optim::Adam,
}

impl Optimizer for FusedAdam {
    type State<const D: usize> = AdamState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let device = tensor.device();
        let fused = has_fused_kernel(&device)
            && tensor.dtype() == DType::F32
            && grad.dtype() == DType::F32
            && state.as_ref().is_none_or(|state| {
                let momentum = &state.momentum;
                momentum.max_moment_2.is_none()
                    && momentum.moment_1.dtype() == DType::F32
                    && momentum.moment_2.dtype() == DType::F32
            });
        if !fused {
            return self.burn.step(lr, tensor, grad, state);
        }
        let (time, mut moment_1, mut moment_2) = match state {
            Some(AdamState { momentum }) => (
                momentum.time + 1,
                momentum.moment_1.into_data(),
                momentum.moment_2.into_data(),
            ),
            // Not read: the first step sets the moments from the gradient alone.
            None => {
                let zeros =
                    || TensorData::new(vec![0f32; tensor.shape().num_elements()], tensor.shape());
                (1, zeros(), zeros())
            }
        };
        let (mut param, grad) = (tensor.into_data(), grad.into_data());
        let slices = (
            param.as_mut_slice::<f32>(),
            grad.as_slice::<f32>(),
            moment_1.as_mut_slice::<f32>(),
            moment_2.as_mut_slice::<f32>(),
        );
        let (Ok(param_values), Ok(grad_values), Ok(m1_values), Ok(m2_values)) = slices else {
            unreachable!("f32 tensors read back as f32 values")
        };
        let step = AdamStep::new(BETA_1, BETA_2, EPSILON, time, lr);
        adam_update(param_values, grad_values, m1_values, m2_values, step);
        let momentum = AdaptiveMomentumState {
            time,
            moment_1: Tensor::from_data(moment_1, &device),
            moment_2: Tensor::from_data(moment_2, &device),
            max_moment_2: None,
        };
        (
            Tensor::from_data(param, &device),
            Some(AdamState { momentum }),
        )
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        <burn::optim::Adam as Optimizer>::to_device(state, device)
    }
}

#[cfg(test)]
mod tests {
    use burn::module::Module;
    use burn::optim::GradientsParams;
    use burn::tensor::Bytes;

    use super::*;
    use crate::backend::BackendKind;
    use crate::model::{Architecture, InputShape, Network, categorical_cross_entropy};

    /// Steps `network` with `optimizer` on fixed batches `steps`, and returns its weights
    /// after each step, with the network and optimizer at the end.
    fn train(
        mut network: Network,
        optimizer: &mut ModuleOptimizer,
        steps: std::ops::Range<usize>,
    ) -> (Vec<Vec<u8>>, Network) {
        let device = network_device(&network);
        let mut weights = Vec::new();
        for step in steps {
            let pixels: Vec<f32> = (0..8 * 28 * 28)
                .map(|i| ((i * 7 + step * 13) % 255) as f32 / 255.0)
                .collect();
            let images = Tensor::<4>::from_data(TensorData::new(pixels, [8, 1, 28, 28]), &device);
            let one_hot: Vec<f32> = (0..8 * 10)
                .map(|i| f32::from(u8::from(i % 10 == (i / 10 + step) % 10)))
                .collect();
            let one_hot = Tensor::<2>::from_data(TensorData::new(one_hot, [8, 10]), &device);
            let loss = categorical_cross_entropy(network.forward(images), one_hot);
            let grads = GradientsParams::from_grads(loss.backward(), &network);
            // A learning rate that changes per step, as the cosine schedule's does.
            network = optimizer.step(1e-3 / (step + 1) as f64, network, grads);
            weights.push(record_bytes(&network));
        }
        (weights, network)
    }

    fn state_bytes(optimizer: &ModuleOptimizer) -> Vec<u8> {
        optimizer.into_bytes().expect("optimizer record").to_vec()
    }

    fn network_device(network: &Network) -> Device {
        network
            .devices()
            .into_iter()
            .next()
            .expect("a network has a device")
    }

    fn record_bytes(network: &Network) -> Vec<u8> {
        network
            .clone()
            .into_record()
            .into_bytes()
            .expect("model record")
            .to_vec()
    }

    #[test]
    fn the_fused_step_equals_burns_adam_bit_for_bit() {
        let device = BackendKind::Flex.device().autodiff();
        let network = Network::new(Architecture::Cnn, InputShape::MNIST, &device);
        let (mut fused_adam, mut burn_adam) = (adam(), burn_adam_config().init());
        let (fused, _) = train(network.clone(), &mut fused_adam, 0..4);
        let (burn, _) = train(network.clone(), &mut burn_adam, 0..4);
        assert_eq!(fused.len(), 4);
        for (step, (fused, burn)) in fused.iter().zip(&burn).enumerate() {
            assert!(fused == burn, "the weights differ after step {}", step + 1);
        }
        assert!(
            fused[0] != record_bytes(&network),
            "the first step changed nothing"
        );
    }

    /// Checkpoints stay interchangeable: a run saved by either optimizer continues under the
    /// other exactly as under itself (older runs were saved by burn's `Adam`).
    #[test]
    fn a_run_saved_by_either_optimizer_resumes_exactly_under_the_other() {
        let device = BackendKind::Flex.device().autodiff();
        let network = Network::new(Architecture::Mlp, InputShape::MNIST, &device);
        let (mut fused_adam, mut burn_adam) = (adam(), burn_adam_config().init());
        let (_, halfway) = train(network.clone(), &mut burn_adam, 0..2);
        let (_, fused_halfway) = train(network, &mut fused_adam, 0..2);
        assert!(record_bytes(&halfway) == record_bytes(&fused_halfway));
        let saved = |optimizer: &ModuleOptimizer| Bytes::from_bytes_vec(state_bytes(optimizer));
        let mut fused_from_burn = adam().from_bytes(saved(&burn_adam)).expect("loads");
        let mut burn_from_fused = burn_adam_config()
            .init()
            .from_bytes(saved(&fused_adam))
            .expect("loads");
        let (expected, _) = train(halfway.clone(), &mut burn_adam, 2..5);
        let (from_burn, _) = train(halfway.clone(), &mut fused_from_burn, 2..5);
        let (from_fused, _) = train(halfway, &mut burn_from_fused, 2..5);
        assert!(
            from_burn == expected,
            "resumed from burn's record, the run took other steps"
        );
        assert!(
            from_fused == expected,
            "resumed from the fused record, the run took other steps"
        );
    }
}
