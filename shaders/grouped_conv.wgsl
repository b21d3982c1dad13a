// 2-D convolution with groups (depthwise when groups = Cin = Cout), dilation and padding that
// may differ between the leading and trailing side (the trailing padding only changes Ho, Wo,
// which the host passes). v1: one invocation per output element (forward) or input-gradient
// element (backward, a gather), its taps summed in (channel, ky, kx) order: deterministic
// without atomics. Depthwise convs are memory-bound; this direct form is the GPU reference.
// v2 (forward and input gradient): tiled, each window read staged once in workgroup memory.

struct GroupedConv {
    n: u32, c_in: u32, h_in: u32, w_in: u32,
    c_out: u32, k_h: u32, k_w: u32, stride_h: u32,
    stride_w: u32, pad_h: u32, pad_w: u32, h_out: u32,
    w_out: u32, dil_h: u32, dil_w: u32, groups: u32,
    has_bias: u32,
    tile_h: u32, tile_w: u32, planes: u32,  // v2's tiling (Conv2dParams::grouped_tile)
}

@group(0) @binding(0) var<uniform> g: GroupedConv;

// Forward: x [N, Cin, H, W], w [Cout, Cin/groups, kh, kw], bias [Cout] (1-element dummy when
// has_bias = 0) -> y [N, Cout, Ho, Wo].
@group(0) @binding(1) var<storage, read> gf_x: array<f32>;
@group(0) @binding(2) var<storage, read> gf_w: array<f32>;
@group(0) @binding(3) var<storage, read> gf_bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> gf_y: array<f32>;

@compute @workgroup_size(256)
fn grouped_conv_fwd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid);
    if i >= g.n * g.c_out * g.h_out * g.w_out { return; }
    let ox = i % g.w_out;
    let oy = (i / g.w_out) % g.h_out;
    let co = (i / (g.w_out * g.h_out)) % g.c_out;
    let img = i / (g.w_out * g.h_out * g.c_out);
    let cig = g.c_in / g.groups;
    let ci0 = (co / (g.c_out / g.groups)) * cig;
    let y0 = i32(oy * g.stride_h) - i32(g.pad_h);
    let x0 = i32(ox * g.stride_w) - i32(g.pad_w);
    var acc = 0.0;
    for (var c = 0u; c < cig; c++) {
        let xb = (img * g.c_in + ci0 + c) * g.h_in * g.w_in;
        let wb = (co * cig + c) * g.k_h * g.k_w;
        for (var ky = 0u; ky < g.k_h; ky++) {
            let iy = y0 + i32(ky * g.dil_h);
            if iy < 0 || iy >= i32(g.h_in) { continue; }
            for (var kx = 0u; kx < g.k_w; kx++) {
                let ix = x0 + i32(kx * g.dil_w);
                if ix < 0 || ix >= i32(g.w_in) { continue; }
                acc += gf_x[xb + u32(iy) * g.w_in + u32(ix)] * gf_w[wb + ky * g.k_w + kx];
            }
        }
    }
    if g.has_bias != 0u {
        acc += gf_bias[co];
    }
    gf_y[i] = acc;
}

// Forward v2, the same bindings: a workgroup computes a tile_h × tile_w tile of outputs in
// each of `planes` output planes (small maps: several planes per workgroup). For each input
// channel of the group it first stages the tile's input window (halo included, zeros where the
// window leaves the input) in workgroup memory, so each input value is read from global memory
// once per tile instead of once per tap; then each invocation sums its taps from there. Same
// (channel, ky, kx) order as v1; a padded tap adds a zero product where v1 skips it.
var<workgroup> gc_window: array<f32, 4096>;  // planes × rows × cols ≤ GroupedTile::PATCH

