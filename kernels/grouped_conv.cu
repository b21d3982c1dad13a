// 2-D convolution with groups (depthwise when groups = c_in = c_out), dilation and padding
// that may differ between the leading and trailing side (the trailing padding only changes
// h_out, w_out, which the host passes). v1, mirroring shaders/grouped_conv.wgsl: one thread
// per output element (forward) or input-gradient element (backward, a gather), taps summed in
// (channel, ky, kx) order: deterministic, no atomics. Depthwise convs are memory-bound; this
// direct form is the GPU reference; v2 (forward and input gradient) stages the window each
// tile reads in shared memory.
//
// Shapes (contiguous, NCHW): x, dx: [n, c_in, h_in, w_in]; w: [c_out, c_in/groups, k_h, k_w];
// bias: [c_out]; y, dy: [n, c_out, h_out, w_out].

// The scalars of every kernel here (shaders/grouped_conv.wgsl's GroupedConv): the shapes
// above, dilation and groups; has_bias (forward): bias is read; tile_h, tile_w, planes: v2's
// tiling (Conv2dParams::grouped_tile / grouped_tile_backward; 0 for v1).
struct GroupedConv {
    int n;
    int c_in;
    int h_in;
    int w_in;
    int c_out;
    int k_h;
    int k_w;
    int stride_h;
    int stride_w;
    int pad_h;
    int pad_w;
    int h_out;
    int w_out;
    int dil_h;
    int dil_w;
    int groups;
    int has_bias;
    int tile_h;
    int tile_w;
    int planes;
};

// y = conv(x, w) + bias (bias read only when has_bias != 0).
extern "C" __global__ void grouped_conv_fwd(float* __restrict__ y, const float* __restrict__ x,
                                            const float* __restrict__ w, const float* __restrict__ bias,
                                            GroupedConv args) {
    const int has_bias = args.has_bias;
    const int n = args.n, c_in = args.c_in, h_in = args.h_in, w_in = args.w_in, c_out = args.c_out;
    const int h_out = args.h_out, w_out = args.w_out, k_h = args.k_h, k_w = args.k_w;
    const int stride_h = args.stride_h, stride_w = args.stride_w, pad_h = args.pad_h, pad_w = args.pad_w;
    const int dil_h = args.dil_h, dil_w = args.dil_w, groups = args.groups;
    long long total = (long long)n * c_out * h_out * w_out;
    int cig = c_in / groups, cog = c_out / groups;
    for (long long o = blockIdx.x * (long long)blockDim.x + threadIdx.x; o < total; o += (long long)gridDim.x * blockDim.x) {
        int ox = (int)(o % w_out);
        int oy = (int)((o / w_out) % h_out);
        int co = (int)((o / ((long long)w_out * h_out)) % c_out);
        int img = (int)(o / ((long long)w_out * h_out * c_out));
        int ci0 = (co / cog) * cig;
        int y0 = oy * stride_h - pad_h, x0 = ox * stride_w - pad_w;
        float s = 0.0f;
        for (int c = 0; c < cig; ++c) {
            const float* xp = x + ((long long)img * c_in + ci0 + c) * h_in * w_in;
            const float* wp = w + ((long long)co * cig + c) * k_h * k_w;
            for (int ky = 0; ky < k_h; ++ky) {
                int iy = y0 + ky * dil_h;
                if (iy < 0 || iy >= h_in) continue;
                for (int kx = 0; kx < k_w; ++kx) {
                    int ix = x0 + kx * dil_w;
                    if (ix < 0 || ix >= w_in) continue;
                    s += xp[iy * w_in + ix] * wp[ky * k_w + kx];
                }
            }
        }
        if (has_bias) s += bias[co];
        y[o] = s;
    }
}

