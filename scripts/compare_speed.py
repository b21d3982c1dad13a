"""Throughput of this project's CPU backend against pytorch-grad-cam's GradCAM and PyTorch's
plain forward pass, same model, input size, batch and thread count, one after the other.

    pip install torch torchvision grad-cam safetensors
    cargo build --release && python scripts/compare_speed.py --threads 2

Reports medians of --iters timed runs after one warm-up, in images/s, and the ratios.
"""
import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import tempfile
import time

import torch
import torchvision

from models import save_weights

DEFAULT_LAYER = {"vgg16": "features.29", "resnet50": "layer4"}


def median_time(fn, iters):
    fn()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--archs", nargs="+", default=["resnet50", "vgg16"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--bin", default="target/release/gradcam")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from pytorch_grad_cam import GradCAM

    tmp = pathlib.Path(tempfile.mkdtemp())
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"threads {args.threads}; batch {args.batch}; {args.size}x{args.size}; "
          f"median of {args.iters} runs; torch {torch.__version__}")
    print(f"{'model':9} {'pytorch fwd':>12} {'pgc GradCAM':>12} {'gradcam fwd':>12} {'gradcam CAM':>12} "
          f"{'CAM speed-up':>13}")
    for arch in args.archs:
        torch.manual_seed(0)
        model = getattr(torchvision.models, arch)(weights=None).eval()
        weights = tmp / f"{arch}.safetensors"
        save_weights(model, weights)
        x = torch.randn(args.batch, 3, args.size, args.size)

        def forward():
            with torch.no_grad():
                model(x)

        t_fwd = median_time(forward, args.iters)
        layer = model.get_submodule(DEFAULT_LAYER[arch])
        with GradCAM(model=model, target_layers=[layer]) as cam:
            t_pgc = median_time(lambda: cam(input_tensor=x, targets=None), args.iters)
        out = subprocess.run(
            [args.bin, "--threads", str(args.threads), "bench", "--weights", str(weights),
             "--batch", str(args.batch), "--size", str(args.size), "--iters", str(args.iters), "--json"],
            check=True, capture_output=True, text=True).stdout
        ours = json.loads(out)
        ips = lambda t: args.batch / t
        cam_ips = ours["gradcam_images_per_s"]
        print(f"{arch:9} {ips(t_fwd):12.2f} {ips(t_pgc):12.2f} {ours['forward_images_per_s']:12.2f} "
              f"{cam_ips:12.2f} {cam_ips / ips(t_pgc):12.2f}x", flush=True)
    print("(images/s; 'pgc' = pytorch-grad-cam GradCAM, default target layer, top-1 class)")


if __name__ == "__main__":
    main()
