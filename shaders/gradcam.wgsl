// Two kernels: `class_seed` starts the backward pass from the logits; `grad_cam` is the fused
// Grad-CAM step at its end.
//
// The fused CAM step, one dispatch, one 256-thread workgroup per image, as the CPU oracle
// (src/backend/cpu/cam.rs, which accumulates in f64; here every sum is f32):
//
//   1. w[c] = the channel weight of `combine`                    threads split the channels
//   2. s[p] = ReLU(Σ_c w[c]·act[c, p]), or ReLU of the           threads split the pixels
//      element-wise forms, and its min/max
//   3. out[q] = bilinear(normalize(s))[q] and its min/max        threads split output pixels
//   4. with `renormalize`: out[q] = normalize(out[q])            each thread its own pixels
//
// Why one workgroup per image: every phase needs the whole previous phase of the same image
// (the weights before the sum, the min and max before the upsampling, the upsampled min and max
// before the final scaling). Inside one workgroup those are barriers and workgroup-memory
// reductions; across workgroups they would need one dispatch per phase. The CAM is tiny next to
// the network (h·w·C multiply-adds per image), so one workgroup per image costs little.
// What is written: w and s go to `scratch`, a storage buffer of N·(C + h·w) floats, because
// neither has a size bound that fits workgroup memory (C = 2048 for ResNet-50, h·w up to the
// input size for an early layer). The normalized small CAM is never stored: each sample
// normalizes the two-to-four values it reads. Phase 3 writes the unnormalized upsampled value to
// the output itself and phase 4 rescales it in place, each thread touching only its own pixels.
// Min-max normalization is (v - min) / (max - min + 1e-7), twice, as pytorch-grad-cam does;
// without `renormalize` (the per-layer CAMs of several layers, averaged later) only once.

struct GradCam {
    n: u32, c: u32, h: u32, w: u32,
    out_h: u32, out_w: u32,
    scale_h: f32,  // h / out_h, computed on the host exactly as the CPU backend does
    scale_w: f32,  // w / out_w
    combine: u32,  // CamCombine::code(): the constants below
    renormalize: u32,  // 1: normalize again after resizing
}

// CamCombine::code(), the order of CamCombine::ALL.
const MEAN: u32 = 0u;
const PLUS_PLUS: u32 = 1u;
const XGRAD: u32 = 2u;
const HIRES: u32 = 3u;
const ELEMENT_WISE: u32 = 4u;
const LAYER: u32 = 5u;
const FEM: u32 = 6u;
const WEIGHTS: u32 = 7u;

const EPS: f32 = 1e-7;
const BIG: f32 = 3.0e38;
const PLUS_PLUS_EPS: f32 = 1e-6;  // ops::PLUS_PLUS_EPS
const XGRAD_EPS: f32 = 1e-7;      // ops::XGRAD_EPS
const FEM_K: f32 = 2.0;           // ops::FEM_K

@group(0) @binding(0) var<uniform> u: GradCam;
@group(0) @binding(1) var<storage, read> act: array<f32>;             // [N, C, h, w]
@group(0) @binding(2) var<storage, read> grad: array<f32>;            // [N, C, h, w]; WEIGHTS: [N, C]; FEM: not read
@group(0) @binding(3) var<storage, read_write> scratch: array<f32>;   // [N, C + h·w]
@group(0) @binding(4) var<storage, read_write> cam: array<f32>;       // [N, out_h, out_w]

var<workgroup> red_lo: array<f32, 256>;
var<workgroup> red_hi: array<f32, 256>;

// Workgroup-wide (min, max) of each thread's (lo, hi).
fn reduce_min_max(lid: u32, lo: f32, hi: f32) -> vec2<f32> {
    red_lo[lid] = lo;
    red_hi[lid] = hi;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if lid < s {
            red_lo[lid] = min(red_lo[lid], red_lo[lid + s]);
            red_hi[lid] = max(red_hi[lid], red_hi[lid + s]);
        }
        workgroupBarrier();
    }
    let r = vec2<f32>(red_lo[0], red_hi[0]);
    workgroupBarrier();
    return r;
}

