// Max pooling with argmax and its backward gather; adaptive average pooling forward and its
// backward gather. Backward kernels compute each dx element in one invocation, summing the
// windows that cover it in row-major window order (the CPU backend's order), so results are
// deterministic without atomics.

struct MaxPool {
    n: u32, c: u32, h_in: u32, w_in: u32,
    k_h: u32, k_w: u32, stride_h: u32, stride_w: u32,
    pad_h: u32, pad_w: u32, h_out: u32, w_out: u32,
}

struct AvgPool {
    n: u32, c: u32, h_in: u32, w_in: u32,
    h_out: u32, w_out: u32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> mp: MaxPool;
@group(0) @binding(0) var<uniform> ap: AvgPool;

// max_pool_fwd: x [N, C, H, W] -> y [N, C, Ho, Wo], argmax [N, C, Ho, Wo] (flat in-plane index
// iy·W + ix of the first maximum in row-major window order: PyTorch's tie rule).
@group(0) @binding(1) var<storage, read> mpf_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> mpf_y: array<f32>;
@group(0) @binding(3) var<storage, read_write> mpf_idx: array<u32>;

@compute @workgroup_size(256)
fn max_pool_fwd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid);
    if i >= mp.n * mp.c * mp.h_out * mp.w_out { return; }
    let ox = i % mp.w_out;
    let oy = (i / mp.w_out) % mp.h_out;
    let plane = i / (mp.w_out * mp.h_out);
    let base = plane * mp.h_in * mp.w_in;
    let y0 = i32(oy * mp.stride_h) - i32(mp.pad_h);
    let x0 = i32(ox * mp.stride_w) - i32(mp.pad_w);
    var best = 0.0;
    var best_i = 0xffffffffu;
    for (var ky = 0; ky < i32(mp.k_h); ky++) {
        let iy = y0 + ky;
        if iy < 0 || iy >= i32(mp.h_in) { continue; }
        for (var kx = 0; kx < i32(mp.k_w); kx++) {
            let ix = x0 + kx;
            if ix < 0 || ix >= i32(mp.w_in) { continue; }
            let j = u32(iy) * mp.w_in + u32(ix);
            let v = mpf_x[base + j];
            if best_i == 0xffffffffu || v > best {
                best = v;
                best_i = j;
            }
        }
    }
    mpf_y[i] = best;
    mpf_idx[i] = best_i;
}

// max_pool_bwd: argmax [N, C, Ho, Wo], dy [N, C, Ho, Wo] -> dx [N, C, H, W]: each input element
// sums dy over the windows that cover it and chose it.
@group(0) @binding(1) var<storage, read> mpb_idx: array<u32>;
@group(0) @binding(2) var<storage, read> mpb_dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> mpb_dx: array<f32>;

// First output index whose window (start o·stride - pad, length k) reaches input position i.
fn first_window(i: u32, k: u32, stride: u32, pad: u32) -> u32 {
    let num = i32(i + pad) - i32(k) + 1;
    if num <= 0 { return 0u; }
    return (u32(num) + stride - 1u) / stride;
}

@compute @workgroup_size(256)
fn max_pool_bwd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid);
    if i >= mp.n * mp.c * mp.h_in * mp.w_in { return; }
    let ix = i % mp.w_in;
    let iy = (i / mp.w_in) % mp.h_in;
    let plane = i / (mp.w_in * mp.h_in);
    let me = iy * mp.w_in + ix;
    let oy_end = min((iy + mp.pad_h) / mp.stride_h + 1u, mp.h_out);
    let ox_end = min((ix + mp.pad_w) / mp.stride_w + 1u, mp.w_out);
    let base = plane * mp.h_out * mp.w_out;
    var acc = 0.0;
    for (var oy = first_window(iy, mp.k_h, mp.stride_h, mp.pad_h); oy < oy_end; oy++) {
        for (var ox = first_window(ix, mp.k_w, mp.stride_w, mp.pad_w); ox < ox_end; ox++) {
            let o = base + oy * mp.w_out + ox;
            if mpb_idx[o] == me {
                acc += mpb_dy[o];
            }
        }
    }
    mpb_dx[i] = acc;
}

// Adaptive pooling window [start, end) of output cell o along an axis.
fn win_start(o: u32, len_in: u32, len_out: u32) -> u32 {
    return o * len_in / len_out;
}
fn win_end(o: u32, len_in: u32, len_out: u32) -> u32 {
    return ((o + 1u) * len_in + len_out - 1u) / len_out;
}

// avg_pool_fwd: x [N, C, H, W] -> y [N, C, Ho, Wo]
@group(0) @binding(1) var<storage, read> apf_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> apf_y: array<f32>;

