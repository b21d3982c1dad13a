// The strided copy behind concat, chunk/split, channel shuffle and permute
// (src/ops/layout.rs), mirroring shaders/layout.wgsl: dst[dst_off + sum i_k*dst_st[k]] =
// src[src_off + sum i_k*src_st[k]] for every index i of a rank-6 shape.

struct Dims6 {
    long long v[6];
};

// The scalars of strided_copy (shaders/layout.wgsl's Copy): the shape, the source's and the
// destination's strides and offsets, and len = the shape's elements.
struct StridedCopy {
    Dims6 shape;
    Dims6 src_st;
    Dims6 dst_st;
    long long src_off;
    long long dst_off;
    long long len;
};

extern "C" __global__ void strided_copy(float* __restrict__ dst, const float* __restrict__ src, StridedCopy args) {
    const Dims6 shape = args.shape, src_st = args.src_st, dst_st = args.dst_st;
    const long long src_off = args.src_off, dst_off = args.dst_off, len = args.len;
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
