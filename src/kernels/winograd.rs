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
mod avx512 {
    use std::arch::x86_64::*;

    use super::{POSITIONS, TileShape};
    use crate::kernels::window::avx512::{load_pairs, pool_window};

    /// Tiles per vector.
    const LANES: usize = super::WIDEST_LANES;

    /// Lanes `0..count` set.
    fn lanes(count: usize) -> __mmask16 {
        ((1u32 << count.min(LANES)) - 1) as __mmask16
    }

    /// `Bᵀ d B` of every tile `d`, stored `[position][channel][tile]` (tiles of all images in a
    /// row, `shape.tile_columns()` to a row; the columns past the last tile are not written).
    ///
    /// # Safety
    /// The CPU must have AVX-512 F; `padded` must hold `shape.padded_plane()` floats, and
    /// `transformed` `POSITIONS * channels * tile_columns`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn transform_input(
        images: &[f32],
        shape: TileShape,
        padded: &mut [f32],
        transformed: &mut [f32],
    ) {
        let (height, width) = (shape.height, shape.width);
        let (tiles_high, tiles_wide) = (height / 2, width / 2);
        let (padded_width, columns) = (shape.padded_width(), shape.tile_columns());
        let plane = height * width;
        // The zero border stays zero: only the inside is written below.
        padded.fill(0.0);
        for (plane_index, pixels) in images.chunks_exact(plane).enumerate() {
            let (image, channel) = (plane_index / shape.channels, plane_index % shape.channels);
            for (y, row) in pixels.chunks_exact(width).enumerate() {
                padded[(y + 1) * padded_width + 1..][..width].copy_from_slice(row);
            }
            for tile_y in 0..tiles_high {
                for first in (0..tiles_wide).step_by(LANES) {
                    let count = (tiles_wide - first).min(LANES);
                    // Rows 2 * tile_y .. + 4 of the padded plane, each as the tiles' columns
                    // 0..4: even and odd columns from the tiles' first column, and from two
                    // further on.
                    let mut d = [[_mm512_setzero_ps(); 4]; 4];
                    for (row, d) in d.iter_mut().enumerate() {
                        let start = (2 * tile_y + row) * padded_width + 2 * first;
                        let read = &padded[start..start + 2 * LANES + 2];
                        // SAFETY: `read` holds the 2 * 16 floats read from its start, and
                        // those from two floats on.
                        let ((d0, d1), (d2, d3)) = unsafe {
                            (
                                load_pairs(read.as_ptr(), LANES),
                                load_pairs(read.as_ptr().add(2), LANES),
                            )
                        };
                        *d = [d0, d1, d2, d3];
                    }
                    // Bᵀ d on rows, then on columns: (d0 - d2, d1 + d2, d2 - d1, d1 - d3).
                    let transform = |[d0, d1, d2, d3]: [__m512; 4]| {
                        [
                            _mm512_sub_ps(d0, d2),
                            _mm512_add_ps(d1, d2),
                            _mm512_sub_ps(d2, d1),
                            _mm512_sub_ps(d1, d3),
                        ]
                    };
                    let rows = d.map(transform);
                    let tile = image * tiles_high * tiles_wide + tile_y * tiles_wide + first;
                    for column in 0..4 {
                        let values = transform(rows.map(|row| row[column]));
                        for (row, value) in values.into_iter().enumerate() {
                            let position = row * 4 + column;
                            let start = (position * shape.channels + channel) * columns + tile;
                            let out = &mut transformed[start..start + count];
                            // SAFETY: the mask writes lanes `0..count`, which `out` holds.
                            unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr(), lanes(count), value) };
                        }
                    }
                }
            }
        }
    }

    /// Filters summed together, each over two vectors of tiles: 16 sums in registers.
    const FILTERS_AT_ONCE: usize = 8;

    /// For each position `p`: `products[p] (filters x tiles) = weights[p]ᵀ (filters x channels)
    /// · transformed[p] (channels x tiles)`, `tile_columns` tiles to a row.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F. (Every read and write is bounds-checked.)
    #[target_feature(enable = "avx512f")]
    pub unsafe fn multiply(
        transformed: &[f32],
        weights: &[f32],
        shape: TileShape,
        products: &mut [f32],
    ) {
        let (channels, filters, columns) = (shape.channels, shape.filters, shape.tile_columns());
        for position in 0..POSITIONS {
            let left = &weights[position * channels * filters..][..channels * filters];
            let right = &transformed[position * channels * columns..][..channels * columns];
            let out = &mut products[position * filters * columns..][..filters * columns];
            for first_filter in (0..filters).step_by(FILTERS_AT_ONCE) {
                let group = (filters - first_filter).min(FILTERS_AT_ONCE);
                // A last group of fewer filters repeats its last filter and keeps the real ones.
                let mut filter_of = [0usize; FILTERS_AT_ONCE];
                for (index, filter) in filter_of.iter_mut().enumerate() {
                    *filter = (first_filter + index).min(filters - 1);
                }
                let mut first_tile = 0;
                while first_tile < columns {
                    let vectors = if columns - first_tile >= 2 * LANES {
                        2
                    } else {
                        1
                    };
                    let mut sums = [[_mm512_setzero_ps(); 2]; FILTERS_AT_ONCE];
                    for channel in 0..channels {
                        let tiles = &right[channel * columns + first_tile..][..vectors * LANES];
                        // SAFETY: `tiles` holds the 16 or 32 floats read.
                        let values = unsafe {
                            [
                                _mm512_loadu_ps(tiles.as_ptr()),
                                _mm512_loadu_ps(tiles.as_ptr().add((vectors - 1) * LANES)),
                            ]
                        };
                        let weights = &left[channel * filters..][..filters];
                        for (sums, &filter) in sums.iter_mut().zip(&filter_of) {
                            let weight = _mm512_set1_ps(weights[filter]);
                            sums[0] = _mm512_fmadd_ps(weight, values[0], sums[0]);
                            sums[1] = _mm512_fmadd_ps(weight, values[1], sums[1]);
                        }
                    }
                    for (index, sums) in sums.iter().enumerate().take(group) {
                        let start = (first_filter + index) * columns + first_tile;
                        let row = &mut out[start..start + vectors * LANES];
                        // SAFETY: `row` holds the 16 or 32 floats written.
                        unsafe {
                            _mm512_storeu_ps(row.as_mut_ptr(), sums[0]);
                            if vectors == 2 {
                                _mm512_storeu_ps(row.as_mut_ptr().add(LANES), sums[1]);
                            }
                        }
                    }
                    first_tile += vectors * LANES;
                }
            }
        }
    }

    /// `Aᵀ m A + bias` of every tile's products `m`, pooled and clamped at zero into `output`
    /// and `winners` (`[image, filter, tile]`).
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW and VL; `output` and `winners` must hold one value per
    /// image, filter and tile, and `products` `POSITIONS * filters * tile_columns` floats.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn transform_output_and_pool(
        products: &[f32],
        shape: TileShape,
        bias: &[f32],
        output: &mut [f32],
        winners: &mut [u8],
    ) {
        let (filters, columns) = (shape.filters, shape.tile_columns());
        let image_tiles = shape.image_tiles();
        let tiles = shape.images * image_tiles;
        assert!(output.len() == tiles * filters && winners.len() == output.len());
        assert!(products.len() >= POSITIONS * filters * columns);
        for (filter, &bias) in bias.iter().enumerate() {
            let bias = _mm512_set1_ps(bias);
            for first in (0..tiles).step_by(LANES) {
                let mut m = [_mm512_setzero_ps(); POSITIONS];
                for (position, m) in m.iter_mut().enumerate() {
                    let values = &products[(position * filters + filter) * columns + first..];
                    // SAFETY: `first < tiles <= columns - 16 + 1`, rounded to whole vectors, so
                    // the 16 floats read are in the filter's row of products.
                    *m = unsafe { _mm512_loadu_ps(values[..LANES].as_ptr()) };
                }
                // Aᵀ m: rows (m0 + m1 + m2, m1 - m2 - m3); then the same on columns.
                let at = |row: usize, column: usize| m[row * 4 + column];
                let sum3 = |a, b, c| _mm512_add_ps(_mm512_add_ps(a, b), c);
                let diff3 = |a, b, c| _mm512_sub_ps(_mm512_sub_ps(a, b), c);
                let mut top = [_mm512_setzero_ps(); 4];
                let mut bottom = [_mm512_setzero_ps(); 4];
                for column in 0..4 {
                    top[column] = sum3(at(0, column), at(1, column), at(2, column));
                    bottom[column] = diff3(at(1, column), at(2, column), at(3, column));
                }
                let window = [
                    sum3(top[0], top[1], top[2]),
                    diff3(top[1], top[2], top[3]),
                    sum3(bottom[0], bottom[1], bottom[2]),
                    diff3(bottom[1], bottom[2], bottom[3]),
                ]
                .map(|value| _mm512_add_ps(value, bias));
                let (pooled, at) = pool_window(window[0], window[1], window[2], window[3]);
                let at = _mm512_cvtepi32_epi8(at);
                // The 16 tiles may belong to two images (or more, for tiny images), whose
                // planes for this filter are apart: one masked store per image.
                let last = (first + LANES).min(tiles);
                let mut tile = first;
                while tile < last {
                    let image = tile / image_tiles;
                    let end = ((image + 1) * image_tiles).min(last);
                    let wanted = lanes(end - first) & !lanes(tile - first);
                    // Output index of lane `l`: plane start + (first + l - image start).
                    let plane = (image * filters + filter) * image_tiles;
                    let written =
                        plane + (tile - image * image_tiles)..plane + (end - image * image_tiles);
                    let (values, positions) = (&mut output[written.clone()], &mut winners[written]);
                    let shift = tile - first;
                    // SAFETY: lane `l` of the masked stores lands at `values[l - shift]` (and
                    // `positions[l - shift]`), and the mask sets exactly the lanes
                    // `shift..shift + values.len()`; the base pointers, `shift` elements before
                    // the slices, are only formed with `wrapping_sub` and never read through.
                    unsafe {
                        _mm512_mask_storeu_ps(
                            values.as_mut_ptr().wrapping_sub(shift),
                            wanted,
                            pooled,
                        );
                        _mm_mask_storeu_epi8(
                            positions.as_mut_ptr().wrapping_sub(shift).cast(),
                            wanted,
                            at,
                        );
                    }
                    tile = end;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{POSITIONS, TileShape};
    use crate::kernels::window::avx2::{lanes, load_pairs, pool_window};

    /// Tiles per vector.
    const LANES: usize = 8;

    /// `Bᵀ d B` of every tile `d`, stored as [`super::avx512::transform_input`] stores them,
    /// except that the columns past the last tile may be written too.
    ///
    /// # Safety
    /// The CPU must have AVX2; `padded` must hold `shape.padded_plane()` floats, and
    /// `transformed` `POSITIONS * channels * tile_columns`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn transform_input(
        images: &[f32],
        shape: TileShape,
        padded: &mut [f32],
        transformed: &mut [f32],
    ) {
        let (height, width) = (shape.height, shape.width);
        let (tiles_high, tiles_wide) = (height / 2, width / 2);
        let (padded_width, columns) = (shape.padded_width(), shape.tile_columns());
        let plane = height * width;
        // The zero border stays zero: only the inside is written below.
        padded.fill(0.0);
        for (plane_index, pixels) in images.chunks_exact(plane).enumerate() {
            let (image, channel) = (plane_index / shape.channels, plane_index % shape.channels);
            for (y, row) in pixels.chunks_exact(width).enumerate() {
                padded[(y + 1) * padded_width + 1..][..width].copy_from_slice(row);
            }
            for tile_y in 0..tiles_high {
                for first in (0..tiles_wide).step_by(LANES) {
                    let count = (tiles_wide - first).min(LANES);
                    // Rows 2 * tile_y .. + 4 of the padded plane, each as the tiles' columns
                    // 0..4: even and odd columns from the tiles' first column, and from two
                    // further on.
                    let mut d = [[_mm256_setzero_ps(); 4]; 4];
                    for (row, d) in d.iter_mut().enumerate() {
                        let start = (2 * tile_y + row) * padded_width + 2 * first;
                        let read = &padded[start..start + 2 * LANES + 2];
                        // SAFETY: `read` holds the 2 * 8 floats read from its start, and those
                        // from two floats on.
                        let ((d0, d1), (d2, d3)) = unsafe {
                            (
                                load_pairs(read.as_ptr(), LANES),
                                load_pairs(read.as_ptr().add(2), LANES),
                            )
                        };
                        *d = [d0, d1, d2, d3];
                    }
                    // Bᵀ d on rows, then on columns: (d0 - d2, d1 + d2, d2 - d1, d1 - d3).
                    let transform = |[d0, d1, d2, d3]: [__m256; 4]| {
                        [
                            _mm256_sub_ps(d0, d2),
                            _mm256_add_ps(d1, d2),
                            _mm256_sub_ps(d2, d1),
                            _mm256_sub_ps(d1, d3),
                        ]
                    };
                    let rows = d.map(transform);
                    let tile = image * tiles_high * tiles_wide + tile_y * tiles_wide + first;
                    for column in 0..4 {
                        let values = transform(rows.map(|row| row[column]));
                        for (row, value) in values.into_iter().enumerate() {
                            let position = row * 4 + column;
                            let start = (position * shape.channels + channel) * columns;
                            let out = &mut transformed[start..start + columns][tile..];
                            if out.len() >= LANES {
                                // A whole vector (AVX2's masked store is slow on some CPUs):
                                // its lanes past `count` fall on tiles that later vectors
                                // overwrite, as each row of `transformed` is written in tile
                                // order, or on the columns past the last tile.
                                // SAFETY: `out` holds the 8 floats written.
                                unsafe { _mm256_storeu_ps(out.as_mut_ptr(), value) };
                            } else {
                                // SAFETY: `maskstore` writes only the lanes `0..count` its mask
                                // sets, tiles `tile..tile + count` of this row, which `out`
                                // holds (`tile + count <= tiles <= columns`).
                                unsafe {
                                    _mm256_maskstore_ps(out.as_mut_ptr(), lanes(count), value);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Filters summed together, each over [`VECTORS_AT_ONCE`] vectors of tiles: 8 sums in
    /// registers, of the 16 there are. Measured against 4 x 3 (which LLVM spills), 3 x 3, 5 x 2,
    /// 6 x 2 and 8 x 1 on the network's 16->32 block (1 thread, Zen 4 capped at AVX2): the
    /// fastest forward pass, and 32 filters leave no group short.
    const FILTERS_AT_ONCE: usize = 4;

    /// Vectors of 8 tiles per filter summed together.
    const VECTORS_AT_ONCE: usize = 2;

    /// For each position `p`: `products[p] (filters x tiles) = weights[p]ᵀ (filters x channels)
    /// · transformed[p] (channels x tiles)`, `tile_columns` tiles to a row.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA. (Every read and write is bounds-checked.)
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn multiply(
        transformed: &[f32],
        weights: &[f32],
        shape: TileShape,
        products: &mut [f32],
    ) {
        multiply_by::<FILTERS_AT_ONCE, VECTORS_AT_ONCE>(transformed, weights, shape, products);
    }

    /// [`multiply`] with the sums of `F` filters over `V` vectors of tiles in registers.
    #[target_feature(enable = "avx2,fma")]
    fn multiply_by<const F: usize, const V: usize>(
        transformed: &[f32],
        weights: &[f32],
        shape: TileShape,
        products: &mut [f32],
    ) {
        let (channels, filters, columns) = (shape.channels, shape.filters, shape.tile_columns());
        // A group's weights, channel by channel.
        let mut panel = vec![[0f32; F]; channels];
        for position in 0..POSITIONS {
            let left = &weights[position * channels * filters..][..channels * filters];
            let right = &transformed[position * channels * columns..][..channels * columns];
            let out = &mut products[position * filters * columns..][..filters * columns];
            for first_filter in (0..filters).step_by(F) {
                let group = (filters - first_filter).min(F);
                // A last group of fewer filters repeats its last filter, and keeps the sums of
                // the real ones only.
                for (weights, panel) in left.chunks_exact(filters).zip(&mut panel) {
                    for (index, weight) in panel.iter_mut().enumerate() {
                        *weight = weights[(first_filter + index).min(filters - 1)];
                    }
                }
                let rows = &mut out[first_filter * columns..][..group * columns];
                // `columns` is a multiple of 8: whole vectors, `V` at a time, then one at a time.
                let mut first_tile = 0;
                while columns - first_tile >= V * LANES {
                    block::<F, V>(&panel, right, columns, first_tile, rows);
                    first_tile += V * LANES;
                }
                while first_tile < columns {
                    block::<F, 1>(&panel, right, columns, first_tile, rows);
                    first_tile += LANES;
                }
            }
        }
    }

    /// `V` vectors of tiles from `first_tile` of each row of `rows` (a group's filters, up to
    /// `F`, `columns` tiles to a row): the sum over channels of `panel[channel][filter]` times
    /// the channel's row of `right`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn block<const F: usize, const V: usize>(
        panel: &[[f32; F]],
        right: &[f32],
        columns: usize,
        first_tile: usize,
        rows: &mut [f32],
    ) {
        let mut sums = [[_mm256_setzero_ps(); V]; F];
        for (channel, weights) in panel.iter().enumerate() {
            let tiles = &right[channel * columns + first_tile..][..V * LANES];
            let mut values = [_mm256_setzero_ps(); V];
            for (vector, value) in values.iter_mut().enumerate() {
                // SAFETY: `tiles` holds the `V * 8` floats read.
                *value = unsafe { _mm256_loadu_ps(tiles.as_ptr().add(vector * LANES)) };
            }
            for (sums, &weight) in sums.iter_mut().zip(weights) {
                let weight = _mm256_set1_ps(weight);
                for (sum, &value) in sums.iter_mut().zip(&values) {
                    *sum = _mm256_fmadd_ps(weight, value, *sum);
                }
            }
        }
        for (row, sums) in rows.chunks_exact_mut(columns).zip(&sums) {
            let out = &mut row[first_tile..][..V * LANES];
            for (vector, sum) in sums.iter().enumerate() {
                // SAFETY: `out` holds the `V * 8` floats written.
                unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(vector * LANES), *sum) };
            }
        }
    }

    /// `Aᵀ m A + bias` of every tile's products `m`, pooled and clamped at zero into `output`
    /// and `winners` (`[image, filter, tile]`).
    ///
    /// # Safety
    /// The CPU must have AVX2; `output` and `winners` must hold one value per image, filter
    /// and tile, and `products` `POSITIONS * filters * tile_columns` floats.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn transform_output_and_pool(
        products: &[f32],
        shape: TileShape,
        bias: &[f32],
        output: &mut [f32],
        winners: &mut [u8],
    ) {
        let (filters, columns) = (shape.filters, shape.tile_columns());
        let image_tiles = shape.image_tiles();
        let tiles = shape.images * image_tiles;
        assert!(output.len() == tiles * filters && winners.len() == output.len());
        assert!(products.len() >= POSITIONS * filters * columns);
        for (filter, &bias) in bias.iter().enumerate() {
            let bias = _mm256_set1_ps(bias);
            for first in (0..tiles).step_by(LANES) {
                let mut m = [_mm256_setzero_ps(); POSITIONS];
                for (position, m) in m.iter_mut().enumerate() {
                    // `first + 8 <= columns`: `first` is a multiple of 8 below `tiles`, and
                    // `columns` a multiple of 8 at least `tiles`.
                    let start = (position * filters + filter) * columns + first;
                    let values = &products[start..start + LANES];
                    // SAFETY: `values` holds the 8 floats read.
                    *m = unsafe { _mm256_loadu_ps(values.as_ptr()) };
                }
                // Aᵀ m: rows (m0 + m1 + m2, m1 - m2 - m3); then the same on columns.
                let at = |row: usize, column: usize| m[row * 4 + column];
                let sum3 = |a, b, c| _mm256_add_ps(_mm256_add_ps(a, b), c);
                let diff3 = |a, b, c| _mm256_sub_ps(_mm256_sub_ps(a, b), c);
                let mut top = [_mm256_setzero_ps(); 4];
                let mut bottom = [_mm256_setzero_ps(); 4];
                for column in 0..4 {
                    top[column] = sum3(at(0, column), at(1, column), at(2, column));
                    bottom[column] = diff3(at(1, column), at(2, column), at(3, column));
                }
                let window = [
                    sum3(top[0], top[1], top[2]),
                    diff3(top[1], top[2], top[3]),
                    sum3(bottom[0], bottom[1], bottom[2]),
                    diff3(bottom[1], bottom[2], bottom[3]),
                ]
                .map(|value| _mm256_add_ps(value, bias));
                let (pooled, at) = pool_window(window[0], window[1], window[2], window[3]);
                // The positions as bytes in lane order: 0-3 and `CLAMPED` (255) pass both
                // saturating packs unchanged.
                let at = _mm_packs_epi32(
                    _mm256_castsi256_si128(at),
                    _mm256_extracti128_si256::<1>(at),
                );
                let at = (_mm_cvtsi128_si64(_mm_packus_epi16(at, at)) as u64).to_le_bytes();
                let last = (first + LANES).min(tiles);
                let image = first / image_tiles;
                if last == first + LANES && last <= (image + 1) * image_tiles {
                    // All 8 tiles in one image: one store each.
                    let start =
                        (image * filters + filter) * image_tiles + first - image * image_tiles;
                    let values = &mut output[start..start + LANES];
                    // SAFETY: `values` holds the 8 floats written.
                    unsafe { _mm256_storeu_ps(values.as_mut_ptr(), pooled) };
                    winners[start..start + LANES].copy_from_slice(&at);
                    continue;
                }
                // The last tiles, or tiles of two images (or more, for tiny images), whose
                // planes for this filter are apart: image by image, through an array.
                let mut values = [0f32; LANES];
                // SAFETY: `values` holds the 8 floats written.
                unsafe { _mm256_storeu_ps(values.as_mut_ptr(), pooled) };
                let mut tile = first;
                while tile < last {
                    let image = tile / image_tiles;
                    let end = ((image + 1) * image_tiles).min(last);
                    let plane = (image * filters + filter) * image_tiles;
                    let written =
                        plane + (tile - image * image_tiles)..plane + (end - image * image_tiles);
                    let read = tile - first..end - first;
                    output[written.clone()].copy_from_slice(&values[read.clone()]);
                    winners[written].copy_from_slice(&at[read]);
                    tile = end;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let levels = [SimdLevel::Avx2, SimdLevel::Avx512];
        for level in levels {
            if level > SimdLevel::detected() {
                // CI's machine has AVX-512 and must test both versions.
                assert!(
                    std::env::var_os("CI").is_none(),
                    "this test needs a CPU with {level}, as CI's has"
                );
                eprintln!("skipped {level}: this CPU does not have it");
            }
        }
        for level in levels
            .into_iter()
            .filter(|&level| level <= SimdLevel::detected())
        {
            matches_the_direct_convolution_at(level);
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
            let case = format!(
                "{level}: {images} images of {channels}x{height}x{width}, {filters} filters"
            );
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
}
