//! The pixel-major layout the backward passes work in: one image as `[height + 2, width + 2,
//! channels]` with a border of zeros one pixel wide, so that the channels under one kernel tap
//! are contiguous and no tap needs a bounds check; and the per-thread buffers that hold it.
//! Shared by `backward` (any block) and `single_channel` (the first layer of a grayscale
//! network).

use std::cell::RefCell;
use std::mem::MaybeUninit;

use super::{BlockShape, with_thread_buffers};
use crate::kernels::simd::{self, SimdLevel};

/// Per-thread buffers of the backward pass: one image and its gradient, pixel-major
/// (`[pixel, channel]`) with a border of zeros one pixel wide.
pub(super) struct PixelScratch<'a> {
    pub pixels: &'a mut [f32],
    pub pixels_grad: &'a mut [f32],
}

thread_local! {
    static PIXEL_BUFFERS: RefCell<[Vec<f32>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
}

/// Runs `work` with this thread's buffers, sized for one image of `shape`.
pub(super) fn with_pixel_scratch<R>(
    shape: BlockShape,
    work: impl FnOnce(&mut PixelScratch<'_>) -> R,
) -> R {
    let len = (shape.height + 2) * (shape.width + 2) * shape.channels;
    with_thread_buffers(&PIXEL_BUFFERS, [len; 2], |[pixels, pixels_grad]| {
        work(&mut PixelScratch {
            pixels,
            pixels_grad,
        })
    })
}

/// `[channels, height, width]` reordered to `[height + 2, width + 2, channels]` with a zero
/// border.
pub(super) fn to_padded_pixel_major(image: &[f32], shape: BlockShape, padded: &mut [f32]) {
    zero_border(shape, padded);
    match vector_version(shape) {
        #[cfg(target_arch = "x86_64")]
        Some(level) => {
            check(image, shape, padded);
            // SAFETY: `vector_version` picked a level the CPU has, for a shape it takes; the
            // buffers fit the shape (checked above).
            unsafe {
                match level {
                    SimdLevel::Avx512 => avx512::to_padded(image, shape, padded),
                    _ => avx2::to_padded(image, shape, padded),
                }
            }
        }
        _ => to_padded_scalar(image, shape, padded),
    }
}

/// The level of the vector version of the layout changes for `shape`, if one takes it: 16
/// channels, with AVX-512, or with AVX2 and rows of at least 8 pixels.
fn vector_version(shape: BlockShape) -> Option<SimdLevel> {
    let level = simd::level();
    let takes = shape.channels == 16
        && match level {
            SimdLevel::Avx512 => cfg!(target_arch = "x86_64"),
            SimdLevel::Avx2 => cfg!(target_arch = "x86_64") && shape.width >= 8,
            SimdLevel::Scalar => false,
        };
    takes.then_some(level)
}

/// Zeroes the one-pixel border of a padded pixel-major image, the part of it that the layout
/// change does not write.
fn zero_border(shape: BlockShape, padded: &mut [f32]) {
    let row = (shape.width + 2) * shape.channels;
    let rows = &mut padded[..(shape.height + 2) * row];
    let (first, rest) = rows.split_at_mut(row);
    let (inside, last) = rest.split_at_mut(shape.height * row);
    first.fill(0.0);
    last.fill(0.0);
    for row in inside.chunks_exact_mut(row) {
        let right = row.len() - shape.channels;
        row[..shape.channels].fill(0.0);
        row[right..].fill(0.0);
    }
}

/// [`to_padded_pixel_major`] one value at a time, after its border's zero fill.
fn to_padded_scalar(image: &[f32], shape: BlockShape, padded: &mut [f32]) {
    let (channels, width, plane) = (shape.channels, shape.width, shape.plane());
    for (channel, values) in image.chunks(plane).enumerate() {
        for (y, row) in values.chunks(width).enumerate() {
            let start = ((y + 1) * (width + 2) + 1) * channels + channel;
            for (x, &value) in row.iter().enumerate() {
                padded[start + x * channels] = value;
            }
        }
    }
}

/// Writes the inside of a [`to_padded_pixel_major`] layout back as `[channels, height, width]`,
/// every value of `image` (which need not be initialised before).
pub(super) fn from_padded_pixel_major(
    padded: &[f32],
    shape: BlockShape,
    image: &mut [MaybeUninit<f32>],
) {
    match vector_version(shape) {
        #[cfg(target_arch = "x86_64")]
        Some(level) => {
            check(image, shape, padded);
            // SAFETY: as in `to_padded_pixel_major`.
            unsafe {
                match level {
                    SimdLevel::Avx512 => avx512::from_padded(padded, shape, image),
                    _ => avx2::from_padded(padded, shape, image),
                }
            }
        }
        _ => from_padded_scalar(padded, shape, image),
    }
}

/// [`from_padded_pixel_major`] one value at a time.
fn from_padded_scalar(padded: &[f32], shape: BlockShape, image: &mut [MaybeUninit<f32>]) {
    let (channels, width, plane) = (shape.channels, shape.width, shape.plane());
    assert_eq!(
        image.len(),
        shape.image_len(),
        "from pixel-major: not one image"
    );
    for (channel, values) in image.chunks_mut(plane).enumerate() {
        for (y, row) in values.chunks_mut(width).enumerate() {
            let start = ((y + 1) * (width + 2) + 1) * channels + channel;
            for (x, value) in row.iter_mut().enumerate() {
                value.write(padded[start + x * channels]);
            }
        }
    }
}

/// Panics unless `image` is one image of `shape` and `padded` its padded pixel-major layout.
fn check<T>(image: &[T], shape: BlockShape, padded: &[f32]) {
    assert!(
        image.len() == shape.image_len()
            && padded.len() >= (shape.height + 2) * (shape.width + 2) * shape.channels,
        "pixel-major layout: buffers do not match the shape"
    );
}

/// Both layout changes for 16 channels with AVX-512: 16 pixels of a row at a time, as a 16x16
/// square transposed in registers, instead of one strided value at a time.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    use crate::kernels::block::BlockShape;
    use crate::kernels::transpose::avx512::{SIDE, Transposer};

    /// The channel count these versions take: one square's side.
    pub const CHANNELS: usize = SIDE;

    /// Calls `square(y, x, count)` for each run of `count` (up to 16) pixels from `(y, x)`.
    #[inline(always)]
    fn for_each_run(shape: BlockShape, mut square: impl FnMut(usize, usize, usize)) {
        for y in 0..shape.height {
            for x in (0..shape.width).step_by(SIDE) {
                square(y, x, (shape.width - x).min(SIDE));
            }
        }
    }

    /// [`super::to_padded_pixel_major`] after its border's zero fill.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F; `image` and `padded` must fit `shape` (see `check`), which
    /// has 16 channels.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn to_padded(image: &[f32], shape: BlockShape, padded: &mut [f32]) {
        let (width, plane, transposer) = (shape.width, shape.plane(), Transposer::new());
        for_each_run(shape, |y, x, count| {
            let lanes = ((1u32 << count) - 1) as __mmask16;
            // SAFETY: the masked loads read pixels `x..x + count` of row `y` of each channel's
            // plane, inside `image`; the stores write the run's pixels (inside the border) of
            // `padded`, 16 channels each.
            unsafe {
                let rows: [__m512; SIDE] = std::array::from_fn(|channel| {
                    let at = channel * plane + y * width + x;
                    _mm512_maskz_loadu_ps(lanes, image.as_ptr().add(at))
                });
                let pixels = transposer.transpose(rows);
                let first = ((y + 1) * (width + 2) + x + 1) * CHANNELS;
                for (index, pixel) in pixels.into_iter().take(count).enumerate() {
                    _mm512_storeu_ps(padded.as_mut_ptr().add(first + index * CHANNELS), pixel);
                }
            }
        });
    }

    /// [`super::from_padded_pixel_major`].
    ///
    /// # Safety
    /// As for [`to_padded`].
    #[target_feature(enable = "avx512f")]
    pub unsafe fn from_padded(padded: &[f32], shape: BlockShape, image: &mut [MaybeUninit<f32>]) {
        let (width, plane, transposer) = (shape.width, shape.plane(), Transposer::new());
        let image = image.as_mut_ptr().cast::<f32>();
        for_each_run(shape, |y, x, count| {
            let lanes = ((1u32 << count) - 1) as __mmask16;
            let first = ((y + 1) * (width + 2) + x + 1) * CHANNELS;
            // SAFETY: the loads read the run's pixels (inside the border) of `padded`, 16
            // channels each; the masked stores write pixels `x..x + count` of row `y` of each
            // channel's plane, inside `image`, and read nothing there.
            unsafe {
                let pixels: [__m512; SIDE] = std::array::from_fn(|index| {
                    if index < count {
                        _mm512_loadu_ps(padded.as_ptr().add(first + index * CHANNELS))
                    } else {
                        _mm512_setzero_ps()
                    }
                });
                let rows = transposer.transpose(pixels);
                for (channel, row) in rows.into_iter().enumerate() {
                    let target = image.add(channel * plane + y * width + x);
                    _mm512_mask_storeu_ps(target, lanes, row);
                }
            }
        });
    }
}