@compute @workgroup_size(256)
fn grouped_conv_fwd_v2(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let th = g.tile_h;
    let tw = g.tile_w;
    let rows = (th - 1u) * g.stride_h + (g.k_h - 1u) * g.dil_h + 1u;
    let cols = (tw - 1u) * g.stride_w + (g.k_w - 1u) * g.dil_w + 1u;
    let window = rows * cols;
    let tiles_x = (g.w_out + tw - 1u) / tw;
    let tiles = tiles_x * ((g.h_out + th - 1u) / th);
    let wid = flat_group(wg, nwg);
    let plane0 = (wid / tiles) * g.planes;
    let oy0 = ((wid % tiles) / tiles_x) * th;
    let ox0 = ((wid % tiles) % tiles_x) * tw;
    let iy0 = i32(oy0 * g.stride_h) - i32(g.pad_h);
    let ix0 = i32(ox0 * g.stride_w) - i32(g.pad_w);
    let all_planes = g.n * g.c_out;
    let cig = g.c_in / g.groups;
    let cog = g.c_out / g.groups;
    // This invocation's output: plane slot q, pixel (oy, ox).
    let q = lid / (th * tw);
    let oy = oy0 + (lid % (th * tw)) / tw;
    let ox = ox0 + lid % tw;
    let plane = plane0 + q;
    let live = q < g.planes && plane < all_planes && oy < g.h_out && ox < g.w_out;
    let co = plane % g.c_out;
    let base = q * window + (oy - oy0) * g.stride_h * cols + (ox - ox0) * g.stride_w;
    var acc = 0.0;
    for (var c = 0u; c < cig; c++) {
        for (var e = lid; e < g.planes * window; e += 256u) {
            let pq = plane0 + e / window;
            var v = 0.0;
            if pq < all_planes {
                let ci = ((pq % g.c_out) / cog) * cig + c;
                let iy = iy0 + i32((e % window) / cols);
                let ix = ix0 + i32(e % cols);
                if iy >= 0 && iy < i32(g.h_in) && ix >= 0 && ix < i32(g.w_in) {
                    v = gf_x[(((pq / g.c_out) * g.c_in + ci) * g.h_in + u32(iy)) * g.w_in + u32(ix)];
                }
            }
            gc_window[e] = v;
        }
        workgroupBarrier();
        if live {
            let wb = (co * cig + c) * g.k_h * g.k_w;
            for (var ky = 0u; ky < g.k_h; ky++) {
                let row = base + ky * g.dil_h * cols;
                for (var kx = 0u; kx < g.k_w; kx++) {
                    acc += gc_window[row + kx * g.dil_w] * gf_w[wb + ky * g.k_w + kx];
                }
            }
        }
        workgroupBarrier();
    }
    if live {
        if g.has_bias != 0u {
            acc += gf_bias[co];
        }
        gf_y[(plane * g.h_out + oy) * g.w_out + ox] = acc;
    }
}

// Input gradient: dy [N, Cout, Ho, Wo], w [Cout, Cin/groups, kh, kw] -> dx [N, Cin, H, W].
@group(0) @binding(1) var<storage, read> gb_dy: array<f32>;
@group(0) @binding(2) var<storage, read> gb_w: array<f32>;
@group(0) @binding(3) var<storage, read_write> gb_dx: array<f32>;

// The output position whose tap k (dilated: offset k·dil) reads input position i, if any:
// o·stride − pad + k·dil = i.
fn dilated_tap_source(i: u32, k: u32, dil: u32, stride: u32, pad: u32, len_out: u32) -> i32 {
    let t = i32(i + pad) - i32(k * dil);
    if t < 0 || u32(t) % stride != 0u { return -1; }
    let o = u32(t) / stride;
    if o >= len_out { return -1; }
    return i32(o);
}

@compute @workgroup_size(256)
fn grouped_conv_bwd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid);
    if i >= g.n * g.c_in * g.h_in * g.w_in { return; }
    let ix = i % g.w_in;
    let iy = (i / g.w_in) % g.h_in;
    let ci = (i / (g.w_in * g.h_in)) % g.c_in;
    let img = i / (g.w_in * g.h_in * g.c_in);
    let cig = g.c_in / g.groups;
    let cog = g.c_out / g.groups;
    let grp = ci / cig;
    let c = ci - grp * cig;
    var acc = 0.0;
    for (var k = 0u; k < cog; k++) {
        let co = grp * cog + k;
        let db = (img * g.c_out + co) * g.h_out * g.w_out;
        let wb = (co * cig + c) * g.k_h * g.k_w;
        for (var ky = 0u; ky < g.k_h; ky++) {
            let oy = dilated_tap_source(iy, ky, g.dil_h, g.stride_h, g.pad_h, g.h_out);
            if oy < 0 { continue; }
            for (var kx = 0u; kx < g.k_w; kx++) {
                let ox = dilated_tap_source(ix, kx, g.dil_w, g.stride_w, g.pad_w, g.w_out);
                if ox < 0 { continue; }
                acc += gb_dy[db + u32(oy) * g.w_out + u32(ox)] * gb_w[wb + ky * g.k_w + kx];
            }
        }
    }
    gb_dx[i] = acc;
}

// Input gradient v2, the same bindings as grouped_conv_bwd: a workgroup computes a tile_h ×
// tile_w tile of dx in each of `planes` input planes. For each output channel of the group it
// stages the rows and columns of dy that reach the tile (zeros outside dy), then each
// invocation gathers its taps from there. Same (channel, ky, kx) order as v1; a tap that lands
// outside dy adds a zero product where v1 skips it.
fn floor_div(a: i32, b: i32) -> i32 {
    if a >= 0 { return a / b; }
    return -((b - 1 - a) / b);
}

