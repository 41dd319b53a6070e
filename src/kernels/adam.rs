//! Adam's update of one parameter tensor as a single pass over its values, on all threads.
//!
//! burn's Adam computes the same update as about a dozen whole-tensor operations, each reading
//! and writing the tensor again, and burn-flex runs element-wise operations below 256K values on
//! one thread: every parameter of the default network is smaller, so the optimizer ran serially
//! while the other threads waited. Here each value's moments and parameter are updated in one
//! visit, by chunks spread over the thread pool. Every value goes through the same f32
//! operations in the same order as in burn's `Adam`, so the results are bit-identical to it
//! (the tests hold them to it), at every SIMD level and thread count.

use rayon::prelude::*;

use super::im2col::add_assign;
use super::simd::simd_versions;

/// Values per parallel task: large enough that a task outweighs its scheduling, small enough
/// that the largest parameter (200,704 values) spreads over many threads.
const CHUNK: usize = 16 * 1024;

/// The scalars of one Adam step, computed as burn's Adam computes them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamStep {
    pub beta_1: f32,
    pub beta_2: f32,
    /// `sqrt(1 - beta_2^t) / (1 - beta_1^t)`: both bias corrections in one factor.
    pub combined_factor: f32,
    /// `epsilon * sqrt(1 - beta_2^t)`: epsilon scaled by the same correction.
    pub scaled_epsilon: f32,
    pub learning_rate: f32,
    /// The first step sets the moments from the gradient alone, as burn does, rather than
    /// decaying zeros into them (the same values, but for the sign of a zero).
    pub first: bool,
}

impl AdamStep {
    /// The scalars of step `time` (1 for the first).
    pub fn new(beta_1: f32, beta_2: f32, epsilon: f32, time: usize, learning_rate: f64) -> Self {
        // burn converts the step count with `as i32`; counts beyond it are out of reach.
        let time = i32::try_from(time).unwrap_or(i32::MAX);
        let bias_correction_2_sqrt = (1.0 - beta_2.powi(time)).sqrt();
        AdamStep {
            beta_1,
            beta_2,
            combined_factor: bias_correction_2_sqrt / (1.0 - beta_1.powi(time)),
            scaled_epsilon: epsilon * bias_correction_2_sqrt,
            learning_rate: learning_rate as f32,
            first: time == 1,
        }
    }
}

/// One Adam step, in place: the moments take in the gradient, then `param` moves by the
/// corrected ratio of the two. The gradient is the sum of `grads` in their order (the shards'
/// gradients of one batch), added as it is read rather than in a pass of its own. On the first
/// step the moments' old values are not read. Every slice must have the same length.
pub fn adam_update(
    param: &mut [f32],
    grads: &[&[f32]],
    moment_1: &mut [f32],
    moment_2: &mut [f32],
    step: AdamStep,
) {
    let len = param.len();
    assert!(
        !grads.is_empty()
            && grads.iter().all(|grad| grad.len() == len)
            && moment_1.len() == len
            && moment_2.len() == len,
        "adam_update: a parameter of {len} values with gradients of {:?} values and moments of {} and {}",
        grads.iter().map(|grad| grad.len()).collect::<Vec<_>>(),
        moment_1.len(),
        moment_2.len()
    );
    if len <= CHUNK {
        update_chunk(param, grads, 0, moment_1, moment_2, step);
        return;
    }
    param
        .par_chunks_mut(CHUNK)
        .zip(moment_1.par_chunks_mut(CHUNK))
        .zip(moment_2.par_chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(index, ((param, moment_1), moment_2))| {
            update_chunk(param, grads, index * CHUNK, moment_1, moment_2, step);
        });
}

/// [`update_chunk_with`] for the values of `param` (and the moments) starting at `offset` in
/// `grads`: one or two gradients added as they are read, more summed first.
fn update_chunk(
    param: &mut [f32],
    grads: &[&[f32]],
    offset: usize,
    moment_1: &mut [f32],
    moment_2: &mut [f32],
    step: AdamStep,
) {
    let range = offset..offset + param.len();
    match grads {
        [grad] => update_chunk_of([&grad[range]], param, moment_1, moment_2, step),
        [first, second] => update_chunk_of(
            [&first[range.clone()], &second[range]],
            param,
            moment_1,
            moment_2,
            step,
        ),
        [first, rest @ ..] => {
            let mut sum = first[range.clone()].to_vec();
            for grad in rest {
                add_assign(&mut sum, &grad[range.clone()]);
            }
            update_chunk_of([&sum], param, moment_1, moment_2, step);
        }
        [] => unreachable!("adam_update checks for a gradient"),
    }
}

simd_versions! {
    fn update_chunk_of<const N: usize>(
        grads: [&[f32]; N],
        param: &mut [f32],
        moment_1: &mut [f32],
        moment_2: &mut [f32],
        step: AdamStep,
    ) = update_chunk_with;
}

/// [`update_chunk_of`], inlined into each of its versions: each value's gradient is the sum
/// of its `N` gradients, added in order.
#[inline(always)]
fn update_chunk_with<const N: usize>(
    grads: [&[f32]; N],
    param: &mut [f32],
    moment_1: &mut [f32],
    moment_2: &mut [f32],
    step: AdamStep,
) {
    let len = param.len();
    // Cut to the chunk's length, so that the loop below needs no bounds checks.
    let grads = grads.map(|grad| &grad[..len]);
    let (moment_1, moment_2) = (&mut moment_1[..len], &mut moment_2[..len]);
    for index in 0..len {
        let grad = grads[1..]
            .iter()
            .fold(grads[0][index], |sum, grad| sum + grad[index]);
        update_value(
            &mut param[index],
            grad,
            &mut moment_1[index],
            &mut moment_2[index],
            step,
        );
    }
}

