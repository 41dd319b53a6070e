//! Choosing where tensors live. burn 0.22 picks the backend at run time through the `Device`.
//!
//! The CPU backends are always compiled in. burn's GPU backends are behind this crate's cargo
//! features `wgpu` (Vulkan, Metal, DirectX 12) and `cuda`; a GPU backend is started, and
//! checked to work, by [`BackendKind::start`] before anything runs on it.

mod gpu;

use burn::prelude::Device;

use crate::error::{Error, Result};

/// A backend of burn. Every name exists in every build, so that a `run.json` written by a
/// GPU build loads in a CPU-only one; asking for a backend that is not compiled in is an error
/// naming the cargo feature to build with.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    strum::VariantArray,
    strum::EnumMessage,
    strum::EnumProperty,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum BackendKind {
    /// burn-flex: burn's maintained pure-Rust CPU backend (fast).
    #[default]
    Flex,
    /// burn-ndarray: deprecated upstream and about 10% slower, kept because users ask for it by name.
    Ndarray,
    /// burn's wgpu backend: the best GPU that Vulkan, Metal or DirectX 12 offers.
    #[cfg_attr(not(feature = "wgpu"), strum(props(hidden = "true")))]
    Wgpu,
    /// burn's CUDA backend: the first NVIDIA GPU.
    #[cfg_attr(not(feature = "cuda"), strum(props(hidden = "true")))]
    Cuda,
    /// The fastest backend compiled in that can start: CUDA, then wgpu on a real GPU, then flex.
    Auto,
}

impl BackendKind {
    /// Every backend compiled into this build, `auto` excluded.
    pub const COMPILED: &[BackendKind] = &[
        BackendKind::Flex,
        BackendKind::Ndarray,
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu,
        #[cfg(feature = "cuda")]
        BackendKind::Cuda,
    ];

    /// Whether the backend's code is in this build (`auto` always is).
    pub fn is_compiled(self) -> bool {
        self == BackendKind::Auto || Self::COMPILED.contains(&self)
    }

    /// Whether the backend computes on the CPU with this crate's hand-written kernels.
    pub fn is_cpu(self) -> bool {
        matches!(self, BackendKind::Flex | BackendKind::Ndarray)
    }

    /// Makes sure the backend can run here and returns the one to use: `auto` becomes the
    /// backend it picks, and a GPU backend is started and runs a small operation first. A
    /// backend that is not compiled in, or cannot start (no driver, no device), is a one-line
    /// error naming it and what is missing. Later calls answer from the first one's result.
    pub fn start(self) -> Result<BackendKind> {
        match self {
            BackendKind::Flex | BackendKind::Ndarray => Ok(self),
            BackendKind::Wgpu => gpu::wgpu().map(|_| self),
            BackendKind::Cuda => gpu::cuda().map(|_| self),
            BackendKind::Auto => Ok(gpu::best()),
        }
    }

    /// The backend's device. For `wgpu` and `cuda`, call [`BackendKind::start`] first and
    /// report its error: this panics, with that message, when the backend cannot start.
    pub fn device(self) -> Device {
        match self {
            BackendKind::Flex => Device::flex(),
            #[allow(deprecated)]
            BackendKind::Ndarray => Device::ndarray(),
            BackendKind::Wgpu | BackendKind::Cuda => gpu::device(self),
            BackendKind::Auto => self.start().unwrap_or(BackendKind::Flex).device(),
        }
    }

    /// What the backend computes on, for reports: the GPU's name, or "N threads" on the CPU.
    pub fn describe(self) -> String {
        match self.start() {
            Ok(kind @ (BackendKind::Wgpu | BackendKind::Cuda)) => gpu::describe(kind),
            Ok(_) => {
                let threads = current_threads();
                format!("{threads} thread{}", if threads == 1 { "" } else { "s" })
            }
            Err(e) => e.to_string(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Flex => "flex",
            BackendKind::Ndarray => "ndarray",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Cuda => "cuda",
            BackendKind::Auto => "auto",
        }
    }

    /// The cargo feature that compiles the backend in, for the GPU backends.
    fn feature(self) -> Option<&'static str> {
        match self {
            BackendKind::Wgpu => Some("wgpu"),
            BackendKind::Cuda => Some("cuda"),
            _ => None,
        }
    }

