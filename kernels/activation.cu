// The activation table (src/ops/activation.rs): the host prepends act_fwd(id, x, a, b) and
// act_df(id, saved, a, b), generated from the table's GPU expressions, so every row of the
// table runs here. Mirrors shaders/activation.wgsl. Grid-stride loops, 64-bit sizes.

// The scalars of both kernels (shaders/activation.wgsl's Act): len elements; id, the row's
// index in Activation::ALL; alpha and beta, its parameters.
struct Act {
    long long len;
    unsigned int id;
    float alpha;
    float beta;
    int _pad;  // to a multiple of 8 bytes, so no implicit padding (see src/backend/cuda/args.rs)
};

// y = f(x).  x, y: [len]
extern "C" __global__ void activation_fwd(float* __restrict__ y, const float* __restrict__ x, Act args) {
    const unsigned int id = args.id;
    const float alpha = args.alpha, beta = args.beta;
    const long long len = args.len;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < len; i += (long long)gridDim.x * blockDim.x) {
        y[i] = act_fwd(id, x[i], alpha, beta);
    }
}

// dx = dy * f'(saved), saved being the op's input or output as the row says.  [len] each.
extern "C" __global__ void activation_bwd_input(float* __restrict__ dx, const float* __restrict__ saved,
                                                const float* __restrict__ dy, Act args) {
    const unsigned int id = args.id;
    const float alpha = args.alpha, beta = args.beta;
    const long long len = args.len;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < len; i += (long long)gridDim.x * blockDim.x) {
        dx[i] = dy[i] * act_df(id, saved[i], alpha, beta);
    }
}