// Source index pair and weight of bilinear sampling with half-pixel centers.
fn source(dst: u32, len_in: u32, scale: f32) -> vec3<f32> {
    let src = max((f32(dst) + 0.5) * scale - 0.5, 0.0);
    let i0 = min(u32(src), len_in - 1u);
    let i1 = min(i0 + 1u, len_in - 1u);
    var w1 = src - f32(i0);
    if i0 == len_in - 1u {
        w1 = 0.0;
    }
    return vec3<f32>(f32(i0), f32(i1), w1);
}

// The weight of one channel, for the combines that weight channels. a: the channel's first
// element in act ([hw]); g: its first element in grad ([hw], or its one weight for WEIGHTS).
fn channel_weight(a: u32, g: u32, hw: u32) -> f32 {
    let n = f32(hw);
    switch u.combine {
        case MEAN: {
            var s = 0.0;
            for (var p = 0u; p < hw; p++) { s += grad[g + p]; }
            return s / n;
        }
        case PLUS_PLUS: {
            var sa = 0.0;
            for (var p = 0u; p < hw; p++) { sa += act[a + p]; }
            // Only g > 0 adds: ReLU(g) is 0 elsewhere, and α is 0 where g = 0.
            var s = 0.0;
            for (var p = 0u; p < hw; p++) {
                let gv = grad[g + p];
                if gv > 0.0 {
                    let g2 = gv * gv;
                    s += gv * g2 / (2.0 * g2 + sa * (g2 * gv) + PLUS_PLUS_EPS);
                }
            }
            return s;
        }
        case XGRAD: {
            var sa = 0.0;
            var sga = 0.0;
            for (var p = 0u; p < hw; p++) {
                let av = act[a + p];
                sa += av;
                sga += grad[g + p] * av;
            }
            return sga / (sa + XGRAD_EPS);
        }
        case FEM: {
            // Two passes, as the oracle: the mean, then the population variance around it.
            var sa = 0.0;
            for (var p = 0u; p < hw; p++) { sa += act[a + p]; }
            let mean = sa / n;
            var sq = 0.0;
            for (var p = 0u; p < hw; p++) {
                let d = act[a + p] - mean;
                sq += d * d;
            }
            let th = mean + FEM_K * sqrt(sq / n);
            var count = 0u;
            for (var p = 0u; p < hw; p++) {
                if act[a + p] > th { count++; }
            }
            return f32(count) / n;
        }
        case WEIGHTS: {
            return grad[g];
        }
        default: {
            return 0.0;
        }
    }
}

// The map of one pixel before the ReLU: Σ_c over channels of the combine's term. a, g: the
// pixel's element in channel 0 of act and grad; w: the image's weights in scratch.
fn pixel_sum(a: u32, g: u32, w: u32, hw: u32) -> f32 {
    var s = 0.0;
    switch u.combine {
        case HIRES: {
            for (var ch = 0u; ch < u.c; ch++) { s += grad[g + ch * hw] * act[a + ch * hw]; }
        }
        case ELEMENT_WISE: {
            for (var ch = 0u; ch < u.c; ch++) {
                s += max(grad[g + ch * hw] * act[a + ch * hw], 0.0);
            }
        }
        case LAYER: {
            for (var ch = 0u; ch < u.c; ch++) {
                s += max(grad[g + ch * hw], 0.0) * act[a + ch * hw];
            }
        }
        default: {
            for (var ch = 0u; ch < u.c; ch++) { s += scratch[w + ch] * act[a + ch * hw]; }
        }
    }
    return s;
}

