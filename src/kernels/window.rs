//! 2x2 max pooling with ReLU.
//!
//! The compiler does not vectorize this loop (stride-2 reads, byte-sized window positions and
//! NaN rules), and pooling profiled at ~25% of evaluation, so a row runs as 16 windows per
//! instruction on CPUs with AVX-512 and 8 with AVX2; elsewhere the scalar code below, which is
//! also the reference the tests hold the vector code to.

use super::simd::{self, SimdLevel};

/// Window position of a pooled value that ReLU set to zero: no gradient flows back.
pub const CLAMPED: u8 = u8::MAX;

/// Pools `planes` (each `height x width`, starting `plane_stride` apart in `conv`) into
/// `output` (`height / 2 x width / 2` each, an odd last row or column dropped): each value is
/// its window's maximum clamped at zero, and `winners` holds the window position it came from
/// (0-3 in row-major order) or [`CLAMPED`]. The first of equal values wins and a NaN beats any
/// number, as in burn. Runs at the kernels' [`simd::level`].
pub fn pool_relu_planes(
    conv: &[f32],
    plane_stride: usize,
    sides: [usize; 2],
    output: &mut [f32],
    winners: &mut [u8],
) {
    pool_relu_planes_at(simd::level(), conv, plane_stride, sides, output, winners);
}

/// [`pool_relu_planes`] with the instructions of `level`, or of the widest level below it that
/// the CPU has.
fn pool_relu_planes_at(
    level: SimdLevel,
    conv: &[f32],
    plane_stride: usize,
    sides: [usize; 2],
    output: &mut [f32],
    winners: &mut [u8],
) {
    match level.min(SimdLevel::detected()) {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => {
            // SAFETY: the level is at most `SimdLevel::detected()`, which is `Avx512` only on a
            // CPU with AVX-512 F, BW and VL, the features the function is compiled for.
            unsafe { avx512::pool_relu_planes(conv, plane_stride, sides, output, winners) }
        }
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => {
            // SAFETY: the level is at most `SimdLevel::detected()`, which is `Avx2` or wider
            // only on a CPU with AVX2, the feature the function is compiled for.
            unsafe { avx2::pool_relu_planes(conv, plane_stride, sides, output, winners) }
        }
        _ => for_each_row_pair(
            conv,
            plane_stride,
            sides,
            output,
            winners,
            pool_relu_row_scalar,
        ),
    }
}

/// Calls `pool_row(top, bottom, output, winners)` on each pair of rows with its share of
/// `output` and `winners`, after checking that the buffers fit the shapes. The vector rows
/// rely on what it guarantees: `top` and `bottom` hold `2 * output.len()` floats each and
/// `winners` holds `output.len()` bytes.
#[inline(always)]
fn for_each_row_pair(
    conv: &[f32],
    plane_stride: usize,
    [height, width]: [usize; 2],
    output: &mut [f32],
    winners: &mut [u8],
    mut pool_row: impl FnMut(&[f32], &[f32], &mut [f32], &mut [u8]),
) {
    let pooled_width = width / 2;
    let pooled_plane = (height / 2) * pooled_width;
    if pooled_plane == 0 {
        return;
    }
    let planes = output.len() / pooled_plane;
    assert!(
        output.len() == planes * pooled_plane
            && winners.len() == output.len()
            && (planes == 0 || (planes - 1) * plane_stride + height * width <= conv.len()),
        "pool_relu_planes: buffers do not match their shapes"
    );
    // Whole planes of equal length (asserted above), so the rows below pair up exactly.
    let planes = output
        .chunks_exact_mut(pooled_plane)
        .zip(winners.chunks_exact_mut(pooled_plane));
    for (index, (output, winners)) in planes.enumerate() {
        let plane = &conv[index * plane_stride..][..height * width];
        let rows = output
            .chunks_exact_mut(pooled_width)
            .zip(winners.chunks_exact_mut(pooled_width));
        for (pooled_y, (output, winners)) in rows.enumerate() {
            let top = &plane[2 * pooled_y * width..][..2 * pooled_width];
            let bottom = &plane[(2 * pooled_y + 1) * width..][..2 * pooled_width];
            pool_row(top, bottom, output, winners);
        }
    }
}

