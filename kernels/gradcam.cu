// The fused CAM step, one block per image, as the CPU oracle (src/backend/cpu/cam.rs): the
// map of the combine (channel weights then sum_c w_c * A_c, or an element-wise product summed
// over channels), ReLU, min-max normalization, bilinear upsampling with half-pixel centers, and
// (with renormalize) min-max normalization again, each as (v - min) / (max - min + 1e-7). Sums
// are in double, like the oracle: they are tiny next to the network, and the CAM is what users
// look at.

// +infinity; NVRTC has no <math.h>, so INFINITY is not defined.
#define GC_INF __int_as_float(0x7f800000)

#define CAM_THREADS 256
#define CAM_EPS 1e-7f

// CamCombine::code(), the order of CamCombine::ALL.
#define CAM_MEAN 0
#define CAM_PLUS_PLUS 1
#define CAM_XGRAD 2
#define CAM_HIRES 3
#define CAM_ELEMENT_WISE 4
#define CAM_LAYER 5
#define CAM_FEM 6
#define CAM_WEIGHTS 7

#define PLUS_PLUS_EPS 1e-6  // ops::PLUS_PLUS_EPS
#define XGRAD_EPS 1e-7      // ops::XGRAD_EPS
#define FEM_K 2.0           // ops::FEM_K

// Block-wide min (is_max = 0) or max (is_max = 1) of one value per thread; all threads get it.
__device__ float block_reduce(float v, bool is_max, float* shared) {
    for (int off = 16; off > 0; off /= 2) {
        float o = __shfl_down_sync(0xffffffffu, v, off);
        v = is_max ? fmaxf(v, o) : fminf(v, o);
    }
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();  // shared may still be read by a previous call
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < CAM_THREADS / 32 ? shared[lane] : (is_max ? -GC_INF : GC_INF);
        for (int off = 16; off > 0; off /= 2) {
            float o = __shfl_down_sync(0xffffffffu, v, off);
            v = is_max ? fmaxf(v, o) : fminf(v, o);
        }
        if (lane == 0) shared[0] = v;
    }
    __syncthreads();
    return shared[0];
}

// Normalizes v[0..len) in place to (v - min) / (max - min + eps), with max - min computed as
// the oracle does (the largest v - min, starting from 0).
__device__ void normalize(float* v, int len, float* shared) {
    float lo = GC_INF;
    for (int i = threadIdx.x; i < len; i += blockDim.x) lo = fminf(lo, v[i]);
    lo = block_reduce(lo, false, shared);
    float hi = 0.0f;
    for (int i = threadIdx.x; i < len; i += blockDim.x) hi = fmaxf(hi, __fsub_rn(v[i], lo));
    hi = block_reduce(hi, true, shared);
    float denom = __fadd_rn(hi, CAM_EPS);
    for (int i = threadIdx.x; i < len; i += blockDim.x) v[i] = __fdiv_rn(__fsub_rn(v[i], lo), denom);
    __syncthreads();
}

// Bilinear source of output index dst (half-pixel centers): out = in[i0]*(1-w1) + in[i1]*w1.
// Rounded exactly like ops::bilinear_source (no fused multiply-add), so the same taps are used.
__device__ void bilinear_source(int dst, int len_in, int len_out, int* i0, int* i1, float* w1) {
    float scale = __fdiv_rn((float)len_in, (float)len_out);
    float src = fmaxf(__fsub_rn(__fmul_rn(__fadd_rn((float)dst, 0.5f), scale), 0.5f), 0.0f);
    int a = min((int)src, len_in - 1);
    *i0 = a;
    *i1 = min(a + 1, len_in - 1);
    *w1 = a == len_in - 1 ? 0.0f : __fsub_rn(src, (float)a);
}

