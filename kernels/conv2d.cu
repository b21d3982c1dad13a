// 2-D convolution (no groups, no dilation), forward and input gradient, in two variants kept
// side by side for benchmarking (as llm.c's dev/cuda does):
//   v1: plain FP32, one thread per output element: the reference on the GPU.
//   v2: implicit GEMM on the tensor cores: TF32 mma.sync (m16n8k8) with FP32 accumulation,
//       64x64 tiles per block of 4 warps. Needs sm_80 or newer; the host falls back to v1 below.
// Both backward kernels are gathers (one output element of dx per thread or tile entry): no
// float atomics, so results are deterministic.
//
// Shapes (all contiguous, NCHW):
//   x, dx: [n, c_in, h_in, w_in]; w: [c_out, c_in, k_h, k_w]; bias: [c_out];
//   y, dy: [n, c_out, h_out, w_out].

// The scalars of every kernel here (shaders/conv2d.wgsl's Conv, and the epilogue of v3/v4's
// forward): the shapes above; has_bias (v1, v2 forward): bias is read; relu, act, alpha, beta
// (v3, v4 forward): the activation, see Epilogue.
struct Conv {
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
    int has_bias;
    int relu;
    int act;
    float alpha;
    float beta;
};

// ---------------------------------------------------------------------------------- v1

// y = conv(x, w) + bias (bias read only when has_bias != 0). One thread per element of y.
extern "C" __global__ void conv2d_fwd_v1(float* __restrict__ y, const float* __restrict__ x,
                                         const float* __restrict__ w, const float* __restrict__ bias, Conv args) {
    const int has_bias = args.has_bias, n = args.n, c_in = args.c_in, h_in = args.h_in, w_in = args.w_in;
    const int c_out = args.c_out, h_out = args.h_out, w_out = args.w_out, k_h = args.k_h, k_w = args.k_w;
    const int stride_h = args.stride_h, stride_w = args.stride_w, pad_h = args.pad_h, pad_w = args.pad_w;
    long long total = (long long)n * c_out * h_out * w_out;
    for (long long o = blockIdx.x * (long long)blockDim.x + threadIdx.x; o < total; o += (long long)gridDim.x * blockDim.x) {
        int ox = (int)(o % w_out);
        int oy = (int)((o / w_out) % h_out);
        int co = (int)((o / ((long long)w_out * h_out)) % c_out);
        int img = (int)(o / ((long long)w_out * h_out * c_out));
        float s = has_bias ? bias[co] : 0.0f;
        for (int ci = 0; ci < c_in; ++ci) {
            const float* xp = x + ((long long)img * c_in + ci) * h_in * w_in;
            const float* wp = w + ((long long)co * c_in + ci) * k_h * k_w;
            for (int ky = 0; ky < k_h; ++ky) {
                int iy = oy * stride_h - pad_h + ky;
                if (iy < 0 || iy >= h_in) continue;
                for (int kx = 0; kx < k_w; ++kx) {
                    int ix = ox * stride_w - pad_w + kx;
                    if (ix < 0 || ix >= w_in) continue;
                    s += xp[iy * w_in + ix] * wp[ky * k_w + kx];
                }
            }
        }
        y[o] = s;
    }
}

