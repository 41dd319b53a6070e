//! Choosing where tensors live. burn 0.22 picks the backend at run time through the `Device`.

use burn::prelude::Device;

/// A CPU backend of burn.
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
}

impl BackendKind {
    pub fn device(self) -> Device {
        match self {
            BackendKind::Flex => Device::flex(),
            #[allow(deprecated)]
            BackendKind::Ndarray => Device::ndarray(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Flex => "flex",
            BackendKind::Ndarray => "ndarray",
        }
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