@compute @workgroup_size(256)
fn avg_pool_fwd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid);
    if i >= ap.n * ap.c * ap.h_out * ap.w_out { return; }
    let ox = i % ap.w_out;
    let oy = (i / ap.w_out) % ap.h_out;
    let plane = i / (ap.w_out * ap.h_out);
    let base = plane * ap.h_in * ap.w_in;
    let y0 = win_start(oy, ap.h_in, ap.h_out);
    let y1 = win_end(oy, ap.h_in, ap.h_out);
    let x0 = win_start(ox, ap.w_in, ap.w_out);
    let x1 = win_end(ox, ap.w_in, ap.w_out);
    var s = 0.0;
    for (var iy = y0; iy < y1; iy++) {
        for (var ix = x0; ix < x1; ix++) {
            s += apf_x[base + iy * ap.w_in + ix];
        }
    }
    apf_y[i] = s / f32((y1 - y0) * (x1 - x0));
}

// avg_pool_bwd: dy [N, C, Ho, Wo] -> dx [N, C, H, W]: each input element gathers dy/count
// from every window covering it (windows overlap when the output is larger than the input).
@group(0) @binding(1) var<storage, read> apb_dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> apb_dx: array<f32>;

@compute @workgroup_size(256)
fn avg_pool_bwd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid);
    if i >= ap.n * ap.c * ap.h_in * ap.w_in { return; }
    let ix = i % ap.w_in;
    let iy = (i / ap.w_in) % ap.h_in;
    let plane = i / (ap.w_in * ap.h_in);
    let base = plane * ap.h_out * ap.w_out;
    var acc = 0.0;
    for (var oy = 0u; oy < ap.h_out; oy++) {
        let y0 = win_start(oy, ap.h_in, ap.h_out);
        let y1 = win_end(oy, ap.h_in, ap.h_out);
        if y0 > iy { break; }
        if y1 <= iy { continue; }
        for (var ox = 0u; ox < ap.w_out; ox++) {
            let x0 = win_start(ox, ap.w_in, ap.w_out);
            let x1 = win_end(ox, ap.w_in, ap.w_out);
            if x0 > ix { break; }
            if x1 <= ix { continue; }
            acc += apb_dy[base + oy * ap.w_out + ox] / f32((y1 - y0) * (x1 - x0));
        }
    }
    apb_dx[i] = acc;
}

// ---- Average pooling (kernel, stride, padding, ceil_mode, count_include_pad) ----

struct AvgPool2d {
    n: u32, c: u32, h_in: u32, w_in: u32,
    k_h: u32, k_w: u32, stride_h: u32, stride_w: u32,
    pad_h: u32, pad_w: u32, h_out: u32, w_out: u32,
    count_include_pad: u32, _pad0: u32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<uniform> av: AvgPool2d;

// Window of output o along an axis, as AvgPool2dParams::window: (first input, end input)
// clipped to the input, and its length over the padded input (a ceil-mode window's overhang
// past the padding excluded).
fn avg_axis(o: u32, k: u32, stride: u32, pad: u32, len: u32) -> vec3<i32> {
    let start = i32(o * stride) - i32(pad);
    let end = min(start + i32(k), i32(len + pad));
    let a = max(start, 0);
    let b = max(max(min(end, i32(len)), 0), a);
    return vec3<i32>(a, b, end - start);
}

fn avg_divisor(wy: vec3<i32>, wx: vec3<i32>) -> f32 {
    if av.count_include_pad != 0u {
        return f32(wy.z * wx.z);
    }
    return f32((wy.y - wy.x) * (wx.y - wx.x));
}

// avg_pool2d_fwd: x [N, C, H, W] -> y [N, C, Ho, Wo]; each window summed in row-major order.
@group(0) @binding(1) var<storage, read> avf_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> avf_y: array<f32>;

@compute @workgroup_size(256)
fn avg_pool2d_fwd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid);
    if i >= av.n * av.c * av.h_out * av.w_out { return; }
    let ox = i % av.w_out;
    let oy = (i / av.w_out) % av.h_out;
    let plane = i / (av.w_out * av.h_out);
    let base = plane * av.h_in * av.w_in;
    let wy = avg_axis(oy, av.k_h, av.stride_h, av.pad_h, av.h_in);
    let wx = avg_axis(ox, av.k_w, av.stride_w, av.pad_w, av.w_in);
    var s = 0.0;
    for (var iy = wy.x; iy < wy.y; iy++) {
        for (var ix = wx.x; ix < wx.y; ix++) {
            s += avf_x[base + u32(iy) * av.w_in + u32(ix)];
        }
    }
    avf_y[i] = s / avg_divisor(wy, wx);
}

