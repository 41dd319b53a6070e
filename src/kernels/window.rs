//! 2x2 max pooling with ReLU, and its gradient routing, one row of windows at a time.
//!
//! The compiler does not vectorize these loops (stride-2 reads, byte-sized window positions and
//! NaN rules), and pooling profiled at ~25% of evaluation, so on CPUs with AVX-512 a row runs as
//! 16 windows per instruction; elsewhere the scalar code below, which is also the reference the
//! tests hold the vector code to.

/// Window position of a pooled value that ReLU set to zero: no gradient flows back.
pub const CLAMPED: u8 = u8::MAX;

/// Pools the windows of one pair of rows: `output[x]` is the maximum of `top[2x..2x+2]` and
/// `bottom[2x..2x+2]` clamped at zero, `winners[x]` its position (0-3 in row-major order) or
/// [`CLAMPED`]. The first of equal values wins and a NaN beats any number, as in burn.
pub fn pool_relu_row(top: &[f32], bottom: &[f32], output: &mut [f32], winners: &mut [u8]) {
    let windows = output.len();
    assert!(top.len() >= 2 * windows && bottom.len() >= 2 * windows && winners.len() == windows);
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // SAFETY: the CPU has the features the function is compiled for, and the assertion above
        // bounds every access it makes.
        unsafe { avx512::pool_relu_row(top, bottom, output, winners) };
        return;
    }
    pool_relu_row_scalar(top, bottom, output, winners);
}

/// Routes one row of pooled gradients back: each window of `top` and `bottom` gets `grads[x]`
/// at its winner's position and zeros elsewhere.
pub fn unpool_row(grads: &[f32], winners: &[u8], top: &mut [f32], bottom: &mut [f32]) {
    let windows = grads.len();
    assert!(top.len() >= 2 * windows && bottom.len() >= 2 * windows && winners.len() == windows);
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // SAFETY: as in `pool_relu_row`.
        unsafe { avx512::unpool_row(grads, winners, top, bottom) };
        return;
    }
    unpool_row_scalar(grads, winners, top, bottom);
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

fn unpool_row_scalar(grads: &[f32], winners: &[u8], top: &mut [f32], bottom: &mut [f32]) {
    let windows = top
        .chunks_exact_mut(2)
        .zip(bottom.chunks_exact_mut(2))
        .zip(grads.iter().zip(winners));
    for ((top, bottom), (&grad, &winner)) in windows {
        let at = |position: u8| if winner == position { grad } else { 0.0 };
        (top[0], top[1], bottom[0], bottom[1]) = (at(0), at(1), at(2), at(3));
    }
}