// dx = conv_transpose(dy, w), gathered: one thread per element of dx sums over every
// (c_out, ky, kx) whose output position reads it.
extern "C" __global__ void conv2d_bwd_input_v1(float* __restrict__ dx, const float* __restrict__ dy,
                                               const float* __restrict__ w, Conv args) {
    const int n = args.n, c_in = args.c_in, h_in = args.h_in, w_in = args.w_in;
    const int c_out = args.c_out, h_out = args.h_out, w_out = args.w_out, k_h = args.k_h, k_w = args.k_w;
    const int stride_h = args.stride_h, stride_w = args.stride_w, pad_h = args.pad_h, pad_w = args.pad_w;
    long long total = (long long)n * c_in * h_in * w_in;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total; t += (long long)gridDim.x * blockDim.x) {
        int ix = (int)(t % w_in);
        int iy = (int)((t / w_in) % h_in);
        int ci = (int)((t / ((long long)w_in * h_in)) % c_in);
        int img = (int)(t / ((long long)w_in * h_in * c_in));
        float s = 0.0f;
        for (int co = 0; co < c_out; ++co) {
            const float* dyp = dy + ((long long)img * c_out + co) * h_out * w_out;
            const float* wp = w + ((long long)co * c_in + ci) * k_h * k_w;
            for (int ky = 0; ky < k_h; ++ky) {
                int ty = iy + pad_h - ky;  // = oy * stride_h
                if (ty < 0 || ty % stride_h != 0) continue;
                int oy = ty / stride_h;
                if (oy >= h_out) continue;
                for (int kx = 0; kx < k_w; ++kx) {
                    int tx = ix + pad_w - kx;
                    if (tx < 0 || tx % stride_w != 0) continue;
                    int ox = tx / stride_w;
                    if (ox >= w_out) continue;
                    s += dyp[oy * w_out + ox] * wp[ky * k_w + kx];
                }
            }
        }
        dx[t] = s;
    }
}

// ---------------------------------------------------------------------------------- v2

// Both directions are a product C[M, N] = A[M, K] * B[K, N] whose operands are gathered on the
// fly (implicit GEMM, no im2col buffer):
//   forward:  M = c_out, N = n*h_out*w_out, K = c_in*k_h*k_w; A = w, B = im2col(x).
//   backward: M = c_in,  N = n*h_in*w_in,   K = c_out*k_h*k_w; A = w viewed as [c_in][c_out,ky,kx],
//             B[(co,ky,kx)][(img,iy,ix)] = dy[img, co, oy, ox] where oy*s = iy + pad - ky (else 0).

struct ConvShape {
    int n, c_in, h_in, w_in, c_out, h_out, w_out, k_h, k_w, stride_h, stride_w, pad_h, pad_w;
};

// The shape of a launch's arguments, member by member.
__device__ __forceinline__ ConvShape conv_shape(const Conv& a) {
    return ConvShape{a.n,   a.c_in, a.h_in,     a.w_in,     a.c_out, a.h_out, a.w_out,
                     a.k_h, a.k_w,  a.stride_h, a.stride_w, a.pad_h, a.pad_w};
}

struct ForwardProblem {
    const float* x;
    const float* w;
    const float* bias;
    float* y;
    int has_bias;
    ConvShape s;
    __device__ int m() const { return s.c_out; }
    __device__ long long ncols() const { return (long long)s.n * s.h_out * s.w_out; }
    __device__ int k() const { return s.c_in * s.k_h * s.k_w; }
    __device__ float a(int m, int k) const { return w[(long long)m * (s.c_in * s.k_h * s.k_w) + k]; }
    __device__ float b(int k, long long col) const {
        int kx = k % s.k_w, ky = (k / s.k_w) % s.k_h, ci = k / (s.k_w * s.k_h);
        int pix = s.h_out * s.w_out;
        int img = (int)(col / pix), p = (int)(col % pix);
        int iy = (p / s.w_out) * s.stride_h - s.pad_h + ky;
        int ix = (p % s.w_out) * s.stride_w - s.pad_w + kx;
        if (iy < 0 || iy >= s.h_in || ix < 0 || ix >= s.w_in) return 0.0f;
        return x[(((long long)img * s.c_in + ci) * s.h_in + iy) * s.w_in + ix];
    }
    __device__ void store(int m, long long col, float v) const {
        int pix = s.h_out * s.w_out;
        long long img = col / pix, p = col % pix;
        y[(img * s.c_out + m) * pix + p] = v + (has_bias ? bias[m] : 0.0f);
    }
};

