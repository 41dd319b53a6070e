//! What the kernels' tests share: reading values back, and comparing them with burn's.

use burn::tensor::Tensor;

/// The tensor's values, row-major.
pub fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor.into_data().into_vec::<f32>().expect("f32 values")
}

/// `ours` within float error of `burns` (1e-4, relative above 1), value by value.
pub fn assert_close(ours: &[f32], burns: &[f32], what: &str) {
    assert_eq!(ours.len(), burns.len(), "{what}");
    for (index, (a, b)) in ours.iter().zip(burns).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
            "{what}[{index}]: {a} vs {b}"
        );
    }
}
