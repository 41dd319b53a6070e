//! The pixel-major layout the backward passes work in: one image as `[height + 2, width + 2,
//! channels]` with a border of zeros one pixel wide, so that the channels under one kernel tap
//! are contiguous and no tap needs a bounds check; and the per-thread buffers that hold it.
//! Shared by `backward` (any block) and `single_channel` (the first layer of a grayscale
//! network).

use std::cell::RefCell;

use super::{BlockShape, with_thread_buffers};

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
    let (channels, width, plane) = (shape.channels, shape.width, shape.plane());
    padded.fill(0.0);
    for (channel, values) in image.chunks(plane).enumerate() {
        for (y, row) in values.chunks(width).enumerate() {
            let start = ((y + 1) * (width + 2) + 1) * channels + channel;
            for (x, &value) in row.iter().enumerate() {
                padded[start + x * channels] = value;
            }
        }
    }
}

/// Adds the inside of a [`to_padded_pixel_major`] layout back into `[channels, height, width]`.
pub(super) fn add_from_padded_pixel_major(padded: &[f32], shape: BlockShape, image: &mut [f32]) {
    let (channels, width, plane) = (shape.channels, shape.width, shape.plane());
    for (channel, values) in image.chunks_mut(plane).enumerate() {
        for (y, row) in values.chunks_mut(width).enumerate() {
            let start = ((y + 1) * (width + 2) + 1) * channels + channel;
            for (x, value) in row.iter_mut().enumerate() {
                *value += padded[start + x * channels];
            }
        }
    }
}