struct BackwardProblem {
    const float* dy;
    const float* w;
    float* dx;
    ConvShape s;
    __device__ int m() const { return s.c_in; }
    __device__ long long ncols() const { return (long long)s.n * s.h_in * s.w_in; }
    __device__ int k() const { return s.c_out * s.k_h * s.k_w; }
    __device__ float a(int m, int k) const {
        int kk = k % (s.k_h * s.k_w), co = k / (s.k_h * s.k_w);
        return w[((long long)co * s.c_in + m) * (s.k_h * s.k_w) + kk];
    }
    __device__ float b(int k, long long col) const {
        int kx = k % s.k_w, ky = (k / s.k_w) % s.k_h, co = k / (s.k_w * s.k_h);
        int pix = s.h_in * s.w_in;
        int img = (int)(col / pix), p = (int)(col % pix);
        int ty = p / s.w_in + s.pad_h - ky, tx = p % s.w_in + s.pad_w - kx;
        if (ty < 0 || tx < 0 || ty % s.stride_h != 0 || tx % s.stride_w != 0) return 0.0f;
        int oy = ty / s.stride_h, ox = tx / s.stride_w;
        if (oy >= s.h_out || ox >= s.w_out) return 0.0f;
        return dy[(((long long)img * s.c_out + co) * s.h_out + oy) * s.w_out + ox];
    }
    __device__ void store(int m, long long col, float v) const {
        int pix = s.h_in * s.w_in;
        long long img = col / pix, p = col % pix;
        dx[(img * s.c_in + m) * pix + p] = v;
    }
};

#define TC_BM 64
#define TC_BN 64
#define TC_BK 16
#define TC_THREADS 128

// Rounds an FP32 value to TF32 (round to nearest, ties away), kept in a 32-bit register.
__device__ __forceinline__ unsigned int to_tf32(float v) {
    unsigned int r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(v));
    return r;
}

// One block computes a TC_BM x TC_BN tile of C; its 4 warps each own a 32x32 quarter, i.e.
// 2 (m16) x 4 (n8) mma tiles, accumulated in FP32 registers over K in steps of TC_BK.
// Operands are staged in shared memory with padded rows (conflict-free fragment reads).
template <class P>
__device__ void tf32_gemm(const P& p) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
    __shared__ float As[TC_BM][TC_BK + 4];
    __shared__ float Bs[TC_BK][TC_BN + 8];
    const int M = p.m(), K = p.k();
    const long long N = p.ncols();
    const int m0 = blockIdx.y * TC_BM;
    const long long n0 = (long long)blockIdx.x * TC_BN;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int wm = (warp / 2) * 32, wn = (warp % 2) * 32;
    const int group = lane / 4, quad = lane % 4;
    float acc[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.0f;

    for (int k0 = 0; k0 < K; k0 += TC_BK) {
        for (int e = tid; e < TC_BM * TC_BK; e += TC_THREADS) {
            int mm = e / TC_BK, kk = e % TC_BK;
            int gm = m0 + mm, gk = k0 + kk;
            As[mm][kk] = (gm < M && gk < K) ? p.a(gm, gk) : 0.0f;
        }
        for (int e = tid; e < TC_BK * TC_BN; e += TC_THREADS) {
            int kk = e / TC_BN, nn = e % TC_BN;
            long long gn = n0 + nn;
            int gk = k0 + kk;
            Bs[kk][nn] = (gn < N && gk < K) ? p.b(gk, gn) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int ks = 0; ks < TC_BK; ks += 8) {
            unsigned int af[2][4], bf[4][2];
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                int r = wm + i * 16 + group;
                af[i][0] = to_tf32(As[r][ks + quad]);
                af[i][1] = to_tf32(As[r + 8][ks + quad]);
                af[i][2] = to_tf32(As[r][ks + quad + 4]);
                af[i][3] = to_tf32(As[r + 8][ks + quad + 4]);
            }
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                int c = wn + j * 8 + group;
                bf[j][0] = to_tf32(Bs[ks + quad][c]);
                bf[j][1] = to_tf32(Bs[ks + quad + 4][c]);
            }
#pragma unroll
            for (int i = 0; i < 2; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j)
                    asm volatile(
                        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
                        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                        : "+f"(acc[i][j][0]), "+f"(acc[i][j][1]), "+f"(acc[i][j][2]), "+f"(acc[i][j][3])
                        : "r"(af[i][0]), "r"(af[i][1]), "r"(af[i][2]), "r"(af[i][3]), "r"(bf[j][0]),
                          "r"(bf[j][1]));
        }
        __syncthreads();
    }
    // Accumulator layout of m16n8: c0, c1 at row group, columns 2*quad, 2*quad+1; c2, c3 at
    // row group + 8.
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r) {
                int gm = m0 + wm + i * 16 + group + (r >= 2 ? 8 : 0);
                long long gn = n0 + wn + j * 8 + quad * 2 + (r & 1);
                if (gm < M && gn < N) p.store(gm, gn, acc[i][j][r]);
            }
