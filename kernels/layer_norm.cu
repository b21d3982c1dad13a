// LayerNorm over the middle axis of x viewed as [outer, dim, inner] (src/ops/norm.rs),
// mirroring shaders/layer_norm.wgsl: statistics two-pass on data shifted by each vector's
// first element, the biased variance; the backward pass recomputes them. One thread per
// normalized vector (outer, inner), its dim elements summed in order (deterministic).

// The scalars of both kernels (shaders/layer_norm.wgsl's Ln): x viewed as [outer, dim, inner],
// and eps.
struct Ln {
    long long inner;
    int outer;
    int dim;
    float eps;
    int _pad;  // to a multiple of 8 bytes, so no implicit padding (see src/backend/cuda/args.rs)
};

// Mean and 1/sqrt(var + eps) of (x - x0) along the vector at xv (stride inner).
__device__ __forceinline__ float2 ln_stats(const float* xv, float x0, int dim, long long inner, float eps) {
    float s = 0.0f;
    for (int d = 0; d < dim; ++d) s += xv[d * inner] - x0;
    float m = s / (float)dim;
    float q = 0.0f;
    for (int d = 0; d < dim; ++d) {
        float c = (xv[d * inner] - x0) - m;
        q += c * c;
    }
    return make_float2(m, 1.0f / sqrtf(q / (float)dim + eps));
}

// y = (x - mean) * rstd * w[d] + b[d].  x, y: [outer, dim, inner]; w, b: [dim]
extern "C" __global__ void layer_norm_fwd(float* __restrict__ y, const float* __restrict__ x,
                                          const float* __restrict__ w, const float* __restrict__ b, Ln args) {
    const int outer = args.outer, dim = args.dim;
    const long long inner = args.inner;
    const float eps = args.eps;
    long long vectors = (long long)outer * inner;
    for (long long v = blockIdx.x * (long long)blockDim.x + threadIdx.x; v < vectors; v += (long long)gridDim.x * blockDim.x) {
        long long base = (v / inner) * dim * inner + v % inner;
        float x0 = x[base];
        float2 st = ln_stats(x + base, x0, dim, inner, eps);
        for (int d = 0; d < dim; ++d) {
            long long at = base + d * inner;
            y[at] = ((x[at] - x0) - st.x) * st.y * w[d] + b[d];
        }
    }
}

// With x^ = (x - mean) * rstd and g = w * dy: dx = rstd * (g - mean(g) - x^ * mean(g * x^)).
extern "C" __global__ void layer_norm_bwd_input(float* __restrict__ dx, const float* __restrict__ x,
                                                const float* __restrict__ w, const float* __restrict__ dy,
                                                Ln args) {
    const int outer = args.outer, dim = args.dim;
    const long long inner = args.inner;
    const float eps = args.eps;
    long long vectors = (long long)outer * inner;
    for (long long v = blockIdx.x * (long long)blockDim.x + threadIdx.x; v < vectors; v += (long long)gridDim.x * blockDim.x) {
        long long base = (v / inner) * dim * inner + v % inner;
        float x0 = x[base];
        float2 st = ln_stats(x + base, x0, dim, inner, eps);
        float m1 = 0.0f, m2 = 0.0f;
        for (int d = 0; d < dim; ++d) {
            long long at = base + d * inner;
            float g = dy[at] * w[d];
            m1 += g;
            m2 += g * (((x[at] - x0) - st.x) * st.y);
        }
        m1 /= (float)dim;
        m2 /= (float)dim;
        for (int d = 0; d < dim; ++d) {
            long long at = base + d * inner;
            float xh = ((x[at] - x0) - st.x) * st.y;
            dx[at] = st.y * (dy[at] * w[d] - m1 - xh * m2);
        }
    }
}
