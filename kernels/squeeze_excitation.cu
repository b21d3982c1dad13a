// Squeeze-excitation gates (src/ops/squeeze_excitation.rs), mirroring
// shaders/squeeze_excitation.wgsl: for each image, the channel means of x, fc1 and its
// activation, fc2 and the gate, in one block of 256 threads per image; the host then
// multiplies x by the gates (binary.cu's broadcast multiply). Two launches per block instead
// of four to six. act_fwd is generated from the activation table and put in front of this
// file. Every sum runs in a fixed order: deterministic, no atomics.
//
// Shapes: x: [n, c, hw]; w1: [squeeze, c]; b1: [squeeze]; w2: [c, squeeze]; b2: [c];
// hidden: [n, squeeze] (scratch); gates: [n, c] (the means, then the gates).
// lanes: threads per channel in the means (a power of two, c * lanes <= 256).
// act / gate: rows of Activation::ALL, with their alpha and beta.

// The scalars (shaders/squeeze_excitation.wgsl's SqueezeExcite, less n: one block per image).
struct SqueezeExcite {
    int c;
    int hw;
    int squeeze;
    int lanes;
    unsigned int act;
    float act_alpha;
    float act_beta;
    unsigned int gate;
    float gate_alpha;
    float gate_beta;
};

extern "C" __global__ void squeeze_excite_gates(float* __restrict__ gates, float* __restrict__ hidden,
                                                const float* __restrict__ x, const float* __restrict__ w1,
                                                const float* __restrict__ b1, const float* __restrict__ w2,
                                                const float* __restrict__ b2, SqueezeExcite args) {
    const int c = args.c, hw = args.hw, squeeze = args.squeeze, lanes = args.lanes;
    const unsigned act = args.act, gate = args.gate;
    const float act_alpha = args.act_alpha, act_beta = args.act_beta;
    const float gate_alpha = args.gate_alpha, gate_beta = args.gate_beta;
    __shared__ float part[256];
    const int img = blockIdx.x, tid = threadIdx.x;
    const float* xi = x + (long long)img * c * hw;
    float* g = gates + (long long)img * c;
    float* h = hidden + (long long)img * squeeze;
    // 1. Channel means: `lanes` threads stride through each plane, their sums added in lane
    // order; or one thread per channel.
    if (lanes == 1) {
        for (int ch = tid; ch < c; ch += blockDim.x) {
            float s = 0.0f;
            for (int j = 0; j < hw; ++j) s += xi[(long long)ch * hw + j];
            g[ch] = s / (float)hw;
        }
    } else {
        int lane = tid % lanes, ch = tid / lanes;
        float s = 0.0f;
        if (ch < c)
            for (int j = lane; j < hw; j += lanes) s += xi[(long long)ch * hw + j];
        part[tid] = s;
        __syncthreads();
        if (lane == 0 && ch < c) {
            float t = 0.0f;
            for (int k = 0; k < lanes; ++k) t += part[tid + k];
            g[ch] = t / (float)hw;
        }
    }
    __syncthreads();
    // 2. fc1 and its activation, one thread per hidden unit.
    for (int j = tid; j < squeeze; j += blockDim.x) {
        float s = 0.0f;
        for (int ch = 0; ch < c; ++ch) s += w1[(long long)j * c + ch] * g[ch];
        h[j] = act_fwd(act, s + b1[j], act_alpha, act_beta);
    }
    __syncthreads();
    // 3. fc2 and the gate, one thread per channel (the means are no longer read).
    for (int ch = tid; ch < c; ch += blockDim.x) {
        float s = 0.0f;
        for (int j = 0; j < squeeze; ++j) s += w2[(long long)ch * squeeze + j] * h[j];
        g[ch] = act_fwd(gate, s + b2[ch], gate_alpha, gate_beta);
    }
}
