//! Hand-written CPU kernels, registered with burn as a backend extension so they run under
//! burn's `Device`, autodiff and backend dispatch like its own operations.
//!
//! The network's two feature blocks (3x3 convolution with bias, 2x2 max pooling, ReLU) are one
//! operation here, with its own forward and backward pass: as separate operations on burn-flex,
//! the convolution's backward ran flex's generic conv3d / conv_transpose3d paths, and much of a
//! step went to writing and re-reading convolution outputs that only feed a pooling.
//!
//! - Forward: a few images at a time are unfolded (im2col) and convolved by one `gemm` call into
//!   a per-thread buffer, then pooled straight from it (AVX-512 or AVX2 where available), recording
//!   which position of each window won. With AVX-512 or AVX2, blocks of 8 or more input channels
//!   (the 16->32 layer) are convolved by Winograd's F(2x2, 3x3) instead, pooled inside its
//!   output transform (`winograd`), and single-channel blocks (the first layer) by a direct
//!   convolution of a vector of pooling windows at a time, pooled in registers (`block/direct`).
//! - Backward: only those winners, where ReLU let the value through, have a gradient (under a
//!   quarter of the convolution outputs), so instead of dense matrix products the kernel visits
//!   them and adds each one's contribution to the weight and input gradients, tap by tap, over
//!   pixel-major images; with 16 channels (the 16->32 layer) at AVX-512 or AVX2, a pixel is one or
//!   two vector registers and a filter's sums stay in registers across its windows
//!   (`block/visit16`). The first layer of a grayscale network, with one channel and no input
//!   gradient, reads each window's 4x4 pixels once instead (`block/single_channel`).
//! - Outputs that a kernel writes whole are not zero-filled first (`par_written`; the block's
//!   input gradient likewise): in test builds they start as NaN, so that the tests against
//!   burn's operations would catch any value left unwritten.
//!
//! Two more operations serve the rest of a training step. `linear` is a dense layer's
//! `x · weight + bias` with its backward pass, each product split into blocks of rows over the
//! thread pool (burn-flex runs products below 192³ multiply-adds on one thread). `adam_update`
//! is Adam's update of one parameter as a single parallel pass that also adds up the shards'
//! gradients as it reads them, bit-identical to burn's `Adam` on their sum (which burn-flex
//! runs as a dozen serial whole-tensor operations); `train::adam` steps every parameter with it.
//!
//! BENCHMARKS.md has the measurements: what each path buys ("Where the time goes") and when it
//! was measured.
//!
//! # Backends
//!
//! The hand-written kernel runs on the backends [`has_fused_kernel`] names, the one list of
//! them: Flex and NdArray, with or without autodiff. [`conv3x3_pool_relu`] asks it before
//! dispatching and runs [`conv3x3_pool_relu_composed`] (burn's own `conv2d`, `max_pool2d` and
//! `relu`) on every other backend, e.g. burn's GPU ("Cube") backends.
//!
//! # Vector instructions
//!
//! The pooling and the kernels' element loops have AVX-512, AVX2 and scalar versions, picked at
//! run time: the widest the CPU has, capped by the environment variable `MNIST_CNN_SIMD`
//! (`auto`, the default, `avx512`, `avx2` or `scalar`; read once per process). Asking for a
//! level the CPU lacks gives the widest one it has below it; a value that names no level is
//! reported on stderr and ignored. The pooling is identical at every level (the tests hold the
//! vector pooling to the scalar one bit for bit); at the scalar level the Winograd and direct
//! paths give way to im2col, whose sums round differently (within 1e-5). The variable is for testing and measuring
//! each path, e.g. `MNIST_CNN_SIMD=scalar cargo test --release --lib kernels`. It does not
//! reach `gemm`'s matrix products, which pick their own instructions.

// burn-ndarray is deprecated upstream; the product keeps it selectable, so its types are named here.
#![allow(deprecated)]

mod adam;
mod block;
mod dense;
mod im2col;
mod simd;
#[cfg(test)]
pub(crate) mod test_util;
mod transpose;
mod window;
mod winograd;

use std::cell::Cell;
use std::mem::MaybeUninit;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use burn::backend::flex::FlexTensor;
use burn::backend::ndarray::NdArrayTensor;
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, DispatchDevice, Flex, NdArray};
use burn::tensor::{DType, Device, TensorData};
use rayon::prelude::*;

pub use adam::{AdamStep, adam_update};
pub use block::{conv3x3_pool_relu, conv3x3_pool_relu_composed};
pub use dense::{linear, linear_composed};
pub use simd::{SIMD_ENV, SimdLevel, level as simd_level};

