// 2-D convolution (no groups, no dilation) forward, and its input gradient as a gather: each
// dx element is computed by one invocation (v1) or one thread of a tile (v2), summing over the
// output positions and kernel taps that read it in a fixed order, so the result is
// deterministic without atomics.
//
// v1 kernels: one invocation per output element, direct loops. Simple; the reference.
// v2 kernels: implicit GEMM. Forward: y[co, (n, oy, ox)] = Σ_k W[co, k] · col[k, (n, oy, ox)]
// with k = (ci, ky, kx) and col the im2col matrix, gathered from x on the fly into workgroup
// memory, never written out. Backward: dx[ci, (n, iy, ix)] = Σ_k Wᵀ[ci, k] · g[k, (n, iy, ix)]
// with k = (co, ky, kx) and g the dy value that tap (ky, kx) of output channel co sends to
// (iy, ix), zero where the stride skips it. A 16×16 workgroup computes a 64×64 output tile,
// 4×4 per thread, over K in steps of 16.

struct Conv {
    n: u32, c_in: u32, h_in: u32, w_in: u32,
    c_out: u32, k_h: u32, k_w: u32, stride_h: u32,
    stride_w: u32, pad_h: u32, pad_w: u32, h_out: u32,
    w_out: u32, has_bias: u32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> u: Conv;

// Forward: x [N, Cin, H, W], w [Cout, Cin, kh, kw], bias [Cout] (1-element dummy when
// has_bias = 0) -> y [N, Cout, Ho, Wo].
@group(0) @binding(1) var<storage, read> fx: array<f32>;
@group(0) @binding(2) var<storage, read> fw: array<f32>;
@group(0) @binding(3) var<storage, read> fbias: array<f32>;
@group(0) @binding(4) var<storage, read_write> fy: array<f32>;

@compute @workgroup_size(256)
fn conv2d_fwd_v1(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid);
    if i >= u.n * u.c_out * u.h_out * u.w_out { return; }
    let ox = i % u.w_out;
    let oy = (i / u.w_out) % u.h_out;
    let co = (i / (u.w_out * u.h_out)) % u.c_out;
    let img = i / (u.w_out * u.h_out * u.c_out);
    let y0 = i32(oy * u.stride_h) - i32(u.pad_h);
    let x0 = i32(ox * u.stride_w) - i32(u.pad_w);
    var acc = 0.0;
    for (var ci = 0u; ci < u.c_in; ci++) {
        let xb = (img * u.c_in + ci) * u.h_in * u.w_in;
        let wb = (co * u.c_in + ci) * u.k_h * u.k_w;
        for (var ky = 0u; ky < u.k_h; ky++) {
            let iy = y0 + i32(ky);
            if iy < 0 || iy >= i32(u.h_in) { continue; }
            for (var kx = 0u; kx < u.k_w; kx++) {
                let ix = x0 + i32(kx);
                if ix < 0 || ix >= i32(u.w_in) { continue; }
                acc += fx[xb + u32(iy) * u.w_in + u32(ix)] * fw[wb + ky * u.k_w + kx];
            }
        }
    }
    if u.has_bias != 0u {
        acc += fbias[co];
    }
    fy[i] = acc;
}

// Backward: dy [N, Cout, Ho, Wo], w [Cout, Cin, kh, kw] -> dx [N, Cin, H, W].
@group(0) @binding(1) var<storage, read> bdy: array<f32>;
@group(0) @binding(2) var<storage, read> bw: array<f32>;
@group(0) @binding(3) var<storage, read_write> bdx: array<f32>;

// The output position whose tap k reads input position i, if any: o·stride - pad + k = i.
fn tap_source(i: u32, k: u32, stride: u32, pad: u32, len_out: u32) -> i32 {
    let t = i32(i + pad) - i32(k);
    if t < 0 || u32(t) % stride != 0u { return -1; }
    let o = u32(t) / stride;
    if o >= len_out { return -1; }
    return i32(o);
}

