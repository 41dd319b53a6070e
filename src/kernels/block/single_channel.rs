//! The weight and bias gradients of a single-channel block whose input needs no gradient: the
//! first layer of a grayscale network.
//!
//! Visiting the winners tap by tap, as [`super::backward`] does for any block, costs nine scalar
//! products per winner when there is one channel. Instead, every pooling window's 4x4 pixels
//! (what the kernels at its four positions cover together) are read once, and each tap of each
//! filter takes its pixel from that block, at the offset of the filter's winner:
//!
//! - with AVX-512 and a multiple of 16 filters, 16 filters at a time: one permutation of the
//!   block's 16 values and one fused multiply-add per tap, for all 16 filters;
//! - with AVX2 and a multiple of 16 filters, 8 filters at a time: per tap, the four pixels it
//!   can read (one per winning position) as one shuffle of two of the block's rows, one
//!   in-lane permutation by the 8 filters' winners, and one fused multiply-add;
//! - otherwise, per filter and winning position, a 16-wide sum of blocks, from which the taps
//!   are read out at the end.
//!
//! The two round differently (within float error of each other); each is deterministic for a
//! given shape, whatever the thread count.

use super::pixel_major::{to_padded_pixel_major, with_pixel_scratch};
use super::{BlockShape, image_of};
use crate::kernels::simd::{self, SimdLevel, simd_versions};
use crate::kernels::window::CLAMPED;

/// Filters per vector in the AVX-512 version, and per window-major group in both vector
/// versions.
const LANES: usize = 16;
/// The sums per filter in the vector versions: nine taps, then the bias.
const SUMS: usize = 10;

/// Adds the gradients from the `images` of the batch to `weight_grad` (`[filters, 9]`) and
/// `bias_grad`.
pub(super) fn weight_grads(
    (x, winners, output_grad): (&[f32], &[u8], &[f32]),
    shape: BlockShape,
    images: std::ops::Range<usize>,
    (weight_grad, bias_grad): (&mut [f32], &mut [f32]),
) {
    debug_assert_eq!(shape.channels, 1);
    let output_len = shape.output_image_len();
    let image = |image| {
        (
            image_of(winners, image, output_len),
            image_of(output_grad, image, output_len),
        )
    };
    #[cfg(target_arch = "x86_64")]
    if simd::level() >= SimdLevel::Avx2 && shape.filters.is_multiple_of(LANES) {
        let groups = shape.filters / LANES;
        let mut sums = vec![[0f32; LANES]; groups * SUMS];
        let mut transposed = Transposed::new(shape);
        with_pixel_scratch(shape, |scratch| {
            for index in images {
                to_padded_pixel_major(image_of(x, index, shape.plane()), shape, scratch.pixels);
                let (winners, output_grad) = image(index);
                for (group, sums) in sums.chunks_exact_mut(SUMS).enumerate() {
                    transposed.fill(winners, output_grad, shape, group);
                    let Ok(sums) = <&mut [[f32; LANES]; SUMS]>::try_from(sums) else {
                        unreachable!("chunks of {SUMS}")
                    };
                    if simd::level() == SimdLevel::Avx512 {
                        // SAFETY: the level is AVX-512 only where the CPU has AVX-512 F;
                        // `scratch.pixels` is the padded image and `transposed` was filled for
                        // this shape, as `avx512::window_sums` requires.
                        unsafe { avx512::window_sums(scratch.pixels, &transposed, shape, sums) };
                    } else {
                        // SAFETY: the level is AVX2 or wider only where the CPU has AVX2 and
                        // FMA; the buffers are as for AVX-512.
                        unsafe { avx2::window_sums(scratch.pixels, &transposed, shape, sums) };
                    }
                }
            }
        });
        for (group, sums) in sums.chunks_exact(SUMS).enumerate() {
            for lane in 0..LANES {
                let filter = group * LANES + lane;
                for (tap, sum) in sums[..9].iter().enumerate() {
                    weight_grad[filter * 9 + tap] += sum[lane];
                }
                bias_grad[filter] += sums[9][lane];
            }
        }
        return;
    }
    let mut sums = vec![[0f32; 16]; shape.filters * 4];
    with_pixel_scratch(shape, |scratch| {
        for index in images {
            to_padded_pixel_major(image_of(x, index, shape.plane()), shape, scratch.pixels);
            let (winners, output_grad) = image(index);
            let image = (&*scratch.pixels, winners, output_grad);
            window_sums(image, shape, &mut sums, bias_grad);
        }
    });
    for (filter_sums, filter_grad) in sums.chunks_exact(4).zip(weight_grad.chunks_exact_mut(9)) {
        for (position, block) in filter_sums.iter().enumerate() {
            let (dy, dx) = (position / 2, position % 2);
            for (tap, grad) in filter_grad.iter_mut().enumerate() {
                *grad += block[(dy + tap / 3) * 4 + dx + tap % 3];
            }
        }
    }
}

