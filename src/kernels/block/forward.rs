//! The block's forward pass: a task of images at a time, convolved by the path
//! [`BlockShape::forward_path`] picks, pooled, with the winning window positions recorded for
//! the backward pass.

use std::cell::RefCell;

use rayon::prelude::*;

use super::{BlockShape, ForwardPath, direct, image_of, with_scratch};
use crate::kernels::im2col::{im2col, matmul, row_major};
use crate::kernels::min_tasks_per_thread;
use crate::kernels::window::{CLAMPED, pool_relu_planes};
use crate::kernels::winograd;

pub(super) fn forward_f32(
    x: &[f32],
    weight: &[f32],
    bias: &[f32],
    shape: BlockShape,
    record_winners: bool,
) -> (Vec<f32>, Vec<u8>) {
    let output_len = shape.output_image_len();
    let mut output = vec![0f32; shape.batch * output_len];
    let mut winners = vec![CLAMPED; if record_winners { output.len() } else { 0 }];
    if output.is_empty() {
        return (output, winners);
    }
    let images_per_task = shape.images_per_task();
    let task_len = images_per_task * output_len;
    let path = shape.forward_path();
    let winograd_weights = (path == ForwardPath::Winograd)
        .then(|| winograd::transform_weights(weight, shape.filters, shape.channels));
    let winner_chunks: Vec<Option<&mut [u8]>> = if record_winners {
        winners.chunks_mut(task_len).map(Some).collect()
    } else {
        (0..shape.batch.div_ceil(images_per_task))
            .map(|_| None)
            .collect()
    };
    output
        .par_chunks_mut(task_len)
        .zip(winner_chunks)
        .enumerate()
        .with_min_len(min_tasks_per_thread())
        .for_each(|(task, (outputs, winners))| {
            // Inference has no use for the winners: they go to a small buffer and are dropped.
            let mut discarded = Vec::new();
            let winners = match winners {
                Some(winners) => winners,
                None => {
                    discarded.resize(outputs.len(), CLAMPED);
                    &mut discarded
                }
            };
            let first = task * images_per_task;
            match path {
                ForwardPath::Winograd => {
                    let weights = winograd_weights.as_deref().expect("transformed weights");
                    winograd_task(x, first, shape, (weights, bias), outputs, winners);
                }
                ForwardPath::Direct => {
                    direct_task(x, first, shape, (weight, bias), outputs, winners);
                }
                ForwardPath::Im2col => {
                    im2col_task(x, first, shape, (weight, bias), outputs, winners);
                }
            }
        });
    (output, winners)
}

/// A single-channel task's images (from image `first` of the batch) through
/// [`direct::image_forward`], one at a time.
fn direct_task(
    x: &[f32],
    first: usize,
    shape: BlockShape,
    parameters: (&[f32], &[f32]),
    outputs: &mut [f32],
    winners: &mut [u8],
) {
    let output_len = shape.output_image_len();
    let images = outputs
        .chunks_exact_mut(output_len)
        .zip(winners.chunks_exact_mut(output_len));
    for (image, (output, winners)) in images.enumerate() {
        let pixels = image_of(x, first + image, shape.image_len());
        direct::image_forward(pixels, shape, parameters, output, winners);
    }
}

/// Convolves a task's images (from image `first` of the batch) into a scratch matrix by im2col
/// and `gemm`, then pools it into `outputs` and `winners`.
fn im2col_task(
    x: &[f32],
    first: usize,
    shape: BlockShape,
    (weight, bias): (&[f32], &[f32]),
    outputs: &mut [f32],
    winners: &mut [u8],
) {
    let (plane, output_len) = (shape.plane(), shape.output_image_len());
    let images = outputs.len() / output_len;
    let sides = [shape.height, shape.width];
    with_scratch(shape, images, |scratch| {
        let columns = scratch.columns;
        let image_pixels = |image| image_of(x, first + image, shape.image_len());
        for image in 0..images {
            let col = &mut scratch.col[image * plane..];
            im2col(image_pixels(image), shape.height, shape.width, col, columns);
        }
        for (filter_row, &filter_bias) in scratch.conv.chunks_mut(columns).zip(bias) {
            filter_row.fill(filter_bias);
        }
        // conv (filters x columns) += weight (filters x taps) · col (taps x columns)
        matmul(
            [shape.filters, columns, shape.taps()],
            (scratch.conv, row_major(columns)),
            (weight, row_major(shape.taps())),
            (scratch.col, row_major(columns)),
        );
        let images = outputs
            .chunks_mut(output_len)
            .zip(winners.chunks_mut(output_len));
        for (image, (output, winners)) in images.enumerate() {
            let conv = &scratch.conv[image * plane..];
            pool_relu_planes(conv, columns, sides, output, winners);
        }
    })
}

thread_local! {
    /// Each thread's Winograd scratch space, kept between calls like [`BUFFERS`].
    static WINOGRAD_SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// A task's images (from image `first` of the batch) through [`winograd::forward`].
fn winograd_task(
    x: &[f32],
    first: usize,
    shape: BlockShape,
    parameters: (&[f32], &[f32]),
    outputs: &mut [f32],
    winners: &mut [u8],
) {
    let images = outputs.len() / shape.output_image_len();
    let tiles = winograd::TileShape {
        images,
        channels: shape.channels,
        height: shape.height,
        width: shape.width,
        filters: shape.filters,
    };
    let pixels = &x[first * shape.image_len()..][..images * shape.image_len()];
    WINOGRAD_SCRATCH.with_borrow_mut(|scratch| {
        if scratch.len() < tiles.scratch_len() {
            scratch.resize(tiles.scratch_len(), 0.0);
        }
        winograd::forward(pixels, tiles, parameters, scratch, outputs, winners);
    });
}