// Forward v2, mirroring grouped_conv_fwd_v2 of shaders/grouped_conv.wgsl: a block of 256
// threads computes a tile_h x tile_w tile of outputs in each of `planes` output planes (small
// maps: several planes per block; Conv2dParams::grouped_tile picks the tiling). For each input
// channel of the group it first stages the tile's input window (halo included, zeros where the
// window leaves the input) in shared memory, so each input value is read from global memory once
// per tile instead of once per tap; then each thread sums its taps from there. Same (channel,
// ky, kx) order as v1; a padded tap adds a zero product where v1 skips it. Grid: tiles per plane
// times ceil(n * c_out / planes) blocks.
#define GC_WINDOW 4096  // floats of shared memory: planes * rows * cols <= GroupedTile::PATCH
extern "C" __global__ void grouped_conv_fwd_v2(float* __restrict__ y, const float* __restrict__ x,
                                               const float* __restrict__ w, const float* __restrict__ bias,
                                               GroupedConv args) {
    const int has_bias = args.has_bias;
    const int n = args.n, c_in = args.c_in, h_in = args.h_in, w_in = args.w_in, c_out = args.c_out;
    const int h_out = args.h_out, w_out = args.w_out, k_h = args.k_h, k_w = args.k_w;
    const int stride_h = args.stride_h, stride_w = args.stride_w, pad_h = args.pad_h, pad_w = args.pad_w;
    const int dil_h = args.dil_h, dil_w = args.dil_w, groups = args.groups;
    const int tile_h = args.tile_h, tile_w = args.tile_w, planes = args.planes;
    __shared__ float win[GC_WINDOW];
    const int rows = (tile_h - 1) * stride_h + (k_h - 1) * dil_h + 1;
    const int cols = (tile_w - 1) * stride_w + (k_w - 1) * dil_w + 1;
    const int window = rows * cols;
    const int tiles_x = (w_out + tile_w - 1) / tile_w;
    const int tiles = tiles_x * ((h_out + tile_h - 1) / tile_h);
    const long long wid = blockIdx.x;
    const long long plane0 = (wid / tiles) * planes;
    const int tile = (int)(wid % tiles);
    const int oy0 = (tile / tiles_x) * tile_h, ox0 = (tile % tiles_x) * tile_w;
    const int iy0 = oy0 * stride_h - pad_h, ix0 = ox0 * stride_w - pad_w;
    const long long all_planes = (long long)n * c_out;
    const int cig = c_in / groups, cog = c_out / groups;
    const int tid = threadIdx.x, q = tid / (tile_h * tile_w);
    const int oy = oy0 + (tid % (tile_h * tile_w)) / tile_w, ox = ox0 + tid % tile_w;
    const long long plane = plane0 + q;
    const bool live = q < planes && plane < all_planes && oy < h_out && ox < w_out;
    const int co = (int)(plane % c_out);
    const int base = q * window + (oy - oy0) * stride_h * cols + (ox - ox0) * stride_w;
    float s = 0.0f;
    for (int c = 0; c < cig; ++c) {
        for (int e = tid; e < planes * window; e += blockDim.x) {
            long long pq = plane0 + e / window;
            float v = 0.0f;
            if (pq < all_planes) {
                int ci = (int)((pq % c_out) / cog) * cig + c;
                int iy = iy0 + (e % window) / cols, ix = ix0 + e % cols;
                if (iy >= 0 && iy < h_in && ix >= 0 && ix < w_in)
                    v = x[(((pq / c_out) * c_in + ci) * h_in + iy) * w_in + ix];
            }
            win[e] = v;
        }
        __syncthreads();
        if (live) {
            const float* wp = w + ((long long)co * cig + c) * k_h * k_w;
            for (int ky = 0; ky < k_h; ++ky) {
                const float* row = win + base + ky * dil_h * cols;
                for (int kx = 0; kx < k_w; ++kx) s += row[kx * dil_w] * wp[ky * k_w + kx];
            }
        }
        __syncthreads();
    }
    if (live) {
        if (has_bias) s += bias[co];
        y[(plane * h_out + oy) * w_out + ox] = s;
    }
}

// The output position whose tap k (offset k*dil) reads input position i, or -1:
// o*stride - pad + k*dil = i.
__device__ __forceinline__ int dilated_tap_source(int i, int k, int dil, int stride, int pad, int len_out) {
    int t = i + pad - k * dil;
    if (t < 0 || t % stride != 0) return -1;
    int o = t / stride;
    return o < len_out ? o : -1;
}

// dx = conv_transpose(dy, w), gathered over the output channels of x's group.
extern "C" __global__ void grouped_conv_bwd_input(float* __restrict__ dx, const float* __restrict__ dy,
                                                  const float* __restrict__ w, GroupedConv args) {
    const int n = args.n, c_in = args.c_in, h_in = args.h_in, w_in = args.w_in, c_out = args.c_out;
    const int h_out = args.h_out, w_out = args.w_out, k_h = args.k_h, k_w = args.k_w;
    const int stride_h = args.stride_h, stride_w = args.stride_w, pad_h = args.pad_h, pad_w = args.pad_w;
    const int dil_h = args.dil_h, dil_w = args.dil_w, groups = args.groups;
    long long total = (long long)n * c_in * h_in * w_in;
    int cig = c_in / groups, cog = c_out / groups;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total; t += (long long)gridDim.x * blockDim.x) {
        int ix = (int)(t % w_in);
        int iy = (int)((t / w_in) % h_in);
        int ci = (int)((t / ((long long)w_in * h_in)) % c_in);
        int img = (int)(t / ((long long)w_in * h_in * c_in));
        int grp = ci / cig, c = ci - grp * cig;
        float s = 0.0f;
        for (int k = 0; k < cog; ++k) {
            int co = grp * cog + k;
            const float* dyp = dy + ((long long)img * c_out + co) * h_out * w_out;
            const float* wp = w + ((long long)co * cig + c) * k_h * k_w;
            for (int ky = 0; ky < k_h; ++ky) {
                int oy = dilated_tap_source(iy, ky, dil_h, stride_h, pad_h, h_out);
                if (oy < 0) continue;
                for (int kx = 0; kx < k_w; ++kx) {
                    int ox = dilated_tap_source(ix, kx, dil_w, stride_w, pad_w, w_out);
                    if (ox < 0) continue;
                    s += dyp[oy * w_out + ox] * wp[ky * k_w + kx];
                }
            }
        }
        dx[t] = s;
    }
}