@compute @workgroup_size(256)
fn grouped_conv_bwd_v2(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let th = g.tile_h;
    let tw = g.tile_w;
    // At most this many dy rows and columns reach a tile (Conv2dParams::grouped_tile_backward).
    let rows = (th - 1u + (g.k_h - 1u) * g.dil_h) / g.stride_h + 2u;
    let cols = (tw - 1u + (g.k_w - 1u) * g.dil_w) / g.stride_w + 2u;
    let window = rows * cols;
    let tiles_x = (g.w_in + tw - 1u) / tw;
    let tiles = tiles_x * ((g.h_in + th - 1u) / th);
    let wid = flat_group(wg, nwg);
    let plane0 = (wid / tiles) * g.planes;
    let iy0 = ((wid % tiles) / tiles_x) * th;
    let ix0 = ((wid % tiles) % tiles_x) * tw;
    // The first dy row and column that reach the tile (negative: above or left of dy).
    let oy0 = floor_div(i32(iy0 + g.pad_h) - i32((g.k_h - 1u) * g.dil_h), i32(g.stride_h));
    let ox0 = floor_div(i32(ix0 + g.pad_w) - i32((g.k_w - 1u) * g.dil_w), i32(g.stride_w));
    let all_planes = g.n * g.c_in;
    let cig = g.c_in / g.groups;
    let cog = g.c_out / g.groups;
    // This invocation's dx element: plane slot q, pixel (iy, ix).
    let q = lid / (th * tw);
    let iy = iy0 + (lid % (th * tw)) / tw;
    let ix = ix0 + lid % tw;
    let plane = plane0 + q;
    let live = q < g.planes && plane < all_planes && iy < g.h_in && ix < g.w_in;
    let grp = (plane % g.c_in) / cig;
    let c = plane % g.c_in - grp * cig;
    var acc = 0.0;
    for (var k = 0u; k < cog; k++) {
        for (var e = lid; e < g.planes * window; e += 256u) {
            let pq = plane0 + e / window;
            var v = 0.0;
            if pq < all_planes {
                let co = ((pq % g.c_in) / cig) * cog + k;
                let oy = oy0 + i32((e % window) / cols);
                let ox = ox0 + i32(e % cols);
                if oy >= 0 && oy < i32(g.h_out) && ox >= 0 && ox < i32(g.w_out) {
                    v = gb_dy[(((pq / g.c_in) * g.c_out + co) * g.h_out + u32(oy)) * g.w_out + u32(ox)];
                }
            }
            gc_window[e] = v;
        }
        workgroupBarrier();
        if live {
            let wb = ((grp * cog + k) * cig + c) * g.k_h * g.k_w;
            for (var ky = 0u; ky < g.k_h; ky++) {
                let ty = i32(iy + g.pad_h) - i32(ky * g.dil_h);
                if ty % i32(g.stride_h) != 0 { continue; }
                let row = q * window + u32(ty / i32(g.stride_h) - oy0) * cols;
                for (var kx = 0u; kx < g.k_w; kx++) {
                    let tx = i32(ix + g.pad_w) - i32(kx * g.dil_w);
                    if tx % i32(g.stride_w) != 0 { continue; }
                    acc += gc_window[row + u32(tx / i32(g.stride_w) - ox0)] * gb_w[wb + ky * g.k_w + kx];
                }
            }
        }
        workgroupBarrier();
    }
    if live {
        gb_dx[(plane * g.h_in + iy) * g.w_in + ix] = acc;
    }
}

// Weight gradient (training): x [N, Cin, H, W], dy [N, Cout, Ho, Wo] ->
// dw [Cout, Cin/groups, kh, kw], dw[co, c, ky, kx] = Σ_(n, oy, ox) dy[n, co, oy, ox] ·
// x[n, group's channel c, oy·sh − ph + ky·dh, ox·sw − pw + kx·dw]; one invocation per weight,
// summing in (n, oy, ox) order (deterministic).
@group(0) @binding(1) var<storage, read> gw_x: array<f32>;
@group(0) @binding(2) var<storage, read> gw_dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> gw_dw: array<f32>;

@compute @workgroup_size(256)
fn grouped_conv_wgrad(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let cig = g.c_in / g.groups;
    let i = flat_index(wg, nwg, lid);
    if i >= g.c_out * cig * g.k_h * g.k_w { return; }
    let kx = i % g.k_w;
    let ky = (i / g.k_w) % g.k_h;
    let c = (i / (g.k_w * g.k_h)) % cig;
    let co = i / (g.k_w * g.k_h * cig);
    let ci = (co / (g.c_out / g.groups)) * cig + c;
    var acc = 0.0;
    for (var img = 0u; img < g.n; img++) {
        let xb = (img * g.c_in + ci) * g.h_in * g.w_in;
        let db = (img * g.c_out + co) * g.h_out * g.w_out;
        for (var oy = 0u; oy < g.h_out; oy++) {
            let iy = i32(oy * g.stride_h + ky * g.dil_h) - i32(g.pad_h);
            if iy < 0 || iy >= i32(g.h_in) { continue; }
            for (var ox = 0u; ox < g.w_out; ox++) {
                let ix = i32(ox * g.stride_w + kx * g.dil_w) - i32(g.pad_w);
                if ix < 0 || ix >= i32(g.w_in) { continue; }
                acc += gw_dy[db + oy * g.w_out + ox] * gw_x[xb + u32(iy) * g.w_in + u32(ix)];
            }
        }
    }
    gw_dw[i] = acc;
}
