// The activation table (src/ops/activation.rs): the host prepends the functions
// act_fwd(id, x, a, b) and act_df(id, saved, a, b) generated from the table's GPU expressions,
// so every row of the table runs here. One invocation per element.

struct Act {
    len: u32,
    id: u32,     // the row's index in Activation::ALL
    alpha: f32,  // hardtanh's min, leaky_relu's slope, elu's alpha
    beta: f32,   // hardtanh's max
}

@group(0) @binding(0) var<uniform> ua: Act;

// activation_fwd: x [len] -> y [len]
@group(0) @binding(1) var<storage, read> af_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> af_y: array<f32>;

@compute @workgroup_size(256)
fn activation_fwd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid);
    if i >= ua.len { return; }
    af_y[i] = act_fwd(ua.id, af_x[i], ua.alpha, ua.beta);
}

// activation_bwd: saved [len] (the op's input or output, as the row says), dy [len] -> dx [len]
@group(0) @binding(1) var<storage, read> ab_saved: array<f32>;
@group(0) @binding(2) var<storage, read> ab_dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> ab_dx: array<f32>;

@compute @workgroup_size(256)
fn activation_bwd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid);
    if i >= ua.len { return; }
    ab_dx[i] = ab_dy[i] * act_df(ua.id, ab_saved[i], ua.alpha, ua.beta);
}
