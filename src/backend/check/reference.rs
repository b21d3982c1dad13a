//! The f64 references written for the checks: direct loops over the ops' definitions, no
//! im2col, no GEMM, nothing shared with the CPU backend's fast paths, so that checking the CPU
//! backend does not compare it with itself. (The other families' references are the CPU
//! kernels run in f64: plain loops generic over the element type, each checked against finite
//! differences in tests/op_gradcheck.rs and against PyTorch in the parity fixtures.)

use crate::ops::*;

/// Each output of a sum of products, and Σ|terms| of that sum (see `Tol::terms`).
pub struct Sums {
    pub value: Vec<f64>,
    pub terms: Vec<f64>,
}

impl Sums {
    fn zeros(len: usize) -> Self {
        Sums {
            value: vec![0.0; len],
            terms: vec![0.0; len],
        }
    }

    fn add(&mut self, i: usize, v: f64) {
        self.value[i] += v;
        self.terms[i] += v.abs();
    }
}

/// Calls `f(input index, weight index, output index)` for every product of the convolution:
/// groups, dilation, per-side zero padding.
fn conv_products(p: &Conv2dParams, mut f: impl FnMut(usize, usize, usize)) {
    let (ho, wo) = (p.h_out(), p.w_out());
    let (cig, cog) = (p.c_in / p.groups, p.c_out / p.groups);
    for i in 0..p.n {
        for co in 0..p.c_out {
            let group = co / cog;
            for oy in 0..ho {
                for ox in 0..wo {
                    let o = ((i * p.c_out + co) * ho + oy) * wo + ox;
                    for cj in 0..cig {
                        let ci = group * cig + cj;
                        for ky in 0..p.k_h {
                            for kx in 0..p.k_w {
                                let iy = (oy * p.stride_h + ky * p.dilation_h) as isize
                                    - p.pad_h as isize;
                                let ix = (ox * p.stride_w + kx * p.dilation_w) as isize
                                    - p.pad_w as isize;
                                if iy < 0
                                    || ix < 0
                                    || iy >= p.h_in as isize
                                    || ix >= p.w_in as isize
                                {
                                    continue;
                                }
                                let xi = ((i * p.c_in + ci) * p.h_in + iy as usize) * p.w_in
                                    + ix as usize;
                                let wi = ((co * cig + cj) * p.k_h + ky) * p.k_w + kx;
                                f(xi, wi, o);
                            }
                        }
                    }
                }
            }
        }
    }
}