    fn not_compiled(self) -> Error {
        Error::BackendNotCompiled {
            backend: self.name(),
            feature: self.feature().unwrap_or(self.name()),
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How the compute threads treat floats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subnormals {
    /// Flush subnormal results to zero and read subnormal inputs as zero (x86's FTZ and DAZ,
    /// Arm's FZ), as TensorFlow does on its threads. Values under ~1.2e-38 that training
    /// produces as weights and gradients shrink then cost nothing; on many Intel CPUs each one
    /// otherwise takes a microcode assist, and epochs slow down as training goes on.
    Flush,
    /// Keep IEEE 754's gradual underflow, for users who need subnormal values.
    Keep,
}

/// Builds the global rayon pool that both backends compute on: `threads` threads (by default
/// one per core, or `RAYON_NUM_THREADS`), each with a main thread's 8 MiB of stack, since whole
/// commands run on them (see [`on_compute_pool`]), and each with `subnormals` set, as is the
/// calling thread. Only the first call can take effect, so a later call asking for another
/// count is reported as an error.
pub fn set_threads(threads: Option<usize>, subnormals: Subnormals) -> crate::Result<()> {
    set_flush_subnormals(subnormals == Subnormals::Flush);
    pool_builder(threads, subnormals)
        .build_global()
        .or_else(|e| match threads {
            Some(threads) if rayon::current_num_threads() != threads => Err(
                crate::Error::InvalidArgument(format!("cannot use {threads} threads: {e}")),
            ),
            _ => Ok(()),
        })
}

/// The settings of the compute pool, for [`set_threads`] (and tests that build a pool of their own).
pub fn pool_builder(threads: Option<usize>, subnormals: Subnormals) -> rayon::ThreadPoolBuilder {
    let flush = subnormals == Subnormals::Flush;
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.unwrap_or(0))
        .stack_size(8 << 20)
        .start_handler(move |_| set_flush_subnormals(flush))
}

/// Sets (or clears) flush-to-zero and denormals-are-zero for floats on the calling thread.
/// A no-op on processors other than x86-64 and 64-bit Arm.
pub fn set_flush_subnormals(flush: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        /// MXCSR's flush-to-zero (bit 15) and denormals-are-zero (bit 6).
        const FTZ_DAZ: u32 = 0x8040;
        let mut csr: u32 = 0;
        // SAFETY: `stmxcsr` stores the 32-bit MXCSR register into `csr`, a valid, aligned,
        // writable u32 on the stack; it touches nothing else.
        unsafe {
            std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack, preserves_flags));
        }
        csr = if flush { csr | FTZ_DAZ } else { csr & !FTZ_DAZ };
        // SAFETY: `ldmxcsr` loads MXCSR from `csr`, the value just read with only the FTZ and
        // DAZ bits changed, which are valid to set on every x86-64 processor with SSE2 (all of
        // them); no reserved bit is touched, so it cannot fault.
        unsafe {
            std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, preserves_flags));
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        /// FPCR's flush-to-zero bit.
        const FZ: u64 = 1 << 24;
        let mut fpcr: u64;
        // SAFETY: reading FPCR into a register has no side effects.
        unsafe {
            std::arch::asm!("mrs {}, fpcr", out(reg) fpcr, options(nomem, nostack, preserves_flags));
        }
        fpcr = if flush { fpcr | FZ } else { fpcr & !FZ };
        // SAFETY: writing FPCR with only the FZ bit changed alters rounding of subnormals on
        // this thread and nothing else.
        unsafe {
            std::arch::asm!("msr fpcr, {}", in(reg) fpcr, options(nomem, nostack, preserves_flags));
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = flush;
}

/// Whether the calling thread flushes subnormal floats to zero.
pub fn flushes_subnormals() -> bool {
    // Half of f32's smallest normal value, computed at run time so the compiler cannot fold it.
    let smallest = std::hint::black_box(f32::MIN_POSITIVE);
    std::hint::black_box(smallest / 2.0) == 0.0
}

pub fn current_threads() -> usize {
    rayon::current_num_threads()
}

/// Runs `work` on a thread of the global rayon pool. The tensor kernels it calls then fork and
/// join inside the pool, with the calling thread doing its share, instead of handing every
/// operation to the pool from outside and sleeping until the pool's threads are done.
pub fn on_compute_pool<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| work())
}

