//! WGSL sources, the pipeline cache, dispatch, and per-kernel timing.
//!
//! Each shader file is embedded with `include_str!` and compiled at run time the first time one
//! of its kernels runs; each kernel (entry point) gets one compute pipeline, created once and
//! cached for the backend's lifetime. Shapes travel in a small uniform buffer, so the same
//! pipeline serves every shape; uniform buffers are cached by their contents. Bind groups are
//! cached by (kernel, uniform contents, storage buffers): the buffer pool hands out the same
//! buffers for the same shapes batch after batch, so from the second batch of a shape on a
//! dispatch creates nothing.
//!
//! Binding convention of every kernel: binding 0 is its uniform parameters, bindings 1.. are
//! its storage buffers in the order the Rust glue passes them (inputs, then outputs), and every
//! kernel uses all of its bindings, so the layout wgpu derives from the shader matches.

use super::context::{backend_error, Context};
use crate::backend::Profile;
use crate::error::Result;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

const COMMON: &str = include_str!("../../../shaders/common.wgsl");

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shader {
    Conv2d,
    GroupedConv,
    Activation,
    Binary,
    Layout,
    LayerNorm,
    Pool,
    Elementwise,
    Linear,
    GradCam,
    SqueezeExcitation,
    Sgd,
}

impl Shader {
    fn source(self) -> &'static str {
        match self {
            Shader::Conv2d => include_str!("../../../shaders/conv2d.wgsl"),
            Shader::GroupedConv => include_str!("../../../shaders/grouped_conv.wgsl"),
            Shader::Activation => include_str!("../../../shaders/activation.wgsl"),
            Shader::Binary => include_str!("../../../shaders/binary.wgsl"),
            Shader::Layout => include_str!("../../../shaders/layout.wgsl"),
            Shader::LayerNorm => include_str!("../../../shaders/layer_norm.wgsl"),
            Shader::Pool => include_str!("../../../shaders/pool.wgsl"),
            Shader::Elementwise => include_str!("../../../shaders/elementwise.wgsl"),
            Shader::Linear => include_str!("../../../shaders/linear.wgsl"),
            Shader::GradCam => include_str!("../../../shaders/gradcam.wgsl"),
            Shader::SqueezeExcitation => {
                include_str!("../../../shaders/squeeze_excitation.wgsl")
            }
            Shader::Sgd => include_str!("../../../shaders/sgd.wgsl"),
        }
    }
    fn file(self) -> &'static str {
        match self {
            Shader::Conv2d => "conv2d.wgsl",
            Shader::GroupedConv => "grouped_conv.wgsl",
            Shader::Activation => "activation.wgsl",
            Shader::Binary => "binary.wgsl",
            Shader::Layout => "layout.wgsl",
            Shader::LayerNorm => "layer_norm.wgsl",
            Shader::Pool => "pool.wgsl",
            Shader::Elementwise => "elementwise.wgsl",
            Shader::Linear => "linear.wgsl",
            Shader::GradCam => "gradcam.wgsl",
            Shader::SqueezeExcitation => "squeeze_excitation.wgsl",
            Shader::Sgd => "sgd.wgsl",
        }
    }
    /// Code generated on the host that the file needs before its own: the activation table's
    /// functions (`crate::ops::gpu_source`).
    fn generated(self) -> String {
        match self {
            Shader::Activation | Shader::SqueezeExcitation => {
                crate::ops::gpu_source(crate::ops::GpuLang::Wgsl)
            }
            _ => String::new(),
        }
    }
    /// The whole WGSL module of the file.
    pub fn module_source(self) -> String {
        format!("{COMMON}\n{}\n{}", self.generated(), self.source())
    }
}

/// A kernel: an entry point of a shader file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Kernel {
    pub shader: Shader,
    pub entry: &'static str,
}

pub const fn kernel(shader: Shader, entry: &'static str) -> Kernel {
    Kernel { shader, entry }
}

/// Workgroups for `items` work items, `per_group` per workgroup, folded into 2-D when one
/// dimension would exceed 65,535 workgroups; kernels rebuild the flat index from
/// `workgroup_id` and `num_workgroups` (`flat_index` / `flat_group` in common.wgsl).
pub fn groups_1d(items: usize, per_group: usize) -> Result<[u32; 3]> {
    const MAX: u64 = 65_535;
    let groups = (items.div_ceil(per_group) as u64).max(1);
    if groups <= MAX {
        return Ok([groups as u32, 1, 1]);
    }
    let y = groups.div_ceil(MAX);
    if y > MAX {
        return Err(backend_error(format!(
            "{items} work items exceed the dispatch limit"
        )));
    }
    Ok([MAX as u32, y as u32, 1])
}