@compute @workgroup_size(256)
fn grad_cam(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let img = flat_group(wg, nwg);
    if img >= u.n { return; }
    let hw = u.h * u.w;
    let a0 = img * u.c * hw;
    var g0 = a0;
    var g_stride = hw;
    if u.combine == WEIGHTS {
        g0 = img * u.c;
        g_stride = 1u;
    }
    let wts = img * (u.c + hw);
    let small = wts + u.c;

    // 1. channel weights (the element-wise combines have none)
    let elementwise = u.combine == HIRES || u.combine == ELEMENT_WISE || u.combine == LAYER;
    if !elementwise {
        for (var ch = lid; ch < u.c; ch += 256u) {
            scratch[wts + ch] = channel_weight(a0 + ch * hw, g0 + ch * g_stride, hw);
        }
    }
    storageBarrier();

    // 2. the map, ReLU, min and max
    var lo = BIG;
    var hi = -BIG;
    for (var p = lid; p < hw; p += 256u) {
        let s = max(pixel_sum(a0 + p, g0 + p, wts, hw), 0.0);
        scratch[small + p] = s;
        lo = min(lo, s);
        hi = max(hi, s);
    }
    let r1 = reduce_min_max(lid, lo, hi);
    storageBarrier();
    let lo1 = r1.x;
    // max(…, 0) (a no-op: max ≥ min) keeps the compiler from reassociating the sum into
    // max + (EPS - min), which is 0 for a constant map whose half-ulp exceeds EPS: 0 / 0 = NaN.
    let den1 = max(r1.y - lo1, 0.0) + EPS;

    // 3. bilinear upsampling of the normalized small CAM, min and max
    let out_len = u.out_h * u.out_w;
    let o0 = img * out_len;
    lo = BIG;
    hi = -BIG;
    for (var q = lid; q < out_len; q += 256u) {
        let sy = source(q / u.out_w, u.h, u.scale_h);
        let sx = source(q % u.out_w, u.w, u.scale_w);
        let row0 = small + u32(sy.x) * u.w;
        let row1 = small + u32(sy.y) * u.w;
        let x0 = u32(sx.x);
        let x1 = u32(sx.y);
        let v00 = (scratch[row0 + x0] - lo1) / den1;
        let v01 = (scratch[row0 + x1] - lo1) / den1;
        let v10 = (scratch[row1 + x0] - lo1) / den1;
        let v11 = (scratch[row1 + x1] - lo1) / den1;
        let top = v00 * (1.0 - sx.z) + v01 * sx.z;
        let bottom = v10 * (1.0 - sx.z) + v11 * sx.z;
        let v = top * (1.0 - sy.z) + bottom * sy.z;
        cam[o0 + q] = v;
        lo = min(lo, v);
        hi = max(hi, v);
    }
    if u.renormalize == 0u { return; }
    let r2 = reduce_min_max(lid, lo, hi);
    let den2 = max(r2.y - r2.x, 0.0) + EPS;

    // 4. normalize again, in place (each thread rewrites the pixels it wrote)
    for (var q = lid; q < out_len; q += 256u) {
        cam[o0 + q] = (cam[o0 + q] - r2.x) / den2;
    }
}

// score_cam_masks: ScoreCAM's masked inputs for one image (ops::ScoreMaskParams), one
// 256-thread workgroup per mask j (channel c0 + j of the image's activation):
//
//   1. m[q] = bilinear align_corners=True upsampling of the channel, and its min/max
//   2. out[j, k, q] = x[k, q] · (m[q] - min) / (max - min + 1e-8)     for every image channel k
//
// The upsampled mask is not stored: phase 2 computes each m[q] again from its four taps (the
// same function, so the same bits), which costs less than a [count, out_h, out_w] scratch
// buffer's traffic. One workgroup per mask, because phase 2 needs the whole mask's min and max;
// ScoreCAM's batches of masks are each followed by a full forward pass of the network, next to
// which this is small.

struct ScoreMask {
    image: u32, c0: u32, count: u32,
    c: u32, h: u32, w: u32,
    in_c: u32, out_h: u32, out_w: u32,
    scale_h: f32,  // ops::align_corners_scale(h, out_h), computed on the host
    scale_w: f32,  // ops::align_corners_scale(w, out_w)
}

const SCORE_MASK_EPS: f32 = 1e-8;  // ops::SCORE_MASK_EPS

@group(0) @binding(0) var<uniform> mask_u: ScoreMask;
@group(0) @binding(1) var<storage, read> mask_x: array<f32>;              // [in_c, out_h, out_w]
@group(0) @binding(2) var<storage, read> mask_act: array<f32>;            // [N, C, h, w]
@group(0) @binding(3) var<storage, read_write> masked: array<f32>;        // [count, in_c, out_h, out_w]

