//! A 3x3 "same" convolution as a matrix product: unfolding images into an im2col matrix, and a
//! checked single-threaded `gemm` call.

use std::mem::MaybeUninit;

use super::simd::simd_versions;

simd_versions! {
    /// Unfolds one `[channels, height, width]` image into `col`, whose rows start `row_stride`
    /// apart (several images can sit side by side): row `(channel, ky, kx)` is the channel's
    /// plane shifted by `(ky - 1, kx - 1)`, with zeros where the shift leaves the image.
    pub fn im2col(
        image: &[f32],
        height: usize,
        width: usize,
        col: &mut [f32],
        row_stride: usize,
    ) = im2col_body;
}

/// [`im2col`], inlined into each of its versions.
#[inline(always)]
fn im2col_body(image: &[f32], height: usize, width: usize, col: &mut [f32], row_stride: usize) {
    let plane = height * width;
    for (channel, source) in image.chunks(plane).enumerate() {
        for tap in 0..9 {
            let row = &mut col[(channel * 9 + tap) * row_stride..][..plane];
            let shift = Shift::of_tap(tap, width);
            // One copy of the whole shifted plane, then zeros where it wrapped or ran off.
            let (source_range, row_range) = shift.ranges(plane);
            row[..row_range.start].fill(0.0);
            row[row_range.end..].fill(0.0);
            row[row_range].copy_from_slice(&source[source_range]);
            shift.zero_outside(row, height, width);
        }
    }
}

/// The displacement of one kernel tap: im2col row entry `p` reads pixel `p + offset` of the
/// plane, unless that moves off the image vertically (`dy`) or wraps a row (`dx`).
struct Shift {
    dy: isize,
    dx: isize,
    offset: isize,
}

impl Shift {
    fn of_tap(tap: usize, width: usize) -> Self {
        let (dy, dx) = ((tap / 3) as isize - 1, (tap % 3) as isize - 1);
        Shift {
            dy,
            dx,
            offset: dy * width as isize + dx,
        }
    }

    /// The pixels and the im2col entries that overlap once shifted.
    fn ranges(&self, plane: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let distance = self.offset.unsigned_abs().min(plane);
        let len = plane - distance;
        if self.offset >= 0 {
            (distance..plane, 0..len)
        } else {
            (0..len, distance..plane)
        }
    }

    /// Zeroes the entries of an im2col row whose pixel lies outside the image.
    fn zero_outside(&self, row: &mut [f32], height: usize, width: usize) {
        match self.dy {
            -1 => row[..width].fill(0.0),
            1 => row[(height - 1) * width..].fill(0.0),
            _ => {}
        }
        match self.dx {
            -1 => row.iter_mut().step_by(width).for_each(|value| *value = 0.0),
            1 => row[width - 1..]
                .iter_mut()
                .step_by(width)
                .for_each(|value| *value = 0.0),
            _ => {}
        }
    }
}

/// Element strides of a matrix view.
#[derive(Clone, Copy)]
pub struct Strides {
    row: usize,
    column: usize,
}

pub fn row_major(columns: usize) -> Strides {
    Strides {
        row: columns,
        column: 1,
    }
}

/// The transpose of a row-major matrix of `columns` columns, read in place.
pub fn transposed(columns: usize) -> Strides {
    Strides {
        row: 1,
        column: columns,
    }
}

fn spans(len: usize, rows: usize, columns: usize, strides: Strides) -> bool {
    rows == 0 || columns == 0 || (rows - 1) * strides.row + (columns - 1) * strides.column < len
}

/// `dst (m x n) += lhs (m x k) · rhs (k x n)` on the calling thread (the callers already
/// spread images over threads).
pub fn matmul(
    dims: [usize; 3],
    (dst, dst_strides): (&mut [f32], Strides),
    lhs: (&[f32], Strides),
    rhs: (&[f32], Strides),
) {
    let dst_len = dst.len();
    // SAFETY: `dst` is initialised and borrowed mutably for the call.
    unsafe {
        gemm_into(
            dims,
            (dst.as_mut_ptr(), dst_len, dst_strides),
            true,
            lhs,
            rhs,
        )
    }
}