#endif
}

// Grid: (ceil(N / 64), ceil(M / 64)) blocks of 128 threads; see ForwardProblem for M, N, K.
extern "C" __global__ void __launch_bounds__(TC_THREADS) conv2d_fwd_v2(
    float* __restrict__ y, const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
    Conv args) {
    ForwardProblem p{x, w, bias, y, args.has_bias, conv_shape(args)};
    tf32_gemm(p);
}

// Grid: (ceil(N / 64), ceil(M / 64)) blocks of 128 threads; see BackwardProblem for M, N, K.
extern "C" __global__ void __launch_bounds__(TC_THREADS) conv2d_bwd_input_v2(
    float* __restrict__ dx, const float* __restrict__ dy, const float* __restrict__ w, Conv args) {
    BackwardProblem p{dy, w, dx, conv_shape(args)};
    tf32_gemm(p);
}

// ---------------------------------------------------------------------------------- v3 / v4

// The same implicit GEMM as v2, rebuilt for throughput:
//   - 128x128 tiles of C per block of 8 warps (each warp 64x32: 4 x 4 mma tiles), K in steps
//     of 32;
//   - the next K step's operands are loaded from global memory into registers while the
//     tensor cores work on the current one (one shared-memory buffer, two barriers per step);
//   - index arithmetic hoisted: each thread decodes its output column (image, y, x) once, and
//     the decoding of the step's 32 K rows (channel, ky, kx -> offsets) is done once per block
//     into a small shared table, so a gathered element costs an add, two compares and a load;
//   - the conv's epilogue (bias, eval BatchNorm, residual add, ReLU) is applied in the store,
//     rounded op by op exactly as the separate kernels round it.
// v3 computes each product in "3xTF32": a = big + small with big = tf32(a), small = tf32(a -
// big), and c += a_small*b_big + a_big*b_small + a_big*b_big, which recovers FP32 accuracy on
// the tensor cores (the dropped small*small term is ~2^-22 relative). v4 is the same kernel
// with plain TF32 (one product): faster, ~1e-3 relative error.

#define V3_BM 128
#define V3_BN 128
#define V3_BK 32
#define V3_THREADS 256

// One K row of a step: its offsets into A (beyond the row's own offset) and into the gathered
// operand (beyond the column's base), and its filter tap. Rows past K get a tap that fails
// every bounds check.
struct KRow {
    int a_off, b_off, ky, kx;
};

#define V3_NO_TAP (1 << 28)

struct ForwardGather {
    // x: [n, c_in, h_in, w_in], w: [c_out, c_in, k_h, k_w]
    const float* x;
    const float* w;
    ConvShape s;
    __device__ int m() const { return s.c_out; }
    __device__ long long ncols() const { return (long long)s.n * s.h_out * s.w_out; }
    __device__ int k() const { return s.c_in * s.k_h * s.k_w; }
    __device__ long long a_row(int m) const { return (long long)m * k(); }
    __device__ KRow krow(int k) const {
        if (k >= this->k()) return KRow{0, 0, V3_NO_TAP, V3_NO_TAP};
        int taps = s.k_h * s.k_w, ci = k / taps, t = k % taps;
        return KRow{k, ci * s.h_in * s.w_in, t / s.k_w, t % s.k_w};
    }
    // A column's image base and the input position of its (0, 0) tap.
    struct Col {
        long long base;
        int y0, x0;
    };
    __device__ Col col(long long c) const {
        int pix = s.h_out * s.w_out;
        if (c >= ncols()) return Col{0, V3_NO_TAP, V3_NO_TAP};
        int img = (int)(c / pix), p = (int)(c % pix);
        return Col{(long long)img * s.c_in * s.h_in * s.w_in, (p / s.w_out) * s.stride_h - s.pad_h,
                   (p % s.w_out) * s.stride_w - s.pad_w};
    }
    __device__ float b(const Col& c, const KRow& r) const {
        int iy = c.y0 + r.ky, ix = c.x0 + r.kx;
        if ((unsigned)iy >= (unsigned)s.h_in || (unsigned)ix >= (unsigned)s.w_in) return 0.0f;
        return x[c.base + r.b_off + iy * s.w_in + ix];
    }
};

