// ReLU (forward and its backward mask), eval-mode BatchNorm as a per-channel affine map,
// residual addition, training-mode dropout by a given mask, and a fill used to poison outputs
// with NaN in tests.
// One invocation per element; every tensor is flat [len] (or [N, C, hw] for the affine map).

struct Elementwise {
    len: u32,
    c: u32,      // channels (affine map only)
    hw: u32,     // elements per channel plane (affine map only)
    value: u32,  // bits of the f32 fill value (fill only)
}

@group(0) @binding(0) var<uniform> u: Elementwise;

// fill: y [len] = value
@group(0) @binding(1) var<storage, read_write> fill_y: array<f32>;

@compute @workgroup_size(256)
fn fill(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid);
    if i >= u.len { return; }
    fill_y[i] = bitcast<f32>(u.value);
}

// relu_fwd: x [len] -> y [len]
@group(0) @binding(1) var<storage, read> un_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> un_y: array<f32>;

@compute @workgroup_size(256)
fn relu_fwd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid);
    if i >= u.len { return; }
    let v = un_x[i];
    un_y[i] = select(v, 0.0, v <= 0.0);  // a NaN stays NaN, as in PyTorch
}

// Two inputs, one output:
//   relu_bwd:   a = y [len] (the ReLU's output), b = dy [len] -> out = dx [len]
//   add:        a [len], b [len] -> out [len]
//   affine_bwd: a = dy [N, C, hw], b = scale [C] -> out = dx [N, C, hw]
//   dropout:    a = x (or dy) [len], b = mask [len] (0 or 1/(1-p)) -> out = y (or dx) [len]
@group(0) @binding(1) var<storage, read> bin_a: array<f32>;
@group(0) @binding(2) var<storage, read> bin_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> bin_out: array<f32>;

@compute @workgroup_size(256)
fn relu_bwd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid);
    if i >= u.len { return; }
    bin_out[i] = select(0.0, bin_b[i], bin_a[i] > 0.0);
}

@compute @workgroup_size(256)
fn add(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid);
    if i >= u.len { return; }
    bin_out[i] = bin_a[i] + bin_b[i];
}

@compute @workgroup_size(256)
fn affine_bwd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid);
    if i >= u.len { return; }
    bin_out[i] = bin_a[i] * bin_b[(i / u.hw) % u.c];
}

// A dropped element is 0 exactly, whatever x (as the CPU's), not x·0.
@compute @workgroup_size(256)
fn dropout(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid);
    if i >= u.len { return; }
    let m = bin_b[i];
    bin_out[i] = select(bin_a[i] * m, 0.0, m == 0.0);
}

// affine_fwd: x [N, C, hw], scale [C], shift [C] -> y [N, C, hw]
@group(0) @binding(3) var<storage, read> tri_c: array<f32>;
@group(0) @binding(4) var<storage, read_write> tri_out: array<f32>;

@compute @workgroup_size(256)
fn affine_fwd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid);
    if i >= u.len { return; }
    let ch = (i / u.hw) % u.c;
    tri_out[i] = bin_a[i] * bin_b[ch] + tri_c[ch];
}

