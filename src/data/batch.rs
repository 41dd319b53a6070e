//! Turning images and labels into tensors.

use burn::prelude::*;

use super::Split;

/// One mini-batch on a device: pixels scaled to [0, 1] and one-hot labels.
pub struct Batch {
    /// `[batch, channels, rows, cols]`
    pub images: Tensor<4>,
    /// `[batch, classes]`
    pub one_hot: Tensor<2>,
    pub labels: Vec<u8>,
}

/// Gathers the items at `indices` into one batch, with labels one-hot over `classes`.
pub fn make_batch(split: &Split, indices: &[usize], classes: usize, device: &Device) -> Batch {
    batch_with_images(
        split,
        indices,
        classes,
        images_tensor(split, indices, device),
        device,
    )
}

/// The batch of the items at `indices` with `images` (already prepared, e.g. augmented) as its
/// pixels.
pub fn batch_with_images(
    split: &Split,
    indices: &[usize],
    classes: usize,
    images: Tensor<4>,
    device: &Device,
) -> Batch {
    let labels: Vec<u8> = indices.iter().map(|&i| split.labels[i]).collect();
    let mut one_hot = vec![0.0f32; indices.len() * classes];
    for (row, &label) in labels.iter().enumerate() {
        one_hot[row * classes + label as usize] = 1.0;
    }
    let one_hot = Tensor::from_data(TensorData::new(one_hot, [indices.len(), classes]), device);
    Batch {
        images,
        one_hot,
        labels,
    }
}

/// The images at `indices` as a `[batch, channels, rows, cols]` tensor with pixels scaled to
/// [0, 1].
pub fn images_tensor(split: &Split, indices: &[usize], device: &Device) -> Tensor<4> {
    let mut values = Vec::with_capacity(indices.len() * split.image_len());
    for (position, &index) in indices.iter().enumerate() {
        // Shuffled images lie anywhere in memory: asking for a later one's pixels now overlaps
        // its cache misses with this one's conversion.
        if let Some(&ahead) = indices.get(position + PREFETCH_AHEAD) {
            prefetch(split.image(ahead));
        }
        append_planes(&mut values, split.image(index), split.channels);
    }
    Tensor::from_data(
        TensorData::new(
            values,
            [indices.len(), split.channels, split.rows, split.cols],
        ),
        device,
    )
}

/// How many images ahead [`images_tensor`] asks for pixels.
const PREFETCH_AHEAD: usize = 4;

/// Hints the CPU to bring `bytes` into its caches; a no-op where there is no such hint.
fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: SSE is part of x86_64's baseline, and a prefetch is only a hint: it never
        // faults and changes no value.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

/// Appends one image's pixels (`channels` interleaved bytes a pixel, as stored) scaled to
/// [0, 1], one channel plane after the other, as the network takes them.
pub fn append_planes(values: &mut Vec<f32>, pixels: &[u8], channels: usize) {
    if channels == 1 {
        values.extend(pixels.iter().map(|&p| f32::from(p) / 255.0));
        return;
    }
    for channel in 0..channels {
        values.extend(
            pixels
                .iter()
                .skip(channel)
                .step_by(channels)
                .map(|&p| f32::from(p) / 255.0),
        );
    }
}

/// Scales raw pixels (`channels` interleaved bytes a pixel) to [0, 1] as a single-image batch.
pub fn single_image_tensor(
    pixels: &[u8],
    rows: usize,
    cols: usize,
    channels: usize,
    device: &Device,
) -> Tensor<4> {
    let mut values = Vec::with_capacity(pixels.len());
    append_planes(&mut values, pixels, channels);
    Tensor::from_data(TensorData::new(values, [1, channels, rows, cols]), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaved_colour_pixels_become_planes_scaled_to_one() {
        // Two pixels, red, green and blue each.
        let pixels = [0, 51, 102, 153, 204, 255];
        let mut values = vec![-1.0];
        append_planes(&mut values, &pixels, 3);
        assert_eq!(values, [-1.0, 0.0, 0.6, 0.2, 0.8, 0.4, 1.0]);
        let mut gray = Vec::new();
        append_planes(&mut gray, &[255, 0, 51], 1);
        assert_eq!(gray, [1.0, 0.0, 0.2]);
    }
}
