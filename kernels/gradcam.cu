// The fused Grad-CAM step, one block per image, as the CPU oracle (src/backend/cpu/cam.rs):
// channel weights = spatial mean of the gradient; cam = ReLU(sum_c w_c * A_c); min-max
// normalization; bilinear upsampling with half-pixel centers; min-max normalization again,
// each as (v - min) / (max - min + 1e-7). Sums are in double, like the oracle: they are tiny
// next to the network, and the CAM is what users look at.

// +infinity; NVRTC has no <math.h>, so INFINITY is not defined.
#define GC_INF __int_as_float(0x7f800000)

#define CAM_THREADS 256
#define CAM_EPS 1e-7f

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

// activation, gradient: [n, c, h, w]; cam: [n, out_h, out_w]; weights: [n, c] scratch (double);
// small: [n, h, w] scratch. Grid: n blocks of CAM_THREADS threads.
extern "C" __global__ void __launch_bounds__(CAM_THREADS) grad_cam(
    float* __restrict__ cam, double* __restrict__ weights, float* __restrict__ small,
    const float* __restrict__ activation, const float* __restrict__ gradient, int c, int h, int w, int out_h,
    int out_w) {
    __shared__ float shared[32];
    const int img = blockIdx.x;
    const long long hw = (long long)h * w;
    const float* a = activation + (long long)img * c * hw;
    const float* g = gradient + (long long)img * c * hw;
    double* wt = weights + (long long)img * c;
    float* sm = small + (long long)img * hw;
    float* out = cam + (long long)img * out_h * out_w;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

    // 1. Channel weights: one warp per channel.
    for (int ch = warp; ch < c; ch += CAM_THREADS / 32) {
        double s = 0.0;
        for (long long i = lane; i < hw; i += 32) s += (double)g[ch * hw + i];
        for (int off = 16; off > 0; off /= 2) s += __shfl_down_sync(0xffffffffu, s, off);
        if (lane == 0) wt[ch] = s / (double)hw;
    }
    __syncthreads();
    // 2. Weighted sum over channels and ReLU, one thread per pixel.
    for (long long i = threadIdx.x; i < hw; i += CAM_THREADS) {
        double s = 0.0;
        for (int ch = 0; ch < c; ++ch) s += wt[ch] * (double)a[ch * hw + i];
        sm[i] = (float)(s > 0.0 ? s : 0.0);
    }
    __syncthreads();
    normalize(sm, (int)hw, shared);
    // 3. Bilinear upsampling, then normalization again.
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
    normalize(out, out_h * out_w, shared);
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
// seed: [N, K] out; logits: [N, K]
extern "C" __global__ void class_seed(float* __restrict__ seed, const float* __restrict__ logits,
                                      int n, int k, int by_rank, int value) {
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
