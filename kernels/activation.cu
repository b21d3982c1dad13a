// The activation table (src/ops/activation.rs): the host prepends act_fwd(id, x, a, b) and
// act_df(id, saved, a, b), generated from the table's GPU expressions, so every row of the
// table runs here. Mirrors shaders/activation.wgsl. Grid-stride loops, 64-bit sizes.

// y = f(x).  x, y: [len]; id: the row's index in Activation::ALL.
extern "C" __global__ void activation_fwd(float* __restrict__ y, const float* __restrict__ x,
                                          unsigned int id, float alpha, float beta, long long len) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < len; i += (long long)gridDim.x * blockDim.x) {
        y[i] = act_fwd(id, x[i], alpha, beta);
    }
}

// dx = dy * f'(saved), saved being the op's input or output as the row says.  [len] each.
extern "C" __global__ void activation_bwd_input(float* __restrict__ dx, const float* __restrict__ saved,
                                                const float* __restrict__ dy, unsigned int id, float alpha,
                                                float beta, long long len) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < len; i += (long long)gridDim.x * blockDim.x) {
        dx[i] = dy[i] * act_df(id, saved[i], alpha, beta);
    }
}
