//! Choosing where tensors live. burn 0.22 picks the backend at run time through the `Device`.

use burn::prelude::Device;

/// A backend of burn.
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
    /// burn-ndarray: deprecated upstream and about 10% slower, kept because users ask for it by name.
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