// Source index pair and weight of bilinear sampling with align_corners=True.
fn corner_source(dst: u32, len_in: u32, scale: f32) -> vec3<f32> {
    let s = f32(dst) * scale;
    let i0 = min(u32(s), len_in - 1u);
    let i1 = min(i0 + 1u, len_in - 1u);
    return vec3<f32>(f32(i0), f32(i1), s - f32(i0));
}

// The upsampled mask at output pixel q; src: the channel's first element in mask_act.
fn mask_at(src: u32, q: u32) -> f32 {
    let sy = corner_source(q / mask_u.out_w, mask_u.h, mask_u.scale_h);
    let sx = corner_source(q % mask_u.out_w, mask_u.w, mask_u.scale_w);
    let row0 = src + u32(sy.x) * mask_u.w;
    let row1 = src + u32(sy.y) * mask_u.w;
    let x0 = u32(sx.x);
    let x1 = u32(sx.y);
    let top = mask_act[row0 + x0] * (1.0 - sx.z) + mask_act[row0 + x1] * sx.z;
    let bottom = mask_act[row1 + x0] * (1.0 - sx.z) + mask_act[row1 + x1] * sx.z;
    return top * (1.0 - sy.z) + bottom * sy.z;
}

@compute @workgroup_size(256)
fn score_cam_masks(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let j = flat_group(wg, nwg);
    if j >= mask_u.count { return; }
    let src = (mask_u.image * mask_u.c + mask_u.c0 + j) * mask_u.h * mask_u.w;
    let plane = mask_u.out_h * mask_u.out_w;

    // 1. min and max of the upsampled mask
    var lo = BIG;
    var hi = -BIG;
    for (var q = lid; q < plane; q += 256u) {
        let m = mask_at(src, q);
        lo = min(lo, m);
        hi = max(hi, m);
    }
    let r = reduce_min_max(lid, lo, hi);
    let den = max(r.y - r.x, 0.0) + SCORE_MASK_EPS;  // max: see den1 of grad_cam

    // 2. the image times the normalized mask
    let o0 = j * mask_u.in_c * plane;
    for (var q = lid; q < plane; q += 256u) {
        let m = (mask_at(src, q) - r.x) / den;
        for (var k = 0u; k < mask_u.in_c; k++) {
            masked[o0 + k * plane + q] = mask_x[k * plane + q] * m;
        }
    }
}

// class_seed: the one-hot gradient d(Σ_i logit[i, class_i]) / d logits that starts the backward
// pass, made here from the logits on the device, so the backward pass follows the forward pass
// without reading the logits back first. One invocation per (image, class) writes its own
// element: with a fixed class, 1 where the class matches; by rank, 1 where the number of
// classes ranking before this one equals the rank. The order is the CPU's `ranks_before`:
// larger logit first, ties to the lower index, NaN last (where the device keeps NaNs).

struct ClassSeed {
    n: u32, k: u32,
    mode: u32,   // 0: fixed class, 1: by rank
    value: u32,  // the class, or the rank (0 = top prediction)
}

@group(0) @binding(0) var<uniform> seed_u: ClassSeed;
@group(0) @binding(1) var<storage, read> logits: array<f32>;          // [N, K]
@group(0) @binding(2) var<storage, read_write> seed: array<f32>;      // [N, K]

fn ranks_before(a: f32, ia: u32, b: f32, ib: u32) -> bool {
    let nan_a = a != a;
    let nan_b = b != b;
    if !nan_a && !nan_b { return a > b || (a == b && ia < ib); }
    return nan_b && (!nan_a || ia < ib);
}

@compute @workgroup_size(256)
fn class_seed(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let t = flat_index(wg, nwg, lid);
    if t >= seed_u.n * seed_u.k { return; }
    let row = (t / seed_u.k) * seed_u.k;
    let j = t % seed_u.k;
    var picked: bool;
    if seed_u.mode == 0u {
        picked = j == seed_u.value;
    } else {
        var rank = 0u;
        for (var i = 0u; i < seed_u.k; i++) {
            if ranks_before(logits[row + i], i, logits[t], j) { rank++; }
        }
        picked = rank == seed_u.value;
    }
    seed[t] = select(0.0, 1.0, picked);
}