/// The first maximum of a window (in row-major order) and its position; a NaN beats any
/// number. A tournament: each pair keeps its first of equals, and the bottom pair must beat the
/// top pair strictly.
fn window_max(window: [f32; 4]) -> (u8, f32) {
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

fn beats(challenger: f32, holder: f32) -> bool {
    challenger > holder || challenger.is_nan() && !holder.is_nan()
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;
    use std::sync::OnceLock;

    use super::CLAMPED;

    const LANES: usize = 16;

    pub fn available() -> bool {
        static AVAILABLE: OnceLock<bool> = OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
        })
    }

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
    unsafe fn load_pairs(row: *const f32, count: usize) -> (__m512, __m512) {
        let (low_lanes, high_lanes) = pair_lanes(2 * count);
        // SAFETY: the masks only touch the first `2 * count` floats.
        let (low, high) = unsafe {
            (
                _mm512_maskz_loadu_ps(low_lanes, row),
                _mm512_maskz_loadu_ps(high_lanes, row.add(LANES)),
            )
        };
        let even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
        let odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
        (
            _mm512_permutex2var_ps(low, even, high),
            _mm512_permutex2var_ps(low, odd, high),
        )
    }

    /// Interleaves `even` and `odd` and stores the first `2 * count` floats at `row`.
    ///
    /// # Safety
    /// `row` must be writable for `2 * count` floats, `count <= 16`.
    #[target_feature(enable = "avx512f")]
    unsafe fn store_pairs(row: *mut f32, count: usize, even: __m512, odd: __m512) {
        let low = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
        let high = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
        let (low_lanes, high_lanes) = pair_lanes(2 * count);
        // SAFETY: the masks only touch the first `2 * count` floats.
        unsafe {
            _mm512_mask_storeu_ps(row, low_lanes, _mm512_permutex2var_ps(even, low, odd));
            _mm512_mask_storeu_ps(
                row.add(LANES),
                high_lanes,
                _mm512_permutex2var_ps(even, high, odd),
            );
        }
    }

    /// # Safety
    /// The CPU must have AVX-512 F, BW and VL; `top` and `bottom` must hold at least
    /// `2 * output.len()` floats and `winners` `output.len()` bytes.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn pool_relu_row(
        top: &[f32],
        bottom: &[f32],
        output: &mut [f32],
        winners: &mut [u8],
    ) {
        let position = |value: i32| _mm512_set1_epi32(value);
        for start in (0..output.len()).step_by(LANES) {
            let count = (output.len() - start).min(LANES);
            // SAFETY: windows `start..start + count` lie inside every slice (caller's contract).
            let ((a, b), (c, d)) = unsafe {
                (
                    load_pairs(top.as_ptr().add(2 * start), count),
                    load_pairs(bottom.as_ptr().add(2 * start), count),
                )
            };
            let top_second = beats(b, a);
            let top_max = _mm512_mask_blend_ps(top_second, a, b);
            let top_at = _mm512_mask_blend_epi32(top_second, position(0), position(1));
            let bottom_second = beats(d, c);
            let bottom_max = _mm512_mask_blend_ps(bottom_second, c, d);
            let bottom_at = _mm512_mask_blend_epi32(bottom_second, position(2), position(3));
            let bottom_wins = beats(bottom_max, top_max);
            let max = _mm512_mask_blend_ps(bottom_wins, top_max, bottom_max);
            let at = _mm512_mask_blend_epi32(bottom_wins, top_at, bottom_at);
            // NaN is kept (not clamped) so that a diverging run shows it.
            let keep = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(max, _mm512_setzero_ps())
                | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(max, max);
            let at = _mm512_mask_blend_epi32(keep, position(i32::from(CLAMPED)), at);
            let written = lanes(count);
            // SAFETY: as above; the masks keep the stores to `count` windows.
            unsafe {
                _mm512_mask_storeu_ps(
                    output.as_mut_ptr().add(start),
                    written,
                    _mm512_maskz_mov_ps(keep, max),
                );
                _mm_mask_storeu_epi8(
                    winners.as_mut_ptr().add(start).cast(),
                    written,
                    _mm512_cvtepi32_epi8(at),
                );
            }
        }
    }

    /// # Safety
    /// The CPU must have AVX-512 F, BW and VL; `top` and `bottom` must hold at least
    /// `2 * grads.len()` floats and `winners` `grads.len()` bytes.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn unpool_row(grads: &[f32], winners: &[u8], top: &mut [f32], bottom: &mut [f32]) {
        for start in (0..grads.len()).step_by(LANES) {
            let count = (grads.len() - start).min(LANES);
            let read = lanes(count);
            // SAFETY: windows `start..start + count` lie inside every slice (caller's contract).
            let (grad, winner) = unsafe {
                (
                    _mm512_maskz_loadu_ps(read, grads.as_ptr().add(start)),
                    _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(
                        read,
                        winners.as_ptr().add(start).cast(),
                    )),
                )
            };
            let at = |position: i32| {
                let won = _mm512_cmpeq_epi32_mask(winner, _mm512_set1_epi32(position));
                _mm512_maskz_mov_ps(won, grad)
            };
            // SAFETY: as above.
            unsafe {
                store_pairs(top.as_mut_ptr().add(2 * start), count, at(0), at(1));
                store_pairs(bottom.as_mut_ptr().add(2 * start), count, at(2), at(3));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type PoolRow = fn(&[f32], &[f32], &mut [f32], &mut [u8]);
    type UnpoolRow = fn(&[f32], &[u8], &mut [f32], &mut [f32]);

    #[test]
    fn window_max_takes_the_first_maximum_and_lets_nan_win() {
        assert_eq!(window_max([1.0, 3.0, 3.0, 0.0]), (1, 3.0));
        assert_eq!(window_max([0.0, 3.0, 3.0, 3.0]), (1, 3.0));
        assert_eq!(window_max([0.0, 0.0, 0.0, 0.0]), (0, 0.0));
        let (position, value) = window_max([2.0, f32::NAN, 9.0, f32::NAN]);
        assert_eq!(position, 1);
        assert!(value.is_nan());
    }

    /// Rows of every length up to 40 windows (partial vectors, several vectors) with ties,
    /// NaNs, negatives and zeros: the dispatched kernel (vector code on AVX-512 machines) gives
    /// exactly the scalar results.
    #[test]
    fn dispatched_rows_match_the_scalar_reference() {
        let value = |i: usize| match (i * 7 + i / 3) % 11 {
            0 => f32::NAN,
            1 | 2 => 0.0,
            3 => -1.5,
            4 | 5 => 2.0,
            k => k as f32 - 6.5,
        };
        for windows in 0..=40 {
            let top: Vec<f32> = (0..2 * windows + 1).map(value).collect();
            let bottom: Vec<f32> = (0..2 * windows + 1).map(|i| value(i + 5)).collect();
            let grads: Vec<f32> = (0..windows).map(|i| i as f32 + 0.25).collect();
            let pool = |kernel: PoolRow| {
                let (mut output, mut winners) = (vec![7.0; windows], vec![9; windows]);
                kernel(&top, &bottom, &mut output, &mut winners);
                (
                    output.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    winners,
                )
            };
            let pooled = pool(pool_relu_row);
            assert_eq!(pooled, pool(pool_relu_row_scalar), "{windows} windows");
            let winners = pooled.1;
            let unpool = |kernel: UnpoolRow| {
                let (mut top, mut bottom) =
                    (vec![5.0; 2 * windows + 1], vec![5.0; 2 * windows + 1]);
                kernel(&grads, &winners, &mut top, &mut bottom);
                (top, bottom)
            };
            let routed = unpool(unpool_row);
            assert_eq!(routed, unpool(unpool_row_scalar), "{windows} windows");
            assert_eq!(
                routed.0[2 * windows],
                5.0,
                "past the last window is untouched"
            );
        }
    }

    #[test]
    fn pooling_clamps_and_records_positions() {
        let (mut output, mut winners) = ([0.0; 2], [0; 2]);
        pool_relu_row(
            &[1.0, 2.0, -1.0, -3.0],
            &[4.0, 0.0, -2.0, -0.5],
            &mut output,
            &mut winners,
        );
        assert_eq!(output, [4.0, 0.0]);
        assert_eq!(winners, [2, CLAMPED]);
        let (mut top, mut bottom) = ([9.0; 4], [9.0; 4]);
        unpool_row(&[3.0, 8.0], &winners, &mut top, &mut bottom);
        assert_eq!((top, bottom), ([0.0; 4], [3.0, 0.0, 0.0, 0.0]));
    }
}
