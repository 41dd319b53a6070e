//! Data augmentation: each training image shifted by a few pixels and rotated a little, with
//! a random generator seeded by the run's seed, the epoch, the step and the image's place in
//! the batch, so a resumed run sees exactly the images an uninterrupted one would.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use crate::data::Split;

/// Largest rotation either way, in degrees.
pub const MAX_ROTATION_DEGREES: f64 = 10.0;
/// Largest shift either way, as a share of the image side (2 pixels of 28).
pub const MAX_SHIFT_FRACTION: f64 = 0.08;

/// The images at `indices`, each randomly shifted and rotated, scaled to [0, 1] and laid out
/// as `[batch, channels, rows, cols]` (the values of a batch tensor).
pub fn augmented_batch(
    split: &Split,
    indices: &[usize],
    seed: u64,
    epoch: usize,
    step: usize,
) -> Vec<f32> {
    let (rows, cols, channels) = (split.rows, split.cols, split.channels);
    let max_shift = |side: usize| (side as f64 * MAX_SHIFT_FRACTION).round().max(1.0);
    let (max_dx, max_dy) = (max_shift(cols), max_shift(rows));
    // Each image has its own generator, so the images can be transformed in parallel and the
    // result does not depend on the thread count.
    let images: Vec<Vec<f32>> = indices
        .par_iter()
        .enumerate()
        .map(|(position, &index)| {
            let mut rng = StdRng::seed_from_u64(stream(seed, epoch, step, position));
            let dx = rng.random_range(-max_dx..=max_dx);
            let dy = rng.random_range(-max_dy..=max_dy);
            let angle = rng
                .random_range(-MAX_ROTATION_DEGREES..=MAX_ROTATION_DEGREES)
                .to_radians();
            let mut values = Vec::with_capacity(split.image_len());
            transform(
                &mut values,
                split.image(index),
                (rows, cols, channels),
                (dx, dy),
                angle,
            );
            values
        })
        .collect();
    images.concat()
}

/// Mixes the run's seed with where the image is in the run into one generator seed.
fn stream(seed: u64, epoch: usize, step: usize, position: usize) -> u64 {
    let mut x = seed ^ 0xa5a5_5a5a_0000_0000;
    for part in [epoch as u64, step as u64, position as u64] {
        x = (x ^ part).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x ^= x >> 29;
    }
    x
}

/// Appends one image (interleaved bytes) rotated by `angle` about its centre and shifted by
/// `(dx, dy)` pixels, sampled bilinearly with black outside, as planes of [0, 1] values.
pub fn transform(
    values: &mut Vec<f32>,
    pixels: &[u8],
    (rows, cols, channels): (usize, usize, usize),
    (dx, dy): (f64, f64),
    angle: f64,
) {
    let (sin, cos) = angle.sin_cos();
    let (cx, cy) = ((cols as f64 - 1.0) / 2.0, (rows as f64 - 1.0) / 2.0);
    let at = |x: isize, y: isize, c: usize| -> f64 {
        if x < 0 || y < 0 || x as usize >= cols || y as usize >= rows {
            0.0
        } else {
            f64::from(pixels[(y as usize * cols + x as usize) * channels + c])
        }
    };
    for c in 0..channels {
        for y in 0..rows {
            for x in 0..cols {
                // The inverse map: where in the source this output pixel comes from.
                let (ox, oy) = (x as f64 - cx - dx, y as f64 - cy - dy);
                let sx = cos * ox + sin * oy + cx;
                let sy = -sin * ox + cos * oy + cy;
                let (x0, y0) = (sx.floor(), sy.floor());
                let (fx, fy) = (sx - x0, sy - y0);
                let (x0, y0) = (x0 as isize, y0 as isize);
                let value = at(x0, y0, c) * (1.0 - fx) * (1.0 - fy)
                    + at(x0 + 1, y0, c) * fx * (1.0 - fy)
                    + at(x0, y0 + 1, c) * (1.0 - fx) * fy
                    + at(x0 + 1, y0 + 1, c) * fx * fy;
                values.push((value / 255.0) as f32);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_whole_pixel_shift() {
        let pixels: Vec<u8> = (0..25).map(|i| i * 10).collect();
        let mut same = Vec::new();
        transform(&mut same, &pixels, (5, 5, 1), (0.0, 0.0), 0.0);
        let expected: Vec<f32> = pixels.iter().map(|&p| f32::from(p) / 255.0).collect();
        assert_eq!(same, expected);
        let mut shifted = Vec::new();
        transform(&mut shifted, &pixels, (5, 5, 1), (1.0, 0.0), 0.0);
        assert_eq!(shifted[0], 0.0, "black comes in from the left");
        assert_eq!(shifted[1], expected[0]);
        assert_eq!(shifted[6], expected[5]);
    }

    #[test]
    fn quarter_turn_of_a_colour_image_keeps_channels_apart() {
        // 3x3 RGB: only the top-middle pixel is red.
        let mut pixels = vec![0u8; 27];
        pixels[3] = 255;
        let mut turned = Vec::new();
        transform(
            &mut turned,
            &pixels,
            (3, 3, 3),
            (0.0, 0.0),
            std::f64::consts::FRAC_PI_2,
        );
        // Red plane: the pixel moved to the middle of a side; green and blue stay black.
        let red: Vec<f32> = turned[..9].iter().map(|v| v.round()).collect();
        assert_eq!(red.iter().sum::<f32>(), 1.0);
        assert_eq!(red[4], 0.0, "not the centre");
        assert!(turned[9..].iter().all(|&v| v == 0.0));
    }
}
