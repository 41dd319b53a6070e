use super::*;
use crate::kernels::test_util::cpu_has;
use crate::kernels::window::{CLAMPED, window_max};

/// The block by its definition: direct convolution, then the pooling rules.
fn reference(images: &[f32], shape: TileShape, weight: &[f32], bias: &[f32]) -> Vec<f32> {
    let TileShape {
        images: count,
        channels,
        height,
        width,
        filters,
    } = shape;
    let conv = |image: usize, filter: usize, y: usize, x: usize| {
        let mut sum = f64::from(bias[filter]);
        for channel in 0..channels {
            for tap in 0..9 {
                let (py, px) = (y as isize + tap / 3 - 1, x as isize + tap % 3 - 1);
                if py >= 0 && px >= 0 && (py as usize) < height && (px as usize) < width {
                    let plane = image * channels + channel;
                    let pixel = images[(plane * height + py as usize) * width + px as usize];
                    let w = weight[(filter * channels + channel) * 9 + tap as usize];
                    sum += f64::from(pixel) * f64::from(w);
                }
            }
        }
        sum as f32
    };
    let mut out = Vec::new();
    for image in 0..count {
        for filter in 0..filters {
            for y in 0..height / 2 {
                for x in 0..width / 2 {
                    let window = [(0, 0), (0, 1), (1, 0), (1, 1)]
                        .map(|(dy, dx)| conv(image, filter, 2 * y + dy, 2 * x + dx));
                    out.push(window_max(window).1.max(0.0));
                }
            }
        }
    }
    out
}

/// Tile rows of one and several vectors, odd sides, tiles of several images sharing a
/// vector, filters not a multiple of the group, and a blank image (every window ties), at
/// every level this CPU has.
#[test]
fn matches_the_direct_convolution() {
    for level in [SimdLevel::Avx2, SimdLevel::Avx512] {
        if cpu_has(level) {
            matches_the_direct_convolution_at(level);
        }
    }
}

fn matches_the_direct_convolution_at(level: SimdLevel) {
    let cases = [
        (4, 16, 14, 14, 32),
        (3, 16, 7, 9, 16),
        (2, 3, 70, 37, 5),
        (5, 1, 2, 2, 17),
    ];
    for (images, channels, height, width, filters) in cases {
        let shape = TileShape {
            images,
            channels,
            height,
            width,
            filters,
        };
        let noise = |i: usize, scale: f32| ((i * 7919 % 1009) as f32 / 1009.0 - 0.5) * scale;
        let image_len = channels * height * width;
        let pixels: Vec<f32> = (0..images * image_len)
            .map(|i| if i < image_len { 0.0 } else { noise(i, 2.0) })
            .collect();
        let weight: Vec<f32> = (0..filters * channels * 9)
            .map(|i| noise(i + 5, 0.4))
            .collect();
        let bias: Vec<f32> = (0..filters).map(|i| noise(i + 11, 0.2)).collect();
        let weights = transform_weights(&weight, filters, channels);
        let outputs = images * filters * (height / 2) * (width / 2);
        let mut scratch = vec![f32::NAN; shape.scratch_len()];
        let (mut output, mut winners) = (vec![f32::NAN; outputs], vec![7u8; outputs]);
        let parameters = (&weights[..], &bias[..]);
        forward_at(
            level,
            &pixels,
            shape,
            parameters,
            &mut scratch,
            &mut output,
            &mut winners,
        );
        let expected = reference(&pixels, shape, &weight, &bias);
        let case =
            format!("{level}: {images} images of {channels}x{height}x{width}, {filters} filters");
        assert!(
            expected.contains(&0.0) && expected.iter().any(|&v| v > 0.0),
            "{case}"
        );
        for (index, (a, b)) in output.iter().zip(&expected).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "{case} [{index}]: {a} vs {b}"
            );
            assert_eq!(*a == 0.0, winners[index] == CLAMPED, "{case} [{index}]");
            assert!(
                winners[index] <= 3 || winners[index] == CLAMPED,
                "{case} [{index}]"
            );
        }
    }
}
