// Fully connected layers. Forward: one warp per output feature and group of up to 8 images,
// so each weight row is read once per 8 images (VGG's first classifier layer is 400 MB of
// weights). Backward: one thread per input feature and group of 8 images; a gather over the
// output features in a fixed order, no atomics.

#define LINEAR_IMAGES 8

// The scalars of both kernels (shaders/linear.wgsl's Linear): n images of in_f features to
// out_f; has_bias (forward only): bias is read.
struct Linear {
    int n;
    int in_f;
    int out_f;
    int has_bias;
};

// y[i, o] = bias[o] + sum_k x[i, k] * w[o, k].
// x: [n, in_f], w: [out_f, in_f], bias: [out_f] (read only when has_bias != 0), y: [n, out_f].
// Grid: blockDim.x = 32 * warps; warp index g over out_f * ceil(n / 8).
extern "C" __global__ void linear_fwd(float* __restrict__ y, const float* __restrict__ x,
                                      const float* __restrict__ w, const float* __restrict__ bias, Linear args) {
    const int has_bias = args.has_bias, n = args.n, in_f = args.in_f, out_f = args.out_f;
    long long warp = (blockIdx.x * (long long)blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x % 32;
    int groups = (n + LINEAR_IMAGES - 1) / LINEAR_IMAGES;
    if (warp >= (long long)out_f * groups) return;  // whole warps exit together
    int o = (int)(warp % out_f);
    int i0 = (int)(warp / out_f) * LINEAR_IMAGES;
    int count = min(LINEAR_IMAGES, n - i0);
    float acc[LINEAR_IMAGES];
#pragma unroll
    for (int j = 0; j < LINEAR_IMAGES; ++j) acc[j] = 0.0f;
    const float* wr = w + (long long)o * in_f;
    for (int k = lane; k < in_f; k += 32) {
        float wv = wr[k];
#pragma unroll
        for (int j = 0; j < LINEAR_IMAGES; ++j)
            if (j < count) acc[j] += x[(long long)(i0 + j) * in_f + k] * wv;
    }
#pragma unroll
    for (int j = 0; j < LINEAR_IMAGES; ++j) {
        float v = acc[j];
        for (int off = 16; off > 0; off /= 2) v += __shfl_down_sync(0xffffffffu, v, off);
        if (lane == 0 && j < count) y[(long long)(i0 + j) * out_f + o] = v + (has_bias ? bias[o] : 0.0f);
    }
}

// dx[i, k] = sum_o dy[i, o] * w[o, k].
// dy: [n, out_f], w: [out_f, in_f], dx: [n, in_f]. One thread per (k, group of 8 images).
extern "C" __global__ void linear_bwd_input(float* __restrict__ dx, const float* __restrict__ dy,
                                            const float* __restrict__ w, Linear args) {
    const int n = args.n, in_f = args.in_f, out_f = args.out_f;
    long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    int groups = (n + LINEAR_IMAGES - 1) / LINEAR_IMAGES;
    if (t >= (long long)in_f * groups) return;
    int k = (int)(t % in_f);
    int i0 = (int)(t / in_f) * LINEAR_IMAGES;
    int count = min(LINEAR_IMAGES, n - i0);
    float acc[LINEAR_IMAGES];
#pragma unroll
    for (int j = 0; j < LINEAR_IMAGES; ++j) acc[j] = 0.0f;
    for (int o = 0; o < out_f; ++o) {
        float wv = w[(long long)o * in_f + k];
#pragma unroll
        for (int j = 0; j < LINEAR_IMAGES; ++j)
            if (j < count) acc[j] += dy[(long long)(i0 + j) * out_f + o] * wv;
    }
#pragma unroll
    for (int j = 0; j < LINEAR_IMAGES; ++j)
        if (j < count) dx[(long long)(i0 + j) * in_f + k] = acc[j];
}
