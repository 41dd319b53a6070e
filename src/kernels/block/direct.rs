//! The forward pass of a single-channel block (the first layer of a grayscale network) as a
//! direct convolution fused with the pooling, with AVX-512 or AVX2.
//!
//! With one channel, im2col's product has nine multiply-adds per output: too few for `gemm`
//! to be anything but memory-bound, and the convolution it writes is read again to be pooled.
//! Here a vector holds 16 (AVX-512) or 8 (AVX2) neighbouring pooling windows instead. The
//! image is first split into its 16 *phases*: phase `(a, b)` holds, for every window, the
//! padded pixel at row `a` and column `b` of the 4x4 block the kernel covers at the window's
//! four positions. Each tap of each position of a window is then one phase, so that a filter
//! costs 36 fused multiply-adds per vector of windows, with no shuffle; the four positions'
//! sums are pooled in registers ([`crate::kernels::window`]'s `pool_window`, the same rules as
//! every other path) and written straight to the output and its winners.

use std::cell::RefCell;

use super::BlockShape;

/// The phases of an image: `[16][windows rounded up to a whole vector]`.
pub(super) const PHASES: usize = 16;

thread_local! {
    /// Each thread's phase buffer, kept between calls.
    static PHASE_SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The length of one phase: the image's windows rounded up to a multiple of 16 floats, so that
/// every vector load stays inside it at both levels.
fn phase_len(shape: BlockShape) -> usize {
    shape.pooled_plane().next_multiple_of(16)
}

/// Fills `phases` (`PHASES * phase_len`) with the phases of `image` (`height x width`, one
/// channel): phase `a * 4 + b`, window `(y, x)`, is the image's pixel at row `2y + a - 1` and
/// column `2x + b - 1`, zero outside the image. The tail of each phase is zero.
///
/// Each padded row is split once into its even and odd columns, from which the phases with
/// `b` = 0 and 2 (even columns, from the first and the second) and 1 and 3 (odd) are copied
/// whole: padded row `r` is row `y` of phases `a = r - 2y`, for the one or two `y` in range.
fn fill_phases(image: &[f32], shape: BlockShape, phases: &mut [f32]) {
    let (height, width) = (shape.height, shape.width);
    let (pooled_height, pooled_width) = (height / 2, width / 2);
    let len = phase_len(shape);
    for phase in phases.chunks_exact_mut(len) {
        phase[pooled_height * pooled_width..].fill(0.0);
    }
    // Columns `2j` and `2j + 1` of the padded row, for `j` in `0..=pooled_width`.
    let (mut even, mut odd) = (vec![0f32; pooled_width + 1], vec![0f32; pooled_width + 1]);
    for padded_row in 0..2 * pooled_height + 2 {
        if padded_row == 0 || padded_row > height {
            even.fill(0.0);
            odd.fill(0.0);
        } else {
            let row = &image[(padded_row - 1) * width..][..width];
            // Padded column `c` is the row's `c - 1`; 0 and `width + 1` are the border.
            even[0] = 0.0;
            for (value, &pixel) in even[1..].iter_mut().zip(row.iter().skip(1).step_by(2)) {
                *value = pixel;
            }
            // With an even width, `odd`'s last column is the right border: never written, zero.
            for (value, &pixel) in odd.iter_mut().zip(row.iter().step_by(2)) {
                *value = pixel;
            }
        }
        for a in (padded_row % 2..4.min(padded_row + 1)).step_by(2) {
            let y = (padded_row - a) / 2;
            if y >= pooled_height {
                continue;
            }
            for b in 0..4 {
                let source = if b % 2 == 0 { &even } else { &odd };
                let start = (a * 4 + b) * len + y * pooled_width;
                phases[start..start + pooled_width]
                    .copy_from_slice(&source[b / 2..b / 2 + pooled_width]);
            }
        }
    }
}

/// One image's block output (`[filters, windows]`) and winners from its `weight`
/// (`[filters, 9]`) and `bias`, at the level in force (AVX-512 or AVX2; the caller checks).
pub(super) fn image_forward(
    image: &[f32],
    shape: BlockShape,
    (weight, bias): (&[f32], &[f32]),
    output: &mut [f32],
    winners: &mut [u8],
) {
    let len = phase_len(shape);
    assert!(
        image.len() == shape.plane()
            && weight.len() == shape.filters * 9
            && bias.len() == shape.filters
            && output.len() == shape.output_image_len()
            && winners.len() == output.len(),
        "single-channel forward: buffers do not match their shapes"
    );
    PHASE_SCRATCH.with_borrow_mut(|phases| {
        if phases.len() < PHASES * len {
            phases.resize(PHASES * len, 0.0);
        }
        let phases = &mut phases[..PHASES * len];
        fill_phases(image, shape, phases);
        let windows = shape.pooled_plane();
        match crate::kernels::simd::level() {
            #[cfg(target_arch = "x86_64")]
            crate::kernels::simd::SimdLevel::Avx512 => {
                // SAFETY: the level is AVX-512 only where the CPU has AVX-512 F, BW and VL;
                // each phase is `len` floats, a multiple of 16 covering `windows`, and the
                // buffers' lengths are asserted above.
                unsafe { avx512::forward(phases, len, windows, (weight, bias), output, winners) }
            }
            #[cfg(target_arch = "x86_64")]
            crate::kernels::simd::SimdLevel::Avx2 => {
                // SAFETY: the level is AVX2 or wider only where the CPU has AVX2 and FMA; the
                // phases and buffers are as for AVX-512 above (8 floats is half of 16).
                unsafe { avx2::forward(phases, len, windows, (weight, bias), output, winners) }
            }
            _ => unreachable!("the direct path runs at AVX-512 or AVX2 only"),
        }
    })
}

/// One filter's sums at the four positions of a vector of windows (row-major in each window):
/// its bias plus, per tap, the tap's weight times the phase under it. Generic over the vector
/// type `V`; `splat` and `fmadd` (`a * b + c`) are the level's instructions.
#[inline(always)]
fn position_sums<V: Copy>(
    taps: &[f32],
    bias: f32,
    phase: &[V; PHASES],
    splat: impl Fn(f32) -> V,
    fmadd: impl Fn(V, V, V) -> V,
) -> [V; 4] {
    let mut sums = [splat(bias); 4];
    for (tap, &w) in taps.iter().enumerate() {
        let w = splat(w);
        let (row, column) = (tap / 3, tap % 3);
        for (position, sum) in sums.iter_mut().enumerate() {
            let (dy, dx) = (position / 2, position % 2);
            *sum = fmadd(w, phase[(row + dy) * 4 + column + dx], *sum);
        }
    }
    sums
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{PHASES, position_sums};
    use crate::kernels::window::avx512::pool_window;

    const LANES: usize = 16;

    /// # Safety
    /// The CPU must have AVX-512 F, BW and VL; `phases` must hold `PHASES` phases of `len`
    /// floats, `len` a multiple of 16 and at least `windows`; `weight` 9 floats per filter of
    /// `bias`; `output` and `winners` `windows` values per filter.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn forward(
        phases: &[f32],
        len: usize,
        windows: usize,
        (weight, bias): (&[f32], &[f32]),
        output: &mut [f32],
        winners: &mut [u8],
    ) {
        for start in (0..windows).step_by(LANES) {
            let count = (windows - start).min(LANES);
            let written = ((1u32 << count) - 1) as __mmask16;
            // SAFETY: `start < windows <= len` and `len` is a multiple of 16, so 16 floats
            // from `start` lie inside each phase.
            let phase: [__m512; PHASES] = std::array::from_fn(|phase| unsafe {
                _mm512_loadu_ps(phases.as_ptr().add(phase * len + start))
            });
            for (filter, (taps, &bias)) in weight.chunks_exact(9).zip(bias).enumerate() {
                let [a, b, c, d] = position_sums(
                    taps,
                    bias,
                    &phase,
                    |w| _mm512_set1_ps(w),
                    |a, b, c| _mm512_fmadd_ps(a, b, c),
                );
                let (pooled, at) = pool_window(a, b, c, d);
                let at_output = filter * windows + start;
                // SAFETY: masked stores write only windows `start..start + count` of this
                // filter's `windows` values, inside `output` and `winners`.
                unsafe {
                    _mm512_mask_storeu_ps(output.as_mut_ptr().add(at_output), written, pooled);
                    _mm_mask_storeu_epi8(
                        winners.as_mut_ptr().add(at_output).cast(),
                        written,
                        _mm512_cvtepi32_epi8(at),
                    );
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{PHASES, position_sums};
    use crate::kernels::window::avx2::{lanes, pool_window, position_bytes};

    const LANES: usize = 8;

    /// [`super::avx512::forward`] 8 windows at a time.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; `phases` must hold `PHASES` phases of `len` floats,
    /// `len` a multiple of 8 and at least `windows`; `weight` 9 floats per filter of `bias`;
    /// `output` and `winners` `windows` values per filter.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn forward(
        phases: &[f32],
        len: usize,
        windows: usize,
        (weight, bias): (&[f32], &[f32]),
        output: &mut [f32],
        winners: &mut [u8],
    ) {
        for start in (0..windows).step_by(LANES) {
            let count = (windows - start).min(LANES);
            let written = lanes(count);
            // SAFETY: `start < windows <= len` and `len` is a multiple of 8, so 8 floats from
            // `start` lie inside each phase.
            let phase: [__m256; PHASES] = std::array::from_fn(|phase| unsafe {
                _mm256_loadu_ps(phases.as_ptr().add(phase * len + start))
            });
            for (filter, (taps, &bias)) in weight.chunks_exact(9).zip(bias).enumerate() {
                let [a, b, c, d] = position_sums(
                    taps,
                    bias,
                    &phase,
                    |w| _mm256_set1_ps(w),
                    |a, b, c| _mm256_fmadd_ps(a, b, c),
                );
                let (pooled, at) = pool_window(a, b, c, d);
                let at_output = filter * windows + start;
                let positions = position_bytes(at);
                if count == LANES {
                    // A whole vector, stored plainly: AVX2's masked store is slow on AMD CPUs.
                    let output = &mut output[at_output..at_output + LANES];
                    let winners = &mut winners[at_output..at_output + LANES];
                    // SAFETY: `output` holds the 8 floats stored.
                    unsafe { _mm256_storeu_ps(output.as_mut_ptr(), pooled) };
                    winners.copy_from_slice(&positions);
                } else {
                    // SAFETY: `maskstore` writes only windows `start..start + count` of this
                    // filter's `windows` values, inside `output` (the next filter's, which a
                    // whole vector would overwrite, are already written).
                    unsafe {
                        _mm256_maskstore_ps(output.as_mut_ptr().add(at_output), written, pooled);
                    }
                    winners[at_output..at_output + count].copy_from_slice(&positions[..count]);
                }
            }
        }
    }
}