/// The 4x4 pixels of pooling window `window`: rows `2y..2y+4` and columns `2x..2x+4` of the
/// padded image, which the kernel covers at the window's four positions.
#[inline(always)]
fn window_block(pixels: &[f32], shape: BlockShape, window: usize) -> [f32; 16] {
    let (padded_width, pooled_width) = (shape.width + 2, shape.width / 2);
    let (pooled_y, pooled_x) = (window / pooled_width, window % pooled_width);
    let mut block = [0f32; 16];
    for (row, values) in block.chunks_exact_mut(4).enumerate() {
        let start = (2 * pooled_y + row) * padded_width + 2 * pooled_x;
        values.copy_from_slice(&pixels[start..start + 4]);
    }
    block
}

simd_versions! {
    /// One image's share of the version without AVX-512: `sums[filter * 4 + position]` gathers
    /// the blocks of the windows whose winner, for that filter, is at `position`.
    fn window_sums(
        image: (&[f32], &[u8], &[f32]),
        shape: BlockShape,
        sums: &mut [[f32; 16]],
        bias_grad: &mut [f32],
    ) = window_sums_with;
}

/// [`window_sums`], inlined into each of its versions.
#[inline(always)]
fn window_sums_with(
    (pixels, winners, output_grad): (&[f32], &[u8], &[f32]),
    shape: BlockShape,
    sums: &mut [[f32; 16]],
    bias_grad: &mut [f32],
) {
    let pooled_plane = shape.pooled_plane();
    for window in 0..pooled_plane {
        let block = window_block(pixels, shape, window);
        let filters = winners
            .iter()
            .skip(window)
            .step_by(pooled_plane)
            .zip(output_grad.iter().skip(window).step_by(pooled_plane))
            .zip(sums.chunks_exact_mut(4))
            .zip(bias_grad.iter_mut());
        for (((&winner, &grad), filter_sums), bias_grad) in filters {
            if winner == CLAMPED {
                continue;
            }
            *bias_grad += grad;
            let sum = &mut filter_sums[usize::from(winner)];
            for (sum, &pixel) in sum.iter_mut().zip(&block) {
                *sum += grad * pixel;
            }
        }
    }
}

/// One group of 16 filters' winners and gradients for one image, window-major
/// (`[window][lane]`), so that a window's 16 filters are one load. With AVX2 or AVX-512 it is
/// filled by transposing squares in registers (`avx2::transpose_squares`), which halved its
/// share of a training profile against the strided loop.
struct Transposed {
    winners: Vec<u8>,
    grads: Vec<f32>,
}

impl Transposed {
    fn new(shape: BlockShape) -> Self {
        let len = shape.pooled_plane() * LANES;
        Transposed {
            winners: vec![CLAMPED; len],
            grads: vec![0.0; len],
        }
    }

