//! Times the CPU backend's conv2d forward (BatchNorm + ReLU epilogue, as the fused ResNet and
//! VGG convs run) on every distinct conv shape of resnet50 or vgg16 at 224² (batch 8 unless given), and
//! prints milliseconds per call, the count in the network, and GFLOP/s of direct-convolution
//! work. A benchmark, not a test: `cargo run --release --example conv_layers -- resnet50 [threads] [batch]`.

use gradcam::internal::backend::cpu::conv::conv2d_forward_with;
use gradcam::internal::backend::cpu::epilogue::Epilogue;
use gradcam::internal::backend::cpu::winograd;
use gradcam::internal::ops::{Activation, ActivationParams, Conv2dParams};
use std::time::Instant;

/// (input size, c_in, c_out, kernel, stride, count in the network)
fn layers(arch: &str) -> Vec<(usize, usize, usize, usize, usize, usize)> {
    match arch {
        "resnet50" => vec![
            (224, 3, 64, 7, 2, 1),
            (56, 64, 64, 1, 1, 1),
            (56, 256, 64, 1, 1, 2),
            (56, 64, 64, 3, 1, 3),
            (56, 64, 256, 1, 1, 4),
            (56, 256, 128, 1, 1, 1),
            (56, 128, 128, 3, 2, 1),
            (28, 128, 512, 1, 1, 4),
            (56, 256, 512, 1, 2, 1),
            (28, 512, 128, 1, 1, 3),
            (28, 128, 128, 3, 1, 3),
            (28, 512, 256, 1, 1, 1),
            (28, 256, 256, 3, 2, 1),
            (14, 256, 1024, 1, 1, 6),
            (28, 512, 1024, 1, 2, 1),
            (14, 1024, 256, 1, 1, 5),
            (14, 256, 256, 3, 1, 5),
            (14, 1024, 512, 1, 1, 1),
            (14, 512, 512, 3, 2, 1),
            (7, 512, 2048, 1, 1, 3),
            (14, 1024, 2048, 1, 2, 1),
            (7, 2048, 512, 1, 1, 2),
            (7, 512, 512, 3, 1, 2),
        ],
        "vgg16" => vec![
            (224, 3, 64, 3, 1, 1),
            (224, 64, 64, 3, 1, 1),
            (112, 64, 128, 3, 1, 1),
            (112, 128, 128, 3, 1, 1),
            (56, 128, 256, 3, 1, 1),
            (56, 256, 256, 3, 1, 2),
            (28, 256, 512, 3, 1, 1),
            (28, 512, 512, 3, 1, 2),
            (14, 512, 512, 3, 1, 3),
        ],
        _ => panic!("arch: resnet50 or vgg16"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arch = args.get(1).map_or("resnet50", |s| s.as_str());
    let threads = args.get(2).map_or(2, |s| s.parse().expect("threads"));
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .unwrap();
    let n = args.get(3).map_or(8, |s| s.parse().expect("batch"));
    let (mut total_ms, mut total_flop) = (0.0, 0.0);
    println!("{arch}, batch {n}, {threads} threads: ms per call (best of 7), count, GFLOP/s");
    for (size, c_in, c_out, k, stride, count) in layers(arch) {
        let p = Conv2dParams::dense(
            n,
            c_in,
            (size, size),
            c_out,
            (k, k),
            (stride, stride),
            (k / 2, k / 2),
        );
        let x: Vec<f32> = (0..p.input_len())
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-3)
            .collect();
        let w: Vec<f32> = (0..p.weight_len())
            .map(|i| ((i * 104729 % 1000) as f32 - 500.0) * 1e-4)
            .collect();
        let scale = vec![1.01f32; c_out];
        let shift = vec![0.01f32; c_out];
        let act = ActivationParams {
            act: Activation::Relu,
            alpha: 0.0,
            beta: 0.0,
            len: 0,
        };
        let epi = Epilogue {
            bn: Some((&scale, &shift)),
            residual: None,
            act: Some(act),
        };
        // Winograd's filters are computed once per model, as the engine does.
        let u = winograd::applies(&p).then(|| winograd::filters(&p, &w));
        let mut y = vec![0f32; p.output_len()];
        // The fastest of 7 runs after a warm-up: these shared machines' interference only ever
        // adds time.
        let ms = (0..8)
            .map(|_| {
                let t = Instant::now();
                conv2d_forward_with(&p, &x, &w, u.as_deref(), None, Some(epi), &mut y);
                t.elapsed().as_secs_f64() * 1e3
            })
            .skip(1)
            .fold(f64::INFINITY, f64::min);
        let flop = 2.0 * (p.output_len() * c_in * k * k) as f64;
        total_ms += ms * count as f64;
        total_flop += flop * count as f64;
        println!(
            "{size:>4}² {c_in:>5}→{c_out:<5} {k}x{k} s{stride}  {ms:8.2} ms  x{count}  {:6.1} GFLOP/s",
            flop / ms * 1e-6
        );
    }
    println!(
        "total {total_ms:.1} ms, {:.1} GFLOP/s",
        total_flop / total_ms * 1e-6
    );
}
