// Max pooling (with argmax; ceil mode through the host's h_out, w_out), average pooling, and
// adaptive average and max pooling, forward and input gradient.
// Backward passes are gathers: one thread per input element sums the contributions of every
// output window that covers it, in the same (row-major window) order as the CPU oracle, so
// results are deterministic and need no float atomics.

// +infinity; NVRTC has no <math.h>, so INFINITY is not defined.
#define GC_INF __int_as_float(0x7f800000)

// The scalars of max_pool2d_* (shaders/pool.wgsl's MaxPool, with total, the elements the
// kernel's threads cover, for n and c).
struct MaxPool {
    long long total;
    int h_in;
    int w_in;
    int k_h;
    int k_w;
    int stride_h;
    int stride_w;
    int pad_h;
    int pad_w;
    int h_out;
    int w_out;
};

// The scalars of avg_pool2d_* (shaders/pool.wgsl's AvgPool2d, with total for n and c).
struct AvgPool2d {
    long long total;
    int h_in;
    int w_in;
    int k_h;
    int k_w;
    int stride_h;
    int stride_w;
    int pad_h;
    int pad_w;
    int h_out;
    int w_out;
    int count_include_pad;
    int _pad;  // to a multiple of 8 bytes, so no implicit padding (see src/backend/cuda/args.rs)
};

// The scalars of adaptive_{avg,max}_pool2d_* (shaders/pool.wgsl's AvgPool, which serves both,
// with total for n and c).
struct AdaptivePool {
    long long total;
    int h_in;
    int w_in;
    int h_out;
    int w_out;
};

// Max pooling, floor mode, implicit -inf padding. One thread per output element.
// x: [n, c, h_in, w_in]; y, argmax: [n, c, h_out, w_out] (total = n*c*h_out*w_out).
// argmax holds iy*w_in + ix of the first maximum in row-major window order (PyTorch's tie
// rule); a NaN wins over any number, as in PyTorch.
extern "C" __global__ void max_pool2d_fwd(float* __restrict__ y, unsigned int* __restrict__ argmax,
                                          const float* __restrict__ x, MaxPool args) {
    const int h_in = args.h_in, w_in = args.w_in, h_out = args.h_out, w_out = args.w_out;
    const int k_h = args.k_h, k_w = args.k_w, stride_h = args.stride_h, stride_w = args.stride_w;
    const int pad_h = args.pad_h, pad_w = args.pad_w;
    const long long total = args.total;
    for (long long o = blockIdx.x * (long long)blockDim.x + threadIdx.x; o < total; o += (long long)gridDim.x * blockDim.x) {
        int ox = (int)(o % w_out);
        int oy = (int)((o / w_out) % h_out);
        long long plane = o / ((long long)w_out * h_out);
        const float* xp = x + plane * (long long)h_in * w_in;
        int y0 = oy * stride_h - pad_h, x0 = ox * stride_w - pad_w;
        float best = -GC_INF;
        unsigned int best_i = 0xffffffffu;
        for (int ky = 0; ky < k_h; ++ky) {
            int iy = y0 + ky;
            if (iy < 0 || iy >= h_in) continue;
            for (int kx = 0; kx < k_w; ++kx) {
                int ix = x0 + kx;
                if (ix < 0 || ix >= w_in) continue;
                unsigned int i = (unsigned int)(iy * w_in + ix);
                float v = xp[i];
                if (best_i == 0xffffffffu || v > best || (isnan(v) && !isnan(best))) {
                    best = v;
                    best_i = i;
                }
            }
        }
        y[o] = best;
        argmax[o] = best_i;
    }
}

