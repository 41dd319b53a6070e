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
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// burn-flex: burn's maintained pure-Rust CPU backend (fast).
    #[default]
    Flex,
    /// burn-ndarray: deprecated upstream and slower, kept because users ask for it by name.
    Ndarray,
    /// burn's wgpu backend: the best GPU that Vulkan, Metal or DirectX 12 offers.
    #[cfg_attr(not(feature = "wgpu"), value(hide = true))]
    Wgpu,
    /// burn's CUDA backend: the first NVIDIA GPU.
    #[cfg_attr(not(feature = "cuda"), value(hide = true))]
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
        let feature = self.feature().unwrap_or(self.name());
        Error::Backend(format!(
            "the {self} backend is not compiled into this build; rebuild with `cargo build --release --features {feature}`"
        ))
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Builds the global rayon pool that both backends compute on: `threads` threads (by default
/// one per core, or `RAYON_NUM_THREADS`), each with a main thread's 8 MiB of stack, since whole
/// commands run on them (see [`on_compute_pool`]). Only the first call can take effect, so a
/// later call asking for another count is reported as an error.
pub fn set_threads(threads: Option<usize>) -> crate::Result<()> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.unwrap_or(0))
        .stack_size(8 << 20)
        .build_global()
        .or_else(|e| match threads {
            Some(threads) if rayon::current_num_threads() != threads => Err(
                crate::Error::InvalidArgument(format!("cannot use {threads} threads: {e}")),
            ),
            _ => Ok(()),
        })
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
