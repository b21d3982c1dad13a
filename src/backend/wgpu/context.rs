//! Instance, adapter and device setup, and the capture of asynchronous device errors.
//!
//! wgpu reports validation and out-of-memory errors through a callback whose default panics;
//! we install one that records the first error, and every operation that waits on the device
//! turns a recorded error into `Error::Backend`, so a device problem is one error line, never a
//! panic.

use crate::error::{Error, Result};
use std::sync::{Arc, Mutex};

/// Which adapters a backend may run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdapterChoice {
    /// The best adapter there is, a software rasterizer (lavapipe) included.
    Any,
    /// Only a hardware (or virtualized hardware) GPU: what `--backend auto` wants, since on a
    /// machine without one the CPU backend is faster than a software rasterizer.
    RealGpu,
}

pub struct Context {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    /// The adapter supports timestamp queries on compute passes.
    pub timestamps: bool,
    error: Arc<Mutex<Option<String>>>,
}

pub fn backend_error(reason: impl Into<String>) -> Error {
    Error::Backend {
        backend: "wgpu".into(),
        reason: reason.into(),
    }
}

/// Adapters ranked by how much we want them: discrete, integrated, virtual, other, CPU.
fn rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

/// Every adapter wgpu finds, most wanted first.
fn ranked_adapters() -> Vec<wgpu::Adapter> {
    // WGPU_BACKEND (e.g. "vulkan") narrows the APIs searched, as in every wgpu program.
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let mut adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    adapters.sort_by_key(|a| rank(a.get_info().device_type));
    adapters
}

fn describe(i: &wgpu::AdapterInfo) -> String {
    format!("{} ({:?}, {:?})", i.name, i.device_type, i.backend)
}

/// The adapters wgpu finds, most wanted first, each with whether it is a hardware GPU (what
/// `--backend auto` would use).
pub fn adapters() -> Vec<(String, bool)> {
    ranked_adapters()
        .iter()
        .map(|a| {
            let i = a.get_info();
            (describe(&i), i.device_type != wgpu::DeviceType::Cpu)
        })
        .collect()
}

impl Context {
    pub fn new(choice: AdapterChoice) -> Result<Self> {
        let adapters = ranked_adapters();
        let found: Vec<String> = adapters.iter().map(|a| describe(&a.get_info())).collect();
        let adapter = adapters
            .into_iter()
            .find(|a| {
                choice == AdapterChoice::Any || a.get_info().device_type != wgpu::DeviceType::Cpu
            })
            .ok_or_else(|| {
                backend_error(match (choice, found.is_empty()) {
                    (_, true) => {
                        "no GPU adapter found (Vulkan, Metal or DX12); on Linux without a \
                                  GPU install Mesa's software driver (Debian: mesa-vulkan-drivers) \
                                  or use `backend=cpu`"
                            .to_string()
                    }
                    (_, false) => format!("no hardware GPU adapter among: {}", found.join(", ")),
                })
            })?;
        let info = adapter.get_info();
        let timestamps = adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY);
        let features = if timestamps {
            wgpu::Features::TIMESTAMP_QUERY
        } else {
            wgpu::Features::empty()
        };
        // Ask for everything the adapter offers: storage buffers of big activations need more
        // than WebGPU's default 128 MiB binding limit on some models.
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("gradcam"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| backend_error(format!("cannot open device on {}: {e}", info.name)))?;
        let error: Arc<Mutex<Option<String>>> = Arc::default();
        let sink = error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut slot = sink.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert_with(|| e.to_string().lines().next().unwrap_or("").to_owned());
        }));
        Ok(Self {
            device,
            queue,
            info,
            limits,
            timestamps,
            error,
        })
    }

    /// The first device error recorded since the device was opened, as `Error::Backend`.
    pub fn check(&self) -> Result<()> {
        let slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
        match &*slot {
            Some(e) => Err(backend_error(format!("device error: {e}"))),
            None => Ok(()),
        }
    }

    /// Blocks until all submitted work has finished.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| backend_error(format!("waiting for the device: {e}")))?;
        self.check()
    }
}
