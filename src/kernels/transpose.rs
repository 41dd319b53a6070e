//! Squares of 32-bit values transposed in registers, 16x16 with AVX-512 and 8x8 with AVX2, for
//! the kernels' layout changes between channel-major planes and pixel-major vectors of 16
//! channels, and between filter-major and window-major gradients.

#[cfg(target_arch = "x86_64")]
pub(super) mod avx512 {
    use std::arch::x86_64::*;

    /// Rows (and columns) of the square.
    pub const SIDE: usize = 16;

    /// The index vectors of the four butterfly stages, built once by [`Transposer::new`] and
    /// reused for every square.
    #[derive(Clone, Copy)]
    pub struct Transposer {
        low: [__m512i; 4],
        high: [__m512i; 4],
    }

    /// The bit of the row and column indices that each stage swaps.
    const DISTANCES: [usize; 4] = [8, 4, 2, 1];

    impl Transposer {
        #[target_feature(enable = "avx512f")]
        pub fn new() -> Self {
            let index = |pick: fn(usize, usize) -> usize, distance: usize| {
                let lanes: [i32; SIDE] = std::array::from_fn(|j| pick(j, distance) as i32);
                // SAFETY: `lanes` holds the 16 indices read.
                unsafe { _mm512_loadu_si512(lanes.as_ptr().cast()) }
            };
            // Row `i` (the stage's bit clear) keeps its columns with the bit clear and takes row
            // `i + d`'s columns `j - d` where it is set; row `i + d` takes the rest. Indices
            // 16-31 select from the second operand of `permutex2var`.
            let low = |j: usize, d: usize| if j & d == 0 { j } else { SIDE + j - d };
            let high = |j: usize, d: usize| if j & d == 0 { j + d } else { SIDE + j };
            Transposer {
                low: DISTANCES.map(|distance| index(low, distance)),
                high: DISTANCES.map(|distance| index(high, distance)),
            }
        }

        /// `rows` transposed: element `j` of row `i` becomes element `i` of row `j`.
        #[inline]
        #[target_feature(enable = "avx512f")]
        pub fn transpose(&self, mut rows: [__m512; SIDE]) -> [__m512; SIDE] {
            for (stage, distance) in DISTANCES.into_iter().enumerate() {
                for i in (0..SIDE).filter(|i| i & distance == 0) {
                    let (a, b) = (rows[i], rows[i + distance]);
                    rows[i] = _mm512_permutex2var_ps(a, self.low[stage], b);
                    rows[i + distance] = _mm512_permutex2var_ps(a, self.high[stage], b);
                }
            }
            rows
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::kernels::simd::SimdLevel;

        #[test]
        fn transposes_a_square() {
            if !crate::kernels::test_util::cpu_has(SimdLevel::Avx512) {
                return;
            }
            super::super::check_transpose(SIDE, |values, out| {
                // SAFETY: the CPU has AVX-512 F (checked above); each row of `values` and
                // `out` holds the 16 floats read or written.
                unsafe {
                    let rows: [__m512; SIDE] =
                        std::array::from_fn(|i| _mm512_loadu_ps(values.as_ptr().add(i * SIDE)));
                    let columns = Transposer::new().transpose(rows);
                    for (i, column) in columns.into_iter().enumerate() {
                        _mm512_storeu_ps(out.as_mut_ptr().add(i * SIDE), column);
                    }
                }
            });
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use std::arch::x86_64::*;

    /// Rows (and columns) of the square.
    pub const SIDE: usize = 8;

    /// An 8x8 square of floats transposed: element `j` of row `i` becomes element `i` of
    /// row `j`.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub fn transpose8(rows: [__m256; SIDE]) -> [__m256; SIDE] {
        // Pairs of rows interleaved, then quadruples, within each 128-bit half; the halves
        // are then exchanged.
        let pairs: [__m256; SIDE] = std::array::from_fn(|i| {
            let (a, b) = (rows[i / 2 * 2], rows[i / 2 * 2 + 1]);
            if i % 2 == 0 {
                _mm256_unpacklo_ps(a, b)
            } else {
                _mm256_unpackhi_ps(a, b)
            }
        });
        // Quadruple `q` of rows 0-3 (`q` < 4) or 4-7: columns `q` and `q + 4`.
        let quads: [__m256; SIDE] = std::array::from_fn(|i| {
            let (base, q) = (i / 4 * 4, i % 4);
            let (a, b) = (pairs[base + q / 2], pairs[base + q / 2 + 2]);
            if q % 2 == 0 {
                _mm256_shuffle_ps::<0b01_00_01_00>(a, b)
            } else {
                _mm256_shuffle_ps::<0b11_10_11_10>(a, b)
            }
        });
        std::array::from_fn(|column| {
            let (a, b) = (quads[column % 4], quads[4 + column % 4]);
            if column < 4 {
                _mm256_permute2f128_ps::<0x20>(a, b)
            } else {
                _mm256_permute2f128_ps::<0x31>(a, b)
            }
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::kernels::simd::SimdLevel;

        #[test]
        fn transposes_a_square() {
            if !crate::kernels::test_util::cpu_has(SimdLevel::Avx2) {
                return;
            }
            super::super::check_transpose(SIDE, |values, out| {
                // SAFETY: the CPU has AVX2 (checked above); each row of `values` and `out`
                // holds the 8 floats read or written.
                unsafe {
                    let rows: [__m256; SIDE] =
                        std::array::from_fn(|i| _mm256_loadu_ps(values.as_ptr().add(i * SIDE)));
                    for (i, column) in transpose8(rows).into_iter().enumerate() {
                        _mm256_storeu_ps(out.as_mut_ptr().add(i * SIDE), column);
                    }
                }
            });
        }
    }
}

/// Runs `transpose` (rows of `values` in, columns written to `out`) on a `side` x `side`
/// square of distinct values and checks every value's place.
#[cfg(test)]
fn check_transpose(side: usize, transpose: impl Fn(&[f32], &mut [f32])) {
    let values: Vec<f32> = (0..side * side).map(|i| i as f32).collect();
    let mut out = vec![f32::NAN; side * side];
    transpose(&values, &mut out);
    for i in 0..side {
        for j in 0..side {
            assert_eq!(out[j * side + i], values[i * side + j], "({i}, {j})");
        }
    }
}