fn pool_relu_row_scalar(top: &[f32], bottom: &[f32], output: &mut [f32], winners: &mut [u8]) {
    let windows = output
        .iter_mut()
        .zip(winners)
        .zip(top.chunks_exact(2))
        .zip(bottom.chunks_exact(2));
    for (((output, winner), top), bottom) in windows {
        let (position, max) = window_max([top[0], top[1], bottom[0], bottom[1]]);
        // NaN is kept (not clamped) so that a diverging run shows it.
        let keep = max > 0.0 || max.is_nan();
        *output = if keep { max } else { 0.0 };
        *winner = if keep { position } else { CLAMPED };
    }
}

/// The first maximum of a window (in row-major order) and its position; a NaN beats any
/// number. A tournament: each pair keeps its first of equals, and the bottom pair must beat the
/// top pair strictly.
#[inline(always)]
pub(super) fn window_max(window: [f32; 4]) -> (u8, f32) {
    let top_second = beats(window[1], window[0]);
    let bottom_second = beats(window[3], window[2]);
    let (top, top_at) = if top_second {
        (window[1], 1)
    } else {
        (window[0], 0)
    };
    let (bottom, bottom_at) = if bottom_second {
        (window[3], 3)
    } else {
        (window[2], 2)
    };
    if beats(bottom, top) {
        (bottom_at, bottom)
    } else {
        (top_at, top)
    }
}

