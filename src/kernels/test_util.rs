//! What the kernels' tests (and training's) share: reading values back, comparing them with
//! burn's, and running work on a pool of a given size.

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

/// `work` run on a new pool of `threads` threads, for results that must not depend on the count.
pub fn on_threads<R: Send>(threads: usize, work: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a thread pool")
        .install(work)
}
