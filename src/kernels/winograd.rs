//! The forward pass of a feature block by Winograd's minimal filtering F(2x2, 3x3), with the
//! pooling fused into it, for CPUs with AVX-512 or AVX2 (and FMA): one version each, picked by
//! [`simd::level`](super::simd::level). There is no scalar version.
//!
//! Each 2x2 output tile of a 3x3 convolution is computed from the 4x4 input tile under it as
//! `Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`: 16 products per tile and channel pair instead of 36, so the
//! products (for each of the 16 positions of a tile, `filters x channels` times `channels x
//! tiles`) take 2.25x fewer multiplications than the direct convolution. The transforms are
//! additions. With stride-2 pooling, a 2x2 output tile is exactly one pooling window, so the
//! output transform ends by pooling it, as `window::pool_relu_planes` does, and the
//! convolution itself is never stored.
//!
//! Everything runs 16 tiles to a vector with AVX-512 and 8 with AVX2, in the same layout: a
//! tile's row of the image is split into its even and odd columns as it is loaded, so the
//! channel-major planes the network passes between layers are read and written as they are,
//! with no transposition.

/// Tiles per vector of the widest version (AVX-512). The AVX2 version's 8 divide it, and the
/// scratch layout rounds to it, so that layout is the same for both.
const WIDEST_LANES: usize = 16;

use super::SimdLevel;

/// Positions in a transformed 4x4 tile.
const POSITIONS: usize = 16;

/// `[filters, channels, 3, 3]` weights transformed to `G g Gᵀ`, stored `[position][channel]
/// [filter]`.
pub fn transform_weights(weight: &[f32], filters: usize, channels: usize) -> Vec<f32> {
    const G: [[f32; 3]; 4] = [
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.0, 0.0, 1.0],
    ];
    let mut transformed = vec![0f32; POSITIONS * channels * filters];
    for (index, g) in weight.chunks_exact(9).enumerate() {
        let (filter, channel) = (index / channels, index % channels);
        // G g (4 x 3), then (G g) Gᵀ (4 x 4).
        let mut gg = [[0f32; 3]; 4];
        for (row, out) in gg.iter_mut().enumerate() {
            for (column, out) in out.iter_mut().enumerate() {
                *out = (0..3).map(|k| G[row][k] * g[k * 3 + column]).sum();
            }
        }
        for row in 0..4 {
            for column in 0..4 {
                let value: f32 = (0..3).map(|k| gg[row][k] * G[column][k]).sum();
                transformed[((row * 4 + column) * channels + channel) * filters + filter] = value;
            }
        }
    }
    transformed
}

/// Sizes of one call: `images` images of `[channels, height, width]`.
#[derive(Debug, Clone, Copy)]
pub struct TileShape {
    pub images: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub filters: usize,
}

impl TileShape {
    /// Tiles (and pooled values) per image and filter.
    fn image_tiles(&self) -> usize {
        (self.height / 2) * (self.width / 2)
    }

    /// Tiles of all the images, rounded up to whole vectors of the widest version (so whole
    /// vectors of every version).
    fn tile_columns(&self) -> usize {
        (self.images * self.image_tiles()).next_multiple_of(WIDEST_LANES)
    }

    /// Floats per row of a padded plane: a zero column on the left, and room on the right for
    /// the `2 * lanes + 2` columns that the last vector of tiles in a row reads (34 at most).
    fn padded_width(&self) -> usize {
        2 * (self.width / 2).next_multiple_of(WIDEST_LANES) + 2 * WIDEST_LANES
    }

    fn padded_plane(&self) -> usize {
        (self.height + 2) * self.padded_width()
    }

    /// Floats of scratch space: one padded plane, the transformed tiles and their products.
    pub fn scratch_len(&self) -> usize {
        self.padded_plane() + POSITIONS * self.tile_columns() * (self.channels + self.filters)
    }
}

/// `images` images (`[images, channels, height, width]`) through the block: `output`
/// (`[images, filters, height / 2, width / 2]`) gets `relu(max_pool_2x2(conv3x3_same(image) +
/// bias))` and `winners` each value's window position (as `window::pool_relu_planes`).
/// `weights` comes from [`transform_weights`] and `scratch` holds [`TileShape::scratch_len`]
/// floats. Runs at the kernels' [`simd::level`](super::simd::level).
///
/// # Panics
/// At [`SimdLevel::Scalar`]: there is no scalar version, callers check the level first.
pub fn forward(
    images: &[f32],
    shape: TileShape,
    parameters: (&[f32], &[f32]),
    scratch: &mut [f32],
    output: &mut [f32],
    winners: &mut [u8],
) {
    forward_at(
        super::simd::level(),
        images,
        shape,
        parameters,
        scratch,
        output,
        winners,
    );
}

/// [`forward`] with the instructions of `level`.
///
/// # Panics
/// When `level` is [`SimdLevel::Scalar`] or wider than [`SimdLevel::detected`].
fn forward_at(
    level: SimdLevel,
    images: &[f32],
    shape: TileShape,
    (weights, bias): (&[f32], &[f32]),
    scratch: &mut [f32],
    output: &mut [f32],
    winners: &mut [u8],
) {
    let TileShape {
        images: count,
        channels,
        height,
        width,
        filters,
    } = shape;
    assert!(
        images.len() == count * channels * height * width
            && weights.len() == POSITIONS * channels * filters
            && bias.len() == filters
            && scratch.len() >= shape.scratch_len()
            && output.len() == count * filters * shape.image_tiles()
            && winners.len() == output.len(),
        "winograd::forward: buffers do not match their shapes"
    );
    assert!(
        level != SimdLevel::Scalar && level <= SimdLevel::detected(),
        "winograd::forward needs AVX2 or AVX-512, and a CPU that has it (asked for {level}, the \
         CPU has {})",
        SimdLevel::detected()
    );
    if output.is_empty() {
        return;
    }
    let (padded, rest) = scratch.split_at_mut(shape.padded_plane());
    let (transformed, rest) = rest.split_at_mut(POSITIONS * channels * shape.tile_columns());
    let products = &mut rest[..POSITIONS * filters * shape.tile_columns()];
    match level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => {
            // SAFETY: for all three calls, the CPU has AVX-512 F, BW and VL (the level is
            // `Avx512` and at most the detected one, asserted above), and the buffers have the
            // sizes each function documents (asserted above, and split here).
            unsafe {
                avx512::transform_input(images, shape, padded, transformed);
                avx512::multiply(transformed, weights, shape, products);
                avx512::transform_output_and_pool(products, shape, bias, output, winners);
            }
        }
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => {
            // SAFETY: for all three calls, the CPU has AVX2 and FMA (the level is `Avx2` and at
            // most the detected one, asserted above), and the buffers have the sizes each
            // function documents (asserted above, and split here).
            unsafe {
                avx2::transform_input(images, shape, padded, transformed);
                avx2::multiply(transformed, weights, shape, products);
                avx2::transform_output_and_pool(products, shape, bias, output, winners);
            }
        }
        // Scalar is refused above, and off x86-64 no wider level is ever detected.
        _ => unreachable!("winograd::forward at {level}: {padded:p} {transformed:p} {products:p}"),
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(test)]
mod tests;
