//! The block's backward pass (see [`backward_f32`]).

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::pixel_major::{
    PixelScratch, from_padded_pixel_major, to_padded_pixel_major, with_pixel_scratch,
};
use super::{BlockShape, image_of, single_channel, visit16};
use crate::kernels::im2col::add_assign;
use crate::kernels::simd::{self, SimdLevel, simd_versions};
use crate::kernels::window::CLAMPED;
use crate::kernels::{min_tasks_per_thread, to_be_written};

pub(super) struct GradientsF32 {
    pub input: Option<Vec<f32>>,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// The backward pass. Only the winning position of each window that ReLU let through has a
/// gradient (under a quarter of the convolution outputs), so rather than multiplying mostly-zero
/// matrices it visits those positions: each adds its gradient times the pixels under the kernel
/// to the filter's weight gradient, and times the filter's weights to the input gradient. With
/// the image stored pixel-major, each tap of either is one short vectorized loop over channels.
pub(super) fn backward_f32(
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
    // The input gradient is written image by image (`from_padded_pixel_major`), every value,
    // so it starts uninitialised (`to_be_written`) and its length is set once the tasks are
    // done.
    let input_grad_len = shape.batch * image_len;
    let mut input_grad = input_grad_needed.then(|| Vec::<f32>::with_capacity(input_grad_len));
    let input_grad_chunks: Vec<Option<&mut [MaybeUninit<f32>]>> = match input_grad.as_mut() {
        Some(grad) if input_grad_len > 0 => to_be_written(grad, input_grad_len)
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
        .with_min_len(min_tasks_per_thread())
        .map(|(task, mut input_grads)| {
            let mut weight_grad = vec![0f32; filters * taps];
            let mut bias_grad = vec![0f32; filters];
            let first = task * images_per_task;
            let images = first..(first + images_per_task).min(shape.batch);
            if shape.channels == 1 && input_grads.is_none() {
                let batch = (x, winners, output_grad);
                let grads = (&mut weight_grad[..], &mut bias_grad[..]);
                single_channel::weight_grads(batch, shape, images, grads);
                return (weight_grad, bias_grad);
            }
            with_pixel_scratch(shape, |scratch| {
                for image in images {
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
    if let Some(grad) = input_grad.as_mut() {
        // SAFETY: the chunks cover the `input_grad_len` values, and each task wrote every
        // image of its chunk whole (`image_backward`), as the input gradient was wanted.
        unsafe { grad.set_len(input_grad_len) };
    }
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

fn image_backward(
    image: ImageGrads<'_>,
    shape: BlockShape,
    scratch: &mut PixelScratch<'_>,
    grads: (&mut [f32], &mut [f32]),
    input_grad: Option<&mut [MaybeUninit<f32>]>,
) {
    // 16 channels at AVX-512 or AVX2: the explicit vector version of the visit below.
    if shape.channels == visit16::CHANNELS && simd::level() >= SimdLevel::Avx2 {
        to_padded_pixel_major(image.x, shape, scratch.pixels);
        if input_grad.is_some() {
            scratch.pixels_grad.fill(0.0);
        }
        let visit = visit16::Visit {
            pixels: scratch.pixels,
            pixels_grad: input_grad.is_some().then_some(&mut *scratch.pixels_grad),
            winners: image.winners,
            output_grad: image.output_grad,
            weight: image.weight,
        };
        visit16::visit(visit, shape, grads);
        if let Some(input_grad) = input_grad {
            from_padded_pixel_major(scratch.pixels_grad, shape, input_grad);
        }
        return;
    }
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
        input_grad: Option<&mut [MaybeUninit<f32>]>,
    ) = image_backward_with;
}

/// [`image_backward_for`], inlined into each of its versions.
#[inline(always)]
fn image_backward_with<const CHANNELS: usize>(
    image: ImageGrads<'_>,
    shape: BlockShape,
    scratch: &mut PixelScratch<'_>,
    (weight_grad, bias_grad): (&mut [f32], &mut [f32]),
    input_grad: Option<&mut [MaybeUninit<f32>]>,
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
        from_padded_pixel_major(scratch.pixels_grad, shape, input_grad);
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
