//! Winograd's F(2x2, 3x3) for the block with AVX2: 8 tiles a vector.

use std::arch::x86_64::*;

use super::{POSITIONS, TileShape};
use crate::kernels::window::avx2::{lanes, load_pairs, pool_window, position_bytes};

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
            let at = position_bytes(at);
            let last = (first + LANES).min(tiles);
            let image = first / image_tiles;
            if last == first + LANES && last <= (image + 1) * image_tiles {
                // All 8 tiles in one image: one store each.
                let start = (image * filters + filter) * image_tiles + first - image * image_tiles;
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
