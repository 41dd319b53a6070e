//! Starting burn's GPU backends (cargo features `wgpu` and `cuda`) and turning "cannot start"
//! into an [`Error`] instead of a panic at the first operation.
//!
//! wgpu has a fallible start (`Device::wgpu_options().init_with_setup()`), which also names
//! the adapter. CUDA has a fallible question (`Device::enumerate`, which checks for the driver
//! library before loading it) but starts, and compiles kernels with NVRTC, behind `unwrap`s.
//! So each started device then runs one small operation with panics caught, which is what
//! tells "the driver is there but its compiler or kernels are not" from "it works".

use burn::prelude::Device;

use super::BackendKind;
use crate::error::{Error, Result};

/// A GPU backend that started and ran an operation.
#[cfg_attr(not(any(feature = "wgpu", feature = "cuda")), allow(dead_code))]
pub(super) struct Started {
    device: Device,
    /// The device's name and kind, for reports.
    description: String,
    /// Whether the adapter computes on the CPU (a software driver such as Mesa's lavapipe),
    /// which makes it slower than flex and so never `auto`'s choice.
    software: bool,
}

#[cfg(feature = "wgpu")]
static WGPU: std::sync::OnceLock<Result<Started, String>> = std::sync::OnceLock::new();
#[cfg(feature = "cuda")]
static CUDA: std::sync::OnceLock<Result<Started, String>> = std::sync::OnceLock::new();

/// The started wgpu device, starting it on the first call.
pub(super) fn wgpu() -> Result<&'static Started> {
    #[cfg(feature = "wgpu")]
    {
        started(BackendKind::Wgpu, WGPU.get_or_init(start_wgpu))
    }
    #[cfg(not(feature = "wgpu"))]
    Err(BackendKind::Wgpu.not_compiled())
}

/// The started CUDA device, starting it on the first call.
pub(super) fn cuda() -> Result<&'static Started> {
    #[cfg(feature = "cuda")]
    {
        started(BackendKind::Cuda, CUDA.get_or_init(start_cuda))
    }
    #[cfg(not(feature = "cuda"))]
    Err(BackendKind::Cuda.not_compiled())
}

#[cfg_attr(not(any(feature = "wgpu", feature = "cuda")), allow(dead_code))]
fn started(
    kind: BackendKind,
    outcome: &'static Result<Started, String>,
) -> Result<&'static Started> {
    outcome
        .as_ref()
        .map_err(|reason| Error::BackendUnavailable {
            backend: kind.name(),
            reason: reason.clone(),
        })
}

/// `auto`: CUDA, then wgpu on a hardware adapter, then flex.
pub(super) fn best() -> BackendKind {
    if cuda().is_ok() {
        return BackendKind::Cuda;
    }
    match wgpu() {
        Ok(started) if !started.software => BackendKind::Wgpu,
        _ => BackendKind::Flex,
    }
}

/// The device of a GPU backend, started on the first call; panics when it cannot start.
pub(super) fn device(kind: BackendKind) -> Device {
    let started = match kind {
        BackendKind::Cuda => cuda(),
        _ => wgpu(),
    };
    match started {
        Ok(started) => started.device.clone(),
        Err(error) => panic!("{error}"),
    }
}

pub(super) fn describe(kind: BackendKind) -> String {
    let started = match kind {
        BackendKind::Cuda => cuda(),
        _ => wgpu(),
    };
    match started {
        Ok(started) => started.description.clone(),
        Err(error) => error.to_string(),
    }
}

#[cfg(feature = "wgpu")]
fn start_wgpu() -> Result<Started, String> {
    use burn::tensor::wgpu::{WgpuInitError, wgpu::DeviceType};

    let (device, setup) = catch_panic(|| Device::wgpu_options().init_with_setup())?
        .map_err(|error| match error {
            WgpuInitError::AdapterUnavailable { .. } | WgpuInitError::UnsupportedGraphicsApi { .. } => {
                "no GPU adapter found through Vulkan, Metal or DirectX 12; install the GPU's driver \
                 (on Linux its Vulkan driver: the vendor's, or Mesa's `mesa-vulkan-drivers`)"
                    .to_string()
            }
            other => one_line(&other.to_string()),
        })?;
    let info = setup.adapter.get_info();
    run_an_operation(&device)?;
    let software = info.device_type == DeviceType::Cpu;
    Ok(Started {
        device,
        description: format!(
            "{} ({:?}{})",
            info.name.trim(),
            info.backend,
            if software { ", software" } else { "" }
        ),
        software,
    })
}

#[cfg(feature = "cuda")]
fn start_cuda() -> Result<Started, String> {
    use burn::tensor::DeviceType;

    // Checks for libcuda before loading it, and answers "none" rather than panicking.
    let Some(device) = Device::enumerate(DeviceType::Cuda)
        .into_vec()
        .into_iter()
        .next()
    else {
        return Err(
            "no NVIDIA GPU found (the NVIDIA driver's libcuda.so is not installed, or sees no device)"
                .to_string(),
        );
    };
    run_an_operation(&device).map_err(|reason| {
        format!("{reason} (CUDA kernels are compiled at run time with NVRTC: libnvrtc.so of the CUDA toolkit must be installed)")
    })?;
    let name = catch_panic(|| device.identity())
        .ok()
        .flatten()
        .map_or_else(|| "CUDA device 0".to_string(), |identity| identity.name);
    Ok(Started {
        device,
        description: format!("{name} (CUDA)"),
        software: false,
    })
}

/// A matrix product and a read back: compiles and runs kernels, so a missing shader compiler or
/// a driver that cannot run burn's kernels shows up here.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn run_an_operation(device: &Device) -> Result<(), String> {
    use burn::tensor::Tensor;

    let values = catch_panic(|| {
        let a = Tensor::<2>::ones([4, 4], device);
        let product = a.clone().matmul(a) + 1.0;
        product.into_data().try_into_vec::<f32>()
    })?
    .map_err(|e| format!("cannot read a result back: {e:?}"))?;
    if values.len() == 16 && values.iter().all(|&v| v == 5.0) {
        Ok(())
    } else {
        Err(format!("a test product came out wrong: {values:?}"))
    }
}

/// Runs `work`, turning a panic into its message and keeping it off stderr.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn catch_panic<R>(work: impl FnOnce() -> R) -> Result<R, String> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
    std::panic::set_hook(hook);
    outcome.map_err(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("a panic without a message");
        one_line(message)
    })
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
