//! Hand-written CPU kernels, registered with burn as backend extensions so they run under
//! burn's `Device`, autodiff and backend dispatch like its own operations.

mod conv;
mod pool;

pub use conv::conv3x3_same;
pub use pool::max_pool_2x2;

use burn::backend::flex::FlexTensor;

/// The elements of a contiguous f32 flex tensor, from its own offset (a narrowed view does not
/// start at the beginning of its buffer).
fn contiguous_f32(tensor: &FlexTensor) -> &[f32] {
    tensor
        .as_slice::<f32>()
        .expect("kernels are given contiguous f32 tensors")
}