    /// Filters `group * 16 .. + 16` of one image's `winners` and `output_grad`.
    fn fill(&mut self, winners: &[u8], output_grad: &[f32], shape: BlockShape, group: usize) {
        let pooled_plane = shape.pooled_plane();
        let first = group * LANES * pooled_plane;
        let (winners, grads) = (
            &winners[first..][..LANES * pooled_plane],
            &output_grad[first..][..LANES * pooled_plane],
        );
        // The windows that whole squares cover, transposed in registers with AVX2; the rest one
        // value at a time.
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if simd::level() >= SimdLevel::Avx2 {
            // SAFETY: the level is AVX2 or wider only where the CPU has AVX2; the rows hold
            // 16 filters of `pooled_plane` windows, and `self` 16 values per window.
            done = unsafe { avx2::transpose_squares(self, (winners, grads), pooled_plane) };
        }
        let rows = winners
            .chunks_exact(pooled_plane)
            .zip(grads.chunks_exact(pooled_plane));
        for (lane, (winners, grads)) in rows.enumerate() {
            for (window, (&winner, &grad)) in winners.iter().zip(grads).enumerate().skip(done) {
                self.winners[window * LANES + lane] = winner;
                self.grads[window * LANES + lane] = grad;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{LANES, SUMS, Transposed, window_block};
    use crate::kernels::block::BlockShape;
    use crate::kernels::window::CLAMPED;

    /// Adds one image's gradients for one group of 16 filters to `sums`: per tap, the sum over
    /// the windows of each filter's gradient times the pixel under that tap at the filter's
    /// winner; then the sum of the gradients (the bias's). Clamped windows add nothing.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F; `pixels` must be the padded image of `shape`, and
    /// `transposed` filled for `shape`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn window_sums(
        pixels: &[f32],
        transposed: &Transposed,
        shape: BlockShape,
        sums: &mut [[f32; LANES]; SUMS],
    ) {
        let mut accumulators: [__m512; SUMS] = std::array::from_fn(|sum| {
            // SAFETY: each sum holds 16 floats.
            unsafe { _mm512_loadu_ps(sums[sum].as_ptr()) }
        });
        // Where tap `t` of a kernel at the block's corner reads the block.
        let tap_offsets: [__m512i; 9] =
            std::array::from_fn(|tap| _mm512_set1_epi32(((tap / 3) * 4 + tap % 3) as i32));
        let (one, clamped) = (_mm512_set1_epi32(1), _mm512_set1_epi32(i32::from(CLAMPED)));
        let windows = transposed
            .winners
            .chunks_exact(LANES)
            .zip(transposed.grads.chunks_exact(LANES))
            .take(shape.pooled_plane());
        for (window, (winners, grads)) in windows.enumerate() {
            let block = window_block(pixels, shape, window);
            // SAFETY: the block holds 16 floats.
            let block = unsafe { _mm512_loadu_ps(block.as_ptr()) };
            let Ok(winners) = <&[u8; LANES]>::try_from(winners) else {
                unreachable!("chunks of {LANES}")
            };
            // SAFETY: `winners` holds 16 bytes, the 128 bits read.
            let winners = unsafe { _mm_loadu_si128(winners.as_ptr().cast()) };
            let winners = _mm512_cvtepu8_epi32(winners);
            let active = _mm512_cmpneq_epi32_mask(winners, clamped);
            let Ok(grads) = <&[f32; LANES]>::try_from(grads) else {
                unreachable!("chunks of {LANES}")
            };
            // SAFETY: `grads` holds 16 floats.
            let grads = unsafe { _mm512_loadu_ps(grads.as_ptr()) };
            // Winner `w` is the block's row `w / 2` and column `w % 2`: offset 4 (w / 2) + w % 2.
            let corner = _mm512_add_epi32(
                _mm512_slli_epi32::<2>(_mm512_srli_epi32::<1>(winners)),
                _mm512_and_si512(winners, one),
            );
            for (accumulator, offset) in accumulators.iter_mut().zip(tap_offsets) {
                let pixels = _mm512_permutexvar_ps(_mm512_add_epi32(corner, offset), block);
                *accumulator = _mm512_mask3_fmadd_ps(grads, pixels, *accumulator, active);
            }
            accumulators[9] = _mm512_mask_add_ps(accumulators[9], active, accumulators[9], grads);
        }
        for (sum, accumulator) in sums.iter_mut().zip(accumulators) {
            // SAFETY: each sum holds 16 floats.
            unsafe { _mm512_storeu_ps(sum.as_mut_ptr(), accumulator) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{LANES, SUMS, Transposed};
    use crate::kernels::block::BlockShape;
    use crate::kernels::transpose::avx2::transpose8;
    use crate::kernels::window::CLAMPED;

    /// Filters per AVX2 vector.
    const HALF: usize = 8;

    /// Writes the first windows of 16 filters' `winners` and `grads` (`[filter][window]`,
    /// `windows` a row) window-major into `transposed`, as many as whole squares cover: 16
    /// windows' winners at a time as a 16x16 square of bytes, 8 windows' gradients as two
    /// 8x8 squares of floats. Returns how many windows it wrote.
    ///
    /// # Safety
    /// The CPU must have AVX2; `winners` and `grads` must hold 16 rows of `windows`, and
    /// `transposed` 16 values per window.
    #[target_feature(enable = "avx2")]
    pub unsafe fn transpose_squares(
        transposed: &mut Transposed,
        (winners, grads): (&[u8], &[f32]),
        windows: usize,
    ) -> usize {
        assert!(
            winners.len() == LANES * windows
                && grads.len() == winners.len()
                && transposed.winners.len() >= windows * LANES
                && transposed.grads.len() >= windows * LANES,
            "transpose_squares: buffers do not match"
        );
        let bytes_done = windows - windows % LANES;
        for start in (0..bytes_done).step_by(LANES) {
            // SAFETY: 16 bytes from window `start` of each row are inside it, and 16 windows
            // of 16 lanes from `start` inside `transposed` (asserted above).
            unsafe {
                let mut rows: [__m128i; LANES] = std::array::from_fn(|filter| {
                    _mm_loadu_si128(winners.as_ptr().add(filter * windows + start).cast())
                });
                // Four perfect shuffles of the rows transpose a 16x16 square of bytes.
                for _ in 0..4 {
                    rows = std::array::from_fn(|row| {
                        let (a, b) = (rows[row / 2], rows[row / 2 + HALF]);
                        if row % 2 == 0 {
                            _mm_unpacklo_epi8(a, b)
                        } else {
                            _mm_unpackhi_epi8(a, b)
                        }
                    });
                }
                for (window, row) in rows.into_iter().enumerate() {
                    let at = transposed
                        .winners
                        .as_mut_ptr()
                        .add((start + window) * LANES);
                    _mm_storeu_si128(at.cast(), row);
                }
            }
        }
        let floats_done = windows - windows % HALF;
        for start in (0..floats_done).step_by(HALF) {
            for half in 0..LANES / HALF {
                // SAFETY: 8 floats from window `start` of each row are inside it, and 8
                // windows of 16 lanes from `start` inside `transposed` (asserted above).
                unsafe {
                    let rows: [__m256; HALF] = std::array::from_fn(|filter| {
                        let row = half * HALF + filter;
                        _mm256_loadu_ps(grads.as_ptr().add(row * windows + start))
                    });
                    for (window, column) in transpose8(rows).into_iter().enumerate() {
                        let at = (start + window) * LANES + half * HALF;
                        _mm256_storeu_ps(transposed.grads.as_mut_ptr().add(at), column);
                    }
                }
            }
        }
        bytes_done.min(floats_done)
    }

    /// [`super::avx512::window_sums`] with 8 filters a vector, each half of the group in turn
    /// (its ten sums and the shuffles fill the 16 registers). Tap `(ty, tx)` of a kernel at
    /// winning position `w` reads the block's row `ty + w / 2`, column `tx + w % 2`: the four
    /// candidates, in the order of `w`, are one shuffle of the block's rows `ty` and `ty + 1`,
    /// and an in-lane permutation by the winners picks each filter's.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; `pixels` must be the padded image of `shape`, and
    /// `transposed` filled for `shape`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn window_sums(
        pixels: &[f32],
        transposed: &Transposed,
        shape: BlockShape,
        sums: &mut [[f32; LANES]; SUMS],
    ) {
        let (padded_width, pooled_width) = (shape.width + 2, shape.width / 2);
        let windows = shape.pooled_plane();
        assert!(
            pixels.len() >= (shape.height + 2) * padded_width
                && transposed.winners.len() >= windows * LANES
                && transposed.grads.len() >= windows * LANES,
            "window_sums: buffers do not match the shape"
        );
        let clamped = _mm256_set1_epi32(i32::from(CLAMPED));
        for half in 0..LANES / HALF {
            let mut accumulators: [__m256; SUMS] = std::array::from_fn(|sum| {
                // SAFETY: each sum holds 16 floats, of which this half is 8.
                unsafe { _mm256_loadu_ps(sums[sum].as_ptr().add(half * HALF)) }
            });
            // Rows and columns counted by the loops: a division per window costs.
            let positions = (0..shape.height / 2)
                .flat_map(|pooled_y| (0..pooled_width).map(move |pooled_x| (pooled_y, pooled_x)));
            for (window, (pooled_y, pooled_x)) in positions.enumerate() {
                let corner = 2 * pooled_y * padded_width + 2 * pooled_x;
                let lanes = window * LANES + half * HALF;
                // SAFETY: the window's 4x4 block lies inside the padded image (rows
                // `2 pooled_y + 3 <= height + 1`, columns likewise); `transposed` holds 16
                // winners and gradients per window (asserted above).
                let (rows, winners, grads) = unsafe {
                    let rows: [__m256; 4] = std::array::from_fn(|row| {
                        let at = pixels.as_ptr().add(corner + row * padded_width);
                        let row = _mm_loadu_ps(at);
                        _mm256_set_m128(row, row)
                    });
                    let winners = transposed.winners.as_ptr().add(lanes);
                    let winners = _mm256_cvtepu8_epi32(_mm_loadl_epi64(winners.cast()));
                    let grads = _mm256_loadu_ps(transposed.grads.as_ptr().add(lanes));
                    (rows, winners, grads)
                };
                // Clamped windows add nothing: their gradients and pixels become zeros.
                let clamped = _mm256_castsi256_ps(_mm256_cmpeq_epi32(winners, clamped));
                let grads = _mm256_andnot_ps(clamped, grads);
                for (tap, accumulator) in accumulators[..9].iter_mut().enumerate() {
                    let (above, below) = (rows[tap / 3], rows[tap / 3 + 1]);
                    // Columns `tx, tx + 1` of both rows.
                    let candidates = match tap % 3 {
                        0 => _mm256_shuffle_ps::<0b01_00_01_00>(above, below),
                        1 => _mm256_shuffle_ps::<0b10_01_10_01>(above, below),
                        _ => _mm256_shuffle_ps::<0b11_10_11_10>(above, below),
                    };
                    let pixels = _mm256_permutevar_ps(candidates, winners);
                    let pixels = _mm256_andnot_ps(clamped, pixels);
                    *accumulator = _mm256_fmadd_ps(grads, pixels, *accumulator);
                }
                accumulators[9] = _mm256_add_ps(accumulators[9], grads);
            }
            for (sum, accumulator) in sums.iter_mut().zip(accumulators) {
                // SAFETY: each sum holds 16 floats, of which this half is 8.
                unsafe { _mm256_storeu_ps(sum.as_mut_ptr().add(half * HALF), accumulator) };
            }
        }
    }
}