// avg_pool2d_bwd: dy [N, C, Ho, Wo] -> dx [N, C, H, W]: each input gathers dy/divisor from the
// windows covering it, in row-major window order (the CPU's order).
@group(0) @binding(1) var<storage, read> avb_dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> avb_dx: array<f32>;

@compute @workgroup_size(256)
fn avg_pool2d_bwd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid);
    if i >= av.n * av.c * av.h_in * av.w_in { return; }
    let ix = i % av.w_in;
    let iy = (i / av.w_in) % av.h_in;
    let plane = i / (av.w_in * av.h_in);
    let oy_end = min((iy + av.pad_h) / av.stride_h + 1u, av.h_out);
    let ox_end = min((ix + av.pad_w) / av.stride_w + 1u, av.w_out);
    let base = plane * av.h_out * av.w_out;
    var acc = 0.0;
    for (var oy = first_window(iy, av.k_h, av.stride_h, av.pad_h); oy < oy_end; oy++) {
        let wy = avg_axis(oy, av.k_h, av.stride_h, av.pad_h, av.h_in);
        for (var ox = first_window(ix, av.k_w, av.stride_w, av.pad_w); ox < ox_end; ox++) {
            let wx = avg_axis(ox, av.k_w, av.stride_w, av.pad_w, av.w_in);
            acc += avb_dy[base + oy * av.w_out + ox] / avg_divisor(wy, wx);
        }
    }
    avb_dx[i] = acc;
}

// ---- Adaptive max pooling, with argmax (the adaptive windows of `ap`) ----

// adaptive_max_pool_fwd: x [N, C, H, W] -> y, argmax [N, C, Ho, Wo] (first maximum in
// row-major window order, as max_pool_fwd).
@group(0) @binding(1) var<storage, read> amf_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> amf_y: array<f32>;
@group(0) @binding(3) var<storage, read_write> amf_idx: array<u32>;

@compute @workgroup_size(256)
fn adaptive_max_pool_fwd(@builtin(workgroup_id) wg: vec3<u32>,
                         @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid);
    if i >= ap.n * ap.c * ap.h_out * ap.w_out { return; }
    let ox = i % ap.w_out;
    let oy = (i / ap.w_out) % ap.h_out;
    let plane = i / (ap.w_out * ap.h_out);
    let base = plane * ap.h_in * ap.w_in;
    var best = 0.0;
    var best_i = 0xffffffffu;
    for (var iy = win_start(oy, ap.h_in, ap.h_out); iy < win_end(oy, ap.h_in, ap.h_out); iy++) {
        for (var ix = win_start(ox, ap.w_in, ap.w_out); ix < win_end(ox, ap.w_in, ap.w_out); ix++) {
            let j = iy * ap.w_in + ix;
            let v = amf_x[base + j];
            if best_i == 0xffffffffu || v > best {
                best = v;
                best_i = j;
            }
        }
    }
    amf_y[i] = best;
    amf_idx[i] = best_i;
}

// adaptive_max_pool_bwd: argmax, dy [N, C, Ho, Wo] -> dx [N, C, H, W]: each input sums dy over
// the windows that cover it and chose it, in row-major window order.
@group(0) @binding(1) var<storage, read> amb_idx: array<u32>;
@group(0) @binding(2) var<storage, read> amb_dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> amb_dx: array<f32>;

@compute @workgroup_size(256)
fn adaptive_max_pool_bwd(@builtin(workgroup_id) wg: vec3<u32>,
                         @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid);
    if i >= ap.n * ap.c * ap.h_in * ap.w_in { return; }
    let ix = i % ap.w_in;
    let iy = (i / ap.w_in) % ap.h_in;
    let plane = i / (ap.w_in * ap.h_in);
    let me = iy * ap.w_in + ix;
    let base = plane * ap.h_out * ap.w_out;
    var acc = 0.0;
    for (var oy = 0u; oy < ap.h_out; oy++) {
        if win_start(oy, ap.h_in, ap.h_out) > iy { break; }
        if win_end(oy, ap.h_in, ap.h_out) <= iy { continue; }
        for (var ox = 0u; ox < ap.w_out; ox++) {
            if win_start(ox, ap.w_in, ap.w_out) > ix { break; }
            if win_end(ox, ap.w_in, ap.w_out) <= ix { continue; }
            let o = base + oy * ap.w_out + ox;
            if amb_idx[o] == me {
                acc += amb_dy[o];
            }
        }
    }
    amb_dx[i] = acc;
}
