//! One optimizer step, with the batch's forward and backward passes cut into shards that run
//! side by side.
//!
//! Every burn operation in a pass spreads its values over all threads, but what lies between
//! them (burn's autodiff bookkeeping, the loss, allocations) runs on one: a tenth of a step on
//! two threads. Shards of the batch, each on its own autodiff graph, run those parts
//! side by side too. Their gradients add up to the whole batch's: each shard's loss is its mean
//! times its share of the batch. With no more threads than shards, each shard keeps its
//! kernels' tasks on its own thread ([`crate::kernels::on_this_thread`]): no thread then waits
//! on a task another thread took from its shard. The optimizer's update, which keeps the threads
//! least busy, runs alongside the next batch's assembly ([`train_step_alongside`]).

use std::ops::Range;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::prelude::*;
use rayon::prelude::*;

use crate::data::batch::Batch;
use crate::kernels::{has_fused_kernel, on_this_thread};
use crate::model::{Network, argmax, categorical_cross_entropy};
use crate::train::Adam;

/// What a training step did: the updated network, and how the batch fared before the update.
pub struct Step<R = ()> {
    /// The network after the update.
    pub network: Network,
    /// The batch's mean loss (before the update).
    pub loss: f32,
    /// How many of the batch's images the network classified correctly (before the update).
    pub correct: usize,
    /// What ran alongside the update returned ([`train_step_alongside`]).
    pub alongside: R,
}

/// One gradient step on `batch`: the updated network, the batch's mean loss and how many of
/// its images were classified correctly before the update.
///
/// On the CPU backends the batch is cut into shards (two halves; a batch under 64 images stays
/// whole), whose forward and backward passes run side by side on the thread pool, each on its
/// own autodiff graph, and whose gradients are summed in shard order. The shards depend on the
/// batch size only, so training is the same whatever the thread count.
pub fn train_step(
    network: Network,
    optimizer: &mut Adam,
    learning_rate: f64,
    batch: Batch,
) -> Step {
    train_step_alongside(network, optimizer, learning_rate, batch, || ())
}

/// [`train_step`], running `alongside` while the optimizer updates the weights, on another
/// thread where one is free, and returning its result too (in [`Step::alongside`]). The optimizer's update is the part
/// of a step that keeps the threads least busy: the training loop assembles its next batch
/// there.
pub fn train_step_alongside<R: Send>(
    network: Network,
    optimizer: &mut Adam,
    learning_rate: f64,
    batch: Batch,
    alongside: impl FnOnce() -> R + Send,
) -> Step<R> {
    let shards = shard_ranges(batch.labels.len(), &batch.images.device());
    let (gradients, loss, correct) = batch_gradients(&network, batch, &shards);
    let (network, alongside) = rayon::join(
        || optimizer.step(learning_rate, network, gradients),
        alongside,
    );
    Step {
        network,
        loss,
        correct,
        alongside,
    }
}

/// Images per shard of a training batch at the least; a smaller batch stays whole.
const MIN_SHARD_IMAGES: usize = 32;

/// Most shards per batch: two keep a 2-core machine's threads busy, and each shard's own
/// operations still spread over any further threads.
const MAX_SHARDS: usize = 2;

/// The rows of a batch of `images` each shard takes on `device`: as even as possible, and the
/// whole batch where there is no fused CPU kernel (a GPU takes a whole batch at once).
fn shard_ranges(images: usize, device: &Device) -> Vec<Range<usize>> {
    let count = if has_fused_kernel(device) {
        (images / MIN_SHARD_IMAGES).clamp(1, MAX_SHARDS)
    } else {
        1
    };
    let mut start = 0;
    (0..count)
        .map(|shard| {
            let len = images / count + usize::from(shard < images % count);
            start += len;
            start - len..start
        })
        .collect()
}

/// Each shard's gradients of its share of `batch`'s mean loss (in shard order; they add up to
/// the batch's), that loss, and how many images were classified correctly, computed shard by
/// shard over `shards` (which cover the batch).
fn batch_gradients(
    network: &Network,
    batch: Batch,
    shards: &[Range<usize>],
) -> (Vec<GradientsParams>, f32, usize) {
    let images = batch.labels.len();
    if shards.len() <= 1 {
        let (gradients, loss, correct) = shard_gradients(network, batch, 1.0);
        return (vec![gradients], loss, correct);
    }
    // With a thread for each shard, each shard keeps its kernels' tasks on its own thread.
    let alone = shards.len() >= rayon::current_num_threads();
    let results: Vec<_> = shards
        .par_iter()
        .enumerate()
        .map(|(index, rows)| {
            let part = Batch {
                images: batch.images.clone().narrow(0, rows.start, rows.len()),
                one_hot: batch.one_hot.clone().narrow(0, rows.start, rows.len()),
                labels: batch.labels[rows.clone()].to_vec(),
            };
            let share = rows.len() as f32 / images as f32;
            let run = || {
                if index == 0 {
                    shard_gradients(network, part, share)
                } else {
                    // The same weights as new leaves, so that this shard's graph shares no node
                    // with the first's: burn would merge the two graphs, and run their backward
                    // passes one after the other under the merged graph's lock.
                    let device = part.images.device();
                    shard_gradients(&network.clone().fork(&device), part, share)
                }
            };
            if alone { on_this_thread(run) } else { run() }
        })
        .collect();
    let (mut loss, mut correct) = (0.0f32, 0usize);
    let mut gradients = Vec::with_capacity(results.len());
    for (shard, shard_loss, shard_correct) in results {
        gradients.push(shard);
        loss += shard_loss;
        correct += shard_correct;
    }
    (gradients, loss, correct)
}