struct BackwardGather {
    // dy: [n, c_out, h_out, w_out], w: [c_out, c_in, k_h, k_w]; rows of C are input channels.
    const float* dy;
    const float* w;
    ConvShape s;
    __device__ int m() const { return s.c_in; }
    __device__ long long ncols() const { return (long long)s.n * s.h_in * s.w_in; }
    __device__ int k() const { return s.c_out * s.k_h * s.k_w; }
    __device__ long long a_row(int m) const { return (long long)m * s.k_h * s.k_w; }
    __device__ KRow krow(int k) const {
        // ty = y0 - ky < 0 for every column, also a padding one (y0 = -V3_NO_TAP).
        if (k >= this->k()) return KRow{0, 0, V3_NO_TAP, V3_NO_TAP};
        int taps = s.k_h * s.k_w, co = k / taps, t = k % taps;
        return KRow{co * s.c_in * taps + t, co * s.h_out * s.w_out, t / s.k_w, t % s.k_w};
    }
    struct Col {
        long long base;
        int y0, x0;  // input position + padding: output row oy reads it when oy*s = y0 - ky
    };
    __device__ Col col(long long c) const {
        int pix = s.h_in * s.w_in;
        if (c >= ncols()) return Col{0, -V3_NO_TAP, -V3_NO_TAP};
        int img = (int)(c / pix), p = (int)(c % pix);
        return Col{(long long)img * s.c_out * s.h_out * s.w_out, p / s.w_in + s.pad_h, p % s.w_in + s.pad_w};
    }
    __device__ float b(const Col& c, const KRow& r) const {
        int ty = c.y0 - r.ky, tx = c.x0 - r.kx;
        if (ty < 0 || tx < 0) return 0.0f;
        int oy = ty, ox = tx;
        if (s.stride_h != 1 || s.stride_w != 1) {
            if (ty % s.stride_h != 0 || tx % s.stride_w != 0) return 0.0f;
            oy = ty / s.stride_h;
            ox = tx / s.stride_w;
        }
        if (oy >= s.h_out || ox >= s.w_out) return 0.0f;
        return dy[c.base + r.b_off + oy * s.w_out + ox];
    }
};

// What the forward store applies, in this order: + bias[m]; * scale[m] + shift[m]; + residual;
// the activation. Null pointers skip a step.
struct Epilogue {
    const float* bias;      // [c_out] or null
    const float* scale;     // [c_out] or null (then shift is unused)
    const float* shift;     // [c_out]
    const float* residual;  // [n, c_out, h_out, w_out] or null
    int relu;               // 1: max(v, 0), a NaN staying NaN (PyTorch's ReLU, the CPU's)
    int act;                // otherwise, >= 0: the activation table's row act_fwd(act, v, alpha, beta)
    float alpha, beta;      // that row's parameters
};

__device__ __forceinline__ void split_tf32(float v, unsigned int& big, unsigned int& small) {
    big = to_tf32(v);
    small = to_tf32(__fsub_rn(v, __uint_as_float(big)));
}