// dx[plane, i] = sum of dy[plane, o] over the windows o whose argmax is i. One thread per input
// element. dx: [n, c, h_in, w_in] (total = n*c*h_in*w_in); dy, argmax: [n, c, h_out, w_out].
extern "C" __global__ void max_pool2d_bwd_input(float* __restrict__ dx, const unsigned int* __restrict__ argmax,
                                                const float* __restrict__ dy, MaxPool args) {
    const int h_in = args.h_in, w_in = args.w_in, h_out = args.h_out, w_out = args.w_out;
    const int k_h = args.k_h, k_w = args.k_w, stride_h = args.stride_h, stride_w = args.stride_w;
    const int pad_h = args.pad_h, pad_w = args.pad_w;
    const long long total = args.total;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total; t += (long long)gridDim.x * blockDim.x) {
        int ix = (int)(t % w_in);
        int iy = (int)((t / w_in) % h_in);
        long long plane = t / ((long long)w_in * h_in);
        unsigned int me = (unsigned int)(iy * w_in + ix);
        // Windows oy with oy*s - pad <= iy <= oy*s - pad + k - 1.
        int oy_lo = iy + pad_h - k_h + 1;
        oy_lo = oy_lo <= 0 ? 0 : (oy_lo + stride_h - 1) / stride_h;
        int oy_hi = min((iy + pad_h) / stride_h, h_out - 1);
        int ox_lo = ix + pad_w - k_w + 1;
        ox_lo = ox_lo <= 0 ? 0 : (ox_lo + stride_w - 1) / stride_w;
        int ox_hi = min((ix + pad_w) / stride_w, w_out - 1);
        const long long base = plane * (long long)h_out * w_out;
        float s = 0.0f;
        for (int oy = oy_lo; oy <= oy_hi; ++oy)
            for (int ox = ox_lo; ox <= ox_hi; ++ox) {
                long long o = base + oy * w_out + ox;
                if (argmax[o] == me) s += dy[o];
            }
        dx[t] = s;
    }
}

// Window of adaptive pooling along one axis: [start, end).
__device__ __forceinline__ int adaptive_start(int i, int len_in, int len_out) { return (int)(((long long)i * len_in) / len_out); }
__device__ __forceinline__ int adaptive_end(int i, int len_in, int len_out) {
    return (int)((((long long)(i + 1)) * len_in + len_out - 1) / len_out);
}

// nn.AdaptiveAvgPool2d. One thread per output element.
// x: [n, c, h_in, w_in]; y: [n, c, h_out, w_out] (total = n*c*h_out*w_out).
extern "C" __global__ void adaptive_avg_pool2d_fwd(float* __restrict__ y, const float* __restrict__ x,
                                                   AdaptivePool args) {
    const int h_in = args.h_in, w_in = args.w_in, h_out = args.h_out, w_out = args.w_out;
    const long long total = args.total;
    for (long long o = blockIdx.x * (long long)blockDim.x + threadIdx.x; o < total; o += (long long)gridDim.x * blockDim.x) {
        int ox = (int)(o % w_out);
        int oy = (int)((o / w_out) % h_out);
        long long plane = o / ((long long)w_out * h_out);
        const float* xp = x + plane * (long long)h_in * w_in;
        int y0 = adaptive_start(oy, h_in, h_out), y1 = adaptive_end(oy, h_in, h_out);
        int x0 = adaptive_start(ox, w_in, w_out), x1 = adaptive_end(ox, w_in, w_out);
        float s = 0.0f;
        for (int iy = y0; iy < y1; ++iy)
            for (int ix = x0; ix < x1; ++ix) s += xp[iy * w_in + ix];
        y[o] = s / (float)((y1 - y0) * (x1 - x0));
    }
}