/// Environment variable that, set to `im2col`, makes every forward pass convolve by im2col and
/// `gemm` instead of by Winograd's algorithm where it applies: for measuring one against the
/// other in one binary, and for testing. Read once per process.
pub const CONV_ENV: &str = "MNIST_CNN_CONV";

fn conv_env_forces_im2col() -> bool {
    static FORCED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FORCED.get_or_init(|| std::env::var_os(CONV_ENV).is_some_and(|value| value == "im2col"))
}

thread_local! {
    /// Whether the kernels keep their tasks on this thread (see [`on_this_thread`]).
    static ON_THIS_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Runs `work` with the kernels' tasks kept on the calling thread: their parallel loops run
/// as plain loops, with no task handed to (or stolen by) another thread. For work that already
/// has a thread of its own, such as one of a training step's shards when there are as many
/// shards as threads: each thread then works on its own shard's data, and no thread waits on
/// another's task between two operations. The tasks and the order of their sums are the same
/// either way, so the results are too.
pub fn on_this_thread<R>(work: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            ON_THIS_THREAD.set(self.0);
        }
    }
    let _restore = Restore(ON_THIS_THREAD.replace(true));
    work()
}

/// The fewest tasks a kernel's parallel loop may hand to one thread at a time
/// (`with_min_len`): all of them inside [`on_this_thread`], else one.
fn min_tasks_per_thread() -> usize {
    if ON_THIS_THREAD.get() { usize::MAX } else { 1 }
}

/// A vector of `len` values of which parallel tasks each initialise one chunk of `chunk`
/// values (the last may be shorter; `write` gets its index), sparing the zero-fill that
/// `vec![0.0; len]` would spend on values that are all overwritten. In test builds the chunks
/// start as NaN rather than uninitialised, so that the kernels' tests against burn's
/// operations fail on any value left unwritten.
///
/// # Safety
/// `write` must initialise every value of each chunk it is given.
unsafe fn par_written(
    len: usize,
    chunk: usize,
    write: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync + Send,
) -> Vec<f32> {
    let mut values = Vec::with_capacity(len);
    to_be_written(&mut values, len)
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .with_min_len(min_tasks_per_thread())
        .for_each(|(index, chunk)| write(index, chunk));
    // SAFETY: the chunks cover the `len` values, and the caller guarantees that `write`
    // initialised each.
    unsafe { values.set_len(len) };
    values
}

/// The first `len` values of `values`' spare capacity (which must hold them), for a kernel
/// to write every one of before the caller sets the length: uninitialised, or NaN in test
/// builds, so that the tests against burn's operations fail on any value left unwritten.
fn to_be_written(values: &mut Vec<f32>, len: usize) -> &mut [MaybeUninit<f32>] {
    let spare = &mut values.spare_capacity_mut()[..len];
    if cfg!(test) {
        spare.fill(MaybeUninit::new(f32::NAN));
    }
    spare
}

/// Whether tensors on `device` run the hand-written kernels: the one list of backends that
/// have them (Flex and NdArray, also under autodiff). Every other backend computes
/// [`conv3x3_pool_relu`] with burn's own operations instead. The `#[backend_extension]` on
/// `ConvBlockOps` in block.rs must name the same backends, or the dispatch to a backend listed
/// here panics.
pub fn has_fused_kernel(device: &Device) -> bool {
    on_fused_backend(device.as_dispatch())
}

fn on_fused_backend(device: &DispatchDevice) -> bool {
    match device {
        DispatchDevice::Flex(_) | DispatchDevice::NdArray(_) => true,
        // The wrapped device decides: `Autodiff<B>` runs the kernel where `B` does.
        DispatchDevice::Autodiff(inner) => on_fused_backend(inner),
        // Unreachable with this crate's features, but burn adds variants under its backend
        // features (`Cube` for wgpu/cuda/rocm/cpu, `LibTorch`, `Remote`, ...).
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

/// Backends whose tensors live in host memory, so the kernels can read their values as f32
/// slices and hand results back as plain vectors.
pub trait HostTensors: Backend {
    /// Calls `read` with the tensor's values in row-major order.
    fn read_f32<R>(tensor: FloatTensor<Self>, read: impl FnOnce(&[f32]) -> R) -> R;

    fn from_f32(values: Vec<f32>, dims: &[usize]) -> FloatTensor<Self>;
}

impl HostTensors for Flex {
    fn read_f32<R>(tensor: FlexTensor, read: impl FnOnce(&[f32]) -> R) -> R {
        if tensor.dtype() == DType::F32 {
            let tensor = tensor.to_contiguous();
            // From the tensor's own offset: a narrowed view does not start its buffer.
            read(tensor.as_slice::<f32>().expect("a contiguous f32 tensor"))
        } else {
            read(&f32_values(tensor.into_data()))
        }
    }

    fn from_f32(values: Vec<f32>, dims: &[usize]) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(values, dims.to_vec()))
    }
}