/// One value's update, inlined into each version of the chunk loops. The operations and their
/// order are burn's (`AdaptiveMomentum::transform`, then `tensor - grad * lr`); Rust never
/// contracts them into fused multiply-adds, so every version rounds alike.
#[inline(always)]
fn update_value(
    param: &mut f32,
    grad: f32,
    moment_1: &mut f32,
    moment_2: &mut f32,
    step: AdamStep,
) {
    let (factor_1, factor_2) = (1.0 - step.beta_1, 1.0 - step.beta_2);
    if step.first {
        *moment_1 = grad * factor_1;
        *moment_2 = grad * grad * factor_2;
    } else {
        *moment_1 = *moment_1 * step.beta_1 + grad * factor_1;
        *moment_2 = *moment_2 * step.beta_2 + grad * grad * factor_2;
    }
    let update = (*moment_1 * step.combined_factor) / (moment_2.sqrt() + step.scaled_epsilon);
    *param -= update * step.learning_rate;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A straightforward f64 Adam, to check the f32 pass against.
    fn reference(param: &mut [f64], grad: &[f64], m: &mut [f64], v: &mut [f64], t: i32, lr: f64) {
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-7f64);
        for i in 0..param.len() {
            m[i] = b1 * m[i] + (1.0 - b1) * grad[i];
            v[i] = b2 * v[i] + (1.0 - b2) * grad[i] * grad[i];
            let m_hat = m[i] / (1.0 - b1.powi(t));
            let v_hat = v[i] / (1.0 - b2.powi(t));
            // Keras's form: epsilon added to the corrected root, as burn's scaled epsilon does.
            param[i] -= lr * m_hat / (v_hat.sqrt() + eps);
        }
    }

    #[test]
    fn three_steps_follow_the_textbook_update_on_a_parallel_sized_tensor() {
        let len = 3 * CHUNK + 17;
        let mut param: Vec<f32> = (0..len).map(|i| ((i % 97) as f32 - 48.0) / 50.0).collect();
        let mut expected: Vec<f64> = param.iter().map(|&p| f64::from(p)).collect();
        let (mut m1, mut m2) = (vec![0f32; len], vec![0f32; len]);
        let (mut m_ref, mut v_ref) = (vec![0f64; len], vec![0f64; len]);
        for time in 1..=3 {
            let grad: Vec<f32> = (0..len)
                .map(|i| ((i * 31 + time * 7) % 113) as f32 / 113.0 - 0.5)
                .collect();
            let grad_ref: Vec<f64> = grad.iter().map(|&g| f64::from(g)).collect();
            let step = AdamStep::new(0.9, 0.999, 1e-7, time, 1e-3);
            adam_update(&mut param, &[&grad], &mut m1, &mut m2, step);
            reference(
                &mut expected,
                &grad_ref,
                &mut m_ref,
                &mut v_ref,
                time as i32,
                1e-3,
            );
        }
        for (i, (&got, &want)) in param.iter().zip(&expected).enumerate() {
            assert!(
                (f64::from(got) - want).abs() < 1e-6,
                "value {i}: {got} against {want}"
            );
        }
        // The parameters did move: three steps of about the learning rate each.
        let moved = param
            .iter()
            .zip(0..len)
            .filter(|&(&p, i)| (p - ((i % 97) as f32 - 48.0) / 50.0).abs() > 1e-3)
            .count();
        assert!(moved > len / 2, "only {moved} of {len} values moved");
    }

    /// Shards' gradients added as they are read give what their sum, added first, gives:
    /// bit for bit, for two shards and for three, in a tensor spread over several tasks.
    #[test]
    fn shard_gradients_update_as_their_sum_does() {
        let len = 2 * CHUNK + 5;
        let shard = |k: usize| -> Vec<f32> {
            (0..len)
                .map(|i| ((i * 31 + k * 17) % 113) as f32 / 113.0 - 0.5)
                .collect()
        };
        let shards = [shard(1), shard(2), shard(3)];
        for count in [2, 3] {
            let summed: Vec<f32> = (0..len)
                .map(|i| {
                    shards[1..count]
                        .iter()
                        .fold(shards[0][i], |sum, g| sum + g[i])
                })
                .collect();
            let start: Vec<f32> = (0..len).map(|i| (i % 13) as f32 / 13.0).collect();
            let run = |grads: &[&[f32]]| {
                let (mut param, mut m1, mut m2) = (start.clone(), vec![0f32; len], vec![0f32; len]);
                for time in 1..=2 {
                    let step = AdamStep::new(0.9, 0.999, 1e-7, time, 1e-3);
                    adam_update(&mut param, grads, &mut m1, &mut m2, step);
                }
                (param, m1, m2)
            };
            let parts: Vec<&[f32]> = shards[..count].iter().map(Vec::as_slice).collect();
            let (whole, in_parts) = (run(&[&summed]), run(&parts));
            assert!(
                whole == in_parts,
                "{count} shards update otherwise than their sum"
            );
            assert!(whole.0 != start, "nothing moved");
        }
    }

    #[test]
    fn mismatched_lengths_are_refused() {
        let result = std::panic::catch_unwind(|| {
            let (mut p, mut m1, mut m2) = (vec![0f32; 4], vec![0f32; 4], vec![0f32; 4]);
            adam_update(
                &mut p,
                &[&[0.0; 3]],
                &mut m1,
                &mut m2,
                AdamStep::new(0.9, 0.999, 1e-7, 1, 1e-3),
            );
        });
        assert!(result.is_err());
    }
}