// Input gradient of adaptive average pooling: each input element gathers dy/count from every
// window covering it (windows overlap when the output is larger than the input).
// dx: [n, c, h_in, w_in] (total = n*c*h_in*w_in); dy: [n, c, h_out, w_out].
extern "C" __global__ void adaptive_avg_pool2d_bwd_input(float* __restrict__ dx, const float* __restrict__ dy,
                                                         AdaptivePool args) {
    const int h_in = args.h_in, w_in = args.w_in, h_out = args.h_out, w_out = args.w_out;
    const long long total = args.total;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total; t += (long long)gridDim.x * blockDim.x) {
        int ix = (int)(t % w_in);
        int iy = (int)((t / w_in) % h_in);
        long long plane = t / ((long long)w_in * h_in);
        const float* dyp = dy + plane * (long long)h_out * w_out;
        float s = 0.0f;
        for (int oy = 0; oy < h_out; ++oy) {
            int y0 = adaptive_start(oy, h_in, h_out), y1 = adaptive_end(oy, h_in, h_out);
            if (iy < y0 || iy >= y1) continue;
            for (int ox = 0; ox < w_out; ++ox) {
                int x0 = adaptive_start(ox, w_in, w_out), x1 = adaptive_end(ox, w_in, w_out);
                if (ix < x0 || ix >= x1) continue;
                s += dyp[oy * w_out + ox] / (float)((y1 - y0) * (x1 - x0));
            }
        }
        dx[t] = s;
    }
}

// Window of average pooling output o along an axis, as AvgPool2dParams::window (mirrors
// shaders/pool.wgsl's avg_axis): first and end input clipped to the input, and its length over
// the padded input (a ceil-mode window's overhang past the padding excluded).
__device__ __forceinline__ int3 avg_axis(int o, int k, int stride, int pad, int len) {
    int start = o * stride - pad;
    int end = min(start + k, len + pad);
    int a = max(start, 0);
    int b = max(max(min(end, len), 0), a);
    return make_int3(a, b, end - start);
}

__device__ __forceinline__ float avg_divisor(int3 wy, int3 wx, int count_include_pad) {
    return count_include_pad ? (float)(wy.z * wx.z) : (float)((wy.y - wy.x) * (wx.y - wx.x));
}

// nn.AvgPool2d (kernel, stride, padding, ceil_mode, count_include_pad). One thread per output,
// its window summed in row-major order. x: [n, c, h_in, w_in]; y: [n, c, h_out, w_out].
extern "C" __global__ void avg_pool2d_fwd(float* __restrict__ y, const float* __restrict__ x, AvgPool2d args) {
    const int h_in = args.h_in, w_in = args.w_in, h_out = args.h_out, w_out = args.w_out;
    const int k_h = args.k_h, k_w = args.k_w, stride_h = args.stride_h, stride_w = args.stride_w;
    const int pad_h = args.pad_h, pad_w = args.pad_w, count_include_pad = args.count_include_pad;
    const long long total = args.total;
    for (long long o = blockIdx.x * (long long)blockDim.x + threadIdx.x; o < total; o += (long long)gridDim.x * blockDim.x) {
        int ox = (int)(o % w_out);
        int oy = (int)((o / w_out) % h_out);
        long long plane = o / ((long long)w_out * h_out);
        const float* xp = x + plane * (long long)h_in * w_in;
        int3 wy = avg_axis(oy, k_h, stride_h, pad_h, h_in);
        int3 wx = avg_axis(ox, k_w, stride_w, pad_w, w_in);
        float s = 0.0f;
        for (int iy = wy.x; iy < wy.y; ++iy)
            for (int ix = wx.x; ix < wx.y; ++ix) s += xp[iy * w_in + ix];
        y[o] = s / avg_divisor(wy, wx, count_include_pad);
    }
}