/// Per-kernel timing: GPU timestamps around each compute pass when the adapter has them,
/// else host time around each dispatch with a wait for its completion.
pub struct Timing {
    sets: Vec<wgpu::QuerySet>,
    labels: Vec<&'static str>,
    host: Profile,
}

const QUERIES_PER_SET: u32 = 4096;

/// A storage binding: a buffer, and the byte range of it the kernel sees (None: all of it).
/// Ranges let one op bind a tensor larger than the adapter's binding limit piece by piece.
pub type Binding<'a> = (&'a wgpu::Buffer, Option<(u64, u64)>);

/// A dispatch's bindings: its kernel, its uniform words and its storage bindings.
type BindKey = (Kernel, Vec<u32>, Vec<(wgpu::Buffer, Option<(u64, u64)>)>);

/// Cached bind groups keep their buffers alive; past this many the cache starts over, which
/// bounds that memory when shapes keep changing.
const MAX_BIND_GROUPS: usize = 4096;

pub struct Kernels {
    modules: RefCell<HashMap<Shader, Rc<wgpu::ShaderModule>>>,
    pipelines: RefCell<HashMap<Kernel, Rc<wgpu::ComputePipeline>>>,
    uniforms: RefCell<HashMap<Vec<u32>, wgpu::Buffer>>,
    bind_groups: RefCell<HashMap<BindKey, wgpu::BindGroup>>,
    timing: RefCell<Option<Timing>>,
}

impl Kernels {
    pub fn new() -> Self {
        Self {
            modules: RefCell::default(),
            pipelines: RefCell::default(),
            uniforms: RefCell::default(),
            bind_groups: RefCell::default(),
            timing: RefCell::default(),
        }
    }