/// `dst (m x n) = lhs (m x k) · rhs (k x n)`, into values that need not be initialised: every
/// one of the `m x n` values the strides name is written (zeros when `k` is 0), and none is
/// read.
pub fn matmul_into(
    dims: [usize; 3],
    (dst, dst_strides): (&mut [MaybeUninit<f32>], Strides),
    lhs: (&[f32], Strides),
    rhs: (&[f32], Strides),
) {
    let dst_len = dst.len();
    let dst = dst.as_mut_ptr().cast::<f32>();
    // SAFETY: `dst` is borrowed mutably for the call; without `read_dst`, gemm sets its own
    // `alpha` to zero and then never reads the destination, so its values may be uninitialised.
    unsafe { gemm_into(dims, (dst, dst_len, dst_strides), false, lhs, rhs) }
}

/// # Safety
/// `dst` must point to `dst_len` writable values, aliasing neither operand and initialised
/// where `read_dst` is set.
unsafe fn gemm_into(
    [m, n, k]: [usize; 3],
    (dst, dst_len, dst_strides): (*mut f32, usize, Strides),
    read_dst: bool,
    (lhs, lhs_strides): (&[f32], Strides),
    (rhs, rhs_strides): (&[f32], Strides),
) {
    assert!(
        spans(dst_len, m, n, dst_strides)
            && spans(lhs.len(), m, k, lhs_strides)
            && spans(rhs.len(), k, n, rhs_strides),
        "matmul operands are smaller than their shapes"
    );
    // SAFETY: the assertion above keeps every index gemm computes from these shapes and strides
    // inside its buffer, and the caller guarantees the destination as documented.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_strides.column as isize,
            dst_strides.row as isize,
            read_dst,
            lhs.as_ptr(),
            lhs_strides.column as isize,
            lhs_strides.row as isize,
            rhs.as_ptr(),
            rhs_strides.column as isize,
            rhs_strides.row as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

pub fn add_assign(sum: &mut [f32], term: &[f32]) {
    for (sum, term) in sum.iter_mut().zip(term) {
        *sum += term;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn im2col_rows_are_shifted_planes_with_zeros_off_the_image() {
        let (channels, height, width) = (2, 3, 4);
        let plane = height * width;
        let image: Vec<f32> = (0..channels * plane).map(|v| v as f32 + 1.0).collect();
        // Two images side by side: this one in the second half of each row.
        let row_stride = 2 * plane;
        let mut col = vec![f32::NAN; channels * 9 * row_stride];
        im2col(&image, height, width, &mut col[plane..], row_stride);
        for channel in 0..channels {
            for tap in 0..9 {
                let row = &col[(channel * 9 + tap) * row_stride + plane..][..plane];
                for (pixel, &value) in row.iter().enumerate() {
                    let y = (pixel / width) as isize + (tap / 3) as isize - 1;
                    let x = (pixel % width) as isize + (tap % 3) as isize - 1;
                    let inside =
                        (0..height as isize).contains(&y) && (0..width as isize).contains(&x);
                    let expected = if inside {
                        image[channel * plane + y as usize * width + x as usize]
                    } else {
                        0.0
                    };
                    assert_eq!(
                        value, expected,
                        "channel {channel}, tap {tap}, pixel {pixel}"
                    );
                }
            }
        }
        assert!(
            col[..plane].iter().all(|v| v.is_nan()),
            "the other image's columns are untouched"
        );
    }

    #[test]
    fn matmul_reads_transposed_operands_and_accumulates() {
        // [1 2; 3 4] · [5 6; 7 8]ᵀ = [17 23; 39 53], added to a destination of ones.
        let lhs = [1.0, 2.0, 3.0, 4.0];
        let rhs = [5.0, 6.0, 7.0, 8.0];
        let mut dst = [1.0; 4];
        let rhs_transposed = Strides { row: 1, column: 2 };
        matmul(
            [2, 2, 2],
            (&mut dst, row_major(2)),
            (&lhs, row_major(2)),
            (&rhs, rhs_transposed),
        );
        assert_eq!(dst, [18.0, 24.0, 40.0, 54.0]);
    }
}