@compute @workgroup_size(256)
fn conv2d_bwd_v1(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid);
    if i >= u.n * u.c_in * u.h_in * u.w_in { return; }
    let ix = i % u.w_in;
    let iy = (i / u.w_in) % u.h_in;
    let ci = (i / (u.w_in * u.h_in)) % u.c_in;
    let img = i / (u.w_in * u.h_in * u.c_in);
    var acc = 0.0;
    for (var co = 0u; co < u.c_out; co++) {
        let db = (img * u.c_out + co) * u.h_out * u.w_out;
        let wb = (co * u.c_in + ci) * u.k_h * u.k_w;
        for (var ky = 0u; ky < u.k_h; ky++) {
            let oy = tap_source(iy, ky, u.stride_h, u.pad_h, u.h_out);
            if oy < 0 { continue; }
            for (var kx = 0u; kx < u.k_w; kx++) {
                let ox = tap_source(ix, kx, u.stride_w, u.pad_w, u.w_out);
                if ox < 0 { continue; }
                acc += bdy[db + u32(oy) * u.w_out + u32(ox)] * bw[wb + ky * u.k_w + kx];
            }
        }
    }
    bdx[i] = acc;
}

// ---- v2: tiled implicit GEMM ----

const TILE: u32 = 64u;  // output tile: TILE rows (channels) × TILE columns (pixels of the batch)
const TK: u32 = 16u;    // K step
var<workgroup> tile_a: array<f32, 1024>;  // [TK, TILE]: weights
var<workgroup> tile_b: array<f32, 1024>;  // [TK, TILE]: gathered inputs

// The v2 kernels' inner step: acc (thread (tx, ty)'s 4×4 outputs, rows ty + 16·i, columns
// tx + 16·j) += tile_a[:, rows]ᵀ · tile_b[:, columns] over the TK rows of both tiles.
fn tile_product(lid3: vec3<u32>, acc: ptr<function, array<f32, 16>>) {
    for (var kr = 0u; kr < TK; kr++) {
        var av: array<f32, 4>;
        var bv: array<f32, 4>;
        for (var t = 0u; t < 4u; t++) {
            av[t] = tile_a[kr * TILE + lid3.y + 16u * t];
            bv[t] = tile_b[kr * TILE + lid3.x + 16u * t];
        }
        for (var i = 0u; i < 4u; i++) {
            for (var j = 0u; j < 4u; j++) {
                (*acc)[i * 4u + j] += av[i] * bv[j];
            }
        }
    }
}

// Workgroups: x·(z folded) = column tiles, y = row (channel) tiles; 16×16 threads, thread
// (tx, ty) owns rows ty + 16·i and columns tx + 16·j, i, j < 4, so stores are coalesced.
@compute @workgroup_size(16, 16)
fn conv2d_fwd_v2(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid3: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let pix = u.h_out * u.w_out;
    let cols = u.n * pix;
    let kk = u.k_h * u.k_w;
    let klen = u.c_in * kk;
    let col0 = (wg.z * nwg.x + wg.x) * TILE;
    let row0 = wg.y * TILE;
    var acc: array<f32, 16>;
    for (var k0 = 0u; k0 < klen; k0 += TK) {
        for (var r = 0u; r < 4u; r++) {
            let e = lid + r * 256u;
            let kr = e / TILE;
            let m = row0 + e % TILE;
            let k = k0 + kr;
            var a = 0.0;
            if m < u.c_out && k < klen {
                a = fw[m * klen + k];
            }
            tile_a[e] = a;
            let col = col0 + e % TILE;
            var b = 0.0;
            if col < cols && k < klen {
                let img = col / pix;
                let p = col % pix;
                let ci = k / kk;
                let ky = (k % kk) / u.k_w;
                let kx = k % u.k_w;
                let iy = i32((p / u.w_out) * u.stride_h + ky) - i32(u.pad_h);
                let ix = i32((p % u.w_out) * u.stride_w + kx) - i32(u.pad_w);
                if iy >= 0 && iy < i32(u.h_in) && ix >= 0 && ix < i32(u.w_in) {
                    b = fx[((img * u.c_in + ci) * u.h_in + u32(iy)) * u.w_in + u32(ix)];
                }
            }
            tile_b[e] = b;
        }
        workgroupBarrier();
        tile_product(lid3, &acc);
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let m = row0 + lid3.y + 16u * i;
        if m >= u.c_out { continue; }
        var bias = 0.0;
        if u.has_bias != 0u {
            bias = fbias[m];
        }
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + lid3.x + 16u * j;
            if col >= cols { continue; }
            fy[((col / pix) * u.c_out + m) * pix + col % pix] = acc[i * 4u + j] + bias;
        }
    }
}