// Input gradient v2, mirroring grouped_conv_bwd_v2 of shaders/grouped_conv.wgsl: a block
// computes a tile_h x tile_w tile of dx in each of `planes` input planes
// (Conv2dParams::grouped_tile_backward). For each output channel of the group it stages the rows
// and columns of dy that reach the tile (zeros outside dy) in shared memory, then each thread
// gathers its taps from there. Same (channel, ky, kx) order as v1; a tap that lands outside dy
// adds a zero product where v1 skips it. Grid: tiles per plane times ceil(n * c_in / planes).
__device__ __forceinline__ int floor_div(int a, int b) { return a >= 0 ? a / b : -((b - 1 - a) / b); }

extern "C" __global__ void grouped_conv_bwd_input_v2(float* __restrict__ dx, const float* __restrict__ dy,
                                                     const float* __restrict__ w, GroupedConv args) {
    const int n = args.n, c_in = args.c_in, h_in = args.h_in, w_in = args.w_in, c_out = args.c_out;
    const int h_out = args.h_out, w_out = args.w_out, k_h = args.k_h, k_w = args.k_w;
    const int stride_h = args.stride_h, stride_w = args.stride_w, pad_h = args.pad_h, pad_w = args.pad_w;
    const int dil_h = args.dil_h, dil_w = args.dil_w, groups = args.groups;
    const int tile_h = args.tile_h, tile_w = args.tile_w, planes = args.planes;
    __shared__ float win[GC_WINDOW];
    // At most this many dy rows and columns reach a tile.
    const int rows = (tile_h - 1 + (k_h - 1) * dil_h) / stride_h + 2;
    const int cols = (tile_w - 1 + (k_w - 1) * dil_w) / stride_w + 2;
    const int window = rows * cols;
    const int tiles_x = (w_in + tile_w - 1) / tile_w;
    const int tiles = tiles_x * ((h_in + tile_h - 1) / tile_h);
    const long long wid = blockIdx.x;
    const long long plane0 = (wid / tiles) * planes;
    const int tile = (int)(wid % tiles);
    const int iy0 = (tile / tiles_x) * tile_h, ix0 = (tile % tiles_x) * tile_w;
    // The first dy row and column that reach the tile (negative: above or left of dy).
    const int oy0 = floor_div(iy0 + pad_h - (k_h - 1) * dil_h, stride_h);
    const int ox0 = floor_div(ix0 + pad_w - (k_w - 1) * dil_w, stride_w);
    const long long all_planes = (long long)n * c_in;
    const int cig = c_in / groups, cog = c_out / groups;
    const int tid = threadIdx.x, q = tid / (tile_h * tile_w);
    const int iy = iy0 + (tid % (tile_h * tile_w)) / tile_w, ix = ix0 + tid % tile_w;
    const long long plane = plane0 + q;
    const bool live = q < planes && plane < all_planes && iy < h_in && ix < w_in;
    const int grp = (int)(plane % c_in) / cig, c = (int)(plane % c_in) - grp * cig;
    float s = 0.0f;
    for (int k = 0; k < cog; ++k) {
        for (int e = tid; e < planes * window; e += blockDim.x) {
            long long pq = plane0 + e / window;
            float v = 0.0f;
            if (pq < all_planes) {
                int co = (int)((pq % c_in) / cig) * cog + k;
                int oy = oy0 + (e % window) / cols, ox = ox0 + e % cols;
                if (oy >= 0 && oy < h_out && ox >= 0 && ox < w_out)
                    v = dy[(((pq / c_in) * c_out + co) * h_out + oy) * w_out + ox];
            }
            win[e] = v;
        }
        __syncthreads();
        if (live) {
            const float* wp = w + ((long long)(grp * cog + k) * cig + c) * k_h * k_w;
            for (int ky = 0; ky < k_h; ++ky) {
                int ty = iy + pad_h - ky * dil_h;
                if (ty % stride_h != 0) continue;
                const float* row = win + q * window + (ty / stride_h - oy0) * cols;
                for (int kx = 0; kx < k_w; ++kx) {
                    int tx = ix + pad_w - kx * dil_w;
                    if (tx % stride_w != 0) continue;
                    s += row[tx / stride_w - ox0] * wp[ky * k_w + kx];
                }
            }
        }
        __syncthreads();
    }
    if (live) dx[(plane * h_in + iy) * w_in + ix] = s;
}
