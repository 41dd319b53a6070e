//! The Adam optimizer of every run, with Keras's settings.
//!
//! On the CPU backends it keeps its own state and updates each parameter in one fused, parallel
//! pass ([`crate::kernels::adam_update`]) that also adds up the shards' gradients as it reads
//! them: no separate sum, none of burn's dozen whole-tensor operations, and none of its
//! per-parameter bookkeeping, which ran on one thread while the others waited. On the other
//! backends (wgpu, cuda) it is burn's own `Adam` through a `ModuleOptimizer`.
//!
//! Both write the same record: the state file of burn's `ModuleOptimizer` with burn's
//! `AdamState` (the tests hold the two to each other), so a run saved by either resumes under
//! the other, and runs saved before this optimizer existed resume exactly. The update is
//! bit-identical to burn's `Adam` (tested).

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::optim::{AdamConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::store::RecordError;
use burn::tensor::{Bytes, DType, Device, Tensor, TensorData};

use crate::kernels::{AdamStep, adam_update, has_fused_kernel};
use crate::model::Network;

/// Keras's Adam epsilon; burn's default (1e-5) is coarser.
pub const EPSILON: f32 = 1e-7;
pub const BETA_1: f32 = 0.9;
pub const BETA_2: f32 = 0.999;

/// burn's configuration of the same optimizer: what runs off the CPU, and the reference the
/// fused pass is tested against.
pub fn burn_adam_config() -> AdamConfig {
    AdamConfig::new()
        .with_beta_1(BETA_1)
        .with_beta_2(BETA_2)
        .with_epsilon(EPSILON)
}

/// The Adam optimizer of a run: its state, and the step that updates a whole network.
#[derive(Clone)]
pub struct Adam {
    engine: Engine,
}

#[derive(Clone)]
enum Engine {
    /// The CPU backends: the state per parameter, updated by the fused pass.
    Host(BTreeMap<u64, HostState>),
    /// Every other backend: burn's `Adam`.
    Burn(ModuleOptimizer),
}

/// One parameter's Adam state on the host, as burn's `AdamState` holds it.
#[derive(Clone)]
struct HostState {
    /// Steps taken so far.
    time: usize,
    moment_1: Vec<f32>,
    moment_2: Vec<f32>,
    shape: Vec<usize>,
    /// The parameter's module path (`dense1.weight`), which burn's record keeps.
    path: Option<String>,
}

impl Adam {
    /// A fresh optimizer, as configured for every run, for a network on `device`.
    pub fn new(device: &Device) -> Self {
        let engine = if has_fused_kernel(device) {
            Engine::Host(BTreeMap::new())
        } else {
            Engine::Burn(burn_adam_config().init())
        };
        Adam { engine }
    }

    /// Updates `network` with the gradients of one batch, given as its shards' gradients in
    /// shard order (one entry for a whole batch): their sum is the batch's gradient.
    pub fn step(
        &mut self,
        learning_rate: f64,
        network: Network,
        mut shards: Vec<GradientsParams>,
    ) -> Network {
        match &mut self.engine {
            Engine::Host(states) => network.map(&mut HostStep {
                learning_rate,
                states,
                shards: &mut shards,
                path: Vec::new(),
            }),
            Engine::Burn(optimizer) => {
                let gradients = if shards.len() == 1 {
                    shards.pop().expect("one shard")
                } else {
                    let mut accumulator = GradientsAccumulator::<Network>::new();
                    for gradients in shards {
                        accumulator.accumulate(&network, gradients);
                    }
                    accumulator.grads()
                };
                optimizer.step(learning_rate, network, gradients)
            }
        }
    }

    /// The state as the bytes of burn's optimizer record.
    pub fn to_bytes(&self) -> Result<Bytes, RecordError> {
        match &self.engine {
            Engine::Host(states) => host_record(states),
            Engine::Burn(optimizer) => optimizer.into_bytes(),
        }
    }

    /// This optimizer with the state that `bytes` (burn's optimizer record) holds.
    pub fn load_bytes(self, bytes: Bytes) -> Result<Self, RecordError> {
        let engine = match self.engine {
            Engine::Host(_) => Engine::Host(host_states(bytes)?),
            Engine::Burn(optimizer) => Engine::Burn(optimizer.from_bytes(bytes)?),
        };
        Ok(Adam { engine })
    }
}

/// The names burn's `ModuleOptimizer` gives a parameter's entries: `{id}.{leaf}`, with
/// `AdamState`'s fields under `momentum`.
const TIME: &str = "momentum.time";
const MOMENT_1: &str = "momentum.moment_1";
const MOMENT_2: &str = "momentum.moment_2";
/// The parameter's rank, which `ModuleOptimizer` records beside the state.
const RANK: &str = "__rank";

fn entry(id: u64, leaf: &str) -> String {
    format!("{id}.{leaf}")
}

/// `states` as burn's `ModuleOptimizer` records burn's `AdamState`s, parameters in id order.
fn host_record(states: &BTreeMap<u64, HostState>) -> Result<Bytes, RecordError> {
    let mut tensors = Vec::with_capacity(2 * states.len());
    for (&id, state) in states {
        for (leaf, values) in [(MOMENT_1, &state.moment_1), (MOMENT_2, &state.moment_2)] {
            let (bytes, shape, dtype) =
                TensorData::new(values.clone(), state.shape.clone()).into_parts();
            tensors.push(burn_pack::Tensor::new(
                entry(id, leaf),
                dtype,
                shape,
                Some(id),
                bytes,
            ));
        }
    }
    let mut writer = burn_pack::Writer::new(tensors);
    for (&id, state) in states {
        writer = writer
            .with_scalar(&entry(id, TIME), state.time.into())
            .with_scalar(&entry(id, RANK), state.shape.len().into());
        if let Some(path) = &state.path {
            writer = writer.with_metadata(&id.to_string(), path);
        }
    }
    Ok(writer.into_bytes()?)
}

/// The states that burn's optimizer record `bytes` holds. As burn does, a parameter whose
/// entries are missing or unusable is left without state, to start afresh at its next step.
fn host_states(bytes: Bytes) -> Result<BTreeMap<u64, HostState>, RecordError> {
    let reader = burn_pack::Reader::from_bytes(bytes)?;
    let scalars = reader.scalars().clone();
    let paths = reader.metadata().clone();
    let mut moments = BTreeMap::new();
    for tensor in reader.into_tensors()? {
        let (name, dtype, shape, param_id, bytes) = tensor.into_parts()?;
        let Some(id) = param_id else { continue };
        let data = TensorData::from_bytes(bytes, shape, dtype);
        moments.insert(name, (id, data));
    }
    let ids: std::collections::BTreeSet<u64> = moments.values().map(|(id, _)| *id).collect();
    let mut states = BTreeMap::new();
    for id in ids {
        let time = scalars
            .get(&entry(id, TIME))
            .and_then(|&time| usize::try_from(time).ok());
        let moment = |moments: &mut BTreeMap<String, (u64, TensorData)>, leaf| {
            moments.remove(&entry(id, leaf)).map(|(_, data)| data)
        };
        let (Some(time), Some(moment_1), Some(moment_2)) = (
            time,
            moment(&mut moments, MOMENT_1),
            moment(&mut moments, MOMENT_2),
        ) else {
            continue;
        };
        if moment_1.shape() != moment_2.shape() {
            continue;
        }
        let shape = moment_1.shape().to_vec();
        let values = |data: TensorData| -> Option<Vec<f32>> {
            data.convert_dtype(DType::F32).try_into_vec::<f32>().ok()
        };
        let (Some(moment_1), Some(moment_2)) = (values(moment_1), values(moment_2)) else {
            continue;
        };
        states.insert(
            id,
            HostState {
                time,
                moment_1,
                moment_2,
                shape,
                path: paths.get(&id.to_string()).cloned(),
            },
        );
    }
    Ok(states)
}

/// One step of the host engine, visiting the network's parameters in turn.
struct HostStep<'a> {
    learning_rate: f64,
    states: &'a mut BTreeMap<u64, HostState>,
    shards: &'a mut [GradientsParams],
    /// The modules entered so far, for the record's parameter paths.
    path: Vec<String>,
}

