// The strided copy behind concat, chunk/split, channel shuffle and permute
// (src/ops/layout.rs), mirroring shaders/layout.wgsl: dst[dst_off + sum i_k*dst_st[k]] =
// src[src_off + sum i_k*src_st[k]] for every index i of a rank-6 shape.

struct Dims6 {
    long long v[6];
};

extern "C" __global__ void strided_copy(float* __restrict__ dst, const float* __restrict__ src, Dims6 shape,
                                        Dims6 src_st, Dims6 dst_st, long long src_off, long long dst_off,
                                        long long len) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < len; i += (long long)gridDim.x * blockDim.x) {
        long long rem = i, s = src_off, d = dst_off;
        for (int k = 5; k >= 0; --k) {
            long long ik = rem % shape.v[k];
            rem /= shape.v[k];
            s += ik * src_st.v[k];
            d += ik * dst_st.v[k];
        }
        dst[d] = src[s];
    }
}