// Not volatile: the compiler may interleave independent products with the fragment loads.
__device__ __forceinline__ void mma_tf32(float* c, const unsigned int* a, const unsigned int* b) {
    asm(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// C[M, N] = A[M, K] * B[K, N] over one 128x128 tile; `store(m, col, v)` writes each result.
// SPLIT = 3: 3xTF32 (FP32 accuracy); SPLIT = 1: plain TF32.
template <int SPLIT, class P, class Store>
__device__ void tc_gemm_v3(const P& p, Store store) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
    __shared__ float As[V3_BM][V3_BK + 4];
    __shared__ float Bs[V3_BK][V3_BN + 8];
    __shared__ KRow table[2][V3_BK];
    const int M = p.m(), K = p.k();
    const long long N = p.ncols();
    const int m0 = blockIdx.y * V3_BM;
    const long long n0 = (long long)blockIdx.x * V3_BN;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int wm = (warp / 4) * 64, wn = (warp % 4) * 32;
    const int group = lane / 4, quad = lane % 4;

    // Loader roles. A: K index a_k = tid % 32, rows a_r0 + 8i. B: column b_c, K rows b_r0 + 2i.
    const int a_k = tid % V3_BK, a_r0 = tid / V3_BK;
    const int b_c = tid % V3_BN, b_r0 = tid / V3_BN;
    const typename P::Col col = p.col(n0 + b_c);
    float a_reg[16], b_reg[16];

    auto fill_table = [&](KRow* t, int k0) {
        if (tid < V3_BK) t[tid] = p.krow(k0 + tid);
    };
    auto load = [&](const KRow* t, int k0) {
        const bool k_ok = k0 + a_k < K;
        const int a_off = t[a_k].a_off;
#pragma unroll
        for (int i = 0; i < 16; ++i) {
            int gm = m0 + a_r0 + 8 * i;
            a_reg[i] = (k_ok && gm < M) ? p.w[p.a_row(gm) + a_off] : 0.0f;
        }
#pragma unroll
        for (int i = 0; i < 16; ++i) b_reg[i] = p.b(col, t[b_r0 + 2 * i]);
    };
    auto stash = [&]() {
#pragma unroll
        for (int i = 0; i < 16; ++i) As[a_r0 + 8 * i][a_k] = a_reg[i];
#pragma unroll
        for (int i = 0; i < 16; ++i) Bs[b_r0 + 2 * i][b_c] = b_reg[i];
    };

    float acc[4][4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.0f;

    const int steps = (K + V3_BK - 1) / V3_BK;
    fill_table(table[0], 0);
    __syncthreads();
    load(table[0], 0);
    stash();
    fill_table(table[1], V3_BK);
    __syncthreads();
    for (int step = 0; step < steps; ++step) {
        const bool more = step + 1 < steps;
        if (more) load(table[(step + 1) & 1], (step + 1) * V3_BK);
#pragma unroll
        for (int ks = 0; ks < V3_BK; ks += 8) {
            // B fragments for the warp's 4 column tiles, then one row tile of A at a time (fewer
            // live registers than splitting all of A up front). The 3xTF32 passes go one after
            // another over the 4 column tiles, so consecutive mma instructions never wait on
            // the same accumulator.
            unsigned int bb[4][2], bs[4][2];
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                int c = wn + j * 8 + group;
                float v[2] = {Bs[ks + quad][c], Bs[ks + quad + 4][c]};
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    if (SPLIT == 3) split_tf32(v[e], bb[j][e], bs[j][e]);
                    else bb[j][e] = to_tf32(v[e]);
                }
            }
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                int r = wm + i * 16 + group;
                float v[4] = {As[r][ks + quad], As[r + 8][ks + quad], As[r][ks + quad + 4], As[r + 8][ks + quad + 4]};
                unsigned int ab[4], as[4];
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    if (SPLIT == 3) split_tf32(v[e], ab[e], as[e]);
                    else ab[e] = to_tf32(v[e]);
                }
                if (SPLIT == 3) {
#pragma unroll
                    for (int j = 0; j < 4; ++j) mma_tf32(acc[i][j], as, bb[j]);
#pragma unroll
                    for (int j = 0; j < 4; ++j) mma_tf32(acc[i][j], ab, bs[j]);
                }
#pragma unroll
                for (int j = 0; j < 4; ++j) mma_tf32(acc[i][j], ab, bb[j]);
            }
        }
        __syncthreads();
        if (more) {
            stash();
            fill_table(table[step & 1], (step + 2) * V3_BK);
        }
        __syncthreads();
    }
    // Accumulator layout of m16n8: c0, c1 at row group, columns 2*quad, 2*quad+1; c2, c3 at
    // row group + 8.
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            long long gn = n0 + wn + j * 8 + quad * 2 + h;
            if (gn >= N) continue;
            store.begin(gn);
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int r = 0; r < 2; ++r) {
                    int gm = m0 + wm + i * 16 + group + 8 * r;
                    if (gm < M) store.put(gm, acc[i][j][2 * r + h]);
                }
        }