impl ModuleMapper for HostStep<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let gradients: Vec<TensorData> = self
            .shards
            .iter_mut()
            .filter_map(|shard| shard.remove::<D>(id))
            .map(Tensor::into_data)
            .collect();
        if gradients.is_empty() {
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let updated = self.update(id, tensor, &gradients);
        Param::from_mapped_value(id, updated, mapper)
    }
}

impl HostStep<'_> {
    /// `tensor` after one Adam step with the sum of `gradients`, carrying the same autodiff
    /// settings (as burn's `ModuleOptimizer` restores them).
    fn update<const D: usize>(
        &mut self,
        id: ParamId,
        tensor: Tensor<D>,
        gradients: &[TensorData],
    ) -> Tensor<D> {
        let require_grad = tensor.is_require_grad();
        let checkpointing = tensor.gradient_checkpointing_strategy();
        let inner = tensor.inner();
        let device = inner.device();
        let shape = inner.shape().to_vec();
        let len = inner.shape().num_elements();
        let state = self
            .states
            .entry(id.val())
            .and_modify(|state| {
                // A state for another shape (not this network's) starts afresh.
                if state.shape != shape {
                    state.time = 0;
                }
            })
            .or_insert_with(|| HostState {
                time: 0,
                moment_1: Vec::new(),
                moment_2: Vec::new(),
                shape: shape.clone(),
                path: None,
            });
        if state.time == 0 {
            // Not read: the first step sets the moments from the gradient alone.
            state.moment_1 = vec![0f32; len];
            state.moment_2 = vec![0f32; len];
            state.shape = shape;
        }
        state.time += 1;
        if state.path.is_none() {
            state.path = Some(self.path.join("."));
        }
        let mut values = inner.into_data();
        let grads: Vec<&[f32]> = gradients
            .iter()
            .map(|gradient| gradient.as_slice::<f32>().expect("f32 gradients"))
            .collect();
        let step = AdamStep::new(BETA_1, BETA_2, EPSILON, state.time, self.learning_rate);
        adam_update(
            values.as_mut_slice::<f32>().expect("f32 parameters"),
            &grads,
            &mut state.moment_1,
            &mut state.moment_2,
            step,
        );
        let mut updated = Tensor::from_inner(Tensor::from_data(values, &device));
        if let Some(strategy) = checkpointing {
            updated = updated.with_gradient_checkpointing_strategy(strategy);
        }
        if require_grad {
            updated = updated.require_grad();
        }
        updated
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use burn::module::Module;
    use burn::optim::{GradientsParams, ModuleOptimizer};
    use burn::tensor::Bytes;

    use super::*;
    use crate::backend::BackendKind;
    use crate::model::{Architecture, InputShape, Network, categorical_cross_entropy};

    impl Adam {
        /// burn's engine, which the CPU backends never get on their own.
        fn burn() -> Self {
            Adam {
                engine: Engine::Burn(burn_adam_config().init()),
            }
        }
    }

    /// The gradients of step `step`'s batch of 8 images, cut into `shards` equal shards
    /// (each of its share of the batch's mean loss).
    fn shard_gradients(network: &Network, step: usize, shards: usize) -> Vec<GradientsParams> {
        let device = network_device(network);
        let pixels: Vec<f32> = (0..8 * 28 * 28)
            .map(|i| ((i * 7 + step * 13) % 255) as f32 / 255.0)
            .collect();
        let images = Tensor::<4>::from_data(TensorData::new(pixels, [8, 1, 28, 28]), &device);
        let one_hot: Vec<f32> = (0..8 * 10)
            .map(|i| f32::from(u8::from(i % 10 == (i / 10 + step) % 10)))
            .collect();
        let one_hot = Tensor::<2>::from_data(TensorData::new(one_hot, [8, 10]), &device);
        let rows = 8 / shards;
        (0..shards)
            .map(|shard| {
                let part = |tensor: Tensor<2>| tensor.narrow(0, shard * rows, rows);
                let logits = network.forward(images.clone().narrow(0, shard * rows, rows));
                let loss = categorical_cross_entropy(logits, part(one_hot.clone()))
                    * (1.0 / shards as f32);
                GradientsParams::from_grads(loss.backward(), network)
            })
            .collect()
    }

    /// One of the two optimizers under test.
    enum Under<'a> {
        Ours(&'a mut Adam),
        Burns(&'a mut ModuleOptimizer),
    }

    /// Steps `network` on batches `steps` cut into `shards` shards, and returns its weights
    /// after each step, with the network at the end. burn's optimizer gets the shards' sum.
    fn train(
        mut network: Network,
        mut optimizer: Under,
        steps: std::ops::Range<usize>,
        shards: usize,
    ) -> (Vec<Vec<u8>>, Network) {
        let mut weights = Vec::new();
        for step in steps {
            let gradients = shard_gradients(&network, step, shards);
            // A learning rate that changes per step, as the cosine schedule's does.
            let learning_rate = 1e-3 / (step + 1) as f64;
            network = match &mut optimizer {
                Under::Ours(adam) => adam.step(learning_rate, network, gradients),
                Under::Burns(adam) => {
                    let mut sum = burn::optim::GradientsAccumulator::<Network>::new();
                    for shard in gradients {
                        sum.accumulate(&network, shard);
                    }
                    adam.step(learning_rate, network, sum.grads())
                }
            };
            weights.push(record_bytes(&network));
        }
        (weights, network)
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

    fn cpu() -> Device {
        BackendKind::Flex.device().autodiff()
    }

    /// Everything an optimizer record holds, in an order of its own: tensors by name (with
    /// their parameter id, type, shape and bytes), scalars, and parameter paths.
    #[allow(clippy::type_complexity)]
    fn record_contents(
        bytes: Bytes,
    ) -> (
        BTreeMap<String, (Option<u64>, String, Vec<usize>, Vec<u8>)>,
        BTreeMap<String, String>,
        BTreeMap<String, String>,
    ) {
        let reader = burn_pack::Reader::from_bytes(bytes).expect("a burnpack record");
        let scalars = reader
            .scalars()
            .iter()
            .map(|(name, value)| (name.clone(), format!("{value:?}")))
            .collect();
        let paths = reader.metadata().clone();
        let tensors = reader
            .into_tensors()
            .expect("tensors")
            .into_iter()
            .map(|tensor| {
                let (name, dtype, shape, id, bytes) = tensor.into_parts().expect("parts");
                let entry = (id, format!("{dtype:?}"), shape.to_vec(), bytes.to_vec());
                (name, entry)
            })
            .collect();
        (tensors, scalars, paths)
    }

    #[test]
    fn the_fused_step_equals_burns_adam_bit_for_bit_whole_or_in_shards() {
        let device = cpu();
        let network = Network::new(Architecture::Cnn, InputShape::MNIST, &device);
        for shards in [1, 2] {
            let (mut ours, mut burns) = (Adam::new(&device), burn_adam_config().init());
            let (fused, _) = train(network.clone(), Under::Ours(&mut ours), 0..4, shards);
            let (burn, _) = train(network.clone(), Under::Burns(&mut burns), 0..4, shards);
            assert_eq!(fused.len(), 4);
            for (step, (fused, burn)) in fused.iter().zip(&burn).enumerate() {
                assert!(
                    fused == burn,
                    "{shards} shard(s): the weights differ after step {}",
                    step + 1
                );
            }
            assert!(
                fused[0] != record_bytes(&network),
                "the first step changed nothing"
            );
        }
    }

    /// The GPU backends' engine (burn's `Adam`, after summing the shards) steps as the fused one.
    #[test]
    fn burns_engine_sums_the_shards_as_the_fused_one_does() {
        let device = cpu();
        let network = Network::new(Architecture::Mlp, InputShape::MNIST, &device);
        let (mut fused, mut burn) = (Adam::new(&device), Adam::burn());
        let (fused_weights, _) = train(network.clone(), Under::Ours(&mut fused), 0..3, 2);
        let (burn_weights, _) = train(network, Under::Ours(&mut burn), 0..3, 2);
        assert!(fused_weights == burn_weights);
        let fused_record = record_contents(fused.to_bytes().expect("record"));
        assert!(fused_record == record_contents(burn.to_bytes().expect("record")));
    }

    /// The fused optimizer writes what burn's writes: the same tensors under the same names
    /// and parameter ids, the same scalars (step counts, ranks) and the same parameter paths.
    #[test]
    fn the_record_is_burns_record() {
        let device = cpu();
        let network = Network::new(Architecture::Cnn, InputShape::MNIST, &device);
        let (mut ours, mut burns) = (Adam::new(&device), burn_adam_config().init());
        train(network.clone(), Under::Ours(&mut ours), 0..2, 2);
        train(network, Under::Burns(&mut burns), 0..2, 2);
        let (tensors, scalars, paths) = record_contents(ours.to_bytes().expect("record"));
        let expected = record_contents(burns.into_bytes().expect("record"));
        assert_eq!(
            tensors.len(),
            2 * 10,
            "two moments for each of 10 parameters"
        );
        assert!(
            paths.values().any(|path| path.ends_with("weight")),
            "{paths:?}"
        );
        assert!(tensors.keys().eq(expected.0.keys()));
        assert!(tensors == expected.0, "the tensors differ");
        assert_eq!(scalars, expected.1);
        assert_eq!(paths, expected.2);
        // And the same file every time: parameters in id order.
        assert!(ours.to_bytes().expect("record") == ours.to_bytes().expect("record"));
    }

    /// Checkpoints stay interchangeable: a run saved by either optimizer continues under the
    /// other exactly as under itself (older runs, and runs on a GPU, were saved by burn's).
    #[test]
    fn a_run_saved_by_either_optimizer_resumes_exactly_under_the_other() {
        let device = cpu();
        let network = Network::new(Architecture::Mlp, InputShape::MNIST, &device);
        let (mut ours, mut burns) = (Adam::new(&device), burn_adam_config().init());
        let (_, halfway) = train(network.clone(), Under::Burns(&mut burns), 0..2, 1);
        let (_, ours_halfway) = train(network, Under::Ours(&mut ours), 0..2, 1);
        assert!(record_bytes(&halfway) == record_bytes(&ours_halfway));
        let mut ours_from_burns = Adam::new(&device)
            .load_bytes(burns.into_bytes().expect("record"))
            .expect("loads");
        let mut burns_from_ours = burn_adam_config()
            .init()
            .from_bytes(ours.to_bytes().expect("record"))
            .expect("loads");
        let (expected, _) = train(halfway.clone(), Under::Burns(&mut burns), 2..5, 1);
        let (from_burns, _) = train(halfway.clone(), Under::Ours(&mut ours_from_burns), 2..5, 1);
        let (from_ours, _) = train(halfway, Under::Burns(&mut burns_from_ours), 2..5, 1);
        assert!(
            from_burns == expected,
            "resumed from burn's record, the run took other steps"
        );
        assert!(
            from_ours == expected,
            "resumed from the fused record, the run took other steps"
        );
    }

    #[test]
    fn bytes_that_are_no_record_are_refused() {
        let garbage = Bytes::from_bytes_vec(b"not an optimizer record".to_vec());
        assert!(Adam::new(&cpu()).load_bytes(garbage).is_err());
    }
}
