// Elementwise kernels: ReLU, eval-mode BatchNorm as a per-channel affine map, addition, and a
// fill used to poison outputs in tests. Grid-stride loops over a flat index; sizes are 64-bit
// because batch 64 at 224x224 already has 2^28 elements in one activation.

// The scalars of every kernel here (shaders/elementwise.wgsl's Elementwise): len elements; c
// channels of hw elements each (affine map only); value (fill only).
struct Elementwise {
    long long len;
    long long hw;
    int c;
    float value;
};

// y[i] = max(x[i], 0), a NaN staying NaN (PyTorch's rule, the activation table's).  x, y: [len]
extern "C" __global__ void relu_fwd(float* __restrict__ y, const float* __restrict__ x, Elementwise args) {
    const long long len = args.len;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < len; i += (long long)gridDim.x * blockDim.x) {
        float v = x[i];
        y[i] = v <= 0.0f ? 0.0f : v;
    }
}

// dx[i] = dy[i] where the ReLU output y[i] > 0, else 0.  y, dy, dx: [len]
extern "C" __global__ void relu_bwd_input(float* __restrict__ dx, const float* __restrict__ y,
                                          const float* __restrict__ dy, Elementwise args) {
    const long long len = args.len;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < len; i += (long long)gridDim.x * blockDim.x) {
        dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
    }
}

// y[n, c, i] = x[n, c, i] * scale[c] + shift[c].
// x, y: [n, c, hw] (len = n*c*hw), scale, shift: [c]
extern "C" __global__ void channel_affine_fwd(float* __restrict__ y, const float* __restrict__ x,
                                              const float* __restrict__ scale, const float* __restrict__ shift,
                                              Elementwise args) {
    const int c = args.c;
    const long long hw = args.hw, len = args.len;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < len; i += (long long)gridDim.x * blockDim.x) {
        int ch = (int)((i / hw) % c);
        y[i] = x[i] * scale[ch] + shift[ch];
    }
}

// dx[n, c, i] = dy[n, c, i] * scale[c].  dy, dx: [n, c, hw] (len = n*c*hw), scale: [c]
extern "C" __global__ void channel_affine_bwd_input(float* __restrict__ dx, const float* __restrict__ dy,
                                                    const float* __restrict__ scale, Elementwise args) {
    const int c = args.c;
    const long long hw = args.hw, len = args.len;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < len; i += (long long)gridDim.x * blockDim.x) {
        int ch = (int)((i / hw) % c);
        dx[i] = dy[i] * scale[ch];
    }
}

// y[i] = a[i] + b[i].  a, b, y: [len]
extern "C" __global__ void add(float* __restrict__ y, const float* __restrict__ a, const float* __restrict__ b,
                               Elementwise args) {
    const long long len = args.len;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < len; i += (long long)gridDim.x * blockDim.x) {
        y[i] = a[i] + b[i];
    }
}

// y[i] = value (NaN to poison an output before a kernel runs).  y: [len]
extern "C" __global__ void fill(float* __restrict__ y, Elementwise args) {
    const float value = args.value;
    const long long len = args.len;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < len; i += (long long)gridDim.x * blockDim.x) {
        y[i] = value;
    }
}
