//! Winograd's F(2x2, 3x3) for the block with AVX-512: 16 tiles a vector.

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
                    _mm512_mask_storeu_ps(values.as_mut_ptr().wrapping_sub(shift), wanted, pooled);
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