pub fn conv2d(p: &Conv2dParams, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Sums {
    let mut y = Sums::zeros(p.output_len());
    let plane = p.h_out() * p.w_out();
    if let Some(bias) = bias {
        for o in 0..y.value.len() {
            y.add(o, bias[o / plane % p.c_out] as f64);
        }
    }
    conv_products(p, |xi, wi, o| y.add(o, x[xi] as f64 * w[wi] as f64));
    y
}

/// The adjoint of [`conv2d`], as a scatter (the kernels under test gather).
pub fn conv2d_grad_input(p: &Conv2dParams, dy: &[f32], w: &[f32]) -> Sums {
    let mut dx = Sums::zeros(p.input_len());
    conv_products(p, |xi, wi, o| dx.add(xi, dy[o] as f64 * w[wi] as f64));
    dx
}

/// A pooling op's output and input gradient: the max pools and the adaptive average pool
/// from the loops below, average and adaptive max pooling from the CPU kernels in f64.
pub fn pool(p: &PoolParams, x: &[f32], dy: &[f32]) -> (Vec<f64>, Vec<f64>) {
    use crate::backend::cpu::pool;
    let f64s = |v: &[f32]| v.iter().map(|&v| v as f64).collect::<Vec<_>>();
    let (mut y, mut dx) = (vec![0f64; p.output_len()], vec![0f64; p.input_len()]);
    match p {
        PoolParams::Max(q) => {
            let (y, argmax) = max_pool2d(q, x);
            return (y, max_pool2d_grad_input(q, &argmax, dy));
        }
        PoolParams::AdaptiveAvg(q) => return adaptive_avg_pool2d(q, x, dy),
        PoolParams::Avg(_) => {
            pool::forward(p, &f64s(x), &mut y, None);
            pool::backward_input(p, None, &f64s(dy), &mut dx);
        }
        PoolParams::AdaptiveMax(_) => {
            let mut argmax = vec![0u32; p.output_len()];
            pool::forward(p, &f64s(x), &mut y, Some(&mut argmax));
            pool::backward_input(p, Some(&argmax), &f64s(dy), &mut dx);
        }
    }
    (y, dx)
}

/// Values and argmax (first maximum in row-major window order; windows hanging over the end
/// in ceil mode are cut at the input's edge).
fn max_pool2d(p: &MaxPool2dParams, x: &[f32]) -> (Vec<f64>, Vec<u32>) {
    let (ho, wo) = (p.h_out(), p.w_out());
    let mut y = vec![0f64; p.output_len()];
    let mut idx = vec![0u32; p.output_len()];
    for plane in 0..p.n * p.c {
        for oy in 0..ho {
            for ox in 0..wo {
                let mut best: Option<(f32, usize)> = None;
                for ky in 0..p.k_h {
                    for kx in 0..p.k_w {
                        let iy = (oy * p.stride_h + ky) as isize - p.pad_h as isize;
                        let ix = (ox * p.stride_w + kx) as isize - p.pad_w as isize;
                        if iy < 0 || ix < 0 || iy >= p.h_in as isize || ix >= p.w_in as isize {
                            continue;
                        }
                        let i = iy as usize * p.w_in + ix as usize;
                        let v = x[plane * p.h_in * p.w_in + i];
                        if best.is_none_or(|(b, _)| v > b) {
                            best = Some((v, i));
                        }
                    }
                }
                let (v, i) = best.expect("every window overlaps the input");
                y[(plane * ho + oy) * wo + ox] = v as f64;
                idx[(plane * ho + oy) * wo + ox] = i as u32;
            }
        }
    }
    (y, idx)
}

/// The max-pool gradient: each output's dy added to the input its argmax chose.
fn max_pool2d_grad_input(p: &MaxPool2dParams, argmax: &[u32], dy: &[f32]) -> Vec<f64> {
    let mut dx = vec![0f64; p.input_len()];
    let (plane_in, plane_out) = (p.h_in * p.w_in, p.h_out() * p.w_out());
    for (o, &i) in argmax.iter().enumerate() {
        dx[o / plane_out * plane_in + i as usize] += dy[o] as f64;
    }
    dx
}

/// Forward and input gradient.
fn adaptive_avg_pool2d(p: &AdaptivePool2dParams, x: &[f32], dy: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let mut y = vec![0f64; p.output_len()];
    let mut dx = vec![0f64; p.input_len()];
    for plane in 0..p.n * p.c {
        for oy in 0..p.h_out {
            let (y0, y1) = adaptive_window(oy, p.h_in, p.h_out);
            for ox in 0..p.w_out {
                let (x0, x1) = adaptive_window(ox, p.w_in, p.w_out);
                let count = ((y1 - y0) * (x1 - x0)) as f64;
                let o = (plane * p.h_out + oy) * p.w_out + ox;
                let mut s = 0f64;
                for iy in y0..y1 {
                    for ix in x0..x1 {
                        let i = (plane * p.h_in + iy) * p.w_in + ix;
                        s += x[i] as f64;
                        dx[i] += dy[o] as f64 / count;
                    }
                }
                y[o] = s / count;
            }
        }
    }
    (y, dx)
}

/// Forward and input gradient: y = x·Wᵀ + b, dx = dy·W.
pub fn linear(
    p: &LinearParams,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    dy: &[f32],
) -> (Vec<f64>, Vec<f64>) {
    let LinearParams { n, in_f, out_f } = *p;
    let mut y = vec![0f64; n * out_f];
    let mut dx = vec![0f64; n * in_f];
    for i in 0..n {
        for o in 0..out_f {
            let mut s = bias.map_or(0.0, |b| b[o] as f64);
            for k in 0..in_f {
                s += x[i * in_f + k] as f64 * w[o * in_f + k] as f64;
                dx[i * in_f + k] += dy[i * out_f + o] as f64 * w[o * in_f + k] as f64;
            }
            y[i * out_f + o] = s;
        }
    }
    (y, dx)
}

/// The one-hot seed of each image: 1 at its fixed class, or at the class of its rank in the
/// engine's ranking (descending, ties to the lower class, -0.0 equal to 0.0).
pub fn class_seed(p: &ClassSeedParams, logits: &[f32]) -> Vec<f64> {
    let mut seed = vec![0f64; p.n * p.k];
    for (i, row) in logits.chunks(p.k).enumerate() {
        let class = match p.pick {
            ClassPick::Fixed(c) => c,
            ClassPick::Rank(r) => crate::engine::ranked(row)[r],
        };
        seed[i * p.k + class] = 1.0;
    }
    seed
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn normalize(v: &mut [f64]) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().map(|&x| x - lo).fold(0f64, f64::max);
    for x in v.iter_mut() {
        *x = (*x - lo) / (hi + CAM_EPS as f64);
    }
}

/// The map of one image before the ReLU, straight from pytorch-grad-cam 1.5's formulas.
/// a: [c, hw]; g: [c, hw], or [c] weights for `Weights`.
fn cam_map(how: CamCombine, c: usize, hw: usize, a: &[f32], g: &[f32]) -> Vec<f64> {
    let mut map = vec![0f64; hw];
    for ch in 0..c {
        let a = f64s(&a[ch * hw..(ch + 1) * hw]);
        let g = if how == CamCombine::Weights {
            vec![g[ch] as f64]
        } else {
            f64s(&g[ch * hw..(ch + 1) * hw])
        };
        let n = hw as f64;
        let sum_a: f64 = a.iter().sum();
        let weight = match how {
            CamCombine::Mean => g.iter().sum::<f64>() / n,
            CamCombine::PlusPlus => g
                .iter()
                .map(|&gv| {
                    let alpha = if gv == 0.0 {
                        0.0
                    } else {
                        gv.powi(2) / (2.0 * gv.powi(2) + sum_a * gv.powi(3) + PLUS_PLUS_EPS)
                    };
                    gv.max(0.0) * alpha
                })
                .sum(),
            CamCombine::XGrad => {
                a.iter().zip(&g).map(|(av, gv)| av * gv).sum::<f64>() / (sum_a + XGRAD_EPS)
            }
            CamCombine::Fem => {
                let mean = sum_a / n;
                let std = (a.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
                a.iter().filter(|&&v| v > mean + FEM_K * std).count() as f64 / n
            }
            CamCombine::Weights => g[0],
            CamCombine::HiRes | CamCombine::ElementWise | CamCombine::Layer => {
                for (i, m) in map.iter_mut().enumerate() {
                    let ga = g[i] * a[i];
                    *m += match how {
                        CamCombine::HiRes => ga,
                        CamCombine::ElementWise => ga.max(0.0),
                        _ => g[i].max(0.0) * a[i],
                    };
                }
                continue;
            }
        };
        for (m, v) in map.iter_mut().zip(&a) {
            *m += weight * v;
        }
    }
    map
}

/// The fused CAM step: the map, ReLU, normalized, resized bilinearly, normalized again when
/// `renormalize`.
pub fn grad_cam(p: &GradCamParams, a: &[f32], g: &[f32]) -> Vec<f64> {
    let hw = p.h * p.w;
    let g_len = p.second_len() / p.n;
    let mut out = vec![];
    for i in 0..p.n {
        let a = &a[i * p.c * hw..(i + 1) * p.c * hw];
        let g = &g[i * g_len..(i + 1) * g_len];
        let mut small = cam_map(p.combine, p.c, hw, a, g);
        small.iter_mut().for_each(|v| *v = v.max(0.0));
        normalize(&mut small);
        let mut cam = vec![0f64; p.out_h * p.out_w];
        for y in 0..p.out_h {
            let (y0, y1, wy) = bilinear_source(y, p.h, p.out_h);
            for x in 0..p.out_w {
                let (x0, x1, wx) = bilinear_source(x, p.w, p.out_w);
                let (wx, wy) = (wx as f64, wy as f64);
                let at = |yy: usize, xx: usize| small[yy * p.w + xx];
                let top = at(y0, x0) * (1.0 - wx) + at(y0, x1) * wx;
                let bottom = at(y1, x0) * (1.0 - wx) + at(y1, x1) * wx;
                cam[y * p.out_w + x] = top * (1.0 - wy) + bottom * wy;
            }
        }
        if p.renormalize {
            normalize(&mut cam);
        }
        out.extend(cam);
    }
    out
}