/// One shard's gradients of its mean loss times `share` (its part of the batch), that loss,
/// and how many of its images were classified correctly.
fn shard_gradients(network: &Network, batch: Batch, share: f32) -> (GradientsParams, f32, usize) {
    let logits = network.forward(batch.images);
    let mut loss = categorical_cross_entropy(logits.clone(), batch.one_hot);
    if share != 1.0 {
        loss = loss * share;
    }
    let loss_value: f32 = loss.clone().into_scalar();
    let correct = count_correct(logits, &batch.labels);
    let gradients = GradientsParams::from_grads(loss.backward(), network);
    (gradients, loss_value, correct)
}

fn count_correct(logits: Tensor<2>, labels: &[u8]) -> usize {
    let classes = logits.dims()[1];
    let values: Vec<f32> = logits
        .into_data()
        .try_into_vec::<f32>()
        .expect("logits of an f32 network are f32");
    values
        .chunks(classes)
        .zip(labels)
        .filter(|(row, label)| argmax(row) == **label as usize)
        .count()
}

#[cfg(test)]
mod tests {
    use burn::module::{ModuleVisitor, Param};
    use burn::optim::{GradientsAccumulator, SgdConfig};

    use super::*;
    use crate::backend::BackendKind;
    use crate::kernels::test_util::{on_threads, values};
    use crate::model::{Architecture, InputShape};

    fn batch(images: usize, device: &Device) -> Batch {
        let pixels: Vec<f32> = (0..images * 28 * 28)
            .map(|i| ((i * 7 + i / 784 * 13) % 255) as f32 / 255.0)
            .collect();
        let labels: Vec<u8> = (0..images).map(|i| (i * 3 % 10) as u8).collect();
        let one_hot: Vec<f32> = (0..images * 10)
            .map(|i| f32::from(u8::from(i % 10 == usize::from(labels[i / 10]))))
            .collect();
        Batch {
            images: Tensor::from_data(TensorData::new(pixels, [images, 1, 28, 28]), device),
            one_hot: Tensor::from_data(TensorData::new(one_hot, [images, 10]), device),
            labels,
        }
    }

    /// Every weight of `network`, in its parameters' order.
    fn weights(network: &Network) -> Vec<f32> {
        struct Collect(Vec<f32>);
        impl ModuleVisitor for Collect {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                self.0.extend(values(param.val()));
            }
        }
        let mut collect = Collect(Vec::new());
        network.visit(&mut collect);
        collect.0
    }

    #[test]
    fn shards_cover_the_batch_evenly_and_small_batches_stay_whole() {
        let cpu = BackendKind::Flex.device().autodiff();
        assert_eq!(shard_ranges(128, &cpu), [0..64, 64..128]);
        assert_eq!(shard_ranges(112, &cpu), [0..56, 56..112]);
        assert_eq!(shard_ranges(65, &cpu), [0..33, 33..65]);
        assert_eq!(shard_ranges(63, &cpu), vec![Range { start: 0, end: 63 }]);
        assert_eq!(shard_ranges(1, &cpu), vec![Range { start: 0, end: 1 }]);
    }

    /// The shards' gradients add up to the whole batch's: one step of plain gradient descent
    /// with a learning rate of 1 subtracts them from the weights.
    #[test]
    fn sharded_gradients_equal_the_whole_batchs() {
        let device = BackendKind::Flex.device().autodiff();
        for architecture in [Architecture::Cnn, Architecture::Mlp] {
            let network = Network::new(architecture, InputShape::MNIST, &device);
            let step = |shards: &[Range<usize>]| {
                let (shard_gradients, loss, correct) =
                    batch_gradients(&network, batch(70, &device), shards);
                let mut accumulator = GradientsAccumulator::<Network>::new();
                for gradients in shard_gradients {
                    accumulator.accumulate(&network, gradients);
                }
                let gradients = accumulator.grads();
                let mut sgd = SgdConfig::new().init();
                (
                    weights(&sgd.step(1.0, network.clone(), gradients)),
                    loss,
                    correct,
                )
            };
            let (whole, whole_loss, whole_correct) = step(&[Range { start: 0, end: 70 }]);
            let (sharded, sharded_loss, sharded_correct) = step(&shard_ranges(70, &device));
            assert_eq!(sharded_correct, whole_correct);
            assert!((sharded_loss - whole_loss).abs() < 1e-5 * whole_loss.abs());
            let before = weights(&network);
            let moved = whole.iter().zip(&before).filter(|(a, b)| a != b).count();
            assert!(
                moved > before.len() / 4,
                "{architecture:?}: the step moved {moved} weights"
            );
            for (index, (sharded, whole)) in sharded.iter().zip(&whole).enumerate() {
                assert!(
                    (sharded - whole).abs() <= 1e-5 * (1.0 + whole.abs()),
                    "{architecture:?}, weight {index}: {sharded} sharded, {whole} whole"
                );
            }
        }
    }

    #[test]
    fn a_step_is_the_same_on_one_thread_as_on_three() {
        let device = BackendKind::Flex.device().autodiff();
        let network = Network::new(Architecture::Cnn, InputShape::MNIST, &device);
        let step = |threads: usize| {
            on_threads(threads, || {
                let mut optimizer = Adam::new(&device);
                let step = train_step(network.clone(), &mut optimizer, 1e-3, batch(128, &device));
                (weights(&step.network), step.loss)
            })
        };
        let (one, one_loss) = step(1);
        let (three, three_loss) = step(3);
        assert_eq!(one_loss.to_bits(), three_loss.to_bits());
        assert!(one == three, "the weights differ between 1 and 3 threads");
        assert!(one != weights(&network), "the step changed nothing");
    }
}