// Backward, tiled: rows are input channels ci, columns the batch's input pixels (n, iy, ix),
// K runs over (co, ky, kx). Same tile shape and thread layout as conv2d_fwd_v2.
@compute @workgroup_size(16, 16)
fn conv2d_bwd_v2(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid3: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let pix_in = u.h_in * u.w_in;
    let pix_out = u.h_out * u.w_out;
    let cols = u.n * pix_in;
    let kk = u.k_h * u.k_w;
    let klen = u.c_out * kk;
    let col0 = (wg.z * nwg.x + wg.x) * TILE;
    let row0 = wg.y * TILE;
    var acc: array<f32, 16>;
    for (var k0 = 0u; k0 < klen; k0 += TK) {
        for (var r = 0u; r < 4u; r++) {
            let e = lid + r * 256u;
            let kr = e / TILE;
            let k = k0 + kr;
            let co = k / kk;
            let tap = k % kk;
            let m = row0 + e % TILE;
            var a = 0.0;
            if m < u.c_in && k < klen {
                a = bw[(co * u.c_in + m) * kk + tap];
            }
            tile_a[e] = a;
            let col = col0 + e % TILE;
            var b = 0.0;
            if col < cols && k < klen {
                let img = col / pix_in;
                let p = col % pix_in;
                let oy = tap_source(p / u.w_in, tap / u.k_w, u.stride_h, u.pad_h, u.h_out);
                let ox = tap_source(p % u.w_in, tap % u.k_w, u.stride_w, u.pad_w, u.w_out);
                if oy >= 0 && ox >= 0 {
                    b = bdy[(img * u.c_out + co) * pix_out + u32(oy) * u.w_out + u32(ox)];
                }
            }
            tile_b[e] = b;
        }
        workgroupBarrier();
        tile_product(lid3, &acc);
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let m = row0 + lid3.y + 16u * i;
        if m >= u.c_in { continue; }
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + lid3.x + 16u * j;
            if col >= cols { continue; }
            bdx[((col / pix_in) * u.c_in + m) * pix_in + col % pix_in] = acc[i * 4u + j];
        }
    }
}

// ---- Weight and bias gradients (training) ----

// Weight gradient: x [N, Cin, H, W], dy [N, Cout, Ho, Wo] -> dw [Cout, Cin, kh, kw],
// dw[co, ci, ky, kx] = Σ_(n, oy, ox) dy[n, co, oy, ox] · x[n, ci, oy·s + ky - pad, ox·s + kx - pad].
@group(0) @binding(1) var<storage, read> gx: array<f32>;
@group(0) @binding(2) var<storage, read> gdy: array<f32>;
@group(0) @binding(3) var<storage, read_write> gdw: array<f32>;

// v1: one invocation per dw element, summing over images, output rows, output columns in order.
@compute @workgroup_size(256)
fn conv2d_wgrad_v1(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid);
    if i >= u.c_out * u.c_in * u.k_h * u.k_w { return; }
    let kx = i % u.k_w;
    let ky = (i / u.k_w) % u.k_h;
    let ci = (i / (u.k_w * u.k_h)) % u.c_in;
    let co = i / (u.k_w * u.k_h * u.c_in);
    var acc = 0.0;
    for (var img = 0u; img < u.n; img++) {
        let xb = (img * u.c_in + ci) * u.h_in * u.w_in;
        let db = (img * u.c_out + co) * u.h_out * u.w_out;
        for (var oy = 0u; oy < u.h_out; oy++) {
            let iy = i32(oy * u.stride_h + ky) - i32(u.pad_h);
            if iy < 0 || iy >= i32(u.h_in) { continue; }
            for (var ox = 0u; ox < u.w_out; ox++) {
                let ix = i32(ox * u.stride_w + kx) - i32(u.pad_w);
                if ix < 0 || ix >= i32(u.w_in) { continue; }
                acc += gdy[db + oy * u.w_out + ox] * gx[xb + u32(iy) * u.w_in + u32(ix)];
            }
        }
    }
    gdw[i] = acc;
}

