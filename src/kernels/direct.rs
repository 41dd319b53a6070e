//! A 3x3 "same" convolution of single-channel images computed directly, 16 pixels of a row at
//! a time. The network's first layer has one input channel, so im2col would unfold each image
//! into only 9 rows and leave `gemm` a product whose inner dimension is 9: most of its time
//! went to packing and to loading and storing the output. Here the 9 shifted rows under the
//! kernel are loaded once and every filter is applied to them in registers.

use super::simd::{self, SimdLevel};

/// Pixels computed together: one AVX-512 register.
const LANES: usize = 16;

/// Writes `bias + conv3x3_same(image)` for each filter into `conv`, filter `f`'s plane
/// starting at `f * plane_stride` (`height x width`, row-major), for the rows that a 2x2
/// pooling reads (an odd last row is left as it was). `image` is one `height x width` plane,
/// `weight` is `[filters, 1, 3, 3]`, and `padded` is scratch space. With AVX-512 (at the
/// kernels' [`simd::level`]) each output is `bias` plus the taps' products fused one by one;
/// elsewhere the same sum is left to the compiler, which vectorizes it poorly: callers take
/// im2col there (see `block::forward_path`).
pub fn conv3x3_single_channel(
    image: &[f32],
    [height, width]: [usize; 2],
    weight: &[f32],
    bias: &[f32],
    conv: &mut [f32],
    plane_stride: usize,
    padded: &mut Vec<f32>,
) {
    let filters = bias.len();
    assert!(
        image.len() == height * width
            && weight.len() == filters * 9
            && (filters == 0 || (filters - 1) * plane_stride + height * width <= conv.len()),
        "conv3x3_single_channel: buffers do not match their shapes"
    );
    // A zero border of one pixel, and rows long enough that the last 16-pixel group of a row
    // reads no further than its own row.
    let stride = width.next_multiple_of(LANES) + 2;
    padded.clear();
    padded.resize((height + 2) * stride, 0.0);
    for (y, row) in image.chunks_exact(width).enumerate() {
        padded[(y + 1) * stride + 1..][..width].copy_from_slice(row);
    }
    let rows = height / 2 * 2;
    #[cfg(target_arch = "x86_64")]
    if simd::level() == SimdLevel::Avx512 {
        // SAFETY: the level is `Avx512` only on a CPU with AVX-512 F.
        unsafe {
            avx512::rows(
                padded,
                stride,
                [rows, width],
                weight,
                bias,
                conv,
                plane_stride,
            )
        };
        return;
    }
    for y in 0..rows {
        for x in (0..width).step_by(LANES) {
            let mut window = [[0f32; LANES]; 9];
            for (tap, pixels) in window.iter_mut().enumerate() {
                let start = (y + tap / 3) * stride + x + tap % 3;
                pixels.copy_from_slice(&padded[start..start + LANES]);
            }
            let count = LANES.min(width - x);
            for (filter, (taps, &bias)) in weight.chunks_exact(9).zip(bias).enumerate() {
                // Constant lengths throughout, so that the taps unroll and each tap is one
                // vector multiply and add over the 16 pixels.
                let taps: &[f32; 9] = taps.try_into().expect("9 taps");
                let mut sums = [bias; LANES];
                for tap in 0..9 {
                    for lane in 0..LANES {
                        sums[lane] += taps[tap] * window[tap][lane];
                    }
                }
                let out = &mut conv[filter * plane_stride + y * width + x..];
                if count == LANES {
                    out[..LANES].copy_from_slice(&sums);
                } else {
                    for (out, sum) in out[..count].iter_mut().zip(sums) {
                        *out = sum;
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::LANES;

    /// Filters computed together: their sums and the 9 shifted rows take 17 of 32 registers.
    const FILTERS_AT_ONCE: usize = 8;

    /// The convolution of [`super::conv3x3_single_channel`] for `rows` rows of `width` pixels
    /// from the padded image.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F. (Every read and write is bounds-checked: `padded` needs
    /// `rows + 2` rows of `stride >= width.next_multiple_of(16) + 2` floats.)
    #[target_feature(enable = "avx512f")]
    pub unsafe fn rows(
        padded: &[f32],
        stride: usize,
        [rows, width]: [usize; 2],
        weight: &[f32],
        bias: &[f32],
        conv: &mut [f32],
        plane_stride: usize,
    ) {
        let filters = bias.len();
        for first in (0..filters).step_by(FILTERS_AT_ONCE) {
            // A last group of fewer filters repeats its last filter and keeps only the real ones.
            let filter = |index: usize| (first + index).min(filters - 1);
            let mut taps = [[0f32; 9]; FILTERS_AT_ONCE];
            let mut biases = [0f32; FILTERS_AT_ONCE];
            for index in 0..FILTERS_AT_ONCE {
                taps[index].copy_from_slice(&weight[filter(index) * 9..][..9]);
                biases[index] = bias[filter(index)];
            }
            for y in 0..rows {
                for x in (0..width).step_by(LANES) {
                    let count = LANES.min(width - x);
                    let mut window = [_mm512_setzero_ps(); 9];
                    for (tap, pixels) in window.iter_mut().enumerate() {
                        let row = &padded[(y + tap / 3) * stride + x + tap % 3..][..LANES];
                        // SAFETY: the slice above holds the 16 floats read.
                        *pixels = unsafe { _mm512_loadu_ps(row.as_ptr()) };
                    }
                    // One sum per filter, so that the fused multiply-adds do not wait on each
                    // other; each still adds its taps in order.
                    let mut sums = [_mm512_setzero_ps(); FILTERS_AT_ONCE];
                    for (sum, &bias) in sums.iter_mut().zip(&biases) {
                        *sum = _mm512_set1_ps(bias);
                    }
                    for (tap, &pixels) in window.iter().enumerate() {
                        for (sum, taps) in sums.iter_mut().zip(&taps) {
                            *sum = _mm512_fmadd_ps(_mm512_set1_ps(taps[tap]), pixels, *sum);
                        }
                    }
                    let lanes = ((1u32 << count) - 1) as __mmask16;
                    for (index, sum) in sums.iter().enumerate().take(filters - first) {
                        let start = (first + index) * plane_stride + y * width + x;
                        let out = &mut conv[start..][..count];
                        // SAFETY: the mask writes lanes `0..count`, which the slice above holds.
                        unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr(), lanes, *sum) };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The convolution by its definition, one output at a time.
    fn reference(image: &[f32], [height, width]: [usize; 2], taps: &[f32], bias: f32) -> Vec<f32> {
        let pixel = |y: isize, x: isize| {
            if y < 0 || x < 0 || y >= height as isize || x >= width as isize {
                0.0
            } else {
                image[y as usize * width + x as usize]
            }
        };
        let mut out = Vec::new();
        for y in 0..height as isize {
            for x in 0..width as isize {
                let mut sum = bias;
                for tap in 0..9 {
                    sum += taps[tap as usize] * pixel(y + tap / 3 - 1, x + tap % 3 - 1);
                }
                out.push(sum);
            }
        }
        out
    }

    #[test]
    fn matches_the_definition_on_odd_and_wide_sides() {
        for sides @ [height, width] in [[28, 28], [7, 9], [5, 33], [2, 16], [3, 1]] {
            let image: Vec<f32> = (0..height * width)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
                .collect();
            let filters = 3;
            let weight: Vec<f32> = (0..filters * 9).map(|i| (i as f32 - 13.0) / 7.0).collect();
            let bias = [0.5, -1.0, 0.25];
            let plane = height * width;
            let stride = plane + 3;
            let mut conv = vec![f32::NAN; filters * stride];
            let mut padded = Vec::new();
            conv3x3_single_channel(
                &image,
                sides,
                &weight,
                &bias,
                &mut conv,
                stride,
                &mut padded,
            );
            for filter in 0..filters {
                let expected = reference(&image, sides, &weight[filter * 9..][..9], bias[filter]);
                let plane_values = &conv[filter * stride..][..plane];
                for (index, (a, b)) in plane_values.iter().zip(&expected).enumerate() {
                    if index / width >= height / 2 * 2 {
                        assert!(a.is_nan(), "an odd last row is not computed");
                    } else {
                        assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{sides:?} {index}");
                    }
                }
            }
        }
    }
}
