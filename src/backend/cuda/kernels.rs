//! The CUDA C++ sources (`kernels/*.cu`, embedded at build time) and their compilation with
//! NVRTC at run time, for the device's own architecture, once per process and architecture.
//!
//! NVRTC and the driver are loaded dynamically by cudarc, which panics when a library is
//! missing; every entry point here probes for the library first and returns an error instead.

use crate::error::{Error, Result};
use cudarc::nvrtc::{CompileOptions, Ptx};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// (file name, source) of every kernel file, one per op family.
pub const SOURCES: &[(&str, &str)] = &[
    ("conv2d.cu", include_str!("../../../kernels/conv2d.cu")),
    (
        "grouped_conv.cu",
        include_str!("../../../kernels/grouped_conv.cu"),
    ),
    (
        "activation.cu",
        include_str!("../../../kernels/activation.cu"),
    ),
    ("binary.cu", include_str!("../../../kernels/binary.cu")),
    ("layout.cu", include_str!("../../../kernels/layout.cu")),
    (
        "layer_norm.cu",
        include_str!("../../../kernels/layer_norm.cu"),
    ),
    ("pool.cu", include_str!("../../../kernels/pool.cu")),
    (
        "elementwise.cu",
        include_str!("../../../kernels/elementwise.cu"),
    ),
    ("linear.cu", include_str!("../../../kernels/linear.cu")),
    (
        "squeeze_excitation.cu",
        include_str!("../../../kernels/squeeze_excitation.cu"),
    ),
    ("gradcam.cu", include_str!("../../../kernels/gradcam.cu")),
];

pub(crate) fn backend_error(reason: impl std::fmt::Display) -> Error {
    Error::Backend {
        backend: "cuda".into(),
        reason: reason.to_string(),
    }
}

/// Whether NVRTC can be loaded (cudarc searches `libnvrtc.so`, `libnvrtc.so.12`, … on the
/// library path).
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to dlopen the candidate library names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Whether the CUDA driver library (`libcuda.so`) can be loaded.
pub fn driver_available() -> bool {
    // SAFETY: only tries to dlopen the candidate library names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Fails with one clear line when NVRTC cannot be loaded.
pub fn require_nvrtc() -> Result<()> {
    if nvrtc_available() {
        Ok(())
    } else {
        Err(backend_error(
            "cannot load NVRTC (libnvrtc.so / libnvrtc.so.12); install the CUDA toolkit or \
             `pip install nvidia-cuda-nvrtc-cu12` and add its lib directory to LD_LIBRARY_PATH",
        ))
    }
}

/// Files that call the activation table's `act_fwd` / `act_df`: the functions generated from
/// the table (`crate::ops::gpu_source`) go in front of their source.
const USES_ACTIVATION_TABLE: &[&str] = &["activation.cu", "conv2d.cu", "squeeze_excitation.cu"];

/// Compiles one source to PTX for `arch` (e.g. "sm_90"). Errors carry NVRTC's log.
pub fn compile(name: &str, source: &str, arch: &str) -> Result<Ptx> {
    require_nvrtc()?;
    let source = if USES_ACTIVATION_TABLE.contains(&name) {
        format!(
            "{}\n{source}",
            crate::ops::gpu_source(crate::ops::GpuLang::Cuda)
        )
    } else {
        source.to_string()
    };
    let opts = CompileOptions {
        name: Some(name.to_string()),
        options: vec![format!("--gpu-architecture={arch}"), "--std=c++17".into()],
        ..Default::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(&source, opts).map_err(|e| match e {
        cudarc::nvrtc::CompileError::CompileError { log, .. } => backend_error(format!(
            "NVRTC failed to compile {name} for {arch}: {}",
            log.to_string_lossy().trim().replace('\n', " | ")
        )),
        other => backend_error(format!("NVRTC failed on {name} for {arch}: {other:?}")),
    })
}

/// Compiled kernel files: (file name, PTX).
pub type Compiled = Vec<(&'static str, Ptx)>;

/// Every source compiled for `arch`, compiled on first use and cached for the process: a
/// second backend (the selftest builds one per conv variant) pays nothing.
pub fn compile_all_cached(arch: &str) -> Result<Compiled> {
    static CACHE: OnceLock<Mutex<HashMap<String, Compiled>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(hit) = cache.get(arch) {
        return Ok(hit.clone());
    }
    let compiled = SOURCES
        .iter()
        .map(|(name, src)| Ok((*name, compile(name, src, arch)?)))
        .collect::<Result<Vec<_>>>()?;
    cache.insert(arch.to_string(), compiled.clone());
    Ok(compiled)
}
