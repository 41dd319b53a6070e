//! Which vector instructions the kernels use: the widest [`SimdLevel`] the CPU has, capped by
//! the `MNIST_CNN_SIMD` environment variable (see the [module docs](super)).

use std::sync::OnceLock;

/// The environment variable that caps the [`SimdLevel`]: `auto` (or unset), `avx512`, `avx2`
/// or `scalar`. Read once, at the first kernel call.
pub const SIMD_ENV: &str = "MNIST_CNN_SIMD";

/// A set of instructions the kernels have a version for, narrowest first, so that `min` caps a
/// level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SimdLevel {
    /// Baseline code for the target (SSE2 on x86-64), left to the compiler to vectorize.
    Scalar,
    /// AVX2 and FMA.
    Avx2,
    /// AVX-512 F, BW and VL, with AVX2 and FMA.
    Avx512,
}

impl SimdLevel {
    /// Every level, narrowest first.
    pub const ALL: [SimdLevel; 3] = [SimdLevel::Scalar, SimdLevel::Avx2, SimdLevel::Avx512];

    /// The name `MNIST_CNN_SIMD` takes for this level.
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512 => "avx512",
        }
    }

    /// The widest level this CPU supports.
    pub fn detected() -> SimdLevel {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            if avx2
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
            {
                return SimdLevel::Avx512;
            }
            if avx2 {
                return SimdLevel::Avx2;
            }
        }
        SimdLevel::Scalar
    }

    /// The cap a value of `MNIST_CNN_SIMD` asks for (`auto` asks for none: the widest level),
    /// or `None` for a value that names no level. Case and surrounding blanks are ignored.
    pub fn parse_cap(value: &str) -> Option<SimdLevel> {
        let value = value.trim().to_ascii_lowercase();
        if value == "auto" {
            return Some(SimdLevel::Avx512);
        }
        SimdLevel::ALL
            .into_iter()
            .find(|level| level.name() == value)
    }
}

impl std::fmt::Display for SimdLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The level the kernels run at: [`SimdLevel::detected`] capped by `MNIST_CNN_SIMD`. Asking for
/// a level the CPU lacks gives the widest one it has below that, so no value can make a kernel
/// run instructions the CPU does not have. Decided once per process.
pub fn level() -> SimdLevel {
    static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
    *LEVEL.get_or_init(|| SimdLevel::detected().min(requested_cap()))
}

/// The cap `MNIST_CNN_SIMD` asks for. A value that names no level is reported on stderr and
/// ignored rather than stopping the program: the choice changes speed, not results.
fn requested_cap() -> SimdLevel {
    match std::env::var_os(SIMD_ENV) {
        None => SimdLevel::Avx512,
        Some(value) => match value.to_str().and_then(SimdLevel::parse_cap) {
            Some(cap) => cap,
            None => {
                eprintln!(
                    "warning: ignoring {SIMD_ENV}={value:?}: expected auto, avx512, avx2 or scalar"
                );
                SimdLevel::Avx512
            }
        },
    }
}

/// Defines `fn $name(args) -> R` that runs `$body(args)` compiled for the [`level`] in force:
/// once with AVX-512 (F, BW, VL) + AVX2 + FMA enabled, once with AVX2 + FMA, and once for the
/// baseline target. `$body`, a function in scope, must be `#[inline(always)]`, so that each
/// version is its own copy of the body compiled with those features, as the `multiversion`
/// crate would make it (which picks the widest version the CPU has and offers no way to cap
/// it). One `const` generic parameter of type `usize` is supported.
macro_rules! simd_versions {
    (
        $(#[$attr:meta])*
        $vis:vis fn $name:ident $(<const $generic:ident: usize>)?
            ($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? = $body:ident;
    ) => {
        $(#[$attr])*
        $vis fn $name $(<const $generic: usize>)? ($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
            fn avx512 $(<const $generic: usize>)? ($($arg: $ty),*) $(-> $ret)? {
                $body $(::<$generic>)? ($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            fn avx2 $(<const $generic: usize>)? ($($arg: $ty),*) $(-> $ret)? {
                $body $(::<$generic>)? ($($arg),*)
            }

            match $crate::kernels::simd::level() {
                #[cfg(target_arch = "x86_64")]
                $crate::kernels::simd::SimdLevel::Avx512 => {
                    // SAFETY: `level()` is `Avx512` only where `SimdLevel::detected` found every
                    // feature `avx512` is compiled with on this CPU.
                    unsafe { avx512 $(::<$generic>)? ($($arg),*) }
                }
                #[cfg(target_arch = "x86_64")]
                $crate::kernels::simd::SimdLevel::Avx2 => {
                    // SAFETY: `level()` is `Avx2` only where `SimdLevel::detected` found AVX2
                    // and FMA on this CPU.
                    unsafe { avx2 $(::<$generic>)? ($($arg),*) }
                }
                _ => $body $(::<$generic>)? ($($arg),*),
            }
        }
    };
}

pub(crate) use simd_versions;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_name_their_level_and_auto_asks_for_the_widest() {
        assert_eq!(SimdLevel::parse_cap("auto"), Some(SimdLevel::Avx512));
        assert_eq!(SimdLevel::parse_cap(" AVX2 "), Some(SimdLevel::Avx2));
        for level in SimdLevel::ALL {
            assert_eq!(SimdLevel::parse_cap(level.name()), Some(level));
        }
        assert_eq!(SimdLevel::parse_cap("avx-2"), None);
        assert_eq!(SimdLevel::parse_cap(""), None);
    }

    /// The level in force is the CPU's, capped by `MNIST_CNN_SIMD`. CI runs the kernel tests
    /// once per value, so each run checks that the value took effect, and fails on a value
    /// that names no level instead of quietly testing the default.
    #[test]
    fn the_environment_caps_the_level_in_force() {
        let cap = match std::env::var(SIMD_ENV) {
            Ok(value) => SimdLevel::parse_cap(&value)
                .unwrap_or_else(|| panic!("{SIMD_ENV}={value:?} names no level")),
            Err(_) => SimdLevel::Avx512,
        };
        assert_eq!(level(), SimdLevel::detected().min(cap));
        if level() < cap {
            eprintln!(
                "note: this CPU has no {cap}: the kernels run and are tested at {}",
                level()
            );
        }
    }
}