#[inline(always)]
fn beats(challenger: f32, holder: f32) -> bool {
    challenger > holder || challenger.is_nan() && !holder.is_nan()
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx512 {
    use std::arch::x86_64::*;

    use super::CLAMPED;

    const LANES: usize = 16;

    /// Lanes `0..count` set.
    fn lanes(count: usize) -> __mmask16 {
        ((1u32 << count) - 1) as __mmask16
    }

    /// Lanes `0..count` of a 32-lane pair of vectors, as the masks of its low and high halves.
    fn pair_lanes(count: usize) -> (__mmask16, __mmask16) {
        (lanes(count.min(LANES)), lanes(count.saturating_sub(LANES)))
    }

    /// `challenger` beats `holder` in the lanes where it is greater, or NaN while `holder` is not.
    #[target_feature(enable = "avx512f")]
    fn beats(challenger: __m512, holder: __m512) -> __mmask16 {
        let greater = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(challenger, holder);
        let challenger_nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(challenger, challenger);
        let holder_nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(holder, holder);
        greater | (challenger_nan & !holder_nan)
    }

    /// The even and odd elements of the `2 * count` floats at `row`, as two vectors.
    ///
    /// # Safety
    /// `row` must be readable for `2 * count` floats, `count <= 16`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn load_pairs(row: *const f32, count: usize) -> (__m512, __m512) {
        let (low_lanes, high_lanes) = pair_lanes(2 * count);
        // `wrapping_add`: with 16 floats or fewer the second half lies past the row, where `add`
        // would be undefined behaviour even with nothing read there.
        let high_row = row.wrapping_add(LANES);
        // SAFETY: a masked load reads only the lanes its mask sets and suppresses faults on the
        // others; the masks set floats `0..min(2 * count, 16)` at `row` and the rest of the
        // `2 * count` at `high_row`, all of which the caller guarantees readable.
        let (low, high) = unsafe {
            (
                _mm512_maskz_loadu_ps(low_lanes, row),
                _mm512_maskz_loadu_ps(high_lanes, high_row),
            )
        };
        let even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
        let odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
        (
            _mm512_permutex2var_ps(low, even, high),
            _mm512_permutex2var_ps(low, odd, high),
        )
    }

    /// [`super::pool_relu_planes`] on a CPU with AVX-512 F, BW and VL (callers must make
    /// sure of that, which is why calling it takes `unsafe`).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub fn pool_relu_planes(
        conv: &[f32],
        plane_stride: usize,
        shape: [usize; 2],
        output: &mut [f32],
        winners: &mut [u8],
    ) {
        super::for_each_row_pair(
            conv,
            plane_stride,
            shape,
            output,
            winners,
            |top, bottom, output, winners| {
                // SAFETY: `for_each_row_pair` hands over `top` and `bottom` with two floats per
                // window of `output` and a `winners` as long as `output`; the CPU has the
                // features, or this function (whose features the closure inherits) would not
                // be running.
                unsafe { pool_relu_row(top, bottom, output, winners) }
            },
        );
    }

    /// Per lane, the window `[a, b; c, d]` pooled as [`super::window_max`] and clamped at zero
    /// as [`super::pool_relu_row_scalar`]: the value and its position (or `CLAMPED`).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub fn pool_window(a: __m512, b: __m512, c: __m512, d: __m512) -> (__m512, __m512i) {
        let greater = |x, y| _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, y);
        let any_nan =
            _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(a, b) | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(c, d);
        if any_nan == 0 {
            // Without a NaN, beating is being greater and keeping is being above zero: the
            // same rules in four comparisons instead of twelve (the usual case).
            return tournament([a, b, c, d], greater, |max| {
                greater(max, _mm512_setzero_ps())
            });
        }
        // NaN is kept (not clamped) so that a diverging run shows it.
        tournament(
            [a, b, c, d],
            |x, y| beats(x, y),
            |max| greater(max, _mm512_setzero_ps()) | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(max, max),
        )
    }

    /// [`pool_window`] with its rules for beating and keeping: each pair keeps its first of
    /// equals, and the bottom pair must beat the top pair.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn tournament(
        [a, b, c, d]: [__m512; 4],
        beats: impl Fn(__m512, __m512) -> __mmask16,
        keep: impl Fn(__m512) -> __mmask16,
    ) -> (__m512, __m512i) {
        let position = |value: i32| _mm512_set1_epi32(value);
        let top_second = beats(b, a);
        let top_max = _mm512_mask_blend_ps(top_second, a, b);
        let top_at = _mm512_mask_blend_epi32(top_second, position(0), position(1));
        let bottom_second = beats(d, c);
        let bottom_max = _mm512_mask_blend_ps(bottom_second, c, d);
        let bottom_at = _mm512_mask_blend_epi32(bottom_second, position(2), position(3));
        let bottom_wins = beats(bottom_max, top_max);
        let max = _mm512_mask_blend_ps(bottom_wins, top_max, bottom_max);
        let at = _mm512_mask_blend_epi32(bottom_wins, top_at, bottom_at);
        let keep = keep(max);
        (
            _mm512_maskz_mov_ps(keep, max),
            _mm512_mask_blend_epi32(keep, position(i32::from(CLAMPED)), at),
        )
    }

    /// # Safety
    /// The CPU must have AVX-512 F, BW and VL; `top` and `bottom` must hold at least
    /// `2 * output.len()` floats and `winners` `output.len()` bytes.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn pool_relu_row(top: &[f32], bottom: &[f32], output: &mut [f32], winners: &mut [u8]) {
        for start in (0..output.len()).step_by(LANES) {
            let count = (output.len() - start).min(LANES);
            // SAFETY: `start + count <= output.len()`, and the caller guarantees `top` and
            // `bottom` hold `2 * output.len()` floats, so `2 * count` floats from `2 * start`
            // are inside each; `count` is at most `LANES`.
            let ((a, b), (c, d)) = unsafe {
                (
                    load_pairs(top.as_ptr().add(2 * start), count),
                    load_pairs(bottom.as_ptr().add(2 * start), count),
                )
            };
            let (pooled, at) = pool_window(a, b, c, d);
            let written = lanes(count);
            // SAFETY: masked stores write only the lanes `written` sets, windows
            // `start..start + count`, inside `output` and inside `winners` (as long as
            // `output`, the caller guarantees).
            unsafe {
                _mm512_mask_storeu_ps(output.as_mut_ptr().add(start), written, pooled);
                _mm_mask_storeu_epi8(
                    winners.as_mut_ptr().add(start).cast(),
                    written,
                    _mm512_cvtepi32_epi8(at),
                );
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use std::arch::x86_64::*;

    use super::CLAMPED;

    const LANES: usize = 8;

    /// [`super::pool_relu_planes`] on a CPU with AVX2 (callers must make sure of that, which
    /// is why calling it takes `unsafe`).
    #[target_feature(enable = "avx2")]
    pub fn pool_relu_planes(
        conv: &[f32],
        plane_stride: usize,
        shape: [usize; 2],
        output: &mut [f32],
        winners: &mut [u8],
    ) {
        super::for_each_row_pair(
            conv,
            plane_stride,
            shape,
            output,
            winners,
            |top, bottom, output, winners| {
                // SAFETY: `for_each_row_pair` hands over `top` and `bottom` with two floats per
                // window of `output` and a `winners` as long as `output`; the CPU has AVX2, or
                // this function (whose features the closure inherits) would not be running.
                unsafe { pool_relu_row(top, bottom, output, winners) }
            },
        );
    }

    /// Lanes `0..count` as an AVX2 mask (all bits set in the lanes that take part).
    #[target_feature(enable = "avx2")]
    pub fn lanes(count: usize) -> __m256i {
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(count as i32), lane)
    }

    /// All bits set where `challenger` beats `holder`: greater, or NaN while `holder` is not.
    #[target_feature(enable = "avx2")]
    fn beats(challenger: __m256, holder: __m256) -> __m256 {
        let greater = _mm256_cmp_ps::<_CMP_GT_OQ>(challenger, holder);
        let challenger_nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(challenger, challenger);
        let holder_nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(holder, holder);
        _mm256_or_ps(greater, _mm256_andnot_ps(holder_nan, challenger_nan))
    }

    /// The even and odd elements of the `2 * count` floats at `row`, as two vectors.
    ///
    /// # Safety
    /// `row` must be readable for `2 * count` floats, `count <= 8`.
    #[target_feature(enable = "avx2")]
    pub unsafe fn load_pairs(row: *const f32, count: usize) -> (__m256, __m256) {
        let (low_count, high_count) = ((2 * count).min(LANES), (2 * count).saturating_sub(LANES));
        // `wrapping_add`: with 8 floats or fewer the second half lies past the row, where `add`
        // would be undefined behaviour even with nothing read there.
        let high_row = row.wrapping_add(LANES);
        // SAFETY: `maskload` reads only the lanes its mask sets and does not fault on the
        // others; the masks set floats `0..min(2 * count, 8)` at `row` and the rest of the
        // `2 * count` at `high_row`, all of which the caller guarantees readable.
        let (low, high) = unsafe {
            (
                _mm256_maskload_ps(row, lanes(low_count)),
                _mm256_maskload_ps(high_row, lanes(high_count)),
            )
        };
        // Within each 128-bit half: [low0 low2 high0 high2 | low4 low6 high4 high6]; then the
        // 64-bit quarters are put in order.
        let even = _mm256_shuffle_ps::<0b10_00_10_00>(low, high);
        let odd = _mm256_shuffle_ps::<0b11_01_11_01>(low, high);
        let in_order = |v: __m256| {
            _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)))
        };
        (in_order(even), in_order(odd))
    }

    /// Per lane, the window `[a, b; c, d]` pooled as [`super::window_max`] and clamped at zero
    /// as [`super::pool_relu_row_scalar`]: the value and its position (or `CLAMPED`), as
    /// 32-bit integers.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub fn pool_window(a: __m256, b: __m256, c: __m256, d: __m256) -> (__m256, __m256i) {
        let greater = |x, y| _mm256_cmp_ps::<_CMP_GT_OQ>(x, y);
        let any_nan = _mm256_or_ps(
            _mm256_cmp_ps::<_CMP_UNORD_Q>(a, b),
            _mm256_cmp_ps::<_CMP_UNORD_Q>(c, d),
        );
        if _mm256_movemask_ps(any_nan) == 0 {
            // Without a NaN, beating is being greater and keeping is being above zero: the
            // same rules in four comparisons instead of twelve (the usual case).
            return tournament([a, b, c, d], greater, |max| {
                greater(max, _mm256_setzero_ps())
            });
        }
        // NaN is kept (not clamped) so that a diverging run shows it.
        tournament(
            [a, b, c, d],
            |x, y| beats(x, y),
            |max| {
                _mm256_or_ps(
                    greater(max, _mm256_setzero_ps()),
                    _mm256_cmp_ps::<_CMP_UNORD_Q>(max, max),
                )
            },
        )
    }

    /// [`pool_window`] with its rules for beating and keeping (all bits set where they hold):
    /// each pair keeps its first of equals, and the bottom pair must beat the top pair.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn tournament(
        [a, b, c, d]: [__m256; 4],
        beats: impl Fn(__m256, __m256) -> __m256,
        keep: impl Fn(__m256) -> __m256,
    ) -> (__m256, __m256i) {
        let position = |value: i32| _mm256_castsi256_ps(_mm256_set1_epi32(value));
        // `blendv(x, y, mask)` takes `y` where the mask is set.
        let top_second = beats(b, a);
        let top_max = _mm256_blendv_ps(a, b, top_second);
        let top_at = _mm256_blendv_ps(position(0), position(1), top_second);
        let bottom_second = beats(d, c);
        let bottom_max = _mm256_blendv_ps(c, d, bottom_second);
        let bottom_at = _mm256_blendv_ps(position(2), position(3), bottom_second);
        let bottom_wins = beats(bottom_max, top_max);
        let max = _mm256_blendv_ps(top_max, bottom_max, bottom_wins);
        let at = _mm256_blendv_ps(top_at, bottom_at, bottom_wins);
        let keep = keep(max);
        (
            _mm256_and_ps(keep, max),
            _mm256_castps_si256(_mm256_blendv_ps(position(i32::from(CLAMPED)), at, keep)),
        )
    }

    /// A vector of window positions (0-3 or `CLAMPED`, one per 32-bit lane) as 8 bytes in
    /// lane order: those values pass both saturating packs unchanged.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub fn position_bytes(at: __m256i) -> [u8; LANES] {
        let at = _mm_packs_epi32(
            _mm256_castsi256_si128(at),
            _mm256_extracti128_si256::<1>(at),
        );
        (_mm_cvtsi128_si64(_mm_packus_epi16(at, at)) as u64).to_le_bytes()
    }

    /// # Safety
    /// The CPU must have AVX2; `top` and `bottom` must hold at least `2 * output.len()` floats
    /// and `winners` `output.len()` bytes.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn pool_relu_row(top: &[f32], bottom: &[f32], output: &mut [f32], winners: &mut [u8]) {
        for start in (0..output.len()).step_by(LANES) {
            let count = (output.len() - start).min(LANES);
            // SAFETY: `start + count <= output.len()`, and the caller guarantees `top` and
            // `bottom` hold `2 * output.len()` floats, so `2 * count` floats from `2 * start`
            // are inside each; `count` is at most `LANES`.
            let ((a, b), (c, d)) = unsafe {
                (
                    load_pairs(top.as_ptr().add(2 * start), count),
                    load_pairs(bottom.as_ptr().add(2 * start), count),
                )
            };
            let (pooled, at) = pool_window(a, b, c, d);
            // SAFETY: `maskstore` writes only the lanes its mask sets, windows
            // `start..start + count`, inside `output`.
            unsafe {
                _mm256_maskstore_ps(output.as_mut_ptr().add(start), lanes(count), pooled);
            }
            winners[start..start + count].copy_from_slice(&position_bytes(at)[..count]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_max_takes_the_first_maximum_and_lets_nan_win() {
        assert_eq!(window_max([1.0, 3.0, 3.0, 0.0]), (1, 3.0));
        assert_eq!(window_max([0.0, 3.0, 3.0, 3.0]), (1, 3.0));
        assert_eq!(window_max([0.0, 0.0, 0.0, 0.0]), (0, 0.0));
        let (position, value) = window_max([2.0, f32::NAN, 9.0, f32::NAN]);
        assert_eq!(position, 1);
        assert!(value.is_nan());
    }

    /// Planes of every width up to 81 (partial vectors, several vectors, odd widths) and
    /// heights up to 5, with ties, NaNs, negatives and zeros, spaced apart in a larger buffer:
    /// every level this CPU has, and the dispatched kernel (at the level in force, see
    /// `MNIST_CNN_SIMD`), give exactly the scalar results.
    #[test]
    fn every_pooling_level_matches_the_scalar_reference() {
        let value = |i: usize| match (i * 7 + i / 3) % 11 {
            0 => f32::NAN,
            1 | 2 => 0.0,
            3 => -1.5,
            4 | 5 => 2.0,
            k => k as f32 - 6.5,
        };
        for width in 0..=81 {
            for height in 0..=5 {
                let (planes, plane_stride) = (3, height * width + 5);
                let conv: Vec<f32> = (0..planes * plane_stride).map(value).collect();
                let pool = |level: Option<SimdLevel>| {
                    let len = planes * (height / 2) * (width / 2);
                    let (mut output, mut winners) = (vec![7.0f32; len], vec![9; len]);
                    let sides = [height, width];
                    match level {
                        Some(level) => pool_relu_planes_at(
                            level,
                            &conv,
                            plane_stride,
                            sides,
                            &mut output,
                            &mut winners,
                        ),
                        None => {
                            pool_relu_planes(&conv, plane_stride, sides, &mut output, &mut winners)
                        }
                    }
                    (
                        output.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        winners,
                    )
                };
                let reference = pool(Some(SimdLevel::Scalar));
                for level in SimdLevel::ALL {
                    if level <= SimdLevel::detected() {
                        assert_eq!(pool(Some(level)), reference, "{level}, {height}x{width}");
                    }
                }
                assert_eq!(pool(None), reference, "dispatched, {height}x{width}");
            }
        }
    }

    /// Every window of values that the rules tell apart (NaN, both zeros, negatives, ties)
    /// through each vector level's `pool_window` that this CPU has, as the Winograd kernel
    /// calls it: exactly the scalar results (`pool_relu_row_scalar`), bits and positions.
    #[test]
    fn every_vector_pool_window_matches_the_scalar_rules() {
        let values = [f32::NAN, -1.5, -0.0, 0.0, 1.0, 2.0];
        let windows: Vec<[f32; 4]> = (0..values.len().pow(4))
            .map(|i| std::array::from_fn(|k| values[i / values.len().pow(k as u32) % 6]))
            .collect();
        // Every vector of `windows` holds a NaN (the first value cycles fastest), so the
        // windows without one also run on their own, through the NaN-free shortcut; repeated to a
        // whole number of vectors.
        let finite: Vec<[f32; 4]> = windows
            .iter()
            .filter(|window| !window.iter().any(|value| value.is_nan()))
            .cycle()
            .take(640)
            .copied()
            .collect();
        check_vector_pool_windows(&windows);
        check_vector_pool_windows(&finite);
    }

    fn check_vector_pool_windows(windows: &[[f32; 4]]) {
        let expected: Vec<(u32, u8)> = windows
            .iter()
            .map(|&[a, b, c, d]| {
                let (mut output, mut winner) = ([7.0], [9]);
                pool_relu_row_scalar(&[a, b], &[c, d], &mut output, &mut winner);
                (output[0].to_bits(), winner[0])
            })
            .collect();
        #[cfg(target_arch = "x86_64")]
        {
            if SimdLevel::Avx2 <= SimdLevel::detected() {
                // SAFETY: the CPU has AVX2 (checked on the line above).
                assert_eq!(unsafe { vector_pool_windows::avx2(windows) }, expected);
            }
            if SimdLevel::Avx512 <= SimdLevel::detected() {
                // SAFETY: the CPU has AVX-512 F, BW and VL (checked on the line above).
                assert_eq!(unsafe { vector_pool_windows::avx512(windows) }, expected);
            }
        }
    }

    /// `windows` (a whole number of vectors: a partial one panics) through each level's
    /// `pool_window`.
    #[cfg(target_arch = "x86_64")]
    mod vector_pool_windows {
        use std::arch::x86_64::*;

        #[target_feature(enable = "avx2")]
        pub fn avx2(windows: &[[f32; 4]]) -> Vec<(u32, u8)> {
            let mut pooled = Vec::new();
            for windows in windows.chunks(8) {
                let corner = |k: usize| {
                    let values: [f32; 8] = std::array::from_fn(|lane| windows[lane][k]);
                    // SAFETY: `values` holds the 8 floats read.
                    unsafe { _mm256_loadu_ps(values.as_ptr()) }
                };
                let (values, positions) = crate::kernels::window::avx2::pool_window(
                    corner(0),
                    corner(1),
                    corner(2),
                    corner(3),
                );
                let (mut value, mut position) = ([0f32; 8], [0i32; 8]);
                // SAFETY: the arrays hold the 8 lanes written.
                unsafe {
                    _mm256_storeu_ps(value.as_mut_ptr(), values);
                    _mm256_storeu_si256(position.as_mut_ptr().cast(), positions);
                }
                let lanes = value.iter().zip(position);
                pooled.extend(lanes.map(|(value, position)| (value.to_bits(), position as u8)));
            }
            pooled
        }

        #[target_feature(enable = "avx512f")]
        pub fn avx512(windows: &[[f32; 4]]) -> Vec<(u32, u8)> {
            let mut pooled = Vec::new();
            for windows in windows.chunks(16) {
                let corner = |k: usize| {
                    let values: [f32; 16] = std::array::from_fn(|lane| windows[lane][k]);
                    // SAFETY: `values` holds the 16 floats read.
                    unsafe { _mm512_loadu_ps(values.as_ptr()) }
                };
                let (values, positions) = crate::kernels::window::avx512::pool_window(
                    corner(0),
                    corner(1),
                    corner(2),
                    corner(3),
                );
                let (mut value, mut position) = ([0f32; 16], [0i32; 16]);
                // SAFETY: the arrays hold the 16 lanes written.
                unsafe {
                    _mm512_storeu_ps(value.as_mut_ptr(), values);
                    _mm512_storeu_si512(position.as_mut_ptr().cast(), positions);
                }
                let lanes = value.iter().zip(position);
                pooled.extend(lanes.map(|(value, position)| (value.to_bits(), position as u8)));
            }
            pooled
        }
    }

    #[test]
    fn pooling_clamps_and_records_positions() {
        // One 2x4 plane: windows [1 2; 4 0] and [-1 -3; -2 -0.5].
        let conv = [1.0, 2.0, -1.0, -3.0, 4.0, 0.0, -2.0, -0.5];
        let (mut output, mut winners) = ([0.0; 2], [0; 2]);
        pool_relu_planes(&conv, 8, [2, 4], &mut output, &mut winners);
        assert_eq!(output, [4.0, 0.0]);
        assert_eq!(winners, [2, CLAMPED]);
    }
}
