// Squeeze-excitation gates (src/ops/squeeze_excitation.rs): for each image, the channel means
// of x, fc1 and its activation, fc2 and the gate, in one dispatch of one workgroup per image;
// the host then multiplies x by the gates (binary.wgsl's broadcast multiply). Two dispatches
// per block instead of six (pool, conv, activation, conv, gate, multiply). The host prepends
// act_fwd, generated from the activation table. Every sum runs in a fixed order: deterministic.

struct SqueezeExcite {
    n: u32, c: u32, hw: u32, squeeze: u32,
    lanes: u32,         // invocations per channel in the means: a power of two, c·lanes ≤ 256
    act: u32, act_alpha: f32, act_beta: f32,      // fc1's activation: its row in Activation::ALL
    gate: u32, gate_alpha: f32, gate_beta: f32,   // the gate's
    _pad: u32,
}

@group(0) @binding(0) var<uniform> se: SqueezeExcite;
@group(0) @binding(1) var<storage, read> se_x: array<f32>;          // [n, c, hw]
@group(0) @binding(2) var<storage, read> se_w1: array<f32>;         // fc1 weight [squeeze, c]
@group(0) @binding(3) var<storage, read> se_b1: array<f32>;         // fc1 bias [squeeze]
@group(0) @binding(4) var<storage, read> se_w2: array<f32>;         // fc2 weight [c, squeeze]
@group(0) @binding(5) var<storage, read> se_b2: array<f32>;         // fc2 bias [c]
@group(0) @binding(6) var<storage, read_write> se_hidden: array<f32>; // [n, squeeze], scratch
@group(0) @binding(7) var<storage, read_write> se_gates: array<f32>;  // [n, c]: means, then gates

// The pool's partial sums when several invocations share a channel.
var<workgroup> se_part: array<f32, 256>;

@compute @workgroup_size(256)
fn squeeze_excite_gates(@builtin(workgroup_id) wg: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let img = flat_group(wg, nwg);
    if img >= se.n { return; }
    let x0 = img * se.c * se.hw;
    let g0 = img * se.c;
    let h0 = img * se.squeeze;
    // 1. Channel means. Few channels (the early, large blocks): `lanes` invocations stride
    // through each plane and their sums are added in lane order; else one per channel.
    if se.lanes == 1u {
        for (var ch = lid; ch < se.c; ch += 256u) {
            var s = 0.0;
            for (var j = 0u; j < se.hw; j++) { s += se_x[x0 + ch * se.hw + j]; }
            se_gates[g0 + ch] = s / f32(se.hw);
        }
    } else {
        let lane = lid % se.lanes;
        let ch = lid / se.lanes;
        var s = 0.0;
        if ch < se.c {
            for (var j = lane; j < se.hw; j += se.lanes) { s += se_x[x0 + ch * se.hw + j]; }
        }
        se_part[lid] = s;
        workgroupBarrier();
        if lane == 0u && ch < se.c {
            var t = 0.0;
            for (var k = 0u; k < se.lanes; k++) { t += se_part[lid + k]; }
            se_gates[g0 + ch] = t / f32(se.hw);
        }
    }
    storageBarrier();
    // 2. fc1 and its activation, one invocation per hidden unit.
    for (var j = lid; j < se.squeeze; j += 256u) {
        var s = 0.0;
        for (var ch = 0u; ch < se.c; ch++) { s += se_w1[j * se.c + ch] * se_gates[g0 + ch]; }
        se_hidden[h0 + j] = act_fwd(se.act, s + se_b1[j], se.act_alpha, se.act_beta);
    }
    storageBarrier();
    // 3. fc2 and the gate, one invocation per channel (the means are no longer read).
    for (var ch = lid; ch < se.c; ch += 256u) {
        var s = 0.0;
        for (var j = 0u; j < se.squeeze; j++) { s += se_w2[ch * se.squeeze + j] * se_hidden[h0 + j]; }
        se_gates[g0 + ch] = act_fwd(se.gate, s + se_b2[ch], se.gate_alpha, se.gate_beta);
    }
}