/// Both layout changes for 16 channels with AVX2: 8 pixels of a row at a time, as two 8x8
/// squares (channels 0-7 and 8-15) transposed in registers. A row's last 8 pixels make its
/// last square, which may overlap the one before (both write the same values), so that every
/// load and store is a whole vector: AVX2's masked store is slow on AMD CPUs.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    use crate::kernels::block::BlockShape;
    use crate::kernels::transpose::avx2::{SIDE, transpose8};

    /// The channel count these versions take: two squares' sides.
    const CHANNELS: usize = 2 * SIDE;

    /// Calls `square(y, x, channel)` for each square: pixels `x..x + 8` of row `y`, channels
    /// `channel..channel + 8`.
    #[inline(always)]
    fn for_each_square(shape: BlockShape, mut square: impl FnMut(usize, usize, usize)) {
        assert!(shape.width >= SIDE, "a row shorter than a square");
        for y in 0..shape.height {
            for x in (0..shape.width).step_by(SIDE) {
                for channel in [0, SIDE] {
                    square(y, x.min(shape.width - SIDE), channel);
                }
            }
        }
    }

    /// [`super::to_padded_pixel_major`] after its border's zero fill.
    ///
    /// # Safety
    /// The CPU must have AVX2; `image` and `padded` must fit `shape` (see `check`), which has
    /// 16 channels and rows of at least 8 pixels.
    #[target_feature(enable = "avx2")]
    pub unsafe fn to_padded(image: &[f32], shape: BlockShape, padded: &mut [f32]) {
        let (width, plane) = (shape.width, shape.plane());
        for_each_square(shape, |y, x, channel| {
            // SAFETY: the loads read pixels `x..x + 8` of row `y` of 8 channels' planes, inside
            // `image`; the stores write 8 channels of 8 pixels inside the border of `padded`.
            unsafe {
                let rows: [__m256; SIDE] = std::array::from_fn(|index| {
                    let at = (channel + index) * plane + y * width + x;
                    _mm256_loadu_ps(image.as_ptr().add(at))
                });
                let first = ((y + 1) * (width + 2) + x + 1) * CHANNELS + channel;
                for (index, pixel) in transpose8(rows).into_iter().enumerate() {
                    _mm256_storeu_ps(padded.as_mut_ptr().add(first + index * CHANNELS), pixel);
                }
            }
        });
    }

    /// [`super::from_padded_pixel_major`].
    ///
    /// # Safety
    /// As for [`to_padded`].
    #[target_feature(enable = "avx2")]
    pub unsafe fn from_padded(padded: &[f32], shape: BlockShape, image: &mut [MaybeUninit<f32>]) {
        let (width, plane) = (shape.width, shape.plane());
        let image = image.as_mut_ptr().cast::<f32>();
        for_each_square(shape, |y, x, channel| {
            let first = ((y + 1) * (width + 2) + x + 1) * CHANNELS + channel;
            // SAFETY: the loads read 8 channels of 8 pixels inside the border of `padded`; the
            // stores write pixels `x..x + 8` of row `y` of 8 channels' planes, inside `image`,
            // and read nothing there.
            unsafe {
                let pixels: [__m256; SIDE] = std::array::from_fn(|index| {
                    _mm256_loadu_ps(padded.as_ptr().add(first + index * CHANNELS))
                });
                for (index, row) in transpose8(pixels).into_iter().enumerate() {
                    let at = (channel + index) * plane + y * width + x;
                    _mm256_storeu_ps(image.add(at), row);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both layout changes of a vector version, `to` and `from`, against the scalar ones and
    /// against the image itself, at each shape given (16 channels).
    fn check_vector_version(
        shapes: &[[usize; 2]],
        to: impl Fn(&[f32], BlockShape, &mut [f32]),
        from: impl Fn(&[f32], BlockShape, &mut [MaybeUninit<f32>]),
    ) {
        for &[height, width] in shapes {
            let shape = BlockShape::new(&[1, 16, height, width], &[1, 16, 3, 3]);
            let image: Vec<f32> = (0..shape.image_len())
                .map(|i| i as f32 * 0.25 - 3.0)
                .collect();
            let padded_len = (height + 2) * (width + 2) * 16;
            let (mut scalar, mut vector) = (vec![7.0; padded_len], vec![7.0; padded_len]);
            zero_border(shape, &mut scalar);
            to_padded_scalar(&image, shape, &mut scalar);
            zero_border(shape, &mut vector);
            to(&image, shape, &mut vector);
            assert_eq!(vector, scalar, "to pixel-major, {height}x{width}");
            // Every value written: the image inside a border of zeros.
            for (index, &value) in scalar.iter().enumerate() {
                let (pixel, channel) = (index / 16, index % 16);
                let (y, x) = (pixel / (width + 2), pixel % (width + 2));
                let expected = if (1..=height).contains(&y) && (1..=width).contains(&x) {
                    image[(channel * height + y - 1) * width + x - 1]
                } else {
                    0.0
                };
                assert_eq!(value, expected, "pixel ({y}, {x}), channel {channel}");
            }
            // Back from the layout, over values that were not the image: both versions write
            // every value, the image's own.
            let garbage = vec![MaybeUninit::new(f32::NAN); shape.image_len()];
            let (mut back_scalar, mut back_vector) = (garbage.clone(), garbage);
            from_padded_scalar(&scalar, shape, &mut back_scalar);
            from(&scalar, shape, &mut back_vector);
            // SAFETY: both were NaN-filled before, so every value is initialised.
            let (back_scalar, back_vector) =
                unsafe { (back_scalar.assume_init_ref(), back_vector.assume_init_ref()) };
            assert_eq!(
                back_vector,
                &image[..],
                "from pixel-major, {height}x{width}"
            );
            assert_eq!(
                back_scalar,
                &image[..],
                "from pixel-major, scalar, {height}x{width}"
            );
        }
    }

    /// The AVX-512 layout changes, at widths around a run of 16.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_avx512_layout_changes_match_the_scalar_ones() {
        if !crate::kernels::test_util::cpu_has(SimdLevel::Avx512) {
            return;
        }
        check_vector_version(
            &[[3, 7], [2, 16], [5, 17], [4, 33], [1, 1]],
            // SAFETY: the CPU has AVX-512 F (checked above); the buffers fit the shape.
            |image, shape, padded| unsafe { avx512::to_padded(image, shape, padded) },
            // SAFETY: as above.
            |padded, shape, image| unsafe { avx512::from_padded(padded, shape, image) },
        );
    }

    /// The AVX2 layout changes, at widths of one square, around two, and MNIST's 14, whose
    /// last square overlaps the first.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_avx2_layout_changes_match_the_scalar_ones() {
        if !crate::kernels::test_util::cpu_has(SimdLevel::Avx2) {
            return;
        }
        check_vector_version(
            &[[3, 8], [2, 16], [5, 17], [14, 14], [1, 9], [4, 33]],
            // SAFETY: the CPU has AVX2 (checked above); the buffers fit the shape, whose rows
            // hold at least 8 pixels.
            |image, shape, padded| unsafe { avx2::to_padded(image, shape, padded) },
            // SAFETY: as above.
            |padded, shape, image| unsafe { avx2::from_padded(padded, shape, image) },
        );
    }
}
