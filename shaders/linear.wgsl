// Fully connected layers: y = x·Wᵀ + b and its input gradient dx = dy·W.
// A weight larger than one storage binding (VGG's 25088×4096 classifier, 392 MiB, against
// 128 MiB on lavapipe and many laptop adapters) is bound as tiles of whole rows: output
// features o0 .. o0 + tile, `w` then holding only that tile's rows. The forward pass writes the
// tile's outputs; the backward pass adds the tile's terms to what the previous tiles left in dx
// (accumulate = 1), in the same order as one pass over all rows would, so splitting the weight
// does not change the result.

struct Linear {
    n: u32,
    in_f: u32,
    out_f: u32,
    has_bias: u32,
    o0: u32,          // first output feature of this weight tile (forward, input gradient)
    tile: u32,        // output features (weight rows) of this tile
    accumulate: u32,  // input gradient: add to dx instead of overwriting it
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> u: Linear;

// linear_fwd: x [N, in_f], w [tile, in_f] (rows o0 .., the whole weight when untiled),
// bias [out_f] (a 1-element dummy when has_bias = 0) -> y [N, out_f], columns o0 .. o0 + tile. One 64-wide workgroup per output element: the dot products are long
// (25,088 for VGG's first classifier layer) and the batch is small, so splitting each one over
// a workgroup and reducing in workgroup memory keeps the GPU busy.
@group(0) @binding(1) var<storage, read> fx: array<f32>;
@group(0) @binding(2) var<storage, read> fw: array<f32>;
@group(0) @binding(3) var<storage, read> fbias: array<f32>;
@group(0) @binding(4) var<storage, read_write> fy: array<f32>;

var<workgroup> partial: array<f32, 64>;

@compute @workgroup_size(64)
fn linear_fwd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let g = flat_group(wg, nwg);
    if g >= u.n * u.tile { return; }
    let row = g / u.tile;
    let t = g % u.tile;
    let o = u.o0 + t;
    var acc = 0.0;
    for (var k = lid; k < u.in_f; k += 64u) {
        acc += fx[row * u.in_f + k] * fw[t * u.in_f + k];
    }
    partial[lid] = acc;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if lid < s {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
    if lid == 0u {
        var y = partial[0];
        if u.has_bias != 0u {
            y += fbias[o];
        }
        fy[row * u.out_f + o] = y;
    }
}

// linear_fwd_rows: linear_fwd's bindings and result for many rows of short dot products (the
// channels-last Linear of ConvNeXt: N·H·W rows, in_f ≤ 1024): one invocation per output
// element, its dot product in order, instead of one 64-wide workgroup.
@compute @workgroup_size(256)
fn linear_fwd_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid);
    if i >= u.n * u.tile { return; }
    let row = i / u.tile;
    let t = i % u.tile;
    let o = u.o0 + t;
    var acc = 0.0;
    for (var k = 0u; k < u.in_f; k++) {
        acc += fx[row * u.in_f + k] * fw[t * u.in_f + k];
    }
    if u.has_bias != 0u {
        acc += fbias[o];
    }
    fy[row * u.out_f + o] = acc;
}

// linear_bwd: dy [N, out_f], w [tile, in_f] (rows o0 ..) -> dx [N, in_f]; one invocation per dx
// element (a gather over the tile's outputs; neighbouring invocations read neighbouring
// weights).
@group(0) @binding(1) var<storage, read> bdy: array<f32>;
@group(0) @binding(2) var<storage, read> bw: array<f32>;
@group(0) @binding(3) var<storage, read_write> bdx: array<f32>;

@compute @workgroup_size(256)
fn linear_bwd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid);
    if i >= u.n * u.in_f { return; }
    let row = i / u.in_f;
    let k = i % u.in_f;
    var acc = 0.0;
    if u.accumulate != 0u {
        acc = bdx[i];
    }
    for (var t = 0u; t < u.tile; t++) {
        acc += bdy[row * u.out_f + u.o0 + t] * bw[t * u.in_f + k];
    }
    bdx[i] = acc;
}

// Weight gradient (training): x [N, in_f], dy [N, out_f] -> dw [out_f, in_f],
// dw[o, k] = Σ_n dy[n, o] · x[n, k]; one invocation per dw element, summing over the batch in
// order (neighbouring invocations read neighbouring x).
@group(0) @binding(1) var<storage, read> gx: array<f32>;
@group(0) @binding(2) var<storage, read> gdy: array<f32>;
@group(0) @binding(3) var<storage, read_write> gdw: array<f32>;

@compute @workgroup_size(256)
fn linear_wgrad(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid);
    if i >= u.out_f * u.in_f { return; }
    let o = i / u.in_f;
    let k = i % u.in_f;
    var acc = 0.0;
    for (var row = 0u; row < u.n; row++) {
        acc += gdy[row * u.out_f + o] * gx[row * u.in_f + k];
    }
    gdw[i] = acc;
}

// Bias gradient (training): dy [N, out_f] (bdy) -> db [out_f], db[o] = Σ_n dy[n, o], summed in
// batch order; one invocation per output.
@group(0) @binding(2) var<storage, read_write> gdb: array<f32>;

@compute @workgroup_size(256)
fn linear_bgrad(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let o = flat_index(wg, nwg, lid);
    if o >= u.out_f { return; }
    var acc = 0.0;
    for (var row = 0u; row < u.n; row++) {
        acc += bdy[row * u.out_f + o];
    }
    gdb[o] = acc;
}
