//! The backward visit of [`super::backward`] for blocks of 16 channels (the network's 16->32
//! block) with AVX-512 or AVX2, written with explicit vectors: a pixel's 16 channels are one
//! AVX-512 register or two AVX2 ones.
//!
//! The compiled generic loop kept part of each filter's weight-gradient sums in memory (a store
//! per sum and winner) and read the filter's weights from memory at every winner; with one
//! 512-bit load and half a 512-bit store per cycle (Zen 4), those loads and stores, not the
//! arithmetic, set its pace. Here a filter's nine sums stay in registers across its windows
//! (with AVX-512 its nine weight vectors too; with AVX2, as many of the 18 half-pixel sums as
//! the 16 registers hold, which measured faster than two visits of 8 channels), and every
//! product is a fused multiply-add.

use super::BlockShape;
use crate::kernels::window::CLAMPED;

/// Channels per pixel.
pub(super) const CHANNELS: usize = 16;

/// The buffers of one image's visit: padded pixel-major images (`[height + 2, width + 2, 16]`),
/// the block's winners and output gradient (`[filters, windows]`), and its tap-major weights.
pub(super) struct Visit<'a> {
    pub pixels: &'a [f32],
    /// The input gradient to add to, where one is wanted.
    pub pixels_grad: Option<&'a mut [f32]>,
    pub winners: &'a [u8],
    pub output_grad: &'a [f32],
    pub weight: &'a [f32],
}

/// The image's gradients, as `backward::image_backward_with` computes them for 16 channels:
/// per filter, each winning window adds its gradient times the pixels under the kernel to the
/// filter's weight gradient (tap-major) and its bias, and, when `pixels_grad` is given, times
/// the filter's weights to the input gradient. At the level in force: AVX-512 or AVX2 (the
/// caller checks).
pub(super) fn visit(image: Visit<'_>, shape: BlockShape, grads: (&mut [f32], &mut [f32])) {
    let padded_len = (shape.height + 2) * (shape.width + 2) * CHANNELS;
    let (weight_grad, bias_grad) = (&*grads.0, &*grads.1);
    assert!(
        shape.channels == CHANNELS
            && image.pixels.len() >= padded_len
            && image
                .pixels_grad
                .as_ref()
                .is_none_or(|grad| grad.len() >= padded_len)
            && image.winners.len() == shape.filters * shape.pooled_plane()
            && image.output_grad.len() == image.winners.len()
            && image.weight.len() == shape.filters * 9 * CHANNELS
            && weight_grad.len() == image.weight.len()
            && bias_grad.len() == shape.filters,
        "visit16: buffers do not match the shape"
    );
    if shape.pooled_plane() == 0 {
        return;
    }
    match crate::kernels::simd::level() {
        #[cfg(target_arch = "x86_64")]
        crate::kernels::simd::SimdLevel::Avx512 => {
            // SAFETY: the level is AVX-512 only where the CPU has AVX-512 F; the buffers fit
            // the shape (asserted above) and it has windows.
            unsafe { avx512::visit(image, shape, grads) }
        }
        #[cfg(target_arch = "x86_64")]
        crate::kernels::simd::SimdLevel::Avx2 => {
            // SAFETY: the level is AVX2 or wider only where the CPU has AVX2 and FMA; the
            // buffers fit the shape (asserted above) and it has windows.
            unsafe { avx2::visit(image, shape, grads) }
        }
        _ => unreachable!("visit16 runs at AVX-512 or AVX2 only"),
    }
}

/// Calls `add(corner, grad)` for each window of one filter that a position won (ReLU let it
/// through), in order: `corner` is where the kernel's top left pixel lies in the padded
/// pixel-major image, in floats. Returns the sum of those windows' gradients (the bias's).
/// The kernel's rows `y..y + 3` and columns `x..x + 3` lie inside the padded image, as
/// `y + 2 <= height + 1` and `x + 2 <= width + 1`.
#[inline(always)]
fn for_each_winner(
    (winners, output_grad): (&[u8], &[f32]),
    shape: BlockShape,
    mut add: impl FnMut(usize, f32),
) -> f32 {
    let (padded_width, pooled_width) = (shape.width + 2, shape.width / 2);
    let mut bias_sum = 0f32;
    // Rows and columns counted by the loops: a division per window cost more than the rest.
    let rows = winners
        .chunks_exact(pooled_width)
        .zip(output_grad.chunks_exact(pooled_width));
    for (pooled_y, (winners, output_grad)) in rows.enumerate() {
        for (pooled_x, (&winner, &grad)) in winners.iter().zip(output_grad).enumerate() {
            if winner == CLAMPED {
                continue;
            }
            bias_sum += grad;
            let y = 2 * pooled_y + usize::from(winner / 2);
            let x = 2 * pooled_x + usize::from(winner % 2);
            add((y * padded_width + x) * CHANNELS, grad);
        }
    }
    bias_sum
}

/// Where each tap of the kernel reads, from its top left pixel, in floats.
fn tap_offsets(shape: BlockShape) -> [usize; 9] {
    std::array::from_fn(|tap| ((tap / 3) * (shape.width + 2) + tap % 3) * CHANNELS)
}

/// A filter's share of an image: its windows' winners and gradients, its tap-major weights,
/// and its weight and bias gradients.
type Filter<'a> = ((&'a [u8], &'a [f32]), &'a [f32], &'a mut [f32], &'a mut f32);