// v2, tiled: dw[co, k] = Σ_r dy[co, r] · col[k, r] with k = (ci, ky, kx) and r = (n, oy, ox) the
// batch's output pixels, the reduced axis, in steps of TK (col is the im2col matrix, gathered
// on the fly). Rows are output channels, columns the K axis; same tile shape and thread layout
// as conv2d_fwd_v2. Tiles are loaded with neighbouring threads on neighbouring r (neighbouring
// addresses of dy and x). Each dw element is one thread's sum in a fixed order: deterministic.
@compute @workgroup_size(16, 16)
fn conv2d_wgrad_v2(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_id) lid3: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let pix = u.h_out * u.w_out;
    let rlen = u.n * pix;
    let kk = u.k_h * u.k_w;
    let klen = u.c_in * kk;
    let col0 = (wg.z * nwg.x + wg.x) * TILE;
    let row0 = wg.y * TILE;
    var acc: array<f32, 16>;
    for (var r0 = 0u; r0 < rlen; r0 += TK) {
        for (var t = 0u; t < 4u; t++) {
            let e = lid + t * 256u;
            let kr = e % TK;
            let local = e / TK;
            let r = r0 + kr;
            let img = r / pix;
            let p = r % pix;
            let m = row0 + local;
            var a = 0.0;
            if m < u.c_out && r < rlen {
                a = gdy[(img * u.c_out + m) * pix + p];
            }
            tile_a[kr * TILE + local] = a;
            let k = col0 + local;
            var b = 0.0;
            if k < klen && r < rlen {
                let ci = k / kk;
                let ky = (k % kk) / u.k_w;
                let kx = k % u.k_w;
                let iy = i32((p / u.w_out) * u.stride_h + ky) - i32(u.pad_h);
                let ix = i32((p % u.w_out) * u.stride_w + kx) - i32(u.pad_w);
                if iy >= 0 && iy < i32(u.h_in) && ix >= 0 && ix < i32(u.w_in) {
                    b = gx[((img * u.c_in + ci) * u.h_in + u32(iy)) * u.w_in + u32(ix)];
                }
            }
            tile_b[kr * TILE + local] = b;
        }
        workgroupBarrier();
        tile_product(lid3, &acc);
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let m = row0 + lid3.y + 16u * i;
        if m >= u.c_out { continue; }
        for (var j = 0u; j < 4u; j++) {
            let k = col0 + lid3.x + 16u * j;
            if k >= klen { continue; }
            gdw[m * klen + k] = acc[i * 4u + j];
        }
    }
}

// Bias gradient: dy [N, Cout, Ho, Wo] (bdy) -> db [Cout], db[co] = Σ_(n, pixel) dy[n, co, pixel].
// One 64-wide workgroup per channel: each thread sums a fixed strided subset, then a fixed tree
// in workgroup memory adds the 64 partial sums (deterministic, no atomics).
@group(0) @binding(2) var<storage, read_write> gdb: array<f32>;

var<workgroup> partial: array<f32, 64>;

@compute @workgroup_size(64)
fn conv2d_bgrad(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let co = flat_group(wg, nwg);
    if co >= u.c_out { return; }
    let pix = u.h_out * u.w_out;
    var acc = 0.0;
    for (var t = lid; t < u.n * pix; t += 64u) {
        acc += bdy[((t / pix) * u.c_out + co) * pix + t % pix];
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
        gdb[co] = partial[0];
    }
}