    fn pipeline(&self, ctx: &Context, k: Kernel) -> Result<Rc<wgpu::ComputePipeline>> {
        if let Some(p) = self.pipelines.borrow().get(&k) {
            return Ok(p.clone());
        }
        let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = {
            let mut modules = self.modules.borrow_mut();
            modules
                .entry(k.shader)
                .or_insert_with(|| {
                    let src = k.shader.module_source();
                    Rc::new(
                        ctx.device
                            .create_shader_module(wgpu::ShaderModuleDescriptor {
                                label: Some(k.shader.file()),
                                source: wgpu::ShaderSource::Wgsl(src.into()),
                            }),
                    )
                })
                .clone()
        };
        let pipeline = ctx
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(k.entry),
                layout: None,
                module: &module,
                entry_point: Some(k.entry),
                compilation_options: Default::default(),
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(backend_error(format!(
                "cannot compile kernel {} of {}: {e}",
                k.entry,
                k.shader.file()
            )));
        }
        let p = Rc::new(pipeline);
        self.pipelines.borrow_mut().insert(k, p.clone());
        Ok(p)
    }

    /// Runs kernel `k` with uniform parameters `params` (u32 words; f32 go as their bits) and
    /// storage buffers `bufs` at bindings 1.., over `groups` workgroups.
    pub fn dispatch(
        &self,
        ctx: &Context,
        k: Kernel,
        params: &[u32],
        bufs: &[&wgpu::Buffer],
        groups: [u32; 3],
    ) -> Result<()> {
        let whole: Vec<Binding> = bufs.iter().map(|&b| (b, None)).collect();
        self.dispatch_ranges(ctx, k, params, &whole, groups)
    }

    /// [`Kernels::dispatch`] with storage bindings that may be byte ranges of their buffers.
    /// A binding larger than the adapter's `max_storage_buffer_binding_size` is an error that
    /// names the kernel, the binding and both sizes (ops that split big tensors bind ranges).
    pub fn dispatch_ranges(
        &self,
        ctx: &Context,
        k: Kernel,
        params: &[u32],
        bufs: &[Binding],
        groups: [u32; 3],
    ) -> Result<()> {
        let max = ctx.limits.max_storage_buffer_binding_size;
        for (i, (b, range)) in bufs.iter().enumerate() {
            let size = range.map_or(b.size(), |r| r.1);
            if size > max {
                return Err(backend_error(format!(
                    "kernel {} of {}: storage binding {} is {:.1} MiB, more than the adapter's \
                     max_storage_buffer_binding_size of {:.1} MiB",
                    k.entry,
                    k.shader.file(),
                    i + 1,
                    size as f64 / 1048576.0,
                    max as f64 / 1048576.0
                )));
            }
        }
        let pipeline = self.pipeline(ctx, k)?;
        let mut words = params.to_vec();
        words.resize(params.len().div_ceil(4).max(1) * 4, 0);
        let key: BindKey = (
            k,
            words,
            bufs.iter().map(|&(b, r)| (b.clone(), r)).collect(),
        );
        let bind = self.bind_group(ctx, &pipeline, key);

        let mut timing = self.timing.borrow_mut();
        let mut enc = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
        {
            let writes = match timing.as_mut() {
                Some(t) if ctx.timestamps => {
                    let q = 2 * t.labels.len() as u32;
                    if q / QUERIES_PER_SET >= t.sets.len() as u32 {
                        t.sets
                            .push(ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                                label: Some("kernel timestamps"),
                                ty: wgpu::QueryType::Timestamp,
                                count: QUERIES_PER_SET,
                            }));
                    }
                    t.labels.push(k.entry);
                    Some(wgpu::ComputePassTimestampWrites {
                        query_set: &t.sets[(q / QUERIES_PER_SET) as usize],
                        beginning_of_pass_write_index: Some(q % QUERIES_PER_SET),
                        end_of_pass_write_index: Some(q % QUERIES_PER_SET + 1),
                    })
                }
                _ => None,
            };
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(k.entry),
                timestamp_writes: writes,
            });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        }
        match timing.as_mut() {
            Some(t) if !ctx.timestamps => {
                ctx.wait()?;
                let start = Instant::now();
                ctx.queue.submit([enc.finish()]);
                ctx.wait()?;
                let e = t.host.entry(k.entry.to_owned()).or_default();
                e.0 += start.elapsed();
                e.1 += 1;
            }
            _ => {
                ctx.queue.submit([enc.finish()]);
            }
        }
        Ok(())
    }

    pub fn bind_groups_created(&self) -> usize {
        self.bind_groups.borrow().len()
    }

    /// The cached bind group of `key`, created (with its uniform buffer) on first use.
    fn bind_group(
        &self,
        ctx: &Context,
        pipeline: &wgpu::ComputePipeline,
        key: BindKey,
    ) -> wgpu::BindGroup {
        use wgpu::util::DeviceExt;
        if let Some(b) = self.bind_groups.borrow().get(&key) {
            return b.clone();
        }
        let (k, words, bufs) = &key;
        let uniform = self
            .uniforms
            .borrow_mut()
            .entry(words.clone())
            .or_insert_with(|| {
                ctx.device
                    .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some("params"),
                        contents: bytemuck::cast_slice(words),
                        usage: wgpu::BufferUsages::UNIFORM,
                    })
            })
            .clone();
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.as_entire_binding(),
        }];
        for (i, (b, range)) in bufs.iter().enumerate() {
            let resource = match range {
                None => b.as_entire_binding(),
                Some((offset, size)) => wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: b,
                    offset: *offset,
                    size: std::num::NonZeroU64::new(*size),
                }),
            };
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource,
            });
        }
        let bind = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(k.entry),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let mut cache = self.bind_groups.borrow_mut();
        if cache.len() >= MAX_BIND_GROUPS {
            cache.clear();
            self.uniforms.borrow_mut().clear();
        }
        cache.insert(key, bind.clone());
        bind
    }

    pub fn start_timing(&self) {
        *self.timing.borrow_mut() = Some(Timing {
            sets: vec![],
            labels: vec![],
            host: Profile::new(),
        });
    }

    /// Time per kernel since `start_timing`, and how it was measured.
    pub fn take_timing(&self, ctx: &Context) -> Result<(Profile, String)> {
        let Some(t) = self.timing.borrow_mut().take() else {
            return Ok((Profile::new(), "timing was not started".into()));
        };
        if !ctx.timestamps {
            return Ok((
                t.host,
                "host time per dispatch, each waited for (the adapter has no timestamp queries)"
                    .into(),
            ));
        }
        let queries = 2 * t.labels.len() as u64;
        let mut profile = Profile::new();
        if queries == 0 {
            return Ok((profile, "GPU timestamp queries".into()));
        }
        let size = queries * 8;
        let resolve = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamps"),
            size,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamps readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
        for (i, set) in t.sets.iter().enumerate() {
            let first = i as u64 * QUERIES_PER_SET as u64;
            let count = (queries - first).min(QUERIES_PER_SET as u64) as u32;
            enc.resolve_query_set(set, 0..count, &resolve, first * 8);
        }
        enc.copy_buffer_to_buffer(&resolve, 0, &staging, 0, size);
        ctx.queue.submit([enc.finish()]);
        let bytes = super::buffer::read_mapped(ctx, &staging)?;
        let ticks: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect();
        let period = ctx.queue.get_timestamp_period() as f64;
        for (i, label) in t.labels.iter().enumerate() {
            let dt = ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * period;
            let e = profile.entry((*label).to_owned()).or_default();
            e.0 += Duration::from_nanos(dt as u64);
            e.1 += 1;
        }
        Ok((profile, "GPU timestamp queries".into()))
    }
}