/// The image's pixels and input gradient as pointers (the kernels index them by pixel), and
/// its filters in order.
fn split<'a>(
    image: Visit<'a>,
    shape: BlockShape,
    (weight_grad, bias_grad): (&'a mut [f32], &'a mut [f32]),
) -> (
    (*const f32, Option<*mut f32>),
    impl Iterator<Item = Filter<'a>>,
) {
    let (windows, taps) = (shape.pooled_plane(), 9 * CHANNELS);
    let pointers = (
        image.pixels.as_ptr(),
        image.pixels_grad.map(|grad| grad.as_mut_ptr()),
    );
    let filters = image
        .winners
        .chunks_exact(windows)
        .zip(image.output_grad.chunks_exact(windows))
        .zip(image.weight.chunks_exact(taps))
        .zip(weight_grad.chunks_exact_mut(taps))
        .zip(bias_grad)
        .map(|((((winners, grads), weight), weight_grad), bias_grad)| {
            ((winners, grads), weight, weight_grad, bias_grad)
        });
    (pointers, filters)
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{CHANNELS, Visit, for_each_winner, split, tap_offsets};
    use crate::kernels::block::BlockShape;
    use crate::kernels::im2col::add_assign;

    /// # Safety
    /// The CPU must have AVX-512 F; the buffers must fit `shape` as [`super::visit`] asserts,
    /// and the shape must have windows.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn visit(image: Visit<'_>, shape: BlockShape, grads: (&mut [f32], &mut [f32])) {
        let offsets = tap_offsets(shape);
        let ((pixels, pixels_grad), filters) = split(image, shape, grads);
        for (windows, weight, weight_grad, bias_grad) in filters {
            // SAFETY: `weight` holds 9 taps of 16 floats.
            let weights: [__m512; 9] = std::array::from_fn(|tap| unsafe {
                _mm512_loadu_ps(weight.as_ptr().add(tap * CHANNELS))
            });
            let mut sums = [_mm512_setzero_ps(); 9];
            *bias_grad += for_each_winner(windows, shape, |corner, grad| {
                let grad = _mm512_set1_ps(grad);
                for (tap, &offset) in offsets.iter().enumerate() {
                    // SAFETY: the kernel's pixels are inside the padded image
                    // (`for_each_winner`), of which both images hold all 16 channels; nothing
                    // else reads or writes the input gradient meanwhile.
                    unsafe {
                        let at = corner + offset;
                        let pixel = _mm512_loadu_ps(pixels.add(at));
                        sums[tap] = _mm512_fmadd_ps(grad, pixel, sums[tap]);
                        if let Some(pixels_grad) = pixels_grad {
                            let target = pixels_grad.add(at);
                            let updated =
                                _mm512_fmadd_ps(grad, weights[tap], _mm512_loadu_ps(target));
                            _mm512_storeu_ps(target, updated);
                        }
                    }
                }
            });
            let mut added = [0f32; 9 * CHANNELS];
            for (tap, sum) in sums.into_iter().enumerate() {
                // SAFETY: `added` holds 9 taps of 16 floats.
                unsafe { _mm512_storeu_ps(added.as_mut_ptr().add(tap * CHANNELS), sum) };
            }
            add_assign(weight_grad, &added);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{CHANNELS, Visit, for_each_winner, split, tap_offsets};
    use crate::kernels::block::BlockShape;
    use crate::kernels::im2col::add_assign;

    /// Channels per AVX2 vector: half a pixel.
    const HALF: usize = 8;

    /// [`super::avx512::visit`] with a pixel as two vectors; the 18 sums fill the registers
    /// (the compiler keeps what it can), and the weights are read from memory.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; the buffers must fit `shape` as [`super::visit`]
    /// asserts, and the shape must have windows.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn visit(image: Visit<'_>, shape: BlockShape, grads: (&mut [f32], &mut [f32])) {
        let offsets = tap_offsets(shape);
        let ((pixels, pixels_grad), filters) = split(image, shape, grads);
        for (windows, weight, weight_grad, bias_grad) in filters {
            let mut sums = [_mm256_setzero_ps(); 2 * 9];
            *bias_grad += for_each_winner(windows, shape, |corner, grad| {
                let grad = _mm256_set1_ps(grad);
                for (tap, &offset) in offsets.iter().enumerate() {
                    for half in 0..2 {
                        let (sum, channel) = (2 * tap + half, half * HALF);
                        // SAFETY: as for AVX-512; `weight` holds 9 taps of 16 floats, and
                        // `channel + 8` is at most 16.
                        unsafe {
                            let at = corner + offset + channel;
                            let pixel = _mm256_loadu_ps(pixels.add(at));
                            sums[sum] = _mm256_fmadd_ps(grad, pixel, sums[sum]);
                            if let Some(pixels_grad) = pixels_grad {
                                let target = pixels_grad.add(at);
                                let weight = weight.as_ptr().add(tap * CHANNELS + channel);
                                let updated = _mm256_fmadd_ps(
                                    grad,
                                    _mm256_loadu_ps(weight),
                                    _mm256_loadu_ps(target),
                                );
                                _mm256_storeu_ps(target, updated);
                            }
                        }
                    }
                }
            });
            let mut added = [0f32; 9 * CHANNELS];
            for (index, sum) in sums.into_iter().enumerate() {
                // SAFETY: `added` holds 18 halves of 8 floats.
                unsafe { _mm256_storeu_ps(added.as_mut_ptr().add(index * HALF), sum) };
            }
            add_assign(weight_grad, &added);
        }
    }
}