// Each input gathers dy/divisor from the windows covering it, in row-major window order.
// dx: [n, c, h_in, w_in] (total elements); dy: [n, c, h_out, w_out].
extern "C" __global__ void avg_pool2d_bwd_input(float* __restrict__ dx, const float* __restrict__ dy,
                                                AvgPool2d args) {
    const int h_in = args.h_in, w_in = args.w_in, h_out = args.h_out, w_out = args.w_out;
    const int k_h = args.k_h, k_w = args.k_w, stride_h = args.stride_h, stride_w = args.stride_w;
    const int pad_h = args.pad_h, pad_w = args.pad_w, count_include_pad = args.count_include_pad;
    const long long total = args.total;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total; t += (long long)gridDim.x * blockDim.x) {
        int ix = (int)(t % w_in);
        int iy = (int)((t / w_in) % h_in);
        long long plane = t / ((long long)w_in * h_in);
        const float* dyp = dy + plane * (long long)h_out * w_out;
        int oy_lo = iy + pad_h - k_h + 1;
        oy_lo = oy_lo <= 0 ? 0 : (oy_lo + stride_h - 1) / stride_h;
        int oy_hi = min((iy + pad_h) / stride_h, h_out - 1);
        int ox_lo = ix + pad_w - k_w + 1;
        ox_lo = ox_lo <= 0 ? 0 : (ox_lo + stride_w - 1) / stride_w;
        int ox_hi = min((ix + pad_w) / stride_w, w_out - 1);
        float s = 0.0f;
        for (int oy = oy_lo; oy <= oy_hi; ++oy) {
            int3 wy = avg_axis(oy, k_h, stride_h, pad_h, h_in);
            for (int ox = ox_lo; ox <= ox_hi; ++ox) {
                int3 wx = avg_axis(ox, k_w, stride_w, pad_w, w_in);
                s += dyp[oy * w_out + ox] / avg_divisor(wy, wx, count_include_pad);
            }
        }
        dx[t] = s;
    }
}

// nn.AdaptiveMaxPool2d with argmax (first maximum in row-major window order; a NaN wins, as in
// max_pool2d_fwd). x: [n, c, h_in, w_in]; y, argmax: [n, c, h_out, w_out].
extern "C" __global__ void adaptive_max_pool2d_fwd(float* __restrict__ y, unsigned int* __restrict__ argmax,
                                                   const float* __restrict__ x, AdaptivePool args) {
    const int h_in = args.h_in, w_in = args.w_in, h_out = args.h_out, w_out = args.w_out;
    const long long total = args.total;
    for (long long o = blockIdx.x * (long long)blockDim.x + threadIdx.x; o < total; o += (long long)gridDim.x * blockDim.x) {
        int ox = (int)(o % w_out);
        int oy = (int)((o / w_out) % h_out);
        long long plane = o / ((long long)w_out * h_out);
        const float* xp = x + plane * (long long)h_in * w_in;
        int y0 = adaptive_start(oy, h_in, h_out), y1 = adaptive_end(oy, h_in, h_out);
        int x0 = adaptive_start(ox, w_in, w_out), x1 = adaptive_end(ox, w_in, w_out);
        float best = -GC_INF;
        unsigned int best_i = 0xffffffffu;
        for (int iy = y0; iy < y1; ++iy)
            for (int ix = x0; ix < x1; ++ix) {
                unsigned int i = (unsigned int)(iy * w_in + ix);
                float v = xp[i];
                if (best_i == 0xffffffffu || v > best || (isnan(v) && !isnan(best))) {
                    best = v;
                    best_i = i;
                }
            }
        y[o] = best;
        argmax[o] = best_i;
    }
}

// dx = sum of dy over the windows covering an input that chose it, in row-major window order.
extern "C" __global__ void adaptive_max_pool2d_bwd_input(float* __restrict__ dx,
                                                         const unsigned int* __restrict__ argmax,
                                                         const float* __restrict__ dy, AdaptivePool args) {
    const int h_in = args.h_in, w_in = args.w_in, h_out = args.h_out, w_out = args.w_out;
    const long long total = args.total;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total; t += (long long)gridDim.x * blockDim.x) {
        int ix = (int)(t % w_in);
        int iy = (int)((t / w_in) % h_in);
        long long plane = t / ((long long)w_in * h_in);
        unsigned int me = (unsigned int)(iy * w_in + ix);
        const long long base = plane * (long long)h_out * w_out;
        float s = 0.0f;
        for (int oy = 0; oy < h_out; ++oy) {
            if (iy < adaptive_start(oy, h_in, h_out) || iy >= adaptive_end(oy, h_in, h_out)) continue;
            for (int ox = 0; ox < w_out; ++ox) {
                if (ix < adaptive_start(ox, w_in, w_out) || ix >= adaptive_end(ox, w_in, w_out)) continue;
                long long o = base + oy * w_out + ox;
                if (argmax[o] == me) s += dy[o];
            }
        }
        dx[t] = s;
    }
}
