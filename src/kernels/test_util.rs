//! What the kernels' tests (and training's) share: reading values back, comparing them with
//! burn's, and running work on a pool of a given size.

use burn::tensor::Tensor;

use super::simd::SimdLevel;

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

/// Whether this CPU has `level`, for tests of code at that level. CI's machine has AVX-512 and
/// must run every such test, so there a missing level fails instead of skipping.
pub fn cpu_has(level: SimdLevel) -> bool {
    if level <= SimdLevel::detected() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "this test needs a CPU with {level}, as CI's has"
    );
    eprintln!("skipped at {level}: this CPU does not have it");
    false
}
