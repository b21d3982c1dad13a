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

// ---------------------------------------------------------------------------------- v1

// y = conv(x, w) + bias (bias read only when has_bias != 0). One thread per element of y.
extern "C" __global__ void conv2d_fwd_v1(float* __restrict__ y, const float* __restrict__ x,
                                         const float* __restrict__ w, const float* __restrict__ bias, int has_bias,
                                         int n, int c_in, int h_in, int w_in, int c_out, int h_out, int w_out,
                                         int k_h, int k_w, int stride_h, int stride_w, int pad_h, int pad_w) {
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
                                               const float* __restrict__ w, int n, int c_in, int h_in, int w_in,
                                               int c_out, int h_out, int w_out, int k_h, int k_w, int stride_h,
                                               int stride_w, int pad_h, int pad_w) {
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
    int has_bias, int n, int c_in, int h_in, int w_in, int c_out, int h_out, int w_out, int k_h, int k_w,
    int stride_h, int stride_w, int pad_h, int pad_w) {
    ForwardProblem p{x, w, bias, y, has_bias,
                     ConvShape{n, c_in, h_in, w_in, c_out, h_out, w_out, k_h, k_w, stride_h, stride_w, pad_h, pad_w}};
    tf32_gemm(p);
}

// Grid: (ceil(N / 64), ceil(M / 64)) blocks of 128 threads; see BackwardProblem for M, N, K.
extern "C" __global__ void __launch_bounds__(TC_THREADS) conv2d_bwd_input_v2(
    float* __restrict__ dx, const float* __restrict__ dy, const float* __restrict__ w, int n, int c_in, int h_in,
    int w_in, int c_out, int h_out, int w_out, int k_h, int k_w, int stride_h, int stride_w, int pad_h,
    int pad_w) {
    BackwardProblem p{dy, w, dx,
                      ConvShape{n, c_in, h_in, w_in, c_out, h_out, w_out, k_h, k_w, stride_h, stride_w, pad_h, pad_w}};
    tf32_gemm(p);
}
