// LayerNorm over the middle axis of x viewed as [outer, dim, inner] (src/ops/norm.rs), as
// the CPU backend computes it: statistics two-pass on data shifted by each vector's first
// element, the biased variance; the backward pass recomputes them. One invocation per
// normalized vector (outer, inner), its dim elements summed in order (deterministic).
// inner > 1 (LayerNorm2d on NCHW): neighbouring invocations read neighbouring addresses.

struct Ln {
    outer: u32,
    dim: u32,
    inner: u32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> ln: Ln;

// layer_norm_fwd: x [outer, dim, inner], weight [dim], bias [dim] -> y [outer, dim, inner]
@group(0) @binding(1) var<storage, read> lnf_x: array<f32>;
@group(0) @binding(2) var<storage, read> lnf_w: array<f32>;
@group(0) @binding(3) var<storage, read> lnf_b: array<f32>;
@group(0) @binding(4) var<storage, read_write> lnf_y: array<f32>;

// Mean and 1/sqrt(var + eps) of (x − x0) along the vector at `base`, stride `ln.inner`.
fn ln_stats_fwd(base: u32, x0: f32) -> vec2<f32> {
    let n = f32(ln.dim);
    var s = 0.0;
    for (var d = 0u; d < ln.dim; d++) {
        s += lnf_x[base + d * ln.inner] - x0;
    }
    let m = s / n;
    var q = 0.0;
    for (var d = 0u; d < ln.dim; d++) {
        let c = (lnf_x[base + d * ln.inner] - x0) - m;
        q += c * c;
    }
    return vec2<f32>(m, 1.0 / sqrt(q / n + ln.eps));
}

@compute @workgroup_size(256)
fn layer_norm_fwd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let v = flat_index(wg, nwg, lid);
    if v >= ln.outer * ln.inner { return; }
    let base = (v / ln.inner) * ln.dim * ln.inner + v % ln.inner;
    let x0 = lnf_x[base];
    let st = ln_stats_fwd(base, x0);
    for (var d = 0u; d < ln.dim; d++) {
        let at = base + d * ln.inner;
        lnf_y[at] = ((lnf_x[at] - x0) - st.x) * st.y * lnf_w[d] + lnf_b[d];
    }
}

// layer_norm_bwd: x [outer, dim, inner], weight [dim], dy [outer, dim, inner] -> dx, with
// x̂ = (x − mean)·rstd and g = w·dy: dx = rstd·(g − mean(g) − x̂·mean(g·x̂)).
@group(0) @binding(1) var<storage, read> lnb_x: array<f32>;
@group(0) @binding(2) var<storage, read> lnb_w: array<f32>;
@group(0) @binding(3) var<storage, read> lnb_dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> lnb_dx: array<f32>;

@compute @workgroup_size(256)
fn layer_norm_bwd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let v = flat_index(wg, nwg, lid);
    if v >= ln.outer * ln.inner { return; }
    let base = (v / ln.inner) * ln.dim * ln.inner + v % ln.inner;
    let n = f32(ln.dim);
    let x0 = lnb_x[base];
    var s = 0.0;
    for (var d = 0u; d < ln.dim; d++) {
        s += lnb_x[base + d * ln.inner] - x0;
    }
    let m = s / n;
    var q = 0.0;
    for (var d = 0u; d < ln.dim; d++) {
        let c = (lnb_x[base + d * ln.inner] - x0) - m;
        q += c * c;
    }
    let rstd = 1.0 / sqrt(q / n + ln.eps);
    var m1 = 0.0;
    var m2 = 0.0;
    for (var d = 0u; d < ln.dim; d++) {
        let at = base + d * ln.inner;
        let g = lnb_dy[at] * lnb_w[d];
        m1 += g;
        m2 += g * (((lnb_x[at] - x0) - m) * rstd);
    }
    m1 = m1 / n;
    m2 = m2 / n;
    for (var d = 0u; d < ln.dim; d++) {
        let at = base + d * ln.inner;
        let xh = ((lnb_x[at] - x0) - m) * rstd;
        lnb_dx[at] = rstd * (lnb_dy[at] * lnb_w[d] - m1 - xh * m2);
    }
}