// The sum of v over the 32 lanes of a warp, in every lane. A butterfly: each lane adds the
// same pairs (in swapped order, which addition ignores), so every lane gets the same bits.
__device__ double warp_sum(double v) {
    for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

// The weight of one channel for the combines that weight channels, computed by one warp (every
// lane returns it). a: the channel's activation [hw]; g: its gradient [hw], or its one weight
// for CAM_WEIGHTS.
__device__ double channel_weight(int combine, const float* a, const float* g, long long hw, int lane) {
    const double n = (double)hw;
    switch (combine) {
    case CAM_MEAN: {
        double s = 0.0;
        for (long long i = lane; i < hw; i += 32) s += (double)g[i];
        return warp_sum(s) / n;
    }
    case CAM_PLUS_PLUS: {
        double sa = 0.0;
        for (long long i = lane; i < hw; i += 32) sa += (double)a[i];
        sa = warp_sum(sa);
        // Only g > 0 adds: ReLU(g) is 0 elsewhere, and alpha is 0 where g = 0.
        double s = 0.0;
        for (long long i = lane; i < hw; i += 32) {
            double gv = (double)g[i];
            if (gv > 0.0) {
                double g2 = gv * gv;
                s += gv * g2 / (2.0 * g2 + sa * (g2 * gv) + PLUS_PLUS_EPS);
            }
        }
        return warp_sum(s);
    }
    case CAM_XGRAD: {
        double sa = 0.0, sga = 0.0;
        for (long long i = lane; i < hw; i += 32) {
            double av = (double)a[i];
            sa += av;
            sga += (double)g[i] * av;
        }
        return warp_sum(sga) / (warp_sum(sa) + XGRAD_EPS);
    }
    case CAM_FEM: {
        // Two passes, as the oracle: the mean, then the population variance around it.
        double sa = 0.0;
        for (long long i = lane; i < hw; i += 32) sa += (double)a[i];
        double mean = warp_sum(sa) / n;
        double sq = 0.0;
        for (long long i = lane; i < hw; i += 32) {
            double d = (double)a[i] - mean;
            sq += d * d;
        }
        double th = mean + FEM_K * sqrt(warp_sum(sq) / n);
        double count = 0.0;
        for (long long i = lane; i < hw; i += 32) count += (double)a[i] > th ? 1.0 : 0.0;
        return warp_sum(count) / n;
    }
    case CAM_WEIGHTS:
        return (double)g[0];
    default:
        return 0.0;
    }
}

// The map of one pixel before the ReLU: the sum over channels of the combine's term. a, g: the
// pixel's element in channel 0 (channel ch at + ch * hw); wt: the image's channel weights.
__device__ double pixel_sum(int combine, const float* a, const float* g, const double* wt, int c,
                            long long hw) {
    double s = 0.0;
    switch (combine) {
    case CAM_HIRES:
        for (int ch = 0; ch < c; ++ch) s += (double)g[ch * hw] * (double)a[ch * hw];
        break;
    case CAM_ELEMENT_WISE:
        for (int ch = 0; ch < c; ++ch) s += fmax((double)g[ch * hw] * (double)a[ch * hw], 0.0);
        break;
    case CAM_LAYER:
        for (int ch = 0; ch < c; ++ch) s += fmax((double)g[ch * hw], 0.0) * (double)a[ch * hw];
        break;
    default:
        for (int ch = 0; ch < c; ++ch) s += wt[ch] * (double)a[ch * hw];
    }
    return s;
}

// The scalars of grad_cam (shaders/gradcam.wgsl's GradCam, less n: one block per image, and the
// scales the kernel computes itself).
struct GradCam {
    int c;
    int h;
    int w;
    int out_h;
    int out_w;
    int combine;
    int renormalize;
};

// activation: [n, c, h, w]; gradient: [n, c, h, w], or [n, c] weights for CAM_WEIGHTS (not read
// for CAM_FEM); cam: [n, out_h, out_w]; weights: [n, c] scratch (double); small: [n, h, w]
// scratch. combine: CamCombine::code(); renormalize: 0 or 1. Grid: n blocks of CAM_THREADS.
extern "C" __global__ void __launch_bounds__(CAM_THREADS) grad_cam(
    float* __restrict__ cam, double* __restrict__ weights, float* __restrict__ small,
    const float* __restrict__ activation, const float* __restrict__ gradient, GradCam args) {
    const int c = args.c, h = args.h, w = args.w, out_h = args.out_h, out_w = args.out_w;
    const int combine = args.combine, renormalize = args.renormalize;
    __shared__ float shared[32];
    const int img = blockIdx.x;
    const long long hw = (long long)h * w;
    const long long g_stride = combine == CAM_WEIGHTS ? 1 : hw;
    const float* a = activation + (long long)img * c * hw;
    const float* g = gradient + (long long)img * c * g_stride;
    double* wt = weights + (long long)img * c;
    float* sm = small + (long long)img * hw;
    float* out = cam + (long long)img * out_h * out_w;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

    // 1. Channel weights, one warp per channel (the element-wise combines have none).
    if (combine != CAM_HIRES && combine != CAM_ELEMENT_WISE && combine != CAM_LAYER) {
        for (int ch = warp; ch < c; ch += CAM_THREADS / 32) {
            double v = channel_weight(combine, a + ch * hw, g + ch * g_stride, hw, lane);
            if (lane == 0) wt[ch] = v;
        }
    }
    __syncthreads();
    // 2. The map and its ReLU, one thread per pixel.
    for (long long i = threadIdx.x; i < hw; i += CAM_THREADS) {
        double s = pixel_sum(combine, a + i, g + i, wt, c, hw);
        sm[i] = (float)(s > 0.0 ? s : 0.0);
    }
    __syncthreads();
    normalize(sm, (int)hw, shared);
    // 3. Bilinear upsampling, then (with renormalize) normalization again.
    for (int i = threadIdx.x; i < out_h * out_w; i += CAM_THREADS) {
        int y = i / out_w, x = i % out_w;
        int y0, y1, x0, x1;
        float wy, wx;
        bilinear_source(y, h, out_h, &y0, &y1, &wy);
        bilinear_source(x, w, out_w, &x0, &x1, &wx);
        const float* r0 = sm + y0 * w;
        const float* r1 = sm + y1 * w;
        float top = __fadd_rn(__fmul_rn(r0[x0], 1.0f - wx), __fmul_rn(r0[x1], wx));
        float bottom = __fadd_rn(__fmul_rn(r1[x0], 1.0f - wx), __fmul_rn(r1[x1], wx));
        out[i] = __fadd_rn(__fmul_rn(top, 1.0f - wy), __fmul_rn(bottom, wy));
    }
    __syncthreads();
    if (renormalize) normalize(out, out_h * out_w, shared);
}

// Bilinear source of output index dst with align_corners=True (scale = (len_in - 1) /
// (len_out - 1), 0 for one output pixel, computed on the host as ops::align_corners_scale).
__device__ void corner_source(int dst, int len_in, float scale, int* i0, int* i1, float* w1) {
    float s = __fmul_rn((float)dst, scale);
    int a = min((int)s, len_in - 1);
    *i0 = a;
    *i1 = min(a + 1, len_in - 1);
    *w1 = __fsub_rn(s, (float)a);
}

// The upsampled mask at output pixel i of an out_w-wide output; src: one channel [h, w].
__device__ float mask_at(const float* src, int i, int h, int w, int out_w, float scale_h,
                         float scale_w) {
    int y0, y1, x0, x1;
    float wy, wx;
    corner_source(i / out_w, h, scale_h, &y0, &y1, &wy);
    corner_source(i % out_w, w, scale_w, &x0, &x1, &wx);
    const float* r0 = src + y0 * w;
    const float* r1 = src + y1 * w;
    float top = __fadd_rn(__fmul_rn(r0[x0], __fsub_rn(1.0f, wx)), __fmul_rn(r0[x1], wx));
    float bottom = __fadd_rn(__fmul_rn(r1[x0], __fsub_rn(1.0f, wx)), __fmul_rn(r1[x1], wx));
    return __fadd_rn(__fmul_rn(top, __fsub_rn(1.0f, wy)), __fmul_rn(bottom, wy));
}

// ScoreCAM's masked inputs for one image (ops::ScoreMaskParams), one block per mask j: the
// min and max of channel c0 + j upsampled (align_corners=True), then out[j, k] = x[k] * (m -
// min) / (max - min + 1e-8) for every image channel k. The upsampled mask is computed twice
// (four taps) rather than stored. Rounded like the CPU reference (no fused multiply-add).
// out: [count, in_c, out_h, out_w]; x: [in_c, out_h, out_w]; activation: [N, C, h, w], of which
// channels c0 .. c0 + count of image `image` are read. Grid: count blocks of CAM_THREADS.
// (shaders/gradcam.wgsl's ScoreMask, less count: one block per mask.)
struct ScoreMask {
    int image;
    int c0;
    int c;
    int h;
    int w;
    int in_c;
    int out_h;
    int out_w;
    float scale_h;
    float scale_w;
};

extern "C" __global__ void __launch_bounds__(CAM_THREADS) score_cam_masks(
    float* __restrict__ out, const float* __restrict__ x, const float* __restrict__ activation,
    ScoreMask args) {
    const int image = args.image, c0 = args.c0, c = args.c, h = args.h, w = args.w;
    const int in_c = args.in_c, out_h = args.out_h, out_w = args.out_w;
    const float scale_h = args.scale_h, scale_w = args.scale_w;
    __shared__ float shared[32];
    const int j = blockIdx.x;
    const long long plane = (long long)out_h * out_w;
    const float* src = activation + ((long long)image * c + c0 + j) * h * w;
    float* o = out + (long long)j * in_c * plane;

    float lo = GC_INF, hi = -GC_INF;
    for (int i = threadIdx.x; i < plane; i += CAM_THREADS) {
        float m = mask_at(src, i, h, w, out_w, scale_h, scale_w);
        lo = fminf(lo, m);
        hi = fmaxf(hi, m);
    }
    lo = block_reduce(lo, false, shared);
    hi = block_reduce(hi, true, shared);
    float den = __fadd_rn(__fsub_rn(hi, lo), 1e-8f);
    for (int i = threadIdx.x; i < plane; i += CAM_THREADS) {
        float m = __fdiv_rn(__fsub_rn(mask_at(src, i, h, w, out_w, scale_h, scale_w), lo), den);
        for (int k = 0; k < in_c; ++k) o[k * plane + i] = __fmul_rn(x[k * plane + i], m);
    }
}

// Whether logit a (class ia) ranks before logit b (class ib): larger first, ties to the lower
// class, NaN last. The same strict total order as the CPU's `ranks_before`.
__device__ bool ranks_before(float a, int ia, float b, int ib) {
    bool nan_a = isnan(a), nan_b = isnan(b);
    if (!nan_a && !nan_b) return a > b || (a == b && ia < ib);
    return nan_b && (!nan_a || ia < ib);
}

// The one-hot gradient d(sum_i logit[i, class_i]) / d logits that starts the backward pass,
// made on the device from the logits so the backward pass follows the forward pass without a
// host round trip. One thread per (image, class) writes its own element: with a fixed class
// (by_rank = 0) 1 where the class matches; by rank, 1 where the number of classes ranking
// before this one equals `value`.
// seed: [N, K] out; logits: [N, K]. (shaders/gradcam.wgsl's ClassSeed: mode 0 is a fixed class,
// 1 by rank.)
struct ClassSeed {
    int n;
    int k;
    int mode;
    int value;
};

extern "C" __global__ void class_seed(float* __restrict__ seed, const float* __restrict__ logits,
                                      ClassSeed args) {
    const int n = args.n, k = args.k, by_rank = args.mode, value = args.value;
    long long total = (long long)n * k;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        int j = (int)(t % k);
        const float* row = logits + (t - j);
        bool picked;
        if (!by_rank) {
            picked = j == value;
        } else {
            int rank = 0;
            for (int i = 0; i < k; ++i) rank += ranks_before(row[i], i, row[j], j);
            picked = rank == value;
        }
        seed[t] = picked ? 1.0f : 0.0f;
    }
}