/// mimalloc's `mi_option_purge_delay` (mimalloc.h, v3), which libmimalloc-sys names only for v2.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Makes mimalloc, where it is the global allocator, keep the pages it frees. mimalloc returns
/// freed pages to the kernel after a delay, and a training step frees and allocates the same
/// large tensors again, which the kernel must then fault in and zero: 5-12% of the CPU time of
/// a run went to `clear_page` (BENCHMARKS.md). Never purging keeps them; memory stays at its
/// peak, which training reaches in its first step anyway.
///
/// # Safety
///
/// Call it before the process has a second thread: it sets a global option of mimalloc's
/// without synchronisation.
pub unsafe fn keep_freed_pages() {
    // SAFETY: `mi_option_set` stores an option value, and the caller guarantees that no other
    // thread exists yet; -1 ("never") is a documented value of this option.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// Makes mimalloc, where it is the global allocator, return the pages it frees to the kernel
/// at once. A server left running frees the bodies and pictures of a burst of uploads on
/// threads that then sit idle; with mimalloc's default delay, the pages would be returned only
/// when those threads allocate again, and the burst's memory stayed resident (RELIABILITY.md).
///
/// # Safety
///
/// As [`keep_freed_pages`]: call it before the process has a second thread.
pub unsafe fn return_freed_pages_at_once() {
    // SAFETY: as in `keep_freed_pages`; 0 ("immediately") is a documented value of the option.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
}

/// The process's peak resident memory, from Linux's /proc; `None` elsewhere.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_backends_start_and_auto_picks_one_that_runs() {
        assert_eq!(BackendKind::Flex.start().unwrap(), BackendKind::Flex);
        assert_eq!(BackendKind::Ndarray.start().unwrap(), BackendKind::Ndarray);
        let auto = BackendKind::Auto.start().unwrap();
        assert_ne!(auto, BackendKind::Auto);
        assert!(auto.is_compiled());
        if !cfg!(any(feature = "wgpu", feature = "cuda")) {
            assert_eq!(auto, BackendKind::Flex);
        }
    }

    #[test]
    fn a_backend_not_compiled_in_names_its_feature() {
        for (backend, compiled) in [
            (BackendKind::Wgpu, cfg!(feature = "wgpu")),
            (BackendKind::Cuda, cfg!(feature = "cuda")),
        ] {
            assert_eq!(backend.is_compiled(), compiled);
            if !compiled {
                let error = backend.start().unwrap_err();
                assert!(
                    matches!(error, Error::BackendNotCompiled { feature, .. } if feature == backend.name()),
                    "{error:?}"
                );
                assert_eq!(
                    error.to_string(),
                    format!("the {backend} backend is not compiled into this build")
                );
            }
        }
    }

    #[test]
    fn every_backend_name_reads_back() {
        // run.json names the backend; a CPU-only build must read one a GPU build wrote.
        for backend in [
            BackendKind::Flex,
            BackendKind::Ndarray,
            BackendKind::Wgpu,
            BackendKind::Cuda,
        ] {
            let json = serde_json::to_string(&backend).unwrap();
            assert_eq!(json, format!("\"{backend}\""));
            assert_eq!(serde_json::from_str::<BackendKind>(&json).unwrap(), backend);
        }
    }

    #[test]
    fn the_pool_threads_flush_subnormals() {
        for (subnormals, expected) in [(Subnormals::Flush, true), (Subnormals::Keep, false)] {
            let pool = pool_builder(Some(3), subnormals).build().unwrap();
            let flags = pool.broadcast(|_| flushes_subnormals());
            assert_eq!(flags, vec![expected; 3], "{subnormals:?}");
            assert_eq!(
                pool.install(|| on_compute_pool(flushes_subnormals)),
                expected
            );
        }
        // The switch works both ways on the calling thread.
        std::thread::spawn(|| {
            assert!(!flushes_subnormals(), "new threads keep IEEE's default");
            set_flush_subnormals(true);
            assert!(flushes_subnormals());
            set_flush_subnormals(false);
            assert!(!flushes_subnormals());
        })
        .join()
        .unwrap();
    }
}