#endif
}

// Writes y[img, m, p] for output column (img, p), applying the epilogue.
struct ForwardStore {
    float* y;
    Epilogue e;
    int c_out, pix;
    long long img_base;  // set by begin: img * c_out * pix + p
    __device__ void begin(long long col) {
        long long img = col / pix, p = col % pix;
        img_base = img * c_out * pix + p;
    }
    __device__ void put(int m, float v) const {
        long long o = img_base + (long long)m * pix;
        if (e.bias) v = __fadd_rn(v, e.bias[m]);
        if (e.scale) v = __fadd_rn(__fmul_rn(v, e.scale[m]), e.shift[m]);
        if (e.residual) v = __fadd_rn(v, e.residual[o]);
        if (e.relu) v = v <= 0.0f ? 0.0f : v;
        else if (e.act >= 0) v = act_fwd((unsigned)e.act, v, e.alpha, e.beta);
        y[o] = v;
    }
};

// Writes dx[img, m, p] for input column (img, p).
struct BackwardStore {
    float* dx;
    int c_in, pix;
    long long img_base;
    __device__ void begin(long long col) {
        long long img = col / pix, p = col % pix;
        img_base = img * c_in * pix + p;
    }
    __device__ void put(int m, float v) const { dx[img_base + (long long)m * pix] = v; }
};

template <int SPLIT>
__device__ void conv_fwd_v3(float* y, const float* x, const float* w, Epilogue e, ConvShape s) {
    ForwardStore st{y, e, s.c_out, s.h_out * s.w_out, 0};
    tc_gemm_v3<SPLIT>(ForwardGather{x, w, s}, st);
}

template <int SPLIT>
__device__ void conv_bwd_v3(float* dx, const float* dy, const float* w, ConvShape s) {
    BackwardStore st{dx, s.c_in, s.h_in * s.w_in, 0};
    tc_gemm_v3<SPLIT>(BackwardGather{dy, w, s}, st);
}

// Forward with the fused epilogue. y, residual: [n, c_out, h_out, w_out]; x: [n, c_in, h_in,
// w_in]; w: [c_out, c_in, k_h, k_w]; bias, scale, shift: [c_out]. bias, scale and residual may
// be null (scale null: no BatchNorm); args.relu, act, alpha, beta: the activation (see
// Epilogue; relu 0 and act -1: none). Grid: (ceil(N / 128), ceil(M / 128)) blocks of 256.
#define V3_FWD_ARGS \
    y, x, w, Epilogue{bias, scale, shift, residual, args.relu, args.act, args.alpha, args.beta}, conv_shape(args)
extern "C" __global__ void __launch_bounds__(V3_THREADS) conv2d_fwd_v3(
    float* __restrict__ y, const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
    const float* __restrict__ scale, const float* __restrict__ shift, const float* __restrict__ residual,
    Conv args) {
    conv_fwd_v3<3>(V3_FWD_ARGS);
}
extern "C" __global__ void __launch_bounds__(V3_THREADS) conv2d_fwd_v4(
    float* __restrict__ y, const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
    const float* __restrict__ scale, const float* __restrict__ shift, const float* __restrict__ residual,
    Conv args) {
    conv_fwd_v3<1>(V3_FWD_ARGS);
}

// Input gradient. dx: [n, c_in, h_in, w_in]; dy: [n, c_out, h_out, w_out]. Grid: (ceil(N /
// 128), ceil(c_in / 128)) blocks of 256.
extern "C" __global__ void __launch_bounds__(V3_THREADS) conv2d_bwd_input_v3(
    float* __restrict__ dx, const float* __restrict__ dy, const float* __restrict__ w, Conv args) {
    conv_bwd_v3<3>(dx, dy, w, conv_shape(args));
}
extern "C" __global__ void __launch_bounds__(V3_THREADS) conv2d_bwd_input_v4(
    float* __restrict__ dx, const float* __restrict__ dy, const float* __restrict__ w, Conv args) {
    conv_bwd_v3<1>(dx, dy, w, conv_shape(args));
}