impl HostTensors for NdArray {
    fn read_f32<R>(tensor: NdArrayTensor, read: impl FnOnce(&[f32]) -> R) -> R {
        // A contiguous f32 array is read in place; `into_data` would copy it element by element
        // whenever the array is shared (as weights are), which profiled at ~25% of a step.
        if let NdArrayTensor::F32(storage) = &tensor
            && let Some(values) = storage.view().as_slice()
        {
            return read(values);
        }
        let data = already_ready(NdArray::float_into_data(tensor))
            .expect("burn-ndarray reads tensors from memory");
        read(&f32_values(data))
    }

    fn from_f32(values: Vec<f32>, dims: &[usize]) -> NdArrayTensor {
        NdArrayTensor::from_data(TensorData::new(values, dims.to_vec()))
    }
}

fn f32_values(data: TensorData) -> Vec<f32> {
    data.convert::<f32>()
        .into_vec::<f32>()
        .expect("converted to f32")
}

/// burn-ndarray's reads are plain functions behind an async signature: the future is ready
/// when first polled.
fn already_ready<T>(future: impl Future<Output = T>) -> T {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(value) => value,
        Poll::Pending => unreachable!("burn-ndarray reads synchronously"),
    }
}

/// The machine's f32 matrix-product speed on the pool's threads, in GFLOP/s: each thread of
/// the pool multiplies its own 512x512 matrices with gemm's kernels, as the im2col path does,
/// and the best of `rounds` timed rounds counts. The reference for what the hand-written
/// kernels could reach (`bench` reports it).
pub fn gemm_peak_gflops(rounds: usize) -> f64 {
    const SIDE: usize = 512;
    const PRODUCTS: usize = 4;
    let threads = rayon::current_num_threads();
    let buffers: Vec<std::sync::Mutex<[Vec<f32>; 3]>> = (0..threads)
        .map(|_| {
            let matrix = |value: f32| vec![value; SIDE * SIDE];
            std::sync::Mutex::new([matrix(0.5), matrix(0.25), matrix(0.0)])
        })
        .collect();
    let strides = im2col::row_major(SIDE);
    let mut best = f64::INFINITY;
    // Round 0 warms up (pages, caches, the threads themselves) and is not counted.
    for round in 0..=rounds.max(1) {
        let started = std::time::Instant::now();
        rayon::broadcast(|context| {
            let mut guard = buffers[context.index()]
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let [lhs, rhs, dst] = &mut *guard;
            for _ in 0..PRODUCTS {
                im2col::matmul(
                    [SIDE, SIDE, SIDE],
                    (dst, strides),
                    (lhs, strides),
                    (rhs, strides),
                );
            }
        });
        if round > 0 {
            best = best.min(started.elapsed().as_secs_f64());
        }
    }
    let flop = 2.0 * (SIDE * SIDE * SIDE * PRODUCTS * threads) as f64;
    flop / best / 1e9
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use rayon::prelude::*;

    use super::*;
    use crate::kernels::test_util::on_threads;

    /// Inside `on_this_thread` a kernel's parallel loop runs on the calling thread alone; outside
    /// it, on the pool. The setting ends with the call, also when the work panics.
    #[test]
    fn on_this_thread_keeps_a_loop_here_until_it_returns() {
        let threads_used = || {
            (0..256)
                .into_par_iter()
                .with_min_len(min_tasks_per_thread())
                .map(|_| {
                    // Long enough for idle threads to steal a share.
                    std::thread::sleep(std::time::Duration::from_micros(200));
                    rayon::current_thread_index()
                })
                .collect::<HashSet<_>>()
                .len()
        };
        let (inside, nested, outside) = on_threads(4, || {
            let (inside, nested) = on_this_thread(|| {
                on_this_thread(|| ());
                (threads_used(), threads_used())
            });
            (inside, nested, threads_used())
        });
        assert_eq!((inside, nested), (1, 1));
        assert!(outside > 1, "outside, the loop ran on {outside} thread(s)");
        let panicked = std::panic::catch_unwind(|| on_this_thread(|| panic!("inside")));
        assert!(panicked.is_err());
        assert_eq!(min_tasks_per_thread(), 1);
    }
}
