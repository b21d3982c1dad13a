// Binary ops with broadcasting over rank-4 shapes (src/ops/binary.rs), mirroring
// shaders/binary.wgsl: add and mul, and the input gradient of one operand, dy (times the other
// operand for mul) summed over the axes that operand was broadcast along, gathered: one thread
// per element of the operand's gradient, its output positions in row-major order
// (deterministic, no atomics).

// Rank-4 shapes and strides travel as four ints each.
struct Dims4 {
    int v[4];
};

// The scalars of binary_fwd (shaders/binary.wgsl's BinaryFwd): len output elements; out, the
// output's shape; sa, sb, the operands' strides at the output's indices (0 along broadcast
// axes); op, 0 add or 1 mul.
struct BinaryFwd {
    long long len;
    Dims4 out;
    Dims4 sa;
    Dims4 sb;
    int op;
    int _pad;  // to a multiple of 8 bytes, so no implicit padding (see src/backend/cuda/args.rs)
};

// The scalars of binary_bwd_input (shaders/binary.wgsl's BinaryBwd): len elements of the
// operand; reduced, output positions per operand element; out, the output's shape; shape, the
// operand's; so, the other operand's strides at the output's indices; mul, 1 for a product.
struct BinaryBwd {
    long long len;
    long long reduced;
    Dims4 out;
    Dims4 shape;
    Dims4 so;
    int mul;
    int _pad;  // to a multiple of 8 bytes, so no implicit padding (see src/backend/cuda/args.rs)
};

// y = a + b (op 0) or a * b (op 1). out: the output's shape; sa, sb: the operands' strides at
// the output's indices (0 along broadcast axes).  y: [out]
extern "C" __global__ void binary_fwd(float* __restrict__ y, const float* __restrict__ a,
                                      const float* __restrict__ b, BinaryFwd args) {
    const Dims4 out = args.out, sa = args.sa, sb = args.sb;
    const int op = args.op;
    const long long len = args.len;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < len; i += (long long)gridDim.x * blockDim.x) {
        long long rem = i, ia = 0, ib = 0;
        for (int k = 3; k >= 0; --k) {
            long long ik = rem % out.v[k];
            rem /= out.v[k];
            ia += ik * sa.v[k];
            ib += ik * sb.v[k];
        }
        float u = a[ia], v = b[ib];
        y[i] = op == 1 ? u * v : u + v;
    }
}

// dx[e] = sum of dy (times other, when mul) over the output positions that read operand
// element e. shape: the operand's shape; so: the other operand's strides at the output's
// indices; reduced: output positions per operand element.  dx: [shape] (len elements)
extern "C" __global__ void binary_bwd_input(float* __restrict__ dx, const float* __restrict__ dy,
                                            const float* __restrict__ other, BinaryBwd args) {
    const Dims4 out = args.out, shape = args.shape, so = args.so;
    const int mul = args.mul;
    const long long reduced = args.reduced, len = args.len;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < len; e += (long long)gridDim.x * blockDim.x) {
        int idx[4];
        long long rem = e;
        for (int k = 3; k >= 0; --k) {
            idx[k] = (int)(rem % shape.v[k]);
            rem /= shape.v[k];
        }
        float acc = 0.0f;
        for (long long r = 0; r < reduced; ++r) {
            long long rr = r, o = 0, oth = 0, st = 1;
            for (int k = 3; k >= 0; --k) {
                long long ik = idx[k];
                if (shape.v[k] == 1 && out.v[k] != 1) {
                    ik = rr % out.v[k];
                    rr /= out.v[k];
                }
                o += ik * st;
                st *= out.v[k];
                oth += ik * so.v[k];
            }
            float v = dy[o];
            if (mul) v *= other[oth];
            acc += v;
        }
        dx[e] = acc;
    }
}
